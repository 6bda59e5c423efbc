"""When to stop labeling: criteria over the predictions of successive rounds on a fixed *stop
set* of unlabeled inputs (no labels needed).

After each round's training, predict on the same ``m`` inputs (the stop set: a fixed random
subset of the pool or any held-out unlabeled data) and keep the history, one row per round. Each
criterion reads the history and returns the first round (an index into it) at which it would
have stopped, or ``None``::

    >>> import numpy as np
    >>> from aljax import stopping
    >>> history = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]])
    >>> stopping.kappas(history).round(3).tolist()      # agreement of rounds (0, 1), (1, 2), ...
    [0.5, 1.0, 1.0, 1.0]
    >>> stopping.stabilizing_predictions(history)       # three agreements in a row: stop at round 4
    4

Two families:

* **Stabilizing predictions** (Bloodgood & Vijay-Shanker, "A method for stopping active learning
  based on stabilizing predictions and the need for user-adjustable stopping", CoNLL 2009): Cohen's
  κ between the predicted labels of consecutive rounds on the stop set; stop once the agreement has
  stayed high over a window of rounds (the paper: κ ≥ 0.99 over the last three κ's).
  :func:`stabilizing_predictions` asks every κ of the window to reach the threshold;
  :func:`average_kappa` asks their mean to, which is how we read the paper's rule (we could not
  check its text here). Both stop when every κ of the window reaches the threshold; the mean can
  also stop a little earlier, when one low κ is outweighed by its neighbours.
* **Confidence** (Zhu, Wang & Hovy, "Multi-criteria-based strategy to stop active learning for
  data annotation", COLING 2008; Zhu et al., ACM TSLP 2010): the model's predictive uncertainty
  on the unlabeled (stop) set, measured by the entropy of its predicted distribution (nats).
  :func:`overall_uncertainty` stops once the *mean* entropy over the set falls below a threshold;
  :func:`max_confidence` once the *largest* one does, i.e. once even the most uncertain point
  (the one uncertainty sampling would pick next) is confidently predicted.

Rounds are counted from 0 (the model trained on the initial labels). The history is a NumPy or
JAX array, or a list of per-round arrays (so that a stop set that changed between rounds is
caught): predicted labels ``(rounds, m)`` of an integer dtype, or probabilities ``(rounds, m, C)``
of a floating dtype (rows summing to 1, e.g. ``jax.nn.softmax(logits)``; the κ criteria take
their argmax). Everything here is NumPy on small arrays; nothing is jitted.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

from . import _validate

__all__ = ["average_kappa", "cohen_kappa", "kappas", "max_confidence", "overall_uncertainty",
           "stabilizing_predictions", "stopping_points"]

# How far the rows of a probability history may be from summing to 1 (float32 softmax is far closer).
_SUM_TOLERANCE = 1e-3


# -- argument checks ----------------------------------------------------------------------------


def _stacked(fn: str, arg: str, history: Any) -> np.ndarray:
    """A history as one array ``(rounds, ...)``; per-round arrays must share their shape."""
    if isinstance(history, (list, tuple)):
        if not history:
            raise ValueError(_validate.message(fn, arg, "at least one round", "an empty sequence"))
        rows = []
        for r, row in enumerate(history):
            if getattr(row, "shape", None) is None and not isinstance(row, (list, tuple)):
                raise TypeError(_validate.message(fn, arg, "a sequence of arrays (one per round)",
                                                  f"{type(row).__name__} at round {r}"))
            rows.append(np.asarray(row))
        shapes = [row.shape for row in rows]
        for r, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(_validate.message(
                    fn, arg, "the predictions of every round on the same stop set (one shape)",
                    f"shape {shape} at round {r} and {shapes[0]} at round 0"))
        return np.stack(rows)
    if getattr(history, "shape", None) is None:
        raise TypeError(_validate.message(fn, arg, "an array or a sequence of per-round arrays",
                                          type(history).__name__))
    return np.asarray(history)


def _check_probs(fn: str, arg: str, probs: np.ndarray) -> np.ndarray:
    if not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(_validate.message(fn, arg, "floating probabilities", f"dtype {probs.dtype}"))
    if probs.shape[-1] < 2:
        raise ValueError(_validate.message(fn, arg, "at least 2 classes", f"shape {probs.shape}"))
    if not np.all(np.isfinite(probs)):
        bad = int(np.sum(~np.isfinite(probs)))
        raise ValueError(f"aljax.{fn}: the values of argument `{arg}` contain {bad} NaN/Inf value(s); "
                         "they must be finite.")
    probs = probs.astype(np.float64)
    sums = probs.sum(axis=-1)
    if probs.min() < 0 or np.abs(sums - 1).max() > _SUM_TOLERANCE:
        raise ValueError(_validate.message(
            fn, arg, "probabilities (non-negative, each row summing to 1; softmax logits first)",
            f"values in [{probs.min():.3g}, {probs.max():.3g}] with row sums in [{sums.min():.4g}, {sums.max():.4g}]"))
    return probs


def _check_labels(fn: str, arg: str, labels: np.ndarray, num_classes: int | None) -> np.ndarray:
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(_validate.message(fn, arg, "integer class labels", f"dtype {labels.dtype}"))
    if labels.size and labels.min() < 0:
        raise ValueError(_validate.message(fn, arg, "class labels >= 0", f"the label {int(labels.min())}"))
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(_validate.message(fn, arg, f"class labels < num_classes = {num_classes}",
                                           f"the label {int(labels.max())}"))
    return labels.astype(np.int64)


def _check_num_classes(fn: str, num_classes: Any) -> int | None:
    return None if num_classes is None else _validate.check_int(fn, "num_classes", num_classes, low=1)


def _history(fn: str, history: Any, *, need: str, num_classes: int | None = None) -> np.ndarray:
    """``need="labels"``: ``(rounds, m)`` int64 labels (argmax of probabilities);
    ``need="probs"``: ``(rounds, m, C)`` float64 probabilities."""
    arr = _stacked(fn, "predictions", history)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(_validate.message(fn, "predictions", "at least one round", f"shape {arr.shape}"))
    if need == "probs" or arr.ndim == 3:
        if arr.ndim != 3 and not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(_validate.message(fn, "predictions", "floating probabilities (rounds, m, C) (labels "
                                              "carry no uncertainty)", f"dtype {arr.dtype}, shape {arr.shape}"))
        if arr.ndim != 3:
            raise ValueError(_validate.message(fn, "predictions", "probabilities of shape (rounds, m, C)",
                                               f"shape {arr.shape}"))
        if arr.shape[1] == 0:
            raise ValueError(_validate.message(fn, "predictions", "a non-empty stop set", f"shape {arr.shape}"))
        probs = _check_probs(fn, "predictions", arr)
        return probs if need == "probs" else np.argmax(probs, axis=-1)
    if arr.ndim != 2:
        raise ValueError(_validate.message(fn, "predictions", "labels (rounds, m) or probabilities (rounds, m, C)",
                                           f"shape {arr.shape}"))
    if arr.shape[1] == 0:
        raise ValueError(_validate.message(fn, "predictions", "a non-empty stop set", f"shape {arr.shape}"))
    return _check_labels(fn, "predictions", arr, num_classes)


def _check_threshold(fn: str, threshold: Any, *, high: float | None) -> float:
    expected = "a number in (0, 1]" if high is not None else "a finite number > 0"
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(_validate.message(fn, "threshold", expected, f"{type(threshold).__name__} {threshold!r}"))
    if not (np.isfinite(threshold) and threshold > 0 and (high is None or threshold <= high)):
        raise ValueError(_validate.message(fn, "threshold", expected, threshold))
    return float(threshold)


# -- agreement ----------------------------------------------------------------------------------


def _kappa(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    # κ = (p_o − p_e) / (1 − p_e) with p_o = agreements / m and p_e = Σ_c n_a(c) n_b(c) / m²,
    # computed in integers: κ = (m·agree − Σ n_a n_b) / (m² − Σ n_a n_b).
    m = a.shape[0]
    agree = int(np.count_nonzero(a == b))
    chance = int(np.dot(np.bincount(a, minlength=num_classes), np.bincount(b, minlength=num_classes)))
    if chance == m * m:     # p_e = 1: both predict one and the same class everywhere
        return 1.0
    return (m * agree - chance) / (m * m - chance)


def cohen_kappa(a, b, *, num_classes: int | None = None) -> float:
    """Cohen's κ between two labelings of the same points: ``(p_o − p_e) / (1 − p_e)``, with
    ``p_o`` the fraction of points given the same label and ``p_e`` the agreement expected by
    chance from the two label frequencies (Cohen, 1960).

    Degenerate case: when both labelings put every point in one and the same class, ``p_e = 1``
    and the ratio is 0/0; κ is then defined as 1 (the two labelings agree fully). That is the
    only way ``p_e`` can be 1.

    Args:
      a: ``(m,)`` integer class labels (``>= 0``).
      b: ``(m,)`` integer class labels of the same ``m`` points.
      num_classes: when given, labels must be below it (a check only; κ does not depend on
        classes that neither labeling uses).

    Returns:
      κ, a float in ``[−1, 1]``; 1 for identical labelings, 0 for agreement at chance level.

    Raises:
      TypeError: non-array or non-integer labels, or a ``num_classes`` that is not an int.
      ValueError: labelings of different lengths or shapes (different stop sets), an empty one,
        negative labels or labels ``>= num_classes``.

    Example:
      >>> from aljax import stopping
      >>> stopping.cohen_kappa([0, 0, 1, 1], [0, 0, 1, 0])
      0.5
      >>> stopping.cohen_kappa([2, 2, 2], [2, 2, 2])    # one class everywhere: defined as 1
      1.0
    """
    fn = "stopping.cohen_kappa"
    num_classes = _check_num_classes(fn, num_classes)
    arrays = []
    for arg, x in (("a", a), ("b", b)):
        if getattr(x, "shape", None) is None and not isinstance(x, (list, tuple)):
            raise TypeError(_validate.message(fn, arg, "an array of labels", type(x).__name__))
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(_validate.message(fn, arg, "a 1-D array of labels (m,)", f"shape {x.shape}"))
        if x.shape[0] == 0:
            raise ValueError(_validate.message(fn, arg, "at least one label", "an empty array"))
        arrays.append(_check_labels(fn, arg, x, num_classes))
    a, b = arrays
    if a.shape != b.shape:
        raise ValueError(_validate.message(fn, "b", f"labels of the same {a.shape[0]} points as `a`",
                                           f"{b.shape[0]} labels"))
    return float(_kappa(a, b, int(max(a.max(), b.max())) + 1))


def kappas(predictions, *, num_classes: int | None = None) -> np.ndarray:
    """Cohen's κ between the predictions of each pair of consecutive rounds on the stop set.

    Args:
      predictions: the history: ``(rounds, m)`` integer labels, or ``(rounds, m, C)``
        probabilities (their argmax is taken), or a list of per-round arrays.
      num_classes: when given, labels must be below it.

    Returns:
      ``(rounds − 1,)`` float64 array; entry ``i`` is κ between rounds ``i`` and ``i + 1``.

    Raises:
      TypeError: non-integer labels (a floating 2-D history), or not an array.
      ValueError: rounds of different stop sets (shapes), no round, an empty stop set, negative
        labels, or probabilities with NaN/Inf or rows that do not sum to 1.

    Example:
      >>> from aljax import stopping
      >>> stopping.kappas([[0, 1, 1, 0], [0, 1, 1, 1], [0, 1, 1, 1]]).tolist()
      [0.5, 1.0]
    """
    fn = "stopping.kappas"
    num_classes = _check_num_classes(fn, num_classes)
    labels = _history(fn, predictions, need="labels", num_classes=num_classes)
    classes = int(labels.max()) + 1
    return np.array([_kappa(labels[i], labels[i + 1], classes) for i in range(labels.shape[0] - 1)],
                    np.float64)


# -- criteria -----------------------------------------------------------------------------------


def _first_window(ok: np.ndarray, window: int) -> int | None:
    """The first round ``r`` whose ``window`` κ's (those of rounds ``r − window + 1 .. r``, κ index
    ``r − 1`` being rounds ``(r − 1, r)``) are all ``ok``; None if there is none."""
    run = 0
    for i, good in enumerate(ok):
        run = run + 1 if good else 0
        if run >= window:
            return i + 1
    return None


def stabilizing_predictions(predictions, *, threshold: float = 0.99, window: int = 3) -> int | None:
    """Stabilizing predictions after Bloodgood & Vijay-Shanker (CoNLL 2009), the strict form: stop
    at the first round ``r`` at which each of the last ``window`` κ's, between rounds
    ``(r − window, r − window + 1), ..., (r − 1, r)``, is at least ``threshold``.

    The earliest possible stop is round ``window`` (it needs ``window + 1`` rounds): a shorter
    history never stops. The paper's setting is κ ≥ 0.99 over three consecutive κ's; we read its
    rule as the mean of the window (:func:`average_kappa`), which this strict form never
    precedes.

    Args:
      predictions: the history on the stop set: ``(rounds, m)`` integer labels, ``(rounds, m, C)``
        probabilities (argmax taken), or a list of per-round arrays.
      threshold: κ to reach, in ``(0, 1]``.
      window: number of consecutive κ's that must reach it, an int ``>= 1``.

    Returns:
      The round index (into ``predictions``) at which to stop, or ``None`` if it never would.

    Raises:
      TypeError: non-integer labels, or a ``threshold``/``window`` of the wrong type.
      ValueError: a threshold outside ``(0, 1]``, ``window < 1``, or a history that
        :func:`kappas` refuses (mismatched stop sets, NaN probabilities, ...).

    Example:
      >>> from aljax import stopping
      >>> stable = [[0, 1, 2, 2]] * 3
      >>> stopping.stabilizing_predictions([[0, 0, 0, 1]] + stable, window=2)
      3
      >>> stopping.stabilizing_predictions(stable, window=3) is None    # 3 rounds: 2 κ's only
      True
    """
    fn = "stopping.stabilizing_predictions"
    threshold = _check_threshold(fn, threshold, high=1.0)
    window = _validate.check_int(fn, "window", window, low=1)
    labels = _history(fn, predictions, need="labels")
    k = kappas(labels)
    return _first_window(k >= threshold, window)


def average_kappa(predictions, *, threshold: float = 0.99, window: int = 3) -> int | None:
    """Stabilizing predictions, averaged: stop at the first round ``r >= window`` at which the mean
    of the last ``window`` κ's (rounds ``(r − window, r − window + 1), ..., (r − 1, r)``) is at
    least ``threshold``. This is our reading of the paper's rule (mean κ ≥ 0.99 over three); one
    low κ can be outweighed by high neighbours, so it stops no later than
    :func:`stabilizing_predictions` with the same settings.

    Args:
      predictions: the history on the stop set: ``(rounds, m)`` integer labels, ``(rounds, m, C)``
        probabilities (argmax taken), or a list of per-round arrays.
      threshold: mean κ to reach, in ``(0, 1]``.
      window: number of consecutive κ's averaged, an int ``>= 1``.

    Returns:
      The round index at which to stop, or ``None`` if it never would (always ``None`` with
      fewer than ``window + 1`` rounds).

    Raises:
      TypeError: non-integer labels, or a ``threshold``/``window`` of the wrong type.
      ValueError: a threshold outside ``(0, 1]``, ``window < 1``, or a history that
        :func:`kappas` refuses.

    Example:
      >>> from aljax import stopping
      >>> history = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]]
      >>> stopping.kappas(history).tolist()
      [1.0, 0.5, 1.0, 1.0]
      >>> stopping.average_kappa(history, threshold=0.8, window=3)     # mean(1, 0.5, 1) ≥ 0.8
      3
      >>> stopping.stabilizing_predictions(history, threshold=0.8, window=3) is None   # 0.5 in every window
      True
    """
    fn = "stopping.average_kappa"
    threshold = _check_threshold(fn, threshold, high=1.0)
    window = _validate.check_int(fn, "window", window, low=1)
    k = kappas(_history(fn, predictions, need="labels"))
    for r in range(window, k.shape[0] + 1):
        if np.mean(k[r - window:r]) >= threshold:
            return r
    return None


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of checked probabilities ``(..., C)``; shared with the harness,
    not part of the public API (no checks)."""
    # H(p) = −Σ_c p_c log p_c, with 0 log 0 = 0.
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return np.maximum(-np.sum(probs * logs, axis=-1), 0.0)


