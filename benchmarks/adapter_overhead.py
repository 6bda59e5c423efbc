"""Overhead of the torch adapter: torch forward alone vs forward + DLPack hand-over + ``Factored``.

For an MLP and a tiny BERT (random weights, built offline from a config), batch 256:

* ``forward``: the torch model over the pool in batches (eval, ``no_grad``), logits concatenated;
* ``adapter``: ``aljax.torch_adapter.last_layer_embedding`` over the same pool (forward with the
  final-Linear hook, features and logits gathered into ``(n, ...)`` tensors, DLPack hand-over,
  ``a = p − onehot`` in JAX, NaN/Inf check), ``block_until_ready`` on the result.

``h write`` is the memory floor of the hand-over, timed alone: the ``(n, D)`` feature matrix
written batch by batch into fresh memory, as the adapter does (the forward pass alone never
materialises it).

Both are warmed up first; the adapter's first call (which compiles the small JAX kernels) is timed
on its own. Reported: medians of ``--repeats`` runs and the ratio adapter / forward from the same
run, and ``paired``: the median of the per-round ratios (each round times one forward pass and
one adapter call back to back, so load from other processes mostly hits both).

On CPU, glibc's allocator trims the heap top and hands large blocks back to the kernel, and the
pattern depends on every allocation before it: the same torch loop can page-fault on every pass
in one process state and not at all in another. ``faults`` reports the minor page faults per call
of each; ``--steady-malloc`` turns trimming off (``mallopt(M_TRIM_THRESHOLD)``,
``mallopt(M_MMAP_THRESHOLD, 32 MiB)``) so both measure the work itself rather than the
allocator's state. Results go to ``--json`` (default
``benchmarks/results/adapter_overhead-<backend>.json``, with the run's provenance: commit, versions
of aljax, jax and torch, device, date, command; see ``_provenance.py``); ``benchmarks/report.py``
turns it into RESULTS.md's table.

    python benchmarks/adapter_overhead.py --repeats 7
    python benchmarks/adapter_overhead.py --steady-malloc
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import torch  # noqa: E402

import aljax.torch_adapter as ta  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _provenance  # noqa: E402


def forward_only(model, pool, batch_size):
    model.eval()
    outs = []
    with torch.no_grad():
        if isinstance(pool, dict):
            n = next(iter(pool.values())).shape[0]
            for start in range(0, n, batch_size):
                out = model(**{k: v[start:start + batch_size] for k, v in pool.items()})
                outs.append(getattr(out, "logits", out))
        else:
            for start in range(0, pool.shape[0], batch_size):
                outs.append(model(pool[start:start + batch_size]))
    return torch.cat(outs)


def with_adapter(model, pool, batch_size):
    emb = ta.last_layer_embedding(model, pool, batch_size=batch_size)
    return jax.block_until_ready(emb)


def write_floor(model, pool, batch_size):
    """The memory floor of the hand-over: the (n, D) feature matrix written into fresh memory, batch
    by batch (the adapter must materialise it; the forward pass alone never does)."""
    emb = ta.last_layer_embedding(model, pool[:batch_size] if not isinstance(pool, dict) else
                                  {k: v[:batch_size] for k, v in pool.items()}, batch_size=batch_size)
    n = next(iter(pool.values())).shape[0] if isinstance(pool, dict) else pool.shape[0]
    piece = torch.randn(batch_size, emb.h.shape[1])

    def run():
        out = torch.empty(n, piece.shape[1])
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            out[start:start + rows].copy_(piece[:rows])
        return out

    return run


def timed(fn):
    """(seconds, minor page faults) of one call."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def steady_malloc():
    """glibc: never trim the heap, serve blocks up to 32 MiB from it (no mmap/munmap per batch)."""
    if not sys.platform.startswith("linux"):
        raise SystemExit("--steady-malloc needs glibc (Linux)")
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 1 << 25)):
        raise SystemExit("mallopt failed")


def mlp_case(args):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(args.mlp_in, args.mlp_hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.mlp_hidden, args.mlp_hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.mlp_hidden, args.classes))
    pool = torch.randn(args.mlp_n, args.mlp_in)
    return f"MLP {args.mlp_in}-{args.mlp_hidden}-{args.mlp_hidden}-{args.classes}, n={args.mlp_n}", model, pool


