"""Training throughput, memory and quality on Loghub lines, optionally against the plain baseline.

    python benchmarks/train.py --data tests/data/loghub2k --lines 20000 --epochs 1 --json

Protocol: the raw lines of every *_2k.log in --data are cycled to --lines, masked, split 80/20 by
a seeded uniform draw per line, deduplicated, and trained on. logs_per_s counts input lines of
the train split (times epochs) per second of training; rows_per_s counts their masked rows (one
per token). --baseline also trains the same model, from the same initial weights, the plain way
(every line repeated, one padded-to-64 sequence per row, batch 32 like Opni) on the same split.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.validate.evaluate import evaluate  # noqa: E402
from ops.mask.masking import Masker  # noqa: E402
from ops.train.loop import TrainConfig, train  # noqa: E402
from ops.train.vocab import Vocab  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_lines(folder: Path, n: int) -> list[str]:
    files = sorted(folder.glob("*/*_2k.log")) + sorted(folder.glob("*_2k.log"))
    raw = [line for f in files for line in f.read_text(errors="replace").splitlines() if line.strip()]
    if not raw:
        raise SystemExit(f"no *_2k.log files under {folder}")
    return [raw[i % len(raw)] for i in range(n)]


def run(args) -> dict:
    lines = load_lines(Path(args.data), args.lines)
    t = time.perf_counter()
    masker = Masker()
    masked = [masker.mask(line) for line in lines]
    mask_s = time.perf_counter() - t
    in_train = np.random.default_rng(args.seed).random(len(masked)) < 0.8
    train_masked = [m for m, keep in zip(masked, in_train) if keep]
    train_set = list(Counter(train_masked).items())
    val_set = list(Counter(m for m, keep in zip(masked, in_train) if not keep).items())
    vocab = Vocab.build(train_set)

    base = dict(epochs=args.epochs, seed=args.seed, device=args.device, compile=args.compile)
    cfg = TrainConfig(**base, **({"batch_size": args.batch_size} if args.batch_size else {}),
                      **({"spread": args.spread} if args.spread is not None else {}))
    res = train(train_set, vocab, cfg)
    t = time.perf_counter()
    val = evaluate(res.model, vocab, val_set, top_k=args.top_k)
    out = {
        "logs_per_s": round(res.logs_per_s, 1),
        "rows_per_s": round(res.rows_per_s, 1),
        "computed_rows_per_s": round(res.computed_rows_per_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "val_top_k_accuracy": round(val["top_k_accuracy"], 4),
        "train_s": round(res.train_s, 2),
        "device": res.device,
        "amp": res.extra.get("amp"),
        "torch_threads": torch.get_num_threads(),
        "top_k": args.top_k,
        "epochs": args.epochs,
        "batch_size_rows": cfg.batch_size,
        "steps": res.steps,
        "train_loss": [round(x, 4) for x in res.losses],
        "lines": len(lines),
        "train_lines": len(train_masked),
        "train_distinct": len(train_set),
        "train_rows": res.n_rows,
        "val_lines": val["n_lines"],
        "val_distinct": val["n_distinct"],
        "vocab_size": len(vocab),
        "mask_s": round(mask_s, 2),
        "eval_s": round(time.perf_counter() - t, 2),
    }
    if args.baseline:
        capped = args.baseline_lines is not None and args.baseline_lines < len(train_masked)
        base_set = list(Counter(train_masked[: args.baseline_lines] if capped else train_masked).items())
        bcfg = TrainConfig(**base, batch_size=args.baseline_batch_size, dedup=False, pad_to_max=True, factored=False)
        bres = train(base_set, vocab, bcfg)
        bval = evaluate(bres.model, vocab, val_set, top_k=args.top_k)
        out.update({
            "baseline_logs_per_s": round(bres.logs_per_s, 1),
            "baseline_rows_per_s": round(bres.rows_per_s, 1),
            "baseline_val_top_k_accuracy": round(bval["top_k_accuracy"], 4),
            "baseline_train_s": round(bres.train_s, 2),
            "baseline_train_lines": bres.n_lines,
            "baseline_capped": capped,
            "baseline_batch_size_rows": bcfg.batch_size,
            "baseline_steps": bres.steps,
            "baseline_train_loss": [round(x, 4) for x in bres.losses],
            "peak_rss_mb_with_baseline": round(peak_rss_mb(), 1),
            "speedup_logs_per_s": round(res.logs_per_s / bres.logs_per_s, 1),
        })
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "tests" / "data" / "loghub2k"))
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="masked rows per step (default: TrainConfig's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread", type=float, default=None, help="TrainConfig.spread (default: TrainConfig's)")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--compile", action="store_true", help="torch.compile the forward (GPU)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=False,
                   help="also train the plain un-deduplicated pad-to-64 way (slow on CPU)")
    p.add_argument("--baseline-lines", type=int, default=None, help="cap the baseline's train lines")
    p.add_argument("--baseline-batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>30}: {v}")


if __name__ == "__main__":
    main()
