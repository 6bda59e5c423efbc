"""aljax: deep active learning as pure, jit-compiled JAX functions.

Data flows one way: model → embeddings → selector → indices.
"""

from ._badge import badge as badge
from ._badge import kmeans_pp as kmeans_pp
from ._embeddings import fisher_embedding as fisher_embedding
from ._embeddings import gradient_embedding as gradient_embedding
from ._embeddings import last_layer_embedding as last_layer_embedding
from ._types import Factored as Factored
from ._types import FisherFactors as FisherFactors

__version__ = "0.1.0"

__all__ = [
    "Factored",
    "FisherFactors",
    "badge",
    "fisher_embedding",
    "gradient_embedding",
    "kmeans_pp",
    "last_layer_embedding",
]
