"""Scoring throughput of ops.validate.scoring.Scorer on the Loghub lines.

    python benchmarks/score.py --data tests/data/loghub2k [--epochs 1] [--repeats 3]

A small model is trained first (untimed) on the raw lines of every <S>/<S>_2k.log in --data,
masked with the default rules. Then the same lines (14,000 for the 7 systems) are scored with a
fresh Scorer (cold cache: every raw line masked, every distinct masked line through the model)
and again with the warm scorer (masking only: all scores come from the cache). Single process,
torch limited to --threads threads; the median of --repeats runs is reported.

Prints JSON: {logs_per_s (cold, the headline), warm_logs_per_s, distinct, lines, mask_s, model_s,
...}. Opni's figure on this machine kind is ~69 logs/s (2,000 BGL lines, unique masked lines
only), so the target is 100x that: 6,900 logs/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.register.artifact import Artifact  # noqa: E402
from ops.mask.masking import Masker  # noqa: E402
from ops.validate.scoring import Scorer  # noqa: E402
from ops.train.loop import TrainConfig, train  # noqa: E402
from ops.train.vocab import Vocab  # noqa: E402

OPNI_LOGS_PER_S = 69.0


def load_lines(folder: Path) -> list[str]:
    files = sorted(folder.glob("*/*_2k.log")) + sorted(folder.glob("*_2k.log"))
    return [line for f in files for line in f.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "loghub2k")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the (untimed) model training")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always one JSON object")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = load_lines(args.data)
    if not lines:
        print(f"error: no *_2k.log lines under {args.data}", file=sys.stderr)
        return 2
    masker = Masker()
    counts = Counter(masker.mask(line) for line in lines)
    vocab = Vocab.build(counts.items())
    result = train(counts.items(), vocab, TrainConfig(epochs=args.epochs, device="cpu"))
    artifact = Artifact(result.model, vocab, masker.rules, {}, {"top_k": 50, "threshold": 0.7}, {})

    cold, warm, mask_s, model_s = [], [], [], []
    for _ in range(args.repeats):
        scorer = Scorer(artifact)
        t0 = time.perf_counter()
        masked = [scorer.masker.mask(line) for line in lines]
        t1 = time.perf_counter()
        scorer.score_masked(masked)
        t2 = time.perf_counter()
        mask_s.append(t1 - t0)
        model_s.append(t2 - t1)
        scorer.clear_cache()
        t0 = time.perf_counter()
        out = scorer.score(lines)  # the public path, cold cache
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scorer.score(lines)        # warm: every masked line cached
        warm.append(time.perf_counter() - t0)
    n = len(lines)
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print(json.dumps({
        "logs_per_s": round(n / cold_s), "warm_logs_per_s": round(n / warm_s), "lines": n,
        "distinct": len(counts), "flagged": sum(s.anomaly for s in out),
        "cold_s": round(cold_s, 4), "warm_s": round(warm_s, 4),
        "mask_s": round(statistics.median(mask_s), 4), "model_s": round(statistics.median(model_s), 4),
        "distinct_per_s_model": round(len(counts) / statistics.median(model_s)),
        "vs_opni": round(n / cold_s / OPNI_LOGS_PER_S, 1), "threads": args.threads, "repeats": args.repeats,
        "train_epochs": args.epochs, "vocab": len(vocab),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
