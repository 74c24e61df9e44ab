"""`logloop score` and `logloop templates`: a model applied to the log messages of a file, a URL or stdin.

Input is read as the data stage reads log files (ops.fetch.messages): JSON Lines give the configured
message field (LOGLOOP_MESSAGE_FIELD, and need a time in LOGLOOP_TIME_FIELD), plain text its lines;
gzip and zstd are undone; the format is detected per file unless --format says. The model is a
batch's registered one (--batch, --version), or, for `score`, an artifact's URI (--artifact: what
`model_ready` announces), read without the store.
"""

from __future__ import annotations

import argparse
import json
import sys

from ops.validate.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from orchestration.cli.common import CliError, batch_arg, run_user_command

FORMATS = ("text", "json")


def _model(args):
    """(artifact, what it is for the summary line, the batch's labels, its registry record, its batch)."""
    from orchestration.cli.common import current_labels, load_artifact_uri, load_registered_artifact

    if getattr(args, "artifact", None):
        artifact = load_artifact_uri(args.artifact)
        meta = artifact.meta if isinstance(artifact.meta, dict) else {}
        version = f"v{meta['version']}" if meta.get("version") is not None else "model"
        batch = f" of batch {meta['batch']!r}" if meta.get("batch") else ""
        return artifact, f"{version}{batch} from {args.artifact}", None, None, meta.get("batch") or None
    artifact, record = load_registered_artifact(args.batch, args.version)
    return artifact, f"model v{record.version} of batch {args.batch!r}", current_labels(args.batch), record, args.batch


def _check_model_args(args) -> None:
    if getattr(args, "artifact", None):
        if args.batch is not None or args.version is not None:
            raise CliError("give either --artifact URI or --batch B [--version N], not both")
        if getattr(args, "record", False):
            raise CliError("--record stores results under a batch: use --batch B instead of --artifact")
    elif args.batch is None:
        raise CliError("which model? give --batch B (its registered model)"
                       + (" or --artifact URI (a model_ready artifact_uri)" if hasattr(args, "artifact") else ""))


def cmd_score(args) -> int:
    def run(args) -> int:
        from orchestration.cli.common import join_events, of_batch, read_messages, report_bad, report_others

        _check_model_args(args)
        messages = read_messages(args.file, args.format)
        artifact, what, labels, record, batch = _model(args)
        from ops.validate.scoring import Scorer

        from ops.validate.verdict import describe

        lines, others = of_batch(messages, batch, args.file)
        lines = join_events(lines, artifact.multiline_rules, messages.bad)  # as the model's training joined them
        scorer = Scorer(artifact, top_k=args.top_k, threshold=args.threshold, labels=labels)
        scored = scorer.score([message for _, message in lines])
        if args.record:  # one row per scored line, unique timestamps (docs/cml-push.md, "Inference results")
            from orchestration.cli.push import record_scores

            record_scores(args.batch, scored, record.version, scorer.threshold)
        out = sys.stdout
        for (n, _), s in zip(lines, scored):
            if args.json:
                out.write(json.dumps({"line": n, "score": round(s.score, 6), "anomaly": s.anomaly,
                                      "reason": s.reason, "threshold": scorer.threshold, "masked": s.masked}) + "\n")
            else:
                out.write(f"{s.score:.3f}\t{'ANOMALY' if s.anomaly else 'normal'}\t"
                          f"{describe(s.reason, s.anomaly, scorer.threshold)}\t{s.masked}\n")
        out.flush()
        if not args.json:
            from collections import Counter

            flagged = Counter(s.reason for s in scored if s.anomaly)
            by = f": {', '.join(f'{n} by {why}' for why, n in flagged.most_common())}" if flagged else ""
            print(f"{sum(flagged.values())} of {len(scored)} lines flagged{by} ({what}, top-{scorer.top_k}, "
                  f"threshold {scorer.threshold:g}; read as {_read_as(messages)})", file=sys.stderr)
        report_others(others)
        return report_bad(messages)

    return run_user_command(run, args)


def _read_as(messages) -> str:
    from orchestration.cli.common import record_format

    packed = f", {messages.compression}" if messages.compression else ""
    if messages.format == "json":
        return f"JSON Lines, message field {record_format().message_field!r}{packed}"
    return f"plain text{packed}"


