"""What the `logloop` commands share: the one-line user error, the store, the registered model
of a batch, input lines, and tables laid out by rich (at most 120 columns, ids whole, times for
people; `--json` prints exact values instead)."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import sys


def open_store():
    from orchestration.resources import resource

    return resource("store")


def batch_arg(text: str) -> str:
    """argparse `type` of a batch argument: the name in NFC (as the store keeps it), or argparse's
    one-line usage error naming what is wrong (an invisible or direction-changing character)."""
    import argparse

    from ops.naming import InvalidName, validate_batch_name

    try:
        return validate_batch_name(text)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TABLE_WIDTH = 120  # tables fit this many columns (or a narrower terminal)


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
    return max(40, min(TABLE_WIDTH, columns))


def print_table(rows, *, nowrap=(), keep=(), header: bool = True, out=None) -> None:
    """Print `rows` (the first one names the columns) as a table at most TABLE_WIDTH columns wide.

    rich lays it out: a cell too long for its column wraps inside it (at spaces, else anywhere),
    so ids and names are never cut. Columns named in `nowrap` (short values: times, numbers)
    never wrap; columns named in `keep` (names, ids) get their full width, up to 40, before the
    other columns share what is left. Plain text: no colours, no borders, no trailing spaces;
    cell text is never read as markup.
    """
    print_grouped_table(rows[0], [(None, rows[1:])], nowrap=nowrap, keep=keep, header=header, out=out)


def print_grouped_table(names, groups, *, nowrap=(), keep=(), header: bool = True, out=None) -> None:
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
                table.add_column(Text(name), overflow="fold", no_wrap=name in nowrap, width=width)
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
    from orchestration.resources import resource

    return {label.masked: label.label for label in resource("store").labels(batch)}


def load_registered_artifact(batch: str, version):
    from ops.register.artifact import read_artifact
    from orchestration.resources import resource
    from resources.artifacts import ArtifactStorageError

    resources = {"store": resource("store"), "artifacts": resource("artifacts")}
    record = resources["store"].get_model(batch, version)
    if record is None:
        what = f"version {version} of batch {batch!r}" if version is not None else f"batch {batch!r}"
        raise CliError(f"no model registered for {what}")
    try:  # from the configured artifact storage: a local folder or an object store
        with resources["artifacts"].reading(record.artifact) as path:
            return read_artifact(path), record
    except (FileNotFoundError, ArtifactStorageError) as e:
        raise CliError(f"model v{record.version} of batch {batch!r}: {e}") from None


def read_numbered_lines(source: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line of FILE or stdin ('-'), blank ones too; a clear
    error when there is no non-blank line."""
    try:
        if source == "-":
            if sys.stdin is None:  # started with standard input closed (`<&-`)
                raise CliError("cannot read standard input: it is closed")
            text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        else:
            with open(source, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise CliError(f"cannot read {source}: {e.strerror or e}") from None
    lines = list(enumerate(text.splitlines(), 1))
    if not any(line.strip() for _, line in lines):
        raise CliError(f"no log lines in {'standard input' if source == '-' else source}")
    return lines


def join_events(lines: list[tuple[int, str]], multiline: dict | None) -> list[tuple[int, str]]:
    """Numbered lines as numbered events (ops.fetch.multiline.join_lines; no rules: non-blank lines)."""
    from ops.fetch.multiline import join_lines

    return join_lines(lines, multiline)


def run_user_command(fn, args) -> int:
    from ops.register.artifact import ArtifactError

    try:
        return fn(args)
    except (CliError, ArtifactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