def overall_uncertainty(predictions, *, threshold: float = 0.01) -> int | None:
    """Overall uncertainty (Zhu, Wang & Hovy, COLING 2008): stop at the first round at which the
    mean predictive entropy over the stop set, ``(1/m) Σ_i −Σ_c p_ic log p_ic`` (nats), is below
    ``threshold``.

    The entropy is not normalised by ``log C``, as in the paper, so a threshold tuned on a
    two-class task is stricter on a ten-class one. The default, 0.01, is the paper's order of
    magnitude for its few-class text tasks; a deep network's softmax rarely gets that
    confident on unseen data, so expect it to stop late or never and tune it per task.

    Args:
      predictions: ``(rounds, m, C)`` probabilities on the stop set (``jax.nn.softmax`` of the
        logits), or a list of per-round ``(m, C)`` arrays.
      threshold: mean entropy to fall below, a finite number ``> 0`` (nats).

    Returns:
      The round index at which to stop, or ``None`` if it never would.

    Raises:
      TypeError: labels or other non-floating input, or a ``threshold`` that is not a number.
      ValueError: a history that is not ``(rounds, m, C)``, mismatched stop sets, NaN/Inf or
        values that are not probabilities, or ``threshold <= 0``.

    Example:
      >>> import numpy as np
      >>> from aljax import stopping
      >>> sure, unsure = [[0.999, 0.001]] * 4, [[0.6, 0.4]] * 4
      >>> stopping.overall_uncertainty(np.array([unsure, unsure, sure]))
      2
    """
    fn = "stopping.overall_uncertainty"
    threshold = _check_threshold(fn, threshold, high=None)
    probs = _history(fn, predictions, need="probs")
    below = np.flatnonzero(entropy(probs).mean(axis=1) < threshold)
    return int(below[0]) if below.size else None


