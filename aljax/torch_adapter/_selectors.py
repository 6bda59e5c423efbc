"""The torch mirrors of aljax's front doors: the model runs in torch, the picks are made by the
same JAX selectors as for a JAX model, through :func:`aljax._strategies.select_from_outputs`.

Each mirror checks its arguments, runs the model over the pool once (and over ``labeled`` once,
where the algorithm uses a labeled set), and hands the logits and penultimate features to the
strategy dispatch. Given the same weights and key, the picks equal those of the JAX front door of
the same name on the equivalent JAX model (up to float32 rounding of near-ties).
"""

from __future__ import annotations

import jax

from .. import _progress, _stochastic, _validate
from .._strategies import select_from_outputs
from ._inputs import pool_len
from ._outputs import outputs


def _select(fn: str, strategy: str, model, pool, k, *, key, batch_size, device, head, max_length,
            problem_type: str = "classification", rate=None, labeled=None, options=None,
            check_first_batch=None) -> jax.Array:
    """Check what can be checked before a forward pass, run the model, pick."""
    key = _validate.as_key(fn, key)
    _validate.check_problem_type(fn, problem_type, strategy)
    n = pool_len(pool)
    if k is not None:
        k = _validate.check_k(fn, k, n or None)  # n = 0: refused as an empty pool below
    common = dict(batch_size=batch_size, device=device, head=head, max_length=max_length)
    if strategy == "random":
        if n == 0:
            raise ValueError(_validate.message(fn, "pool", "a non-empty pool", "an empty pool (0 examples)"))
        if n is None:  # the model runs only to count the examples: any output shape will do
            n = int(outputs(fn, model, pool, problem_type="regression", **common)[0].shape[0])
        return select_from_outputs(fn, "random", "classification", key, None, None, n, k)
    labeled_outputs = None
    if labeled is not None:  # first: a labeled set the model cannot take fails before the pool's pass
        labeled_outputs = outputs(fn, model, labeled, arg="labeled", problem_type=problem_type, **common)
    logits, h = outputs(fn, model, pool, problem_type=problem_type, check_first_batch=check_first_batch, **common)
    return select_from_outputs(fn, strategy, problem_type, key, logits, h, int(logits.shape[0]), k, rate=rate,
                               labeled=labeled_outputs, options=options)


def badge(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
          max_length: int | None = None, problem_type: str = "classification", prune: bool = False,
          progress: bool | None = None) -> jax.Array:
    """BADGE for a torch model: k-means++ seeding over last-layer gradient embeddings.

    Ash et al., "Deep batch active learning by diverse, uncertain gradient lower bounds", ICLR
    2020. The embedding (:func:`last_layer_embedding`: ``a = p − onehot(ŷ)`` and the features
    ``h``, factored) is computed in torch and handed over through DLPack; :func:`aljax.kmeans_pp`
    then picks on the factored form. The picks equal ``aljax.badge(params, apply_fn, pool, k,
    key=key)`` on the equivalent JAX model (up to float32 rounding of near-ties).

    Regression: the squared loss's gradient at the hallucinated label (the prediction itself) is
    zero, so the paper's embedding degenerates; k-means++ runs on the features ``h`` instead
    (diversity only), as in :func:`aljax.badge`.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key (default 0: two calls without a key use the same
        randomness; in a loop pass a fresh key each round).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` or ``"regression"`` (outputs ``(batch,)`` or
        ``(batch, m)``; see above).
      prune: exact pruning of the k-means++ steps (same picks; see :func:`aljax.kmeans_pp`);
        classification only.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in pick order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
      >>> ta.badge(model, torch.randn(100, 4), 10, key=0).shape
      (10,)
    """
    with _progress.scope("torch_adapter.badge", progress):
        fn = "torch_adapter.badge"
        if _validate.check_bool(fn, "prune", prune) and problem_type == "regression":
            raise ValueError(_validate.message(fn, "prune", "False for regression (the bound needs the factors of "
                                               "the classification embedding)", "True"))
        return _select(fn, "badge", model, pool, k, key=key, batch_size=batch_size, device=device, head=head,
                       max_length=max_length, problem_type=problem_type, options={"prune": prune})


