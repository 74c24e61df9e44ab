"""What the `logloop` commands share: the one-line user error, the store, the registered model
of a batch (or an artifact's), input messages, and tables laid out by rich (as wide as the terminal,
120 columns when output is not a terminal; ids whole, times for people; `--json` prints exact
values instead)."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import sys


def open_store():
    """The configured store as its plain class (orchestration/store_choice.py), secrets read through the
    settings: commands that only read or write the store import neither Dagster nor the other resources."""
    from orchestration.config import settings
    from orchestration.store_choice import configured_store

    return configured_store(settings(), resource=False)


def batch_arg(text: str) -> str:
    """argparse `type` of a batch argument: the name in NFC (as the store keeps it), or argparse's
    one-line usage error naming what is wrong (an invisible or direction-changing character)."""
    import argparse

    from ops.naming import InvalidName, validate_batch_name

    try:
        return validate_batch_name(text)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TABLE_WIDTH = 120  # tables fit this many columns when output is not a terminal (COLUMNS overrides)


def human_time(ms) -> str:
    """A time for people: '2026-11-30 02:14Z' (UTC, to the minute); '-' for none. --json keeps exact ms."""
    if ms is None or ms == 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%MZ")


def human_number(value) -> str:
    """A metric for people: floats to 4 significant digits (large ones as whole numbers), '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 100_000 else str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _table_width() -> int:
    columns = shutil.get_terminal_size((TABLE_WIDTH, 24)).columns  # COLUMNS, else the terminal, else 120
    return max(40, columns)


def print_table(rows, *, nowrap=(), keep=(), truncate=(), header: bool = True, out=None) -> None:
    """Print `rows` (the first one names the columns) as a table as wide as the terminal (TABLE_WIDTH
    when output is not a terminal).

    rich lays it out: a cell too long for its column wraps inside it (at spaces, else anywhere),
    so ids and names are never cut. Columns named in `nowrap` (short values: times, numbers)
    never wrap; columns named in `keep` (names, ids) get their full width, up to 40, before the
    other columns share what is left; columns named in `truncate` (free text, whole in --json)
    share it too but are cut with '…' instead of wrapping, so they never add lines to a row.
    Plain text: no colours, no borders, no trailing spaces; cell text is never read as markup.
    """
    print_grouped_table(rows[0], [(None, rows[1:])], nowrap=nowrap, keep=keep, truncate=truncate, header=header,
                        out=out)


def print_grouped_table(names, groups, *, nowrap=(), keep=(), truncate=(), header: bool = True, out=None) -> None:
    """Like print_table, for groups of rows that share the columns: each group is (heading, rows); a
    heading (a line of its own, wrapped to the width) and the column names start each group, the
    groups apart by a blank line, the columns as wide in every group."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ops.naming import shown_name

    # names from logs (batches, stored before invisible characters were refused) print escaped
    names = [str(n) for n in names]
    groups = [(None if heading is None else shown_name(heading),
               [["-" if c is None else shown_name(str(c)) for c in row] for row in rows]) for heading, rows in groups]
    every = [row for _, rows in groups for row in rows]
    natural = [max([len(n) if header else 1] + [_cell_width(r[i]) for r in every]) for i, n in enumerate(names)]
    total = _table_width()
    widths = [n if w is None else w for n, w in
              zip(natural, _column_widths(natural, [n in nowrap for n in names], [n in keep for n in names], total))]
    console = Console(file=io.StringIO(), width=total, color_system=None, force_terminal=False, highlight=False,
                      markup=False, emoji=False, soft_wrap=False)
    write = (out or sys.stdout).write

    def emit(renderable) -> None:
        with console.capture() as captured:
            console.print(renderable)
        for line in captured.get().splitlines():
            write(line.rstrip() + "\n")

    for number, (heading, cells) in enumerate(groups):
        if heading is not None:
            if number:
                write("\n")
            emit(Text(heading, overflow="fold"))
        # rendered TABLE_CHUNK rows at a time with the same widths: output starts at once, and a
        # reader that goes away (`| head -1`) stops the command at its next write
        for start in range(0, max(len(cells), 1), TABLE_CHUNK):
            table = Table(box=None, show_header=header and start == 0, show_edge=False, pad_edge=False,
                          padding=(0, 1), header_style="")
            for name, width in zip(names, widths):
                cut = name in truncate
                table.add_column(Text(name), overflow="ellipsis" if cut else "fold", no_wrap=name in nowrap or cut,
                                 width=width)
            for row in cells[start:start + TABLE_CHUNK]:
                table.add_row(*(Text(c) for c in row))
            emit(table)


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


TABLE_CHUNK = 50     # rows rendered at a time
TABLE_GAP = 2        # spaces between columns
KEEP_WIDTH = 40      # the most a `keep` column is given before the others
MIN_SHARED = 12      # what a `keep` column leaves each other wrapping column, at least


def _column_widths(natural: list[int], nowrap: list[bool], keep: list[bool], total: int) -> list:
    """Each column's width (None: its natural width) so that the table fits `total` characters.

    Columns that do not wrap keep their natural width. The wrapping ones share the rest: first each
    `keep` column gets what it needs (up to KEEP_WIDTH) while every other wrapping column keeps at
    least MIN_SHARED; then the widest ones give way first (water-filling), as rich does."""
    budget = total - TABLE_GAP * (len(natural) - 1)
    if sum(natural) <= budget:
        return [None] * len(natural)
    budget -= sum(w for w, fixed in zip(natural, nowrap) if fixed)
    flexible = [i for i, fixed in enumerate(nowrap) if not fixed]
    widths: list = [None if fixed else 0 for fixed in nowrap]
    if budget <= 0 or not flexible:
        return [w if w is None else 1 for w in widths]
    kept = [i for i in flexible if keep[i]]
    rest = [i for i in flexible if not keep[i]]
    left = budget
    for n, i in enumerate(kept):
        reserve = sum(min(natural[j], MIN_SHARED) for j in rest + kept[n + 1:])
        widths[i] = max(1, min(natural[i], KEEP_WIDTH, left - reserve))
        left -= widths[i]
    share = rest if kept else flexible
    if not kept:
        left = budget
    # water-fill `left` over `share`: the largest cap c with sum(min(natural, c)) <= left
    cap, remaining, todo = 0, left, sorted(share, key=lambda j: natural[j])
    while todo:
        even = remaining // len(todo)
        if natural[todo[0]] <= even:
            j = todo.pop(0)
            widths[j] = natural[j]
            remaining -= natural[j]
            continue
        cap = max(1, even)
        extra = remaining - cap * len(todo)
        for k, j in enumerate(sorted(todo)):
            widths[j] = cap + (1 if k < extra else 0)
        break
    return widths


def one_line(text: str, most: int) -> str:
    """One line of at most `most` characters (for free text in tables, never for ids)."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 1."""


