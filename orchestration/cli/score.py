"""`logloop score` and `logloop templates`: a registered model applied to lines from a file or stdin."""

from __future__ import annotations

import json
import sys

from ops.validate.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from orchestration.cli.common import (batch_arg, current_labels, join_events, load_registered_artifact, read_numbered_lines,
                                      run_user_command)


def cmd_score(args) -> int:
    def run(args) -> int:
        from ops.validate.scoring import Scorer

        raw = read_numbered_lines(args.file)
        artifact, record = load_registered_artifact(args.batch, args.version)
        lines = join_events(raw, artifact.multiline_rules)  # events joined as the model's training joined them
        scorer = Scorer(artifact, top_k=args.top_k, threshold=args.threshold, labels=current_labels(args.batch))
        scored = scorer.score([line for _, line in lines])
        if args.record:  # one row per scored line, unique timestamps (docs/cml-push.md, "Inference results")
            from orchestration.cli.push import record_scores

            record_scores(args.batch, scored, record.version, scorer.threshold)
        from ops.validate.verdict import describe

        out = sys.stdout
        for (n, _), s in zip(lines, scored):
            if args.json:
                out.write(json.dumps({"line": n, "score": round(s.score, 6), "anomaly": s.anomaly,
                                      "reason": s.reason, "threshold": scorer.threshold, "masked": s.masked}) + "\n")
            else:
                out.write(f"{s.score:.3f}\t{'ANOMALY' if s.anomaly else 'normal'}\t"
                          f"{describe(s.reason, s.anomaly, scorer.threshold)}\t{s.masked}\n")
        if not args.json:
            from collections import Counter

            flagged = Counter(s.reason for s in scored if s.anomaly)
            by = f": {', '.join(f'{n} by {why}' for why, n in flagged.most_common())}" if flagged else ""
            print(f"{sum(flagged.values())} of {len(scored)} lines flagged{by} (model v{record.version} of batch "
                  f"{args.batch!r}, top-{scorer.top_k}, threshold {scorer.threshold:g})", file=sys.stderr)
        return 0

    return run_user_command(run, args)


def cmd_templates(args) -> int:
    def run(args) -> int:
        from ops.validate.templates import templates

        raw = read_numbered_lines(args.file)
        artifact, _ = load_registered_artifact(args.batch, args.version)
        lines = join_events(raw, artifact.multiline_rules)  # counts events, joined as in the model's training
        counts = templates(artifact, [line for _, line in lines], top_k=args.top_k)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if args.json:
            print(json.dumps([{"template": t, "count": c} for t, c in ordered], indent=2))
        else:
            for t, c in ordered:
                print(f"{c:7d}  {t}")
        return 0

    return run_user_command(run, args)


def _add_model_args(p) -> None:
    p.add_argument("--batch", type=batch_arg, required=True, help="the batch whose registered model is used")
    p.add_argument("--version", type=int, help="model version (default: the batch's production model: "
                   "the pinned version, else the latest)")
    p.add_argument("--top-k", type=int, dest="top_k",
                   help=f"k of NuLog's top-k rule (default: the model's own, else {DEFAULT_TOP_K})")




def add_parser(sub) -> None:
    p = sub.add_parser(
        "score", help="score log lines with a registered model",
        description="Score each non-blank line of FILE (or stdin for '-') with NuLog: the share of its "
                    "tokens the model predicts within top k. The lines of one event (a stack trace) are joined "
                    "into one, as the model's training joined them. Text output: one line per event, "
                    "'SCORE<TAB>normal|ANOMALY<TAB>REASON<TAB>MASKED LINE', and a summary on stderr. REASON says "
                    "why: label, near_label, classifier (feedback), severity (an error-level word), "
                    "score<T or score>=T (the score against the threshold T), or established (a low score "
                    "shared by many of the lines). With --json: JSON Lines, one object per event: "
                    "{\"line\": N (1-based number of its first line in the input), \"score\": float, "
                    "\"anomaly\": bool, \"reason\": str, \"threshold\": float, \"masked\": str}.")
    _add_model_args(p)
    p.add_argument("--threshold", type=float, help="a line scoring below this is an anomaly (default: the model's, "
                   f"calibrated at its gate; {DEFAULT_THRESHOLD} for models from before calibration)")
    p.add_argument("--json", action="store_true", help="print JSON Lines (one object per scored line)")
    p.add_argument("--record", action="store_true", help="also store one result per line in the store "
                   "(score, verdict, reason, threshold, masked form, model version; read back with "
                   "'logloop samples results')")
    p.add_argument("file", metavar="FILE", help="log file, one message per line; '-' reads standard input")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "templates", help="NuLog's templates of a log file with a registered model",
        description="Parse the non-blank lines of FILE (or stdin for '-') into templates (variables are "
                    "<*>) with the model's top-k rule, and print each distinct template with its count of "
                    "events (the lines of a stack trace are one event, joined as the model's training joined "
                    "them), most frequent first. With --json: a JSON list of {\"template\", \"count\"} objects.")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("file", metavar="FILE", help="log file, one message per line; '-' reads standard input")
    p.set_defaults(func=cmd_templates)
