"""`logloop feedback`: tell a batch's detector which log lines are normal and which anomalous.

    logloop feedback --batch B --normal  'LINE'        # label one line
    logloop feedback --batch B --anomaly -f FILE       # every non-blank line of FILE ('-': stdin)
    logloop feedback list [--batch B] [--json]         # the current labels

A label belongs to a line's masked form (its event key), masked with the rules of the batch's
production model (the pinned version, else the latest; the default rules while the batch has none), so it covers every line
of that form. One label is recorded per distinct form, its first line kept as the example;
labelling a form again replaces its label: the latest label wins (the store keeps them all).
"""

from __future__ import annotations

import getpass
import json
import os
import sys

from ops.fetch.records import not_utf8
from orchestration.cli.common import CliError, batch_arg, did_you_mean, human_time, open_store, print_table

DESCRIPTION = (
    "Label log lines of a batch as normal or anomalous. Each line is masked with the masking rules "
    "of the batch's production model (the pinned version, else the latest; the default rules while it has none), and the label is "
    "recorded for its masked form, so it applies to every line of that form; one label per distinct "
    "form, printed as 'LABEL  FORM'. Labelling a form again replaces its label (the latest label "
    "wins; the output says what it was). The lines come from LINE, or from -f FILE (blank lines "
    "skipped; '-' reads standard input); a line beginning with '-' goes after '--'. "
    "'logloop feedback list [--batch B] [--json]' prints the current labels instead: the word list "
    "as LINE without --normal or --anomaly (to label the line 'list' itself, give --normal or --anomaly)."
)


def add_parser(sub) -> None:
    p = sub.add_parser("feedback", help="label log lines of a batch as normal or anomalous; 'feedback list' shows labels",
                       description=DESCRIPTION)
    p.add_argument("line", nargs="?", metavar="LINE",
                   help="the log line to label, or the word 'list' to list the current labels")
    p.add_argument("--batch", type=batch_arg, help="the batch the lines belong to (with 'list': only this batch)")
    p.add_argument("--normal", action="store_true", help="the lines are normal")
    p.add_argument("--anomaly", action="store_true", help="the lines are anomalies")
    p.add_argument("-f", "--file", metavar="FILE", help="label every non-blank line of FILE ('-': standard input)")
    p.add_argument("--json", action="store_true", help="with 'list': print a JSON list of objects")
    p.set_defaults(func=cmd_feedback)


def cmd_feedback(args) -> int:
    from ops.register.artifact import ArtifactError

    try:
        if args.line == "list" and not args.normal and not args.anomaly:
            return _list(args)
        return _label(args)
    except (CliError, ArtifactError, ValueError) as exc:  # StoreError: cli._run prints it
        print(f"error: {exc}", file=sys.stderr)
        return 1


# -- list -------------------------------------------------------------------------------------------


def _list(args) -> int:
    if args.file is not None:
        raise CliError("'logloop feedback list' reads no file (-f labels lines: give --normal or --anomaly)")
    labels = open_store().labels(args.batch)
    if args.json:
        print(json.dumps([lb.to_dict() for lb in labels], indent=2, ensure_ascii=False))
        return 0
    if not labels:
        print("no labels" + (f" for batch {args.batch!r}" if args.batch is not None else ""))
        return 0
    rows = [("BATCH", "LABEL", "VERSION", "WHEN", "FORM")]
    for lb in labels:
        version = "-" if lb.model_version is None else str(lb.model_version)
        rows.append((lb.batch, lb.label, version, human_time(lb.created_ms), lb.masked))
    print_table(rows, nowrap=("LABEL", "VERSION", "WHEN"), keep=("BATCH",))
    return 0


# -- label ------------------------------------------------------------------------------------------


def _label(args) -> int:
    from ops.naming import validate_batch_name
    from orchestration.cli.common import open_artifacts
    from ops.validate.feedback import label_form

    if args.json:
        raise CliError("--json belongs to 'logloop feedback list'")
    if args.normal == args.anomaly:
        raise CliError("give only one of --normal and --anomaly" if args.normal else
                       "say what the lines are: give --normal or --anomaly")
    label = "normal" if args.normal else "anomaly"
    if args.batch is None:
        raise CliError("give the batch the lines belong to: --batch B")
    batch = validate_batch_name(args.batch)
    if args.line is not None and args.file is not None:
        raise CliError("give a LINE or -f FILE, not both")
    if args.line is None and args.file is None:
        raise CliError("give the log line to label, or -f FILE")
    lines = _lines_of_argument(args.line) if args.file is None else _lines_of_file(args.file)

    store = open_store()
    known = [s.batch for s in store.batch_statuses()]
    if batch not in known:
        raise CliError(f"no batch {batch!r} in the store{did_you_mean(batch, known)} (a batch exists once it has "
                       "sample counts, a model or tasks; 'logloop models list' and 'logloop tasks list' show batches)")
    masker, version = _masker(store, open_artifacts(), batch)

    forms: dict[str, str] = {}  # stored form -> the first raw line of it
    for where, line in lines:
        masked = masker.mask(line)
        try:
            form = label_form(masked)
        except ValueError:
            raise CliError(f"{where} has nothing left to label once masked: {line[:80]!r}") from None
        forms.setdefault(form, line)

    source = _source()
    for form, example in forms.items():
        new, before = store.record_label(batch, form, label, source=source, model_version=version, example=example)
        note = f"  (was {before.label}: the latest label wins)" if before is not None and before.label != label else ""
        print(f"{label}  {new.masked}{note}")
    rules = f"the masking rules of model v{version}" if version is not None else \
        "the default masking rules (the batch has no model yet)"
    print(f"{len(forms)} form(s) of {len(lines)} line(s) labelled {label} in batch {batch!r}, masked with {rules}",
          file=sys.stderr)
    return 0


def _masker(store, artifacts, batch: str):
    """The Masker of the batch's production model (the pinned version, else the latest) and its version; the default one and None
    while the batch has no model."""
    from ops.register.artifact import read_artifact
    from ops.mask.masking import Masker

    record = store.get_model(batch)
    if record is None:
        return Masker(), None
    try:
        with artifacts.reading(record.artifact) as path:
            artifact = read_artifact(path)
    except FileNotFoundError as exc:
        raise CliError(f"model v{record.version} of batch {batch!r}: {exc}") from None
    return Masker(artifact.masking_rules), record.version


def _source() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError, ImportError):  # no user name for this uid (a bare container)
        return f"cli:uid {os.getuid()}" if hasattr(os, "getuid") else "cli"


def _split(text: str) -> list[str]:
    """Lines end at LF (CRLF too); no other character ends one, so numbers match an editor's."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _lines_of_argument(text: str) -> list[tuple[str, str]]:
    lines = [("the line" if i == 1 else f"line {i} of LINE", line)
             for i, line in enumerate(_split(text), 1) if line.strip()]
    if not lines:
        raise CliError("the log line is empty: there is nothing to label")
    return lines


def _lines_of_file(source: str) -> list[tuple[str, str]]:
    """('line N of FILE', line) for every non-blank line of FILE, or of standard input for '-'."""
    name = "standard input" if source == "-" else source
    try:
        if source == "-":
            if sys.stdin is None:  # started with standard input closed (`<&-`)
                raise CliError("cannot read standard input: it is closed")
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{name} {not_utf8(data, exc)}") from None
    lines = [(f"line {i} of {name}", line) for i, line in enumerate(_split(text), 1) if line.strip()]
    if not lines:
        raise CliError(f"no log lines in {name}: it is empty or blank")
    return lines