def bait(model, pool, k: int, *, key=0, labeled=None, batch_size: int = 256, device=None, head: str | None = None,
         max_length: int | None = None, problem_type: str = "classification", lamb: float = 1.0,
         damping: str = "absolute", oversample: float = 2.0, progress: bool | None = None) -> jax.Array:
    """BAIT for a torch model: greedy Fisher-trace minimisation over last-layer Fisher embeddings.

    Ash et al., "Gone fishing: neural active learning with Fisher embeddings", NeurIPS 2021.
    :func:`fisher_embedding` of the pool (and of ``labeled``) is computed in torch and handed
    to :func:`aljax.fisher_greedy`: ``⌈oversample·k⌉`` greedy forward steps minimising
    ``tr((λI + F_S)⁻¹ F)``, then backward pruning to ``k``. The picks equal those of
    :func:`aljax.bait` on the equivalent JAX model.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: accepted and ignored (BAIT is deterministic), so that strategies can be swapped.
      labeled: optional labeled inputs ``(n_L, ...)``, of the same kinds as ``pool``; their
        Fisher seeds the greedy (``M₀ = λI + F_L n_L / (n_L + k)``).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` or ``"regression"`` (outputs ``(batch,)`` or
        ``(batch, m)``; the Fisher of a Gaussian head is ``h hᵀ`` per output).
      lamb: the damping ``λ`` of ``λI + F_S``, ``> 0`` (the BAIT paper's 1.0).
      damping: ``"absolute"`` (``λ`` as given, the authors') or ``"relative"`` (``λ·tr(F)/d``,
        independent of the features' scale); see :func:`aljax.fisher_greedy`.
      oversample: forward steps per selected point, ``>= 1`` (1: forward only).
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.bait(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    with _progress.scope("torch_adapter.bait", progress):
        fn = "torch_adapter.bait"
        lamb = _validate.check_positive(fn, "lamb", lamb)
        damping = _validate.check_damping(fn, damping)
        oversample = _validate.check_oversample(fn, oversample)
        return _select(fn, "bait", model, pool, k, key=key, labeled=labeled, batch_size=batch_size, device=device,
                       head=head, max_length=max_length, problem_type=problem_type,
                       options={"lamb": lamb, "damping": damping, "oversample": oversample})


def vessal(model, pool, k: int | None = None, *, key=0, labeled=None, batch_size: int = 256, device=None,
           head: str | None = None, max_length: int | None = None, problem_type: str = "classification",
           rate: float | None = None, rank: int = 1, lamb: float = 0.01,
           precompute_covariance: bool = False, progress: bool | None = None) -> jax.Array:
    """VeSSAL for a torch model: streaming volume sampling over last-layer Fisher embeddings.

    Saran et al., "Streaming active learning with deep neural networks", ICML 2023. The pool is
    embedded in torch (:func:`fisher_embedding`) and streamed in order through
    :func:`aljax.volume_stream`: each point is kept with probability proportional to the volume it
    adds, at the target rate. Give exactly one of ``k`` (a count) and ``rate`` (a labeling rate
    in ``(0, 1]``). The picks equal those of :func:`aljax.vessal` on the equivalent JAX model.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` streamed examples, in stream order: a ``torch.Tensor`` ``(n, ...)``, a NumPy or
        JAX array, a mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled
        ``DataLoader``, or a list of ``n`` strings with a ``(model, tokenizer)`` pair.
      k: number of points to keep (a Python int in ``[1, n]``), or None with ``rate``.
      key: int seed or ``jax.random`` key (default 0: two calls without a key use the same
        randomness; in a loop pass a fresh key each round).
      labeled: optional labeled inputs ``(n_L, ...)``, of the same kinds as ``pool``: their Fisher
        seeds ``A = λI + Σ_L UᵀU`` and the running covariance ``Σ̂``.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` or ``"regression"`` (outputs ``(batch,)`` or
        ``(batch, m)``; each point's Fisher row is its features ``h``).
      rate: target fraction kept, in ``(0, 1]``, or None with ``k``.
      rank: Fisher rows per point, in ``[1, C]`` (1: the top class direction); 1 for regression.
      lamb: the damping of ``A₀ = λI``, ``> 0`` (the VeSSAL paper's 0.01).
      precompute_covariance: estimate ``Σ̂`` in a first pass over the whole pool (and the
        labeled set) and use it, fixed, for the stream.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      int32 unique indices into ``pool``, in stream order; ``k`` of them with ``k``, near
      ``rate·n`` with ``rate``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.vessal(model, torch.randn(60, 4), 5, key=0).shape
      (5,)
    """
    with _progress.scope("torch_adapter.vessal", progress):
        fn = "torch_adapter.vessal"
        k, rate = _validate.check_k_or_rate(fn, k, rate, None)  # k against the pool's size in _select
        rank = _validate.check_rank(fn, rank, problem_type)
        lamb = _validate.check_positive(fn, "lamb", lamb)
        precompute_covariance = _validate.check_bool(fn, "precompute_covariance", precompute_covariance)

        def check_rank(logits):  # on the first batch, so that a bad rank fails before the rest of the pool
            if problem_type == "classification" and rank > logits.shape[1]:
                raise ValueError(_validate.message(fn, "rank", f"at most the number of classes ({logits.shape[1]})",
                                                   rank))

        return _select(fn, "vessal", model, pool, k, key=key, rate=rate, labeled=labeled, batch_size=batch_size,
                       device=device, head=head, max_length=max_length, problem_type=problem_type,
                       options={"rank": rank, "lamb": lamb, "precompute_covariance": precompute_covariance},
                       check_first_batch=check_rank)


def margin(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
           max_length: int | None = None, problem_type: str = "classification",
           progress: bool | None = None, stochastic: str | None = None,
           beta: float = 1.0) -> jax.Array:
    """Margin sampling for a torch model: the ``k`` points of smallest gap between the two most
    probable classes.

    Scheffer, Decomain & Wrobel, "Active hidden Markov models for information extraction", IDA
    2001. The score is :func:`aljax.scores.margin`, ``1 − (p_(1) − p_(2))``, on the logits the
    model computes in torch; the top ``k`` are returned, ties to the lowest index.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the draw with ``stochastic``; ignored without it
        (the top ``k`` are deterministic).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` only (the score needs class probabilities); anything
        else is refused before the forward pass.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.
      stochastic: ``None`` (default) for the top ``k``; ``"power"``, ``"softmax"`` or
        ``"softrank"`` to draw the batch without replacement with weights ``score**beta``,
        ``exp(beta·score)`` or ``rank**(−beta)``, as :func:`aljax.margin` does: the picks equal
        ``aljax.stochastic_top_k(key, score, k, mode=stochastic, beta=beta)`` on the score.
      beta: the draw's inverse temperature, a finite number ``> 0``.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first (in draw order with
      ``stochastic``).

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.margin(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    with _progress.scope("torch_adapter.margin", progress):
        stochastic, beta = _stochastic.check_options("torch_adapter.margin", stochastic, beta)
        return _select("torch_adapter.margin", "margin", model, pool, k, key=key, batch_size=batch_size, device=device,
                       head=head, max_length=max_length, problem_type=problem_type,
                       options={"stochastic": stochastic, "beta": beta})


def entropy(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
            max_length: int | None = None, problem_type: str = "classification",
            progress: bool | None = None, stochastic: str | None = None,
            beta: float = 1.0) -> jax.Array:
    """Entropy sampling for a torch model: the ``k`` points whose predicted class distribution
    has the largest entropy.

    Settles, "Active learning literature survey", 2009 (§3.1). The score is
    :func:`aljax.scores.entropy`, ``−Σ_c p_c log p_c``, on the logits the model computes in
    torch; the top ``k`` are returned, ties to the lowest index.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the draw with ``stochastic``; ignored without it
        (the top ``k`` are deterministic).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` only (the score needs class probabilities); anything
        else is refused before the forward pass.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.
      stochastic: ``None`` (default) for the top ``k``; ``"power"``, ``"softmax"`` or
        ``"softrank"`` to draw the batch without replacement with weights ``score**beta``,
        ``exp(beta·score)`` or ``rank**(−beta)``, as :func:`aljax.entropy` does: the picks equal
        ``aljax.stochastic_top_k(key, score, k, mode=stochastic, beta=beta)`` on the score.
      beta: the draw's inverse temperature, a finite number ``> 0``.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first (in draw order with
      ``stochastic``).

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.entropy(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    with _progress.scope("torch_adapter.entropy", progress):
        stochastic, beta = _stochastic.check_options("torch_adapter.entropy", stochastic, beta)
        return _select("torch_adapter.entropy", "entropy", model, pool, k, key=key, batch_size=batch_size,
                       device=device, head=head, max_length=max_length, problem_type=problem_type,
                       options={"stochastic": stochastic, "beta": beta})


def least_confidence(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
                     max_length: int | None = None, problem_type: str = "classification",
                     progress: bool | None = None, stochastic: str | None = None,
                     beta: float = 1.0) -> jax.Array:
    """Least-confidence sampling for a torch model: the ``k`` points whose most probable class is
    least probable.

    Lewis & Gale, "A sequential algorithm for training text classifiers", SIGIR 1994. The score
    is :func:`aljax.scores.least_confidence`, ``1 − max_c p_c``, on the logits the model computes
    in torch; the top ``k`` are returned, ties to the lowest index.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the draw with ``stochastic``; ignored without it
        (the top ``k`` are deterministic).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` only (the score needs class probabilities); anything
        else is refused before the forward pass.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.
      stochastic: ``None`` (default) for the top ``k``; ``"power"``, ``"softmax"`` or
        ``"softrank"`` to draw the batch without replacement with weights ``score**beta``,
        ``exp(beta·score)`` or ``rank**(−beta)``, as :func:`aljax.least_confidence` does: the picks equal
        ``aljax.stochastic_top_k(key, score, k, mode=stochastic, beta=beta)`` on the score.
      beta: the draw's inverse temperature, a finite number ``> 0``.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first (in draw order with
      ``stochastic``).

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.least_confidence(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    with _progress.scope("torch_adapter.least_confidence", progress):
        stochastic, beta = _stochastic.check_options("torch_adapter.least_confidence", stochastic, beta)
        return _select("torch_adapter.least_confidence", "least_confidence", model, pool, k, key=key,
                       batch_size=batch_size, device=device, head=head, max_length=max_length,
                       problem_type=problem_type,
                       options={"stochastic": stochastic, "beta": beta})


def coreset(model, pool, k: int, *, key=0, labeled=None, batch_size: int = 256, device=None,
            head: str | None = None, max_length: int | None = None,
            problem_type: str = "classification", progress: bool | None = None) -> jax.Array:
    """Core-set (k-center greedy) for a torch model, on the penultimate features.

    Sener & Savarese, "Active learning for convolutional neural networks: a core-set approach",
    ICLR 2018. The features ``h`` (input of the final Linear layer) are computed in torch and
    handed to :func:`aljax.k_center_greedy`: each pick is the point farthest from the labeled
    set and the points picked so far (with no labeled set, the first pick is the point of
    largest feature norm).

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: accepted and ignored (deterministic), so that strategies can be swapped.
      labeled: optional labeled inputs ``(n_L, ...)``, of the same kinds as ``pool``: their
        features are the initial centres.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` or ``"regression"`` (outputs ``(batch,)`` or
        ``(batch, m)``); only the features are used either way.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in greedy order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.coreset(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    with _progress.scope("torch_adapter.coreset", progress):
        return _select("torch_adapter.coreset", "coreset", model, pool, k, key=key, labeled=labeled,
                       batch_size=batch_size, device=device, head=head, max_length=max_length,
                       problem_type=problem_type)


def random_sample(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
                  max_length: int | None = None, problem_type: str = "classification",
                  progress: bool | None = None) -> jax.Array:
    """Uniform random sampling without replacement, the baseline every strategy is compared with.

    ``model`` is not run when the pool's size is known (a tensor, an array, a list, a sized
    ``Dataset`` or ``DataLoader``); otherwise it runs once to count the examples. The picks
    equal those of :func:`aljax.random_sample` with the same key.

    Args:
      model: a ``torch.nn.Module`` (or ``(model, tokenizer)`` pair), used only to count the
        examples of a pool of unknown size; may be None otherwise.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings.
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key (default 0: two calls without a key use the same
        randomness; in a loop pass a fresh key each round).
      batch_size: examples per forward pass, when the model runs.
      device: where input batches are sent, when the model runs.
      head: name of the final layer, when the model runs.
      max_length: tokeniser truncation length, when the model runs on strings.
      problem_type: ``"classification"`` or ``"regression"``: checked, otherwise ignored (accepted
        so that strategies can be swapped without changing the call).
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> ta.random_sample(None, torch.zeros(10, 3), 4, key=0).shape
      (4,)
    """
    with _progress.scope("torch_adapter.random_sample", progress):
        return _select("torch_adapter.random_sample", "random", model, pool, k, key=key, batch_size=batch_size,
                       device=device, head=head, max_length=max_length, problem_type=problem_type)