_MEASURES = ("entropy", "least_confidence")


def max_confidence(predictions, *, threshold: float = 0.001, measure: str = "entropy") -> int | None:
    """Max-confidence (Zhu, Wang & Hovy, COLING 2008): stop at the first round at which the
    *largest* uncertainty over the stop set is below ``threshold``, i.e. once the classifier is
    confident even about the point uncertainty sampling would query next.

    The paper measures uncertainty by the entropy of the predicted distribution (nats; the
    default); ``measure="least_confidence"`` uses ``1 − max_c p_c`` instead, which lies in
    ``[0, 1 − 1/C]`` whatever the number of classes. The default threshold, 0.001, is the paper's
    order of magnitude; on a stop set of hundreds of points a neural network rarely reaches it.

    Args:
      predictions: ``(rounds, m, C)`` probabilities on the stop set, or a list of per-round
        ``(m, C)`` arrays.
      threshold: largest uncertainty to fall below, a finite number ``> 0``.
      measure: ``"entropy"`` or ``"least_confidence"``.

    Returns:
      The round index at which to stop, or ``None`` if it never would.

    Raises:
      TypeError: non-floating input, or a ``threshold`` that is not a number.
      ValueError: as :func:`overall_uncertainty`, or an unknown ``measure``.

    Example:
      >>> import numpy as np
      >>> from aljax import stopping
      >>> round0 = [[0.99999, 0.00001], [0.7, 0.3]]
      >>> round1 = [[0.99999, 0.00001], [0.99999, 0.00001]]
      >>> stopping.max_confidence(np.array([round0, round1]))
      1
    """
    fn = "stopping.max_confidence"
    threshold = _check_threshold(fn, threshold, high=None)
    if measure not in _MEASURES:
        raise ValueError(_validate.message(fn, "measure", "'entropy' or 'least_confidence'", repr(measure)))
    probs = _history(fn, predictions, need="probs")
    uncertainty = entropy(probs) if measure == "entropy" else 1.0 - probs.max(axis=-1)
    below = np.flatnonzero(uncertainty.max(axis=1) < threshold)
    return int(below[0]) if below.size else None


