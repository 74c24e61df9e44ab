"""Quality of the product's own NuLog ops on Loghub: template grouping accuracy and BGL anomalies.

    python benchmarks/quality.py --data ../shared/data/loghub2k --json [--epochs N] [--seed S]

Protocols (see /work/shared/BENCHMARKS.md):

* Grouping accuracy, per system present in --data (<S>/<S>_2k.log_structured_corrected.csv):
  messages are the Content column, truth the EventTemplate column. A model is trained on the
  system's 2,000 messages exactly as the product does (Masker -> Vocab.build -> ops.train.train),
  templates come from ops.templates, and a line is correct when the set of lines sharing its
  predicted template equals the set sharing its true template.
* BGL anomaly detection, when BGL/BGL_2k.log is present: a line is an anomaly when its first field
  is not "-"; the message is the line without that field (the whole rest of the line: header
  fields and Content, as a deployment would see it). Train on the first 1,600 messages, all of
  them, unlabelled; score the last 400 with ops.scoring.Scorer (top-k 50, threshold 0.7: the
  defaults); report P/R/F1 at the threshold and the best F1 over all thresholds.

Nothing here is tuned per system: every system gets the same epochs, seed, k and rules.
Output with --json: {"systems": {"<name>": {"grouping_accuracy": ...}, ...}, "bgl": {...}}.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.artifact import Artifact  # noqa: E402
from ops.masking import Masker  # noqa: E402
from ops.scoring import DEFAULT_THRESHOLD, DEFAULT_TOP_K, Scorer  # noqa: E402
from ops.templates import line_templates  # noqa: E402
from ops.train import TrainConfig, train  # noqa: E402
from ops.vocab import Vocab  # noqa: E402

DEFAULT_EPOCHS = 10


def read_structured(path: Path) -> tuple[list[str], list[str]]:
    """(Content, EventTemplate) columns of a Loghub *_structured_corrected.csv."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    return [r["Content"] for r in rows], [r["EventTemplate"] for r in rows]


def grouping_accuracy(predicted: list[str], truth: list[str]) -> float:
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} lines")
    if not truth:
        return float("nan")
    pred_groups: dict[str, set] = defaultdict(set)
    true_groups: dict[str, set] = defaultdict(set)
    for i, (p, t) in enumerate(zip(predicted, truth)):
        pred_groups[p].add(i)
        true_groups[t].add(i)
    return sum(pred_groups[p] == true_groups[t] for p, t in zip(predicted, truth)) / len(truth)


def train_artifact(messages: list[str], epochs: int, seed: int, top_k: int = DEFAULT_TOP_K,
                   threshold: float = DEFAULT_THRESHOLD) -> tuple[Artifact, dict]:
    """Train like the product (default masking rules, vocabulary, NuLog defaults) -> in-memory artifact."""
    masker = Masker()
    counts = Counter(masker.mask(m) for m in messages)
    vocab = Vocab.build(counts.items())
    cfg = TrainConfig(epochs=epochs, seed=seed, device="cpu")
    result = train(counts.items(), vocab, cfg)
    artifact = Artifact(result.model, vocab, masker.rules, {"model": {}, "train": {}},
                        {"top_k": top_k, "threshold": threshold}, {})
    info = {"train_s": round(result.train_s, 2), "final_loss": round(result.losses[-1], 4) if result.losses else None,
            "vocab": len(vocab), "distinct_masked": len(counts)}
    return artifact, info


def system_quality(folder: Path, name: str, epochs: int, seed: int) -> dict:
    messages, truth = read_structured(folder / name / f"{name}_2k.log_structured_corrected.csv")
    masker = Masker()
    masking_only = grouping_accuracy([masker.mask(m) for m in messages], truth)
    artifact, info = train_artifact(messages, epochs, seed)
    t0 = time.perf_counter()
    predicted = line_templates(artifact, messages)
    parse_s = time.perf_counter() - t0
    return {"grouping_accuracy": round(grouping_accuracy(predicted, truth), 4),
            "masking_only_accuracy": round(masking_only, 4),
            "templates": len(set(predicted)), "true_templates": len(set(truth)),
            "lines": len(messages), "parse_s": round(parse_s, 3), **info}


def prf(flagged: list[bool], labels: list[bool]) -> tuple[float, float, float]:
    tp = sum(f and y for f, y in zip(flagged, labels))
    fp = sum(f and not y for f, y in zip(flagged, labels))
    fn = sum(y and not f for f, y in zip(flagged, labels))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def read_bgl(path: Path) -> tuple[list[str], list[bool]]:
    messages, labels = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        label, _, message = line.partition(" ")
        labels.append(label != "-")
        messages.append(message)
    return messages, labels


def bgl_quality(path: Path, epochs: int, seed: int, n_train: int = 1600) -> dict:
    messages, labels = read_bgl(path)
    train_msgs, test_msgs, test_labels = messages[:n_train], messages[n_train:], labels[n_train:]
    artifact, info = train_artifact(train_msgs, epochs, seed)
    scorer = Scorer(artifact)
    scored = scorer.score(test_msgs)
    scores = [s.score for s in scored]
    p, r, f1 = prf([s.anomaly for s in scored], test_labels)
    best = (0.0, None)
    for t in sorted(set(scores)) + [1.0 + 1e-9]:  # anomaly: score < t
        f = prf([s < t for s in scores], test_labels)[2]
        if f > best[0]:
            best = (f, t)
    train_masked = {scorer.masker.mask(m) for m in train_msgs}
    novel_normal = sum(1 for s, y in zip(scored, test_labels) if not y and s.masked not in train_masked)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "best_f1": round(best[0], 4),
            "best_threshold": None if best[1] is None else round(min(best[1], 1.0), 4),
            "threshold": scorer.threshold, "top_k": scorer.top_k, "flagged": sum(s.anomaly for s in scored),
            "test_lines": len(test_msgs), "test_anomalies": sum(test_labels),
            "novel_masked_normal_lines": novel_normal, "train_anomalies_unlabelled": sum(labels[:n_train]),
            **info}


def systems_in(folder: Path) -> list[str]:
    return sorted(p.parent.name for p in folder.glob("*/*_2k.log_structured_corrected.csv")
                  if p.name == f"{p.parent.name}_2k.log_structured_corrected.csv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="a loghub2k-style folder (any subset of systems)")
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs (default {DEFAULT_EPOCHS})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--systems", help="comma-separated subset of the systems in --data (default: all)")
    ap.add_argument("--no-bgl", action="store_true", help="skip the BGL anomaly protocol")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    names = systems_in(args.data)
    if args.systems:
        wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
        names = [n for n in names if n in wanted]
    out: dict = {"systems": {}, "bgl": None}
    for name in names:
        out["systems"][name] = system_quality(args.data, name, args.epochs, args.seed)
        if not args.json:
            print(f"{name}: {out['systems'][name]}", file=sys.stderr)
    bgl = args.data / "BGL" / "BGL_2k.log"
    if bgl.is_file() and not args.no_bgl:
        out["bgl"] = bgl_quality(bgl, args.epochs, args.seed)
    out["config"] = {"epochs": args.epochs, "seed": args.seed, "top_k": DEFAULT_TOP_K, "threshold": DEFAULT_THRESHOLD}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
