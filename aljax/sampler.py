"""``ActiveSampler``: the original ``active_learn`` object API over aljax's functions.

Importing this module does not import torch: torch models are recognised only when torch is
already imported (a torch module cannot exist otherwise), and ``aljax.torch_adapter`` is imported
on first use.
"""

from __future__ import annotations

import inspect
import numbers
import sys

import jax
import numpy as np

from . import _progress, _stochastic, _validate
from ._baselines import bald
from ._batchbald import DEFAULT_CONFIGURATIONS, batch_bald
from ._clustermargin import MARGIN_MULTIPLE, check_clustering, check_margin_multiple, cluster_margin
from ._embeddings import logits_and_features
from ._hac import check_threshold
from ._strategies import STRATEGIES as DISPATCHED
from ._strategies import UNCERTAINTY, USES_LABELED, k_from_rate, select_from_outputs

# Strategies run by their model-level front door rather than on one forward pass's outputs:
# BALD and BatchBALD need stochastic passes of the model, Cluster-Margin checks its clustering
# against the candidates' rows.
FRONT_DOORS = {"bald": bald, "batch_bald": batch_bald, "cluster_margin": cluster_margin}
FRONT_DOOR = tuple(FRONT_DOORS)
STRATEGIES = ("auto", *DISPATCHED, *FRONT_DOOR)
# The keywords that only some strategies use: (the strategies, the default, which is the front
# doors'). A value other than the default is refused with any other strategy, as `prune` is.
MC_SAMPLES = 20   # aljax.bald's and aljax.batch_bald's
OWN_OPTIONS = {"mc_samples": (("bald", "batch_bald"), MC_SAMPLES),
               "configurations": (("batch_bald",), DEFAULT_CONFIGURATIONS),
               "clustering": (("cluster_margin",), None), "threshold": (("cluster_margin",), None),
               "margin_multiple": (("cluster_margin",), MARGIN_MULTIPLE)}
# Strategies whose `stochastic=` draws the batch from their scores.
DRAWS = (*UNCERTAINTY, "bald")
# strategy="auto": the cold start method while the labeled set holds at most AUTO_PER_CLASS labels
# per class (per output for regression) or at most as many labels as the head has input features,
# the model-based strategy after. A linear head on D features can fit any labeling of up to D + 1
# points, so below that its confidence reflects how it was trained more than the data, and the
# model-based strategies read that confidence. Chosen from benchmarks/cold_start_switch.py and
# benchmarks/flagship.py (docs/algorithms/coldstart.md, "When to switch").
AUTO_COLD, AUTO_WARM, AUTO_PER_CLASS = "typiclust", "badge", 5