# Every criterion by name, each taking the probability history and its own keywords (defaults: the
# papers' settings), in the order stopping_points reports them.
_CRITERIA: dict[str, Callable[..., int | None]] = {
    "stabilizing_predictions": stabilizing_predictions,
    "average_kappa": average_kappa,
    "overall_uncertainty": overall_uncertainty,
    "max_confidence": max_confidence,
}


def stopping_points(predictions, **options: dict) -> dict[str, int | None]:
    """Every criterion on one history: :func:`stabilizing_predictions`, :func:`average_kappa`,
    :func:`overall_uncertainty` and :func:`max_confidence`, each with its defaults unless
    ``options`` gives keywords for it by name.

    Args:
      predictions: ``(rounds, m, C)`` probabilities on the stop set, or a list of per-round
        ``(m, C)`` arrays (the uncertainty criteria need probabilities).
      **options: ``{criterion name: {keyword: value}}``, e.g.
        ``stabilizing_predictions={"window": 2}``.

    Returns:
      ``{criterion name: round index or None}``, in the order above.

    Raises:
      TypeError: options for a criterion that are not a dict of keywords.
      ValueError: an unknown criterion name in ``options``, or whatever a criterion refuses.

    Example:
      >>> import numpy as np
      >>> from aljax import stopping
      >>> probs = np.array([[[0.6, 0.4], [0.3, 0.7]]] * 5)     # 5 rounds, the same predictions
      >>> stopping.stopping_points(probs)
      {'stabilizing_predictions': 3, 'average_kappa': 3, 'overall_uncertainty': None, 'max_confidence': None}
    """
    fn = "stopping.stopping_points"
    unknown = sorted(set(options) - set(_CRITERIA))
    if unknown:
        raise ValueError(_validate.message(fn, "options", f"criterion names among {sorted(_CRITERIA)}", unknown))
    for name, kw in options.items():
        if not isinstance(kw, dict):
            raise TypeError(_validate.message(fn, name, "a dict of keywords", type(kw).__name__))
    probs = _history(fn, predictions, need="probs")
    return {name: criterion(probs, **options.get(name, {})) for name, criterion in _CRITERIA.items()}