class _RefuseTopK(argparse.Action):
    """`templates --top-k`: templates do not depend on the model's ranks, so a k would change nothing."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} does not apply to templates: they are decided from the masking rules and "
                     "the lines, not from the model's ranks, so no k changes them")


def cmd_templates(args) -> int:
    def run(args) -> int:
        from ops.validate.templates import templates
        from orchestration.cli.common import (join_events, load_registered_artifact, of_batch, read_messages,
                                              report_bad, report_others)

        _check_model_args(args)
        messages = read_messages(args.file, args.format)
        artifact, _ = load_registered_artifact(args.batch, args.version)
        lines, others = of_batch(messages, args.batch, args.file)
        lines = join_events(lines, artifact.multiline_rules, messages.bad)  # counts events, as in the model's training
        counts = templates(artifact, [message for _, message in lines])
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if args.json:
            print(json.dumps([{"template": t, "count": c} for t, c in ordered], indent=2))
        else:
            for t, c in ordered:
                print(f"{c:7d}  {t}")
        sys.stdout.flush()
        report_others(others)
        return report_bad(messages)

    return run_user_command(run, args)


INPUT_HELP = ("log file: a path or a URL like the log folder's (s3://bucket/app.jsonl.gz), gzip or zstd "
              "compressed or not; '-' reads standard input")
FORMAT_HELP = ("text (one message per line) or json (JSON Lines: the message in LOGLOOP_MESSAGE_FIELD, default "
               "'log', a time in LOGLOOP_TIME_FIELD, default 'time'); default: detected per file, from the name "
               "(.jsonl, .ndjson, .json) or else the first line")


def _add_model_args(p, artifact: bool) -> None:
    p.add_argument("--batch", type=batch_arg, help="the batch whose registered model is used"
                   + (" (or --artifact)" if artifact else ""))
    p.add_argument("--version", type=int, help="model version (default: the batch's production model: "
                   "the pinned version, else the latest)")
    if artifact:
        p.add_argument("--artifact", metavar="URI",
                       help="score with the model artifact at URI instead, as model_ready announces it (artifact_uri): "
                            "a path, file://, s3://, gs:// or az:// URL. The store is not read: the batch's "
                            "feedback labels since its training do not apply")
    p.add_argument("--format", choices=FORMATS, help=FORMAT_HELP)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "score", help="score log lines with a registered model (or a model artifact)",
        description="Score each log event of FILE (or stdin for '-') with NuLog: the share of its "
                    "tokens the model predicts within top k. Events are read as the pipeline reads log files: "
                    "JSON Lines give their message field, plain text its lines, and the lines of one event (a "
                    "stack trace) are joined into one, as the model's training joined them; JSON records of other "
                    "batches (by LOGLOOP_BATCH_FIELDS) are left out; lines that are not messages (bad JSON, no "
                    "time, ...) are counted by reason on stderr and the exit status is 1. Text output: one line per "
                    "event, 'SCORE<TAB>normal|ANOMALY<TAB>REASON<TAB>MASKED LINE', and a summary on stderr. REASON "
                    "says why: label, near_label, classifier (feedback), severity (an error-level word), "
                    "score<T or score>=T (the score against the threshold T), or established (a low score "
                    "shared by many of the lines). With --json: JSON Lines, one object per event: "
                    "{\"line\": N (1-based number of its first line in the input), \"score\": float, "
                    "\"anomaly\": bool, \"reason\": str, \"threshold\": float, \"masked\": str}.")
    _add_model_args(p, artifact=True)
    p.add_argument("--top-k", type=int, dest="top_k",
                   help=f"k of NuLog's top-k rule (default: the model's own, else {DEFAULT_TOP_K})")
    p.add_argument("--threshold", type=float, help="a line scoring below this is an anomaly (default: the model's, "
                   f"calibrated at its gate; {DEFAULT_THRESHOLD} for models from before calibration)")
    p.add_argument("--json", action="store_true", help="print JSON Lines (one object per scored event)")
    p.add_argument("--record", action="store_true", help="also store one result per event in the store "
                   "(score, verdict, reason, threshold, masked form, model version; read back with "
                   "'logloop samples results')")
    p.add_argument("file", metavar="FILE", help=INPUT_HELP)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "templates", help="the templates of a log file, with a registered model's masking rules",
        description="Parse the log events of FILE (or stdin for '-'), read as 'logloop score' reads them (the "
                    "lines of a stack trace are one event), into templates (variables are <*>) with the batch's "
                    "model's masking rules, and print each distinct template with its count of events, most "
                    "frequent first. Templates depend on the masking rules and the lines together, not on the "
                    "model's ranks (so there is no --top-k). With --json: a JSON list of {\"template\", \"count\"} "
                    "objects.")
    _add_model_args(p, artifact=False)
    p.add_argument("--top-k", nargs="?", action=_RefuseTopK, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("file", metavar="FILE", help=INPUT_HELP)
    p.set_defaults(func=cmd_templates)