def current_labels(batch: str) -> dict[str, str]:
    """The batch's current feedback labels: they take effect at once, before the next training."""
    return {label.masked: label.label for label in open_store().labels(batch)}


def did_you_mean(name: str, known) -> str:
    """'; did you mean 'x'?' naming the closest of `known` to a name that is not among them, or ''."""
    import difflib

    close = difflib.get_close_matches(name, [k for k in known if k != name], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def open_artifacts():
    """The configured artifact storage as its plain class (orchestration/store_choice.py): no Dagster."""
    from orchestration.config import settings
    from orchestration.store_choice import configured_artifacts

    return configured_artifacts(settings(), resource=False)


def load_registered_artifact(batch: str, version):
    from resources.errors import ArtifactStorageError

    resources = {"store": open_store(), "artifacts": open_artifacts()}
    record = resources["store"].get_model(batch, version)
    if record is None:
        what = f"version {version} of batch {batch!r}" if version is not None else f"batch {batch!r}"
        store = resources["store"]
        hint = "" if store.list_models(batch) else did_you_mean(batch, {m.batch for m in store.list_models()})
        raise CliError(f"no model registered for {what}{hint}")
    from ops.register.artifact import MAX_TOTAL_BYTES, read_artifact  # torch: only once there is a model to read

    try:  # from the configured artifact storage: a local folder or an object store
        with resources["artifacts"].reading(record.artifact, max_bytes=MAX_TOTAL_BYTES) as path:
            return read_artifact(path), record
    except (FileNotFoundError, ArtifactStorageError) as e:
        raise CliError(f"model v{record.version} of batch {batch!r}: {e}") from None


def load_artifact_uri(uri: str):
    """The model artifact at `uri`, as `model_ready` announces it (artifact_uri): a local path, a
    file:// URL or an object-store URL (s3://, gs://, az://; credentials from the provider's
    environment variables). Its size is checked before it is read or downloaded; it is read
    without pickle (ops.register.artifact). The store is not consulted."""
    from ops.register.artifact import MAX_TOTAL_BYTES, ArtifactError, read_artifact
    from resources.errors import ArtifactStorageError

    if "://" not in uri or uri.startswith("file://"):
        return read_artifact(uri.removeprefix("file://"))
    from resources.object_artifacts import ObjectArtifactStorageCore, parse_artifacts_url

    folder, _, name = uri.rstrip("/").rpartition("/")
    try:
        parse_artifacts_url(folder)
    except ValueError as e:
        raise CliError(f"--artifact {uri!r}: {e}") from None
    try:
        with ObjectArtifactStorageCore(url=folder).reading(name, max_bytes=MAX_TOTAL_BYTES) as path:
            return read_artifact(path)
    except FileNotFoundError:
        raise CliError(f"model artifact {uri}: not found") from None
    except ArtifactError as e:  # named by its URI, not by the local copy's path
        raise ArtifactError(uri, e.reason) from None
    except ArtifactStorageError as e:
        raise CliError(str(e)) from None


def record_format():
    """The configured fields of a JSON log record (its time, message and batch), as the log source reads them."""
    from ops.fetch.records import RecordFormat
    from orchestration.settings import record_fields

    fields = record_fields()
    return RecordFormat(time_field=fields["time_field"], message_field=fields["message_field"],
                        batch_fields=tuple(fields["batch_fields"]))


def read_messages(source: str, force_format: str | None = None):
    """The log messages of FILE (a path or URL, compressed or not) or of stdin for '-', read as the data
    stage reads log files (ops.fetch.messages): JSON Lines give their message field, plain text its
    lines. CliError when there is nothing to read or no message at all."""
    from ops.fetch.locations import SourceUnavailable
    from ops.fetch.messages import read_messages as read

    try:
        if source == "-":
            if sys.stdin is None:  # started with standard input closed (`<&-`)
                raise CliError("cannot read standard input: it is closed")
            messages = read("stdin", record_format(), force_format, stream=sys.stdin.buffer)
        else:
            messages = read(source, record_format(), force_format)
    except SourceUnavailable as e:  # one line naming the file or URL and why
        raise CliError(str(e)) from None
    except OSError as e:  # standard input
        raise CliError(f"cannot read {source}: {e.strerror or e}") from None
    if not messages.lines:
        where = "standard input" if source == "-" else source
        first = f", the first {messages.bad.examples[0]}" if messages.bad.examples else ""
        raise CliError(f"no log lines in {where}" + (f": {bad_summary(messages)}{first}" if messages.bad.total else ""))
    return messages


def of_batch(messages, batch: str | None, source: str) -> tuple[list[tuple[int, str]], dict[str, int]]:
    """The (line number, message) pairs a model of `batch` reads, and the lines left out by the batch they
    belong to: JSON Lines records whose batch fields name another batch, as the pipeline would not give them
    to this batch's model. Records without batch fields, and plain text, are the batch's."""
    default = record_format().default_batch
    kept, others = [], {}
    for n, message, of in messages.lines:
        if batch is None or of is None or of == default or of == batch:
            kept.append((n, message))
        else:
            others[of] = others.get(of, 0) + 1
    if not kept:
        where = "standard input" if source == "-" else source
        names = ", ".join(repr(b) for b in sorted(others, key=lambda b: -others[b])[:5])
        raise CliError(f"no log lines of batch {batch!r} in {where}: its {sum(others.values()):,} record(s) are of "
                       f"other batches ({names}), by the batch fields {', '.join(record_format().batch_fields)}")
    return kept, others


def report_others(others: dict[str, int]) -> None:
    if others:
        print(f"note: {sum(others.values()):,} line(s) of other batches left out ({len(others)} batch(es), e.g. "
              f"{max(others, key=others.get)!r})", file=sys.stderr)


def bad_summary(messages) -> str:
    """'3 bad line(s) not read (bad_json 1, no_time 2)', and which fields JSON Lines were read by."""
    reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(messages.bad.counts.items()))
    fields = ""
    if messages.format == "json":
        fmt = record_format()
        fields = f" as JSON Lines with time field {fmt.time_field!r} and message field {fmt.message_field!r}"
    return f"{messages.bad.total:,} bad line(s) not read{fields} ({reasons})"


def report_bad(messages, most: int = 5) -> int:
    """After the output: the first bad lines and the count by reason on stderr; the exit status
    (1 when some lines were bad, as `logloop push`)."""
    if not messages.bad.total:
        return 0
    for example in messages.bad.examples[:most]:
        print(f"  {example}", file=sys.stderr)
    print(f"error: {bad_summary(messages)}", file=sys.stderr)
    return 1


def join_events(lines: list[tuple[int, str]], multiline: dict | None, bad=None) -> list[tuple[int, str]]:
    """Numbered messages of one batch as numbered events (ops.fetch.multiline.join_lines; no rules: each
    message its own event), as the model's training joined them; events cut at their cap count in `bad`."""
    from ops.fetch.multiline import join_lines

    return join_lines(lines, multiline, bad)


def run_user_command(fn, args) -> int:
    try:
        return fn(args)
    except (CliError, ValueError) as e:  # ValueError: ops.register.artifact.ArtifactError too
        print(f"error: {e}", file=sys.stderr)
        return 1

