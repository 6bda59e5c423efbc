"""Learning-curve plots (matplotlib, an optional extra imported only when called)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from . import _validate
from ._simulate import check_runs, stack_curves, relative_auc


def plot_learning_curves(results_by_strategy: Mapping[str, Sequence[Mapping]], path: str | os.PathLike | None = None,
                         *, title: str | None = None, ylabel: str = "test accuracy", baseline: str | None = "random"):
    """Plot learning curves: the mean over seeds per strategy with a ± one standard deviation band.

    When ``baseline`` is among the strategies, each legend entry also carries its area under the
    curve relative to the baseline (mean ± std over seeds, see :func:`aljax.relative_auc`).
    matplotlib is imported only here (``pip install aljax[examples]``); with a ``path`` the Agg
    backend is used and the figure is written and closed.

    Args:
      results_by_strategy: ``{strategy name: [simulate() result per seed]}``; the runs of a
        strategy must share their label counts.
      path: where to save the figure (any format matplotlib infers from the suffix), or ``None``
        to return the open figure.
      title: the axes title.
      ylabel: the y-axis label.
      baseline: the strategy to report relative AUCs against, or ``None``.

    Returns:
      The ``path`` written (as a str), or the matplotlib ``Figure`` when ``path`` is ``None``.

    Example:
      >>> import aljax, tempfile, os
      >>> runs = {"random": [{"seed": s, "labels": [10, 20], "metrics": [0.5, 0.6 + s / 100]} for s in range(3)]}
      >>> out = aljax.plot_learning_curves(runs, os.path.join(tempfile.mkdtemp(), "curves.png"))
      >>> out.endswith("curves.png")
      True
    """
    fn = "plot_learning_curves"
    if not isinstance(results_by_strategy, Mapping) or not results_by_strategy:
        raise ValueError(_validate.message(fn, "results_by_strategy", "a non-empty dict {name: [results]}",
                                           type(results_by_strategy).__name__))
    runs = {name: check_runs(fn, value, f"results_by_strategy[{name!r}]")
            for name, value in results_by_strategy.items()}
    try:
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("aljax.plot_learning_curves needs matplotlib: pip install matplotlib") from None
    rel = relative_auc(runs, baseline=baseline) if baseline is not None and baseline in runs else None

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, rs in runs.items():
        labels, metrics = stack_curves(rs)
        mean, std = metrics.mean(axis=0), metrics.std(axis=0, ddof=1) if len(rs) > 1 else np.zeros(labels.size)
        label = name
        if rel is not None and name != baseline:
            label = f"{name} (AUC/{baseline} {rel[name]['mean']:.3f} ± {rel[name]['std']:.3f})"
        line, = ax.plot(labels, mean, marker="o", markersize=2.5, linewidth=1.4, label=label)
        ax.fill_between(labels, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    seeds = sorted({len(rs) for rs in runs.values()})
    ax.set_xlabel("labeled examples")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else f"mean ± std over {'/'.join(map(str, seeds))} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return os.fspath(path)
