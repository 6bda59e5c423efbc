"""aljax: deep active learning as pure, jit-compiled JAX functions.

Data flows one way: model → embeddings → selector → indices.
"""

from ._badge import badge as badge
from ._bait import bait as bait
from ._bait import fisher_greedy as fisher_greedy
from ._badge import kmeans_pp as kmeans_pp
from ._embeddings import fisher_embedding as fisher_embedding
from ._embeddings import gradient_embedding as gradient_embedding
from ._embeddings import last_layer_embedding as last_layer_embedding
from ._types import Factored as Factored
from .sampler import ActiveSampler as ActiveSampler
from ._types import FisherFactors as FisherFactors
from ._vessal import vessal as vessal
from ._vessal import volume_stream as volume_stream
from . import scores as scores
from ._baselines import bald as bald
from ._baselines import coreset as coreset
from ._baselines import entropy as entropy
from ._baselines import k_center_greedy as k_center_greedy
from ._baselines import least_confidence as least_confidence
from ._baselines import margin as margin
from ._baselines import random_sample as random_sample
from ._labelpool import LabelPool as LabelPool
from ._plot import plot_learning_curves as plot_learning_curves
from ._simulate import curve_area as curve_area
from ._simulate import relative_auc as relative_auc
from ._simulate import simulate as simulate

__version__ = "0.1.0"

__all__ = [
    "bait",
    "fisher_greedy",
    "ActiveSampler",
    "vessal",
    "volume_stream",
    "LabelPool",
    "bald",
    "coreset",
    "curve_area",
    "entropy",
    "k_center_greedy",
    "least_confidence",
    "margin",
    "plot_learning_curves",
    "random_sample",
    "relative_auc",
    "scores",
    "simulate",
    "Factored",
    "FisherFactors",
    "badge",
    "fisher_embedding",
    "gradient_embedding",
    "kmeans_pp",
    "last_layer_embedding",
]