def auto_strategy(labeled: int, outputs: int, features: int = 0) -> str:
    """The strategy ``ActiveSampler(strategy="auto")`` runs when ``labeled`` examples are labeled,
    the head has ``outputs`` classes (or regression outputs) and reads ``features`` input features:
    ``"typiclust"`` while ``labeled <= max(5·outputs, features)``, ``"badge"`` after.

    Example:
      >>> from aljax.sampler import auto_strategy
      >>> auto_strategy(20, 2, 384), auto_strategy(400, 2, 384), auto_strategy(60, 10, 32)
      ('typiclust', 'badge', 'badge')
    """
    return AUTO_COLD if labeled <= max(AUTO_PER_CLASS * max(outputs, 1), features) else AUTO_WARM


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _check_stochastic_model(fn: str, kind: str, model, strategy: str) -> None:
    """BALD and BatchBALD need a model that can be stochastic: a torch module with dropout
    modules, or an ``apply_fn`` that takes a key. Checked when the sampler is built; the front
    door checks the rest before its forward passes (the kinds of dropout module
    :func:`aljax.torch_adapter.batch_bald` can make consistent) or on its first chunk (passes
    that differ)."""
    if kind == "torch":
        import torch

        module = model[0] if isinstance(model, tuple) else model
        dropouts = [m for m in module.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        if not dropouts:
            raise ValueError(_validate.message(
                fn, "model", f"a torch model with dropout modules (torch.nn.Dropout, ...) for strategy={strategy!r} "
                "(MC dropout)", f"a {type(module).__name__} without any: a deterministic model has zero mutual "
                "information"))
        return
    try:
        signature = inspect.signature(model[1])
    except (TypeError, ValueError):   # no signature to read: the front door's own check decides
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise TypeError(_validate.message(
            fn, "model", f"a (params, apply_fn) pair with a stochastic apply_fn(params, x, key) (e.g. MC dropout) for "
            f"strategy={strategy!r}", f"an apply_fn{signature} that takes no key")) from None


def _restated(err: Exception, front: str, strategy: str) -> Exception | None:
    """An argument error of the front door ``aljax.<front>`` restated as the sampler's, its `pool`
    and `k` being the sampler's `candidates` and `budget` (None for any other exception, which
    propagates as it is)."""
    prefix = f"aljax.{front}: "
    if type(err) not in (TypeError, ValueError) or not str(err).startswith(prefix):
        return None
    return type(err)(f"aljax.ActiveSampler.select (strategy={strategy!r}, through aljax.{front}): "
                     + str(err)[len(prefix):].replace("`pool`", "`candidates`").replace("`k`", "`budget`"))


def _no_labeled(data) -> bool:
    if data is None:
        return True
    if isinstance(data, (tuple, list, dict)) and len(data) == 0:
        return True
    shape = getattr(data, "shape", None)
    return shape is not None and len(shape) > 0 and shape[0] == 0


class ActiveSampler:
    """Pick the unlabeled examples most worth labeling: the ``active_learn`` object API.

    ``ActiveSampler(problem_type, model, budget).select(candidates)`` returns indices into
    ``candidates``. The model may be

    * a ``torch.nn.Module`` returning logits (run through :mod:`aljax.torch_adapter`: forward in
      torch, features and logits handed to JAX through DLPack),
    * a ``(model, tokenizer)`` pair for a Hugging Face sequence classifier, with ``candidates``
      a list of strings,
    * a ``(params, apply_fn)`` pair for a JAX model (``apply_fn(params, x) -> logits``).

    These strategies run on one forward pass over ``candidates`` (and one over ``labeled_data``):
    ``"badge"`` (Ash et al., ICLR 2020: :func:`aljax.kmeans_pp` on the gradient embedding),
    ``"bait"`` (Ash et al., NeurIPS 2021: :func:`aljax.fisher_greedy` on the Fisher embedding),
    ``"vessal"`` (Saran et al., ICML 2023: :func:`aljax.volume_stream`, candidates streamed in
    order), ``"margin"``, ``"entropy"``, ``"least_confidence"`` (:mod:`aljax.scores`),
    ``"coreset"`` (Sener & Savarese, ICLR 2018: :func:`aljax.k_center_greedy` on the
    penultimate features), the cold start strategies ``"typiclust"`` and ``"probcover"``
    (:func:`aljax.typiclust`, :func:`aljax.probcover` on the penultimate features, i.e. the
    encoder's embeddings: they never read the head's outputs, so an untrained head is fine) and
    ``"random"`` (:func:`aljax.random_sample`); each gives the same
    picks as the front door of the same name called with the same keywords and the key of that
    ``select``: the sampler holds a key and splits it at every call (``key, sub =
    jax.random.split(key)``), and the picks use ``sub``. With
    ``problem_type="regression"`` the embedding is the penultimate features ``h`` (the Fisher of
    a Gaussian head is ``h hᵀ``; BADGE's hallucinated gradient is zero, so ``"badge"`` is
    k-means++ on ``h``); the uncertainty strategies are classification-only.

    Three classification strategies call their front door (for a torch model, its
    :mod:`aljax.torch_adapter` mirror) with the sampler's keywords and the key of the
    ``select``, and give its picks: ``"bald"`` (:func:`aljax.bald`, top-k BALD with MC dropout)
    and ``"batch_bald"`` (:func:`aljax.batch_bald`; Kirsch et al., NeurIPS 2019) run
    ``mc_samples`` stochastic passes, so the model must be stochastic: a torch module (or the
    model of a ``(model, tokenizer)`` pair) with dropout modules, run with only those active
    (``"batch_bald"``: ``nn.Dropout``/``Dropout1d/2d/3d``, one mask per pass shared by every
    candidate), or a ``(params, apply_fn)`` pair whose ``apply_fn(params, x, key)`` takes a key
    (dropout active). A model without dropout modules, or an ``apply_fn`` that takes no key, is
    refused when the sampler is built; other dropout modules than those for ``"batch_bald"``, at
    ``select`` before any pass; passes that do not differ, at ``select`` on the first chunk, before
    the pool is scored. ``"cluster_margin"`` (:func:`aljax.cluster_margin`; Citovsky et al., NeurIPS
    2021) spreads the lowest margins over a clustering of the candidates, which must come from
    the user since a sampler is built per round: ``clustering=``, made once by
    :func:`aljax.cluster_pool` (:func:`aljax.torch_adapter.cluster_pool`) on the whole pool and
    restricted to each round's candidates with ``clustering.take(rows)``; a clustering of other
    candidates is refused (its size and row hashes are checked). ``threshold=`` instead clusters
    the candidates afresh at every ``select``: a convenience, not the paper's method (which
    clusters the whole pool once). With a float budget these three need candidates of known
    length (an array, a list, a sized dataset).

    ``"auto"`` (the default) picks per call: ``"typiclust"`` while ``labeled_data`` holds at
    most 5 labels per class or at most as many labels as the head has input features
    (``len(labeled_data) <= max(5·C, D)``, ``C`` the head's outputs, ``D`` the width of its input
    features), ``"badge"`` beyond. With few labels a head's uncertainty is mostly noise and
    representative picks gain more; a linear head on ``D`` features can fit any labeling of up to
    ``D + 1`` points, so its confidence there says more about its training than about the data.
    The rule was chosen on measurements over three datasets and the flagship example
    (``benchmarks/cold_start_switch.py``, ``benchmarks/flagship.py``; see the cold start page of
    the docs), for classification (regression counts labels per output, unmeasured). With a
    wide encoder (``D`` = 384 for MiniLM, 768 for BERT) the cold start lasts for hundreds of
    labels; pass ``strategy="badge"`` to switch earlier. ``labeled_data`` is fixed
    when the sampler is built: in a loop, build a sampler per round with the labeled set so far.
    The attribute ``last_strategy`` names the strategy the last ``select`` ran. On a pool of
    fewer than 21 points TypiClust's neighbourhood shrinks to ``n − 1`` points.

    Args:
      problem_type: ``"classification"`` or ``"regression"``.
      model: a torch module, a ``(model, tokenizer)`` pair, or a ``(params, apply_fn)`` pair.
      budget: an int (select that many points per call), or a float in ``(0, 1]``: a labeling
        rate. VeSSAL streams the candidates at that rate (the number kept varies around
        ``rate·n``); the batch strategies select ``max(1, round(rate·n))`` points.
      labeled_data: inputs already labeled (same kind as ``candidates``), or ``()`` for none.
        Used by ``"bait"`` (seeds the Fisher), ``"coreset"`` (initial centres), ``"vessal"``
        (seeds ``A`` and ``Σ̂``), ``"typiclust"`` and ``"probcover"`` (the labeled set they
        extend) and ``"auto"`` (its size sets the phase); ignored by the others.
      strategy: one of ``"auto"``, ``"vessal"``, ``"badge"``, ``"bait"``, ``"margin"``,
        ``"entropy"``, ``"least_confidence"``, ``"coreset"``, ``"typiclust"``, ``"probcover"``,
        ``"random"``, ``"bald"``, ``"batch_bald"``, ``"cluster_margin"``.
      key: int seed or ``jax.random`` key. Each ``select`` call splits it, so repeated calls
        differ but a sampler built with the same key repeats the same sequence of picks.
      batch_size: examples per forward pass.
      features_fn: JAX models only: optional ``features_fn(params, x) -> (batch, D)``.
      head: torch models only: name of the final layer (default: the last ``nn.Linear`` run).
      device: torch models only: where input batches go (default: the model's device).
      max_length: tokeniser truncation length (strings only).
      lamb: the damping of BAIT's ``λI + F_S`` and VeSSAL's ``A₀ = λI``; None (the default)
        takes each algorithm's own default: 1.0 for BAIT, 0.01 for VeSSAL.
      damping: BAIT's damping mode: ``"absolute"`` (``λ`` as given) or ``"relative"``
        (``λ·tr(F)/d``, independent of the features' scale); see :func:`aljax.fisher_greedy`.
      oversample: BAIT's forward pass to ``⌈oversample·k⌉`` points before pruning back to ``k``.
      rank: VeSSAL's rank of each point's Fisher rows.
      precompute_covariance: VeSSAL: estimate the covariance in a first pass over the candidates
        (and the labeled data).
      prune: ``"badge"`` on a classifier only: exact pruning of the k-means++ steps (same picks,
        faster; see :func:`aljax.kmeans_pp`).
      delta: ProbCover's ball radius; None (the default) takes the purity rule of
        :func:`aljax.probcover` with the head's number of classes (regression needs ``delta``).
      stochastic: ``"margin"``, ``"entropy"``, ``"least_confidence"`` and ``"bald"`` only:
        ``None`` (the default) for the top ``k``, or ``"power"``, ``"softmax"``, ``"softrank"``
        to draw the batch from the scores (:func:`aljax.stochastic_top_k`; Kirsch et al., TMLR
        2023) with the key of the ``select`` (``"bald"``: as :func:`aljax.bald` draws it);
        refused with any other strategy.
      beta: the draw's inverse temperature, a finite number ``> 0``.
      mc_samples: ``"bald"`` and ``"batch_bald"``: stochastic passes, an int ``>= 2``.
      configurations: ``"batch_bald"``: the joint-configuration bound, an int ``>= mc_samples``
        (:func:`aljax.mutual_information_greedy`).
      clustering: ``"cluster_margin"`` only: the :class:`aljax.Clustering` of the candidates
        of each ``select`` (see above).
      threshold: ``"cluster_margin"`` only, in place of ``clustering``: the distance cut at which
        each ``select`` clusters its candidates' penultimate features (with the default sizes of
        :func:`aljax.hac_clustering`).
      margin_multiple: ``"cluster_margin"``: lowest-margin candidates per pick, a finite number
        ``>= 1``.
      progress: progress bars of each ``select`` for the forward pass and the selection:
        ``None`` (default) shows them when stderr is a terminal, once the work has run for two
        seconds; ``True`` always (needs tqdm); ``False`` never.

    ``prune``, ``stochastic``, ``mc_samples``, ``configurations``, ``clustering``,
    ``threshold`` and ``margin_multiple`` are refused (``ValueError``) when set to anything but
    their default with a strategy that does not use them (their defaults are the front doors');
    any other option that the chosen strategy does not use is ignored.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (200, 4))
      >>> sampler = aljax.ActiveSampler("classification", ((W1, W2), apply_fn), 10, strategy="badge")
      >>> sampler.select(pool).shape
      (10,)

      Cluster-Margin, with a clustering of the whole pool restricted to the round's candidates:

      >>> clustering = aljax.cluster_pool((W1, W2), apply_fn, pool, threshold=0.5)
      >>> unlabeled = jnp.arange(50, 200)
      >>> sampler = aljax.ActiveSampler("classification", ((W1, W2), apply_fn), 10, strategy="cluster_margin",
      ...                               clustering=clustering.take(unlabeled))
      >>> sampler.select(pool[unlabeled]).shape
      (10,)
    """

    def __init__(self, problem_type: str, model, budget, labeled_data=(), *, strategy: str = "auto", key=0,
                 batch_size: int = 256, features_fn=None, head: str | None = None, device=None,
                 max_length: int | None = None, lamb: float | None = None, damping: str = "absolute",
                 oversample: float = 2.0, rank: int = 1,
                 precompute_covariance: bool = False, prune: bool = False, delta: float | None = None,
                 progress: bool | None = None, stochastic: str | None = None, beta: float = 1.0,
                 mc_samples: int = MC_SAMPLES, configurations: int = DEFAULT_CONFIGURATIONS, clustering=None,
                 threshold: float | None = None, margin_multiple: float = MARGIN_MULTIPLE):
        fn = "ActiveSampler"
        self.progress = _progress.check(fn, progress)
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(_validate.message(fn, "strategy", f"one of {', '.join(map(repr, STRATEGIES))}",
                                               repr(strategy)))
        _validate.check_problem_type(fn, problem_type, strategy)
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
            raise TypeError(_validate.message(fn, "budget", "an int >= 1 or a float in (0, 1]",
                                              f"{type(budget).__name__} {budget!r}"))
        if isinstance(budget, numbers.Integral):
            self.k, self.rate = _validate.check_int(fn, "budget", budget, low=1), None
        else:
            self.k, self.rate = None, _validate.check_rate(fn, "budget", budget)
        self.rank = _validate.check_rank(fn, rank, problem_type if strategy == "vessal" else "classification")
        self.lamb = None if lamb is None else _validate.check_positive(fn, "lamb", lamb)
        self.damping = _validate.check_damping(fn, damping)
        self.delta = None if delta is None else _validate.check_positive(fn, "delta", delta)
        if strategy == "probcover" and problem_type == "regression" and delta is None:
            raise ValueError(_validate.message(fn, "delta", "a positive float for strategy='probcover' with "
                                               "problem_type='regression' (the purity rule needs classes)", None))
        self.oversample = _validate.check_oversample(fn, oversample)
        _validate.check_bool(fn, "precompute_covariance", precompute_covariance)
        if _validate.check_bool(fn, "prune", prune) and (strategy not in ("badge", "auto")
                                                        or problem_type != "classification"):
            raise ValueError(_validate.message(
                fn, "prune", "False unless strategy='badge' (or 'auto') with problem_type='classification' (it prunes "
                "k-means++ on a factored gradient embedding)", f"True with strategy={strategy!r}, "
                f"problem_type={problem_type!r}"))
        self.prune = prune
        self.stochastic, self.beta = _stochastic.check_options(fn, stochastic, beta)
        if self.stochastic is not None and strategy not in DRAWS:
            raise ValueError(_validate.message(
                fn, "stochastic", f"None unless strategy is one of {', '.join(map(repr, DRAWS))} (it draws the "
                "batch from their scores)", f"{stochastic!r} with strategy={strategy!r}"))
        self._front_options = self._check_own_options(fn, strategy, mc_samples=mc_samples,
                                                      configurations=configurations, clustering=clustering,
                                                      threshold=threshold, margin_multiple=margin_multiple)
        self.batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
        self.problem_type, self.strategy = problem_type, strategy
        self.last_strategy: str | None = None
        self.precompute_covariance = precompute_covariance
        self._key = _validate.as_key(fn, key)
        self._kind, self.model = self._model_kind(fn, model)
        if self._kind == "jax" and (head is not None or device is not None or max_length is not None):
            raise ValueError(f"aljax.{fn}: `head`, `device` and `max_length` apply to torch models only; "
                             "for a (params, apply_fn) pair pass `features_fn=`.")
        if self._kind == "torch" and features_fn is not None:
            raise ValueError(f"aljax.{fn}: `features_fn` applies to (params, apply_fn) pairs only; for a torch "
                             "model pass `head=` with the name of the final layer.")
        if self._kind == "torch" and strategy not in ("random", "bald", "batch_bald"):  # these read no head
            from .torch_adapter._head import check_head

            check_head(fn, self.model, head)
        if strategy in ("bald", "batch_bald"):
            _check_stochastic_model(fn, self._kind, self.model, strategy)
        self._options = {"features_fn": features_fn, "head": head, "device": device, "max_length": max_length}
        self.labeled_data = None if _no_labeled(labeled_data) else labeled_data

    @staticmethod
    def _check_own_options(fn: str, strategy: str, **given) -> dict:
        """The keywords of the front-door strategies, checked, and refused (ValueError) when other
        than the default with a strategy that does not use them. Returns the front door's own
        keywords among them."""
        given["mc_samples"] = _validate.check_int(fn, "mc_samples", given["mc_samples"], low=2)
        given["configurations"] = _validate.check_int(fn, "configurations", given["configurations"],
                                                      low=given["mc_samples"])
        given["margin_multiple"] = check_margin_multiple(fn, given["margin_multiple"])
        for name, value in given.items():
            users, default = OWN_OPTIONS[name]
            if strategy not in users and ((value is not None) if default is None else value != default):
                shown = "an aljax.Clustering" if name == "clustering" else repr(value)
                expected = f"{default!r} (the default)" if default is not None else "None"
                raise ValueError(_validate.message(fn, name, f"{expected} unless strategy is "
                                                   f"{' or '.join(map(repr, users))} (no other strategy uses it)",
                                                   f"{shown} with strategy={strategy!r}"))
        clustering, threshold = given["clustering"], given["threshold"]
        if strategy == "cluster_margin":
            if clustering is None and threshold is None:
                raise ValueError(_validate.message(
                    fn, "clustering", "an aljax.Clustering of the candidates for strategy='cluster_margin' (from "
                    "aljax.cluster_pool or aljax.torch_adapter.cluster_pool on the whole pool, restricted with "
                    "clustering.take(rows)), or pass `threshold=` to cluster the candidates at every select", None))
            if clustering is not None and threshold is not None:
                raise ValueError(_validate.message(fn, "threshold", "None when `clustering` is given (the threshold "
                                                   "was fixed when the clustering was computed)", threshold))
            if clustering is not None:
                check_clustering(fn, clustering, None)
            else:
                given["threshold"] = check_threshold(fn, threshold)
        return {name: given[name] for name, (users, _) in OWN_OPTIONS.items() if strategy in users}

    @staticmethod
    def _model_kind(fn, model):
        if _is_torch_module(model):
            return "torch", model
        if isinstance(model, (tuple, list)) and len(model) == 2:
            if _is_torch_module(model[0]):
                from .torch_adapter._inputs import unpack_model

                unpack_model(fn, model)  # a bad tokenizer fails here, not at select()
                return "torch", tuple(model)
            if callable(model[1]):
                return "jax", tuple(model)
        raise TypeError(_validate.message(fn, "model", "a torch.nn.Module, a (torch model, tokenizer) pair or a "
                                          "(params, apply_fn) pair", type(model).__name__))

    def __repr__(self) -> str:
        budget = self.k if self.k is not None else self.rate
        return (f"ActiveSampler({self.problem_type!r}, <{self._kind} model>, budget={budget}, "
                f"strategy={self.strategy!r})")

    def _outputs(self, data, arg):
        fn = "ActiveSampler.select"
        if self._kind == "torch":
            from .torch_adapter._outputs import outputs

            return outputs(fn, self.model, data, batch_size=self.batch_size, arg=arg, problem_type=self.problem_type,
                           head=self._options["head"], device=self._options["device"],
                           max_length=self._options["max_length"])
        params, apply_fn = self.model
        try:
            if not _validate.is_batch_iterable(data):
                _validate.pool_size(fn, data, arg)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{err} (a (params, apply_fn) model takes arrays or pytrees of arrays)") from None
        return logits_and_features(params, apply_fn, data, batch_size=self.batch_size,
                                   features_fn=self._options["features_fn"], fn_name=fn,
                                   problem_type=self.problem_type)

    def _front_door(self, candidates, key: jax.Array, k: int) -> jax.Array:
        """Picks of the front door (or torch mirror) named by the strategy, with the sampler's
        keywords and ``key``; its argument errors restated as the sampler's."""
        strategy = self.strategy
        options = {"key": key, "batch_size": self.batch_size, "problem_type": self.problem_type,
                   "progress": self.progress, **self._front_options}
        if strategy == "bald" and self.stochastic is not None:
            options.update(stochastic=self.stochastic, beta=self.beta)
        if self._kind == "torch":
            from . import torch_adapter

            front, name = getattr(torch_adapter, strategy), f"torch_adapter.{strategy}"
            options.update(device=self._options["device"], max_length=self._options["max_length"])
            if strategy == "cluster_margin":
                options["head"] = self._options["head"]
            call = lambda: front(self.model, candidates, k, **options)   # noqa: E731
        else:
            front, name = FRONT_DOORS[strategy], strategy
            if strategy == "cluster_margin":
                options["features_fn"] = self._options["features_fn"]
            params, apply_fn = self.model
            call = lambda: front(params, apply_fn, candidates, k, **options)   # noqa: E731
        try:
            return call()
        except (TypeError, ValueError) as err:
            restated = _restated(err, name, strategy)
            if restated is None:
                raise
            raise restated from None

    def _size(self, candidates, arg: str = "candidates") -> int | None:
        if self._kind == "jax":
            if _validate.is_batch_iterable(candidates):
                return None  # known after the embedding pass
            return _validate.pool_size("ActiveSampler.select", candidates, arg)
        from .torch_adapter._inputs import pool_len

        return pool_len(candidates)

    def select(self, candidates) -> np.ndarray:
        """Indices of the candidates to label.

        Args:
          candidates: the unlabeled pool: for a JAX model an ``(n, ...)`` array or pytree of
            arrays, or an iterable of batches of them (read once); for a torch model a tensor, a NumPy array, a ``Dataset``/``DataLoader`` or a
            mapping of tensors; for a ``(model, tokenizer)`` pair a list of strings.

        Returns:
          A NumPy int32 array of unique indices into ``candidates``; ``budget`` of them for an int
          budget (in pick order), about ``rate·n`` for a float budget.

        Example:
          >>> import jax, jax.numpy as jnp, aljax
          >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
          >>> params = (jnp.ones((4, 8)) / 4, jnp.arange(24.0).reshape(8, 3) / 24)
          >>> sampler = aljax.ActiveSampler("classification", (params, apply_fn), 5, strategy="margin")
          >>> sampler.select(jax.random.normal(jax.random.key(0), (50, 4))).shape
          (5,)
        """
        with _progress.scope("ActiveSampler.select", self.progress):
            fn = "ActiveSampler.select"
            n = self._size(candidates)
            if n is not None and self.k is not None and self.k > n:
                raise ValueError(f"aljax.{fn}: argument `candidates` must hold at least `budget` = {self.k} examples "
                                 f"(the sampler's budget), got {n}.")
            if self.strategy in FRONT_DOOR and self.k is None and n is None:
                raise ValueError(_validate.message(
                    fn, "budget", f"an int for strategy={self.strategy!r} with candidates of unknown length (a "
                    "rate needs the pool's size before the front door runs)", self.rate))
            self._key, key = jax.random.split(self._key)
            if self.strategy in FRONT_DOOR:
                picks = self._front_door(candidates, key, self.k if self.k is not None else k_from_rate(self.rate, n))
                self.last_strategy = self.strategy
                return np.asarray(picks, dtype=np.int32)
            if self.strategy == "random" and n is not None:
                logits = h = None
            else:
                logits, h = self._outputs(candidates, "candidates")
                n = int(h.shape[0])
                if self.k is not None and self.k > n:
                    raise ValueError(f"aljax.{fn}: argument `candidates` must hold at least `budget` = {self.k} "
                                     f"examples (the sampler's budget), got {n}.")
            labeled, strategy = None, self.strategy
            if strategy == "auto":
                # The labeled set's size sets the phase; a forward pass only where it is unknown.
                count = 0 if self.labeled_data is None else self._size(self.labeled_data, "labeled_data")
                if count is None:
                    labeled = self._outputs(self.labeled_data, "labeled_data")
                    count = int(labeled[1].shape[0])
                strategy = auto_strategy(count, int(logits.shape[1]), int(h.shape[1]))
            if labeled is None and self.labeled_data is not None and strategy in USES_LABELED:
                labeled = self._outputs(self.labeled_data, "labeled_data")
            options = {"lamb": self.lamb, "damping": self.damping, "oversample": self.oversample, "rank": self.rank,
                       "precompute_covariance": self.precompute_covariance, "prune": self.prune, "delta": self.delta,
                       "stochastic": self.stochastic, "beta": self.beta}
            picks = select_from_outputs(fn, strategy, self.problem_type, key, logits, h, n, self.k, rate=self.rate,
                                        labeled=labeled, options=options)
            self.last_strategy = strategy
            return np.asarray(picks, dtype=np.int32)
