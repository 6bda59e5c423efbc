"""Progress bars (aljax._progress): what they count, when they show, and that they never change picks.

A recording stand-in for ``tqdm.auto.tqdm`` captures every bar a call opens (its description,
total, the units counted and whether it was closed), so the tests check the counts rather than
terminal output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aljax
from aljax import _progress

tqdm_auto = pytest.importorskip("tqdm.auto")


class _Recorder:
    bars: list = []

    def __init__(self, total=None, desc="", unit="", delay=0.0, **_):
        self.total, self.desc, self.unit, self.delay, self.n, self.closed = total, desc, unit, delay, 0, False
        self.start_t = 0.0
        _Recorder.bars.append(self)

    def update(self, n=1):
        self.n += n

    def refresh(self):
        pass

    def _time(self):
        return 0.0

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    _Recorder.bars = []
    monkeypatch.setattr(tqdm_auto, "tqdm", _Recorder)
    return _Recorder.bars


W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
PARAMS = (W1, W2)


def apply_fn(p, x):
    return jnp.tanh(x @ p[0]) @ p[1]


POOL = jax.random.normal(jax.random.key(1), (700, 4))
FRONT_DOORS = ["badge", "bait", "vessal", "coreset", "margin", "entropy", "least_confidence", "random_sample"]


@pytest.mark.parametrize("name", FRONT_DOORS)
def test_bars_never_change_the_picks(name, bars):
    fn = getattr(aljax, name)
    on = fn(PARAMS, apply_fn, POOL, 7, key=3, batch_size=128, progress=True)
    off = fn(PARAMS, apply_fn, POOL, 7, key=3, batch_size=128, progress=False)
    default = fn(PARAMS, apply_fn, POOL, 7, key=3, batch_size=128)
    np.testing.assert_array_equal(np.asarray(on), np.asarray(off))
    np.testing.assert_array_equal(np.asarray(on), np.asarray(default))
    assert all(bar.closed for bar in bars), "a bar was left open"


@pytest.mark.parametrize("name", ["badge", "bait", "coreset", "margin"])
def test_the_forward_pass_bar_counts_every_row_once(name, bars):
    getattr(aljax, name)(PARAMS, apply_fn, POOL, 5, batch_size=128, progress=True)
    passes = [bar for bar in bars if bar.desc == f"{name}: forward pass"]
    assert passes and passes[0].total == POOL.shape[0] and passes[0].n == POOL.shape[0]
    assert passes[0].delay == 0.0  # progress=True: shown at once


@pytest.mark.parametrize("name", ["badge", "bait", "coreset"])
def test_the_selection_bar_completes_with_k_picks(name, bars):
    getattr(aljax, name)(PARAMS, apply_fn, POOL, 6, progress=True)
    selecting = [bar for bar in bars if bar.desc == f"{name}: selecting"]
    assert len(selecting) == 1 and selecting[0].total == 6 and selecting[0].n == 6


def test_an_iterable_pool_counts_rows_without_a_total(bars):
    batches = (np.asarray(POOL[i:i + 150]) for i in range(0, 700, 150))
    aljax.badge(PARAMS, apply_fn, batches, 5, batch_size=128, progress=True)
    forward = next(bar for bar in bars if bar.desc == "badge: forward pass")
    assert forward.total is None and forward.n == 700


def test_the_vessal_stream_bar_counts_the_stream(bars):
    aljax.vessal(PARAMS, apply_fn, POOL, 5, progress=True)
    stream = next(bar for bar in bars if bar.desc == "vessal: stream")
    assert stream.total == 700 and stream.n == 700


def test_active_sampler_select_shows_its_bars(bars):
    sampler = aljax.ActiveSampler("classification", (PARAMS, apply_fn), 5, strategy="badge", progress=True)
    sampler.select(POOL)
    assert {bar.desc for bar in bars} >= {"ActiveSampler.select: forward pass", "ActiveSampler.select: selecting"}


def test_off_and_default_off_a_terminal_open_no_bar(bars, monkeypatch):
    aljax.badge(PARAMS, apply_fn, POOL, 5, progress=False)
    monkeypatch.setattr(_progress, "_terminal", lambda: False)
    aljax.badge(PARAMS, apply_fn, POOL, 5)
    assert bars == []


def test_default_on_a_terminal_shows_bars_after_a_delay(bars, monkeypatch):
    monkeypatch.setattr(_progress, "_terminal", lambda: True)
    aljax.badge(PARAMS, apply_fn, POOL, 5)
    assert bars and all(bar.delay == _progress.DELAY > 0 for bar in bars)


def test_simulate_keeps_the_strategies_quiet_unless_asked(bars, monkeypatch):
    """Inside simulate (its own bar counts rounds) a strategy's default stays off even on a
    terminal; a strategy that says progress=True still shows."""
    monkeypatch.setattr(_progress, "_terminal", lambda: True)
    with _progress.scope("simulate", False):
        aljax.badge(PARAMS, apply_fn, POOL, 5)
        assert bars == []
        aljax.badge(PARAMS, apply_fn, POOL, 5, progress=True)
    assert bars


def test_the_torch_forward_pass_counts_rows(bars):
    torch = pytest.importorskip("torch")
    import aljax.torch_adapter as ta

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(300, 4)
    on = ta.badge(net, x, 5, batch_size=64, progress=True)
    off = ta.badge(net, x, 5, batch_size=64, progress=False)
    np.testing.assert_array_equal(np.asarray(on), np.asarray(off))
    forward = next(bar for bar in bars if bar.desc == "torch_adapter.badge: forward pass")
    assert forward.total == 300 and forward.n == 300


def test_progress_true_without_tqdm_is_refused_before_any_work(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError("no tqdm here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.raises(ImportError, match="progress=True needs tqdm"):
        aljax.badge(PARAMS, apply_fn, POOL, 5, progress=True)