def bert_case(args):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=args.bert_hidden, num_hidden_layers=args.bert_layers,
                        num_attention_heads=4, intermediate_size=4 * args.bert_hidden, num_labels=args.classes,
                        max_position_embeddings=max(64, args.bert_seq))
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(5, 1000, (args.bert_n, args.bert_seq))
    mask = torch.ones_like(ids)
    lengths = torch.randint(args.bert_seq // 4, args.bert_seq + 1, (args.bert_n,))
    mask[torch.arange(args.bert_seq)[None, :] >= lengths[:, None]] = 0
    ids = ids * mask
    name = (f"tiny BERT (hidden {args.bert_hidden}, {args.bert_layers} layers, seq {args.bert_seq}), "
            f"n={args.bert_n}")
    return name, model, {"input_ids": ids, "attention_mask": mask}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--mlp-n", type=int, default=16384)
    parser.add_argument("--mlp-in", type=int, default=256)
    parser.add_argument("--mlp-hidden", type=int, default=512)
    parser.add_argument("--bert-n", type=int, default=1024)
    parser.add_argument("--bert-seq", type=int, default=64)
    parser.add_argument("--bert-hidden", type=int, default=128)
    parser.add_argument("--bert-layers", type=int, default=2)
    parser.add_argument("--skip-bert", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared CPU)")
    parser.add_argument("--steady-malloc", action="store_true",
                        help="turn glibc heap trimming off, so page faults do not depend on the process's history")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/adapter_overhead-<backend>.json)")
    args = parser.parse_args()
    provenance = _provenance.collect()
    torch.set_num_threads(args.threads)
    if args.steady_malloc:
        steady_malloc()

    print(f"JAX devices: {jax.devices()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch_size}; medians of {args.repeats} runs; "
          f"{'steady' if args.steady_malloc else 'default'} malloc")
    cases = [mlp_case(args)] + ([] if args.skip_bert else [bert_case(args)])
    data = dict(provenance=provenance, benchmark="adapter_overhead", batch_size=args.batch_size,
                repeats=args.repeats, torch_threads=torch.get_num_threads(), steady_malloc=args.steady_malloc,
                load_before=list(os.getloadavg()), results=[])
    print(f"{'model':<58} {'forward':>9} {'adapter':>9} {'ratio':>6} {'paired':>6} {'faults f/a':>11} "
          f"{'1st call':>9} {'h write':>8}")
    for name, model, pool in cases:
        forward_only(model, pool, args.batch_size)                 # warm up torch
        start = time.perf_counter()
        with_adapter(model, pool, args.batch_size)                 # first call: compiles the JAX side
        first = time.perf_counter() - start
        # Interleave the two measurements so that load from other processes hits both alike.
        floor = write_floor(model, pool, args.batch_size)
        t_forward, t_adapter, t_floor = [], [], []
        for _ in range(args.repeats):
            t_forward.append(timed(lambda: forward_only(model, pool, args.batch_size)))
            t_adapter.append(timed(lambda: with_adapter(model, pool, args.batch_size)))
            t_floor.append(timed(floor)[0])
        forward, adapter = (statistics.median(t for t, _ in ts) for ts in (t_forward, t_adapter))
        paired = statistics.median(a / f for (a, _), (f, _) in zip(t_adapter, t_forward))
        faults = "/".join(f"{statistics.median(c for _, c in ts):.0f}" for ts in (t_forward, t_adapter))
        print(f"{name:<58} {forward * 1e3:8.1f}ms {adapter * 1e3:8.1f}ms {adapter / forward:6.3f} {paired:6.3f} "
              f"{faults:>11} {first * 1e3:8.1f}ms {statistics.median(t_floor) * 1e3:6.1f}ms", flush=True)
        data["results"].append(dict(
            model=name, forward_ms=forward * 1e3, adapter_ms=adapter * 1e3, ratio=adapter / forward, paired=paired,
            forward_faults=statistics.median(c for _, c in t_forward),
            adapter_faults=statistics.median(c for _, c in t_adapter),
            first_call_ms=first * 1e3, h_write_ms=statistics.median(t_floor) * 1e3))
    data["load_after"] = list(os.getloadavg())
    path = args.json or HERE / "results" / f"adapter_overhead-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
