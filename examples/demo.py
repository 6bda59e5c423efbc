"""Active learning on scikit-learn's digits: BADGE against random sampling.

A Flax MLP (64 → 128 → 10) trained with optax from scratch each round; 20 random labels to start,
20 more per round for 10 rounds, 3 seeds per strategy. Prints a table of test accuracy
(mean ± std over seeds) per label count and writes ``learning_curve.png``.

    python examples/demo.py [--seeds 3] [--rounds 10] [--out learning_curve.png]
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import aljax

INITIAL, PER_ROUND = 20, 20


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


MODEL = MLP()


def make_trainer(max_labels: int, steps: int = 300):
    """A jitted trainer over a labeled set padded to ``max_labels`` rows (compiles once)."""
    optimizer = optax.adamw(3e-3, weight_decay=1e-4)

    @jax.jit
    def train(key, x, y, mask):
        params = MODEL.init(key, x[:1])
        opt_state = optimizer.init(params)

        def loss_fn(p):
            losses = optax.softmax_cross_entropy_with_integer_labels(MODEL.apply(p, x), y)
            return jnp.sum(losses * mask) / jnp.sum(mask)

        def step(_, carry):
            p, s = carry
            grads = jax.grad(loss_fn)(p)
            updates, s = optimizer.update(grads, s, p)
            return optax.apply_updates(p, updates), s

        params, _ = jax.lax.fori_loop(0, steps, step, (params, opt_state))
        return params

    def fit(key, x_lab, y_lab):
        pad = max_labels - len(x_lab)
        x = np.concatenate([x_lab, np.zeros((pad, x_lab.shape[1]), x_lab.dtype)])
        y = np.concatenate([y_lab, np.zeros(pad, y_lab.dtype)])
        mask = np.concatenate([np.ones(len(x_lab)), np.zeros(pad)]).astype(np.float32)
        return train(key, x, y, mask)

    return fit


@jax.jit
def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(MODEL.apply(params, x), -1) == y)


def run(strategy: str, seed: int, data, rounds: int, fit) -> list[float]:
    x_pool, y_pool, x_test, y_test = data
    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(x_pool), INITIAL, replace=False))
    key = jax.random.key(seed)
    accs = []
    for r in range(rounds + 1):
        key, train_key, select_key = jax.random.split(key, 3)
        params = fit(train_key, x_pool[labeled], y_pool[labeled])
        accs.append(float(accuracy(params, x_test, y_test)))
        if r == rounds:
            break
        unlabeled = np.setdiff1d(np.arange(len(x_pool)), labeled)
        if strategy == "badge":
            picks = np.asarray(aljax.badge(params, MODEL.apply, x_pool[unlabeled], PER_ROUND, key=select_key))
        else:
            picks = rng.choice(len(unlabeled), PER_ROUND, replace=False)
        labeled.extend(unlabeled[picks].tolist())
        assert len(set(labeled)) == len(labeled)
    return accs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default="learning_curve.png")
    args = parser.parse_args(argv)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    data = (x_pool, y_pool, x_test, y_test)
    print(f"digits: pool {len(x_pool)}, test {len(x_test)}; JAX on {jax.devices()[0].platform}")
    fit = make_trainer(INITIAL + args.rounds * PER_ROUND)

    start = time.perf_counter()
    curves = {}
    for strategy in ("random", "badge"):
        curves[strategy] = np.array([run(strategy, seed, data, args.rounds, fit) for seed in range(args.seeds)])
    elapsed = time.perf_counter() - start

    labels = INITIAL + PER_ROUND * np.arange(args.rounds + 1)
    print(f"\ntest accuracy, mean ± std over {args.seeds} seeds")
    print(f"{'labels':>6} | " + " | ".join(f"{s:>15}" for s in curves))
    for i, n in enumerate(labels):
        cells = [f"{curves[s][:, i].mean():.3f} ± {curves[s][:, i].std():.3f}" for s in curves]
        print(f"{n:>6} | " + " | ".join(f"{c:>15}" for c in cells))
    for s, c in curves.items():
        print(f"mean accuracy over the curve, {s:>6}: {c.mean():.4f}")
    print(f"done in {elapsed:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s, c in curves.items():
        mean, std = c.mean(0), c.std(0)
        ax.plot(labels, mean, marker="o", label=s)
        ax.fill_between(labels, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("labeled examples")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits, Flax MLP, {args.seeds} seeds (mean ± std)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
