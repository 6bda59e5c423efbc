"""aljax: deep active learning as pure, jit-compiled JAX functions.

Data flows one way: model → embeddings → selector → indices. The modules form layers, and a
module imports only modules of its own layer or of the layers listed before it
(``tests/test_layout.py`` walks every import and fails on a cycle or an upward import):

1. ``_validate``, ``_progress``, ``_compile``: argument checks with one message style; progress
   bars; quick-to-compile twins of jitted kernels.
2. ``_types``, ``_padding``, ``_linalg``, ``_sharding``, ``_pool``, ``_hosts``: embedding
   containers, size buckets, small linear algebra, row layouts over devices, chunking and
   streaming a pool, pools assembled from the parts held by several processes.
3. ``_dense_head``, ``_embeddings``, ``_scores``, ``scores``, ``_stochastic``, ``stopping``: from a
   model to embeddings and scores; stochastic batch acquisition on scores; stopping criteria over
   the predictions of successive rounds.
4. ``_badge``, ``_bait``, ``_vessal``, ``_baselines``, ``_batchbald``, ``_kmeans``, ``_coldstart``,
   ``_hac``, ``_clustermargin``: selectors (arrays in, indices out) and the JAX front doors that embed a
   pool and call them.
5. ``_strategies``: strategy name → embedding of a model's outputs → selector.
6. ``torch_adapter``: torch and Hugging Face models in front of the same strategies.
7. ``sampler``: ``ActiveSampler``, the ``active_learn`` object API.
8. ``_labelpool``, ``_simulate``, ``_plot``: the experiment harness.

Every public function follows one calling convention (``docs/api.md``): selectors take
``(embedding, k, *, key=0, labeled=None, ...)``, the draw on scores ``(key, scores, k, *, ...)``
(as ``jax.random``'s samplers), front doors ``(params, apply_fn, pool, k, *,
key=0, labeled=None, batch_size=256, features_fn=None, problem_type="classification", ...)``.
Without ``key=`` every call uses key 0: in a loop, pass a fresh key each round.
"""

# Embeddings
from ._embeddings import fisher_embedding as fisher_embedding
from ._embeddings import gradient_embedding as gradient_embedding
from ._embeddings import last_layer_embedding as last_layer_embedding
from ._types import Factored as Factored
from ._types import FisherFactors as FisherFactors
from . import scores as scores

# Pools spread over several processes (jax.distributed)
from ._hosts import global_pool as global_pool
from ._hosts import local_indices as local_indices

# Selectors on embeddings
from ._badge import kmeans_pp as kmeans_pp
from ._bait import fisher_greedy as fisher_greedy
from ._baselines import k_center_greedy as k_center_greedy
from ._clustermargin import margin_round_robin as margin_round_robin
from ._hac import Clustering as Clustering
from ._hac import hac_clustering as hac_clustering
from ._batchbald import mutual_information_greedy as mutual_information_greedy
from ._coldstart import probcover as probcover
from ._coldstart import typiclust as typiclust
from ._vessal import volume_stream as volume_stream

# Selectors on scores: (key, scores, k, *, ...), in jax.random's order
from ._stochastic import stochastic_top_k as stochastic_top_k

# Front doors: (params, apply_fn, pool, k, *, ...)
from ._badge import badge as badge
from ._bait import bait as bait
from ._baselines import bald as bald
from ._batchbald import batch_bald as batch_bald
from ._baselines import coreset as coreset
from ._clustermargin import cluster_margin as cluster_margin
from ._clustermargin import cluster_pool as cluster_pool
from ._baselines import entropy as entropy
from ._baselines import least_confidence as least_confidence
from ._baselines import margin as margin
from ._baselines import random_sample as random_sample
from ._vessal import vessal as vessal

# The active_learn object API
from .sampler import ActiveSampler as ActiveSampler

# Experiment harness
from ._labelpool import LabelPool as LabelPool
from ._plot import plot_learning_curves as plot_learning_curves
from ._simulate import curve_area as curve_area
from ._simulate import relative_auc as relative_auc
from ._simulate import simulate as simulate
from . import stopping as stopping

__version__ = "0.2.0"

__all__ = [
    # Embeddings
    "Factored",
    "FisherFactors",
    "fisher_embedding",
    "gradient_embedding",
    "last_layer_embedding",
    "scores",
    # Pools spread over several processes
    "global_pool",
    "local_indices",
    # Selectors on embeddings
    "Clustering",
    "fisher_greedy",
    "hac_clustering",
    "k_center_greedy",
    "kmeans_pp",
    "margin_round_robin",
    "mutual_information_greedy",
    "probcover",
    "typiclust",
    "volume_stream",
    # Selectors on scores
    "stochastic_top_k",
    # Front doors
    "badge",
    "bait",
    "bald",
    "cluster_margin",
    "cluster_pool",
    "batch_bald",
    "coreset",
    "entropy",
    "least_confidence",
    "margin",
    "random_sample",
    "vessal",
    # The active_learn object API
    "ActiveSampler",
    # Experiment harness
    "LabelPool",
    "curve_area",
    "plot_learning_curves",
    "relative_auc",
    "simulate",
    "stopping",
]
