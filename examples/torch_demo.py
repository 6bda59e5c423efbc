"""A torch MLP on scikit-learn's digits: rounds of BADGE through ``aljax.torch_adapter`` vs random.

The model is plain torch; aljax only sees it through the adapter: each round the pool is run in
torch, the final Linear layer's input and the logits are handed to JAX through DLPack, and BADGE
(k-means++ over the factored gradient embedding) picks the next points to label.

    python examples/torch_demo.py
    python examples/torch_demo.py --rounds 8 --seeds 5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import aljax
import aljax.torch_adapter as ta


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train(x, y, seed: int, epochs: int) -> torch.nn.Module:
    model = make_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run(strategy: str, data, seed: int, args) -> list[float]:
    x_pool, y_pool, x_test, y_test = data
    rng = np.random.default_rng(seed)
    pool = aljax.LabelPool(len(x_pool))
    pool = pool.label(rng.choice(len(x_pool), args.initial, replace=False))
    accuracies = []
    for round_ in range(args.rounds + 1):
        labeled = torch.from_numpy(np.array(pool.labeled))
        model = train(x_pool[labeled], y_pool[labeled], seed, args.epochs)
        accuracies.append(accuracy(model, x_test, y_test))
        if round_ == args.rounds:
            break
        unlabeled = pool.unlabeled
        candidates = x_pool[torch.from_numpy(np.array(unlabeled))]
        if strategy == "badge":
            picks = ta.badge(model, candidates, args.per_round, key=seed * 1000 + round_)
        else:
            picks = ta.random_sample(model, candidates, args.per_round, key=seed * 1000 + round_)
        pool = pool.label(unlabeled[np.asarray(picks)])
    return accuracies


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_pool, x_test, y_pool, y_test = train_test_split(x, digits.target, test_size=0.3, random_state=0,
                                                      stratify=digits.target)
    data = (torch.from_numpy(x_pool), torch.from_numpy(y_pool), torch.from_numpy(x_test), torch.from_numpy(y_test))

    results = {s: np.array([run(s, data, seed, args) for seed in range(args.seeds)]) for s in ("random", "badge")}
    labels = [args.initial + r * args.per_round for r in range(args.rounds + 1)]
    print(f"Test accuracy (mean of {args.seeds} seeds), torch MLP on digits, {args.per_round} labels per round")
    print(f"{'labels':>7} {'random':>8} {'BADGE':>8} {'gain':>7}")
    for i, n_labels in enumerate(labels):
        r, b = results["random"][:, i].mean(), results["badge"][:, i].mean()
        print(f"{n_labels:>7} {r:8.3f} {b:8.3f} {b - r:+7.3f}")
    mean_gain = (results["badge"][:, 1:] - results["random"][:, 1:]).mean()
    print(f"mean gain over the selection rounds: {mean_gain:+.3f}")


if __name__ == "__main__":
    main()
