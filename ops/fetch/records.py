"""Turning raw log lines into (time, batch, message) records, counting what is bad.

Bad input never crashes a partition and is never dropped uncounted: each skipped
line is counted under a reason, and the first few are kept as examples naming the
file and line number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import orjson

from ops.fetch.framing import MAX_LINE_BYTES
from ops.naming import InvalidName, validate_batch_name
from ops.windows import FIRST_KEPT, MAX_TIME_MS, MIN_TIME_MS, TimeRange, Windows, iso_ms, parse_time_ms

MAX_EXAMPLES = 10

REASONS = {
    "blank": "blank line",
    "not_utf8": "bytes are not valid UTF-8",
    "too_long": f"line longer than {MAX_LINE_BYTES} bytes",
    "bad_json": "malformed JSON",
    "not_object": "JSON value is not an object",
    "no_time": "time field missing",
    "bad_time": "time field is not epoch-ms or ISO-8601 from 1970 to 9999",
    "time_before_start": "time before the first time window (the partition start), never summarised",
    "time_in_future": "time later than the clock allows (now plus future_tolerance_s), never summarised",
    "no_message": "message field missing or not a string",
    "bad_batch": "batch name is invalid",
    "empty_after_masking": "nothing left after masking",
    "corrupt_compression": "compressed file is truncated or corrupt; lines before this one were read, the rest of the file was not",
    "event_cut": "line of a multiline event past the event's cap, left out of its text (the event is kept)",
    # what a folder of log files holds besides log files (ops.fetch.locations.scan_files): one count each
    "not_regular_file": "not a regular file (a FIFO, socket or device): never opened",
    "link_outside_root": "symbolic link to a target outside the log folder: not followed",
    "broken_link": "symbolic link to nothing",
    "link_loop": "symbolic link to a folder read already (a loop): not followed again",
    "log_named_folder": "a folder named like a log file (a bind mount of a missing file makes one); files in it are read",
    "unreadable_file": "file or folder that cannot be opened (permissions) or vanished before it was read",
}


@dataclass
class BadRecords:
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {REASONS.get(reason, reason)}{': ' + detail if detail else ''}")

    def merge(self, other: "BadRecords") -> None:
        self.counts.update(other.counts)
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[:room])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": list(self.examples)}



def get_field(doc: dict, path: str) -> Any:
    """A field by name; dotted names match a literal key first, then nested objects
    (OpenSearch documents hold `kubernetes.namespace_name` either way)."""
    if path in doc:
        return doc[path]
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


ABSENT_FIELD = "-"  # stands for an absent batch field before a present one


def batch_name(values: Sequence[str | None], default: str, separator: str = "/") -> str:
    """A record's batch from its batch fields' values (in field order; None or "" when
    absent). The one rule every reader applies (the careful parser and OpenSearch hits
    through `RecordFormat.batch_of`, the fast paths per distinct combination of values):

    - the values joined by the separator: `c1/ns/web` (a record with every field keeps
      this name, as before);
    - absent fields at the end are left out: `c1`, `c1/ns`;
    - an absent field before a present one is written ABSENT_FIELD: `c1/-/web`, `-/ns`.
      Leaving it out would merge {cluster c1, deployment web} into {cluster c1,
      namespace web}: two workloads, one model;
    - no field at all: the default batch. A name that would equal the default batch
      while a field is absent gets one more ABSENT_FIELD (`default/-`), so it is never
      merged into that batch either.

    Empty values count as absent, so no name has an empty segment; a value that is
    itself ABSENT_FIELD reads as absent (Kubernetes names cannot be `-`).
    """
    n = len(values)
    while n and not values[n - 1]:
        n -= 1
    if not n:
        return default
    name = separator.join([v or ABSENT_FIELD for v in values[:n]]) if n > 1 else values[0]
    if n < len(values) and name == default:
        name += separator + ABSENT_FIELD
    return name


@dataclass(frozen=True)
class RecordFormat:
    """How a JSON log document maps to a record. Field names are configurable."""

    time_field: str = "time"
    message_field: str = "log"
    batch_fields: Sequence[str] = ()
    default_batch: str = "default"
    batch_separator: str = "/"

    def batch_of(self, doc: dict) -> str:
        """The document's batch (see `batch_name`); values that are not strings are str()-ed."""
        if not self.batch_fields:
            return self.default_batch
        values = [get_field(doc, f) for f in self.batch_fields]
        return batch_name([v if v is None or type(v) is str else str(v) for v in values],
                          self.default_batch, self.batch_separator)

    def batch_values(self, name: str) -> list[str | None] | None:
        """What a batch name stands for: each batch field's value, None for absent (or
        empty); the inverse of `batch_of`, for building a source's filter of one batch.
        Names written with empty segments before (`a//`) read the same way. None when no
        record could have this name (more segments than batch fields)."""
        n = len(self.batch_fields)
        if name == self.default_batch:
            return [None] * n
        if n <= 1:
            return [name] if n else None  # a single value may hold the separator
        parts = name.split(self.batch_separator)
        if len(parts) > n:
            return None
        return [None if p in ("", ABSENT_FIELD) else p for p in parts] + [None] * (n - len(parts))


def parse_json_lines(
    lines: Iterable[bytes],
    fmt: RecordFormat,
    windows: Windows,
    bad: BadRecords,
    source: str,
    first_line_no: int = 1,
    seen: TimeRange | None = None,
    joiner=None,
) -> dict[tuple[int, str], list[str]]:
    """Parse JSON Lines into {(window index, batch): [message, ...]} for records inside a window.

    `seen` collects the range of all valid times, in or out of the windows, so a
    file's time range can be remembered and the file skipped later. With a `joiner`
    (ops.fetch.multiline), each batch's consecutive records are joined into events, routed by
    their first record; records outside the windows take part too (a stack trace whose first
    line falls before the window stays out of it), and events still open at the end of the
    lines stay in the joiner for the next call (`route_events` its `flush()` at the end).
    """
    out: dict[tuple[int, str], list[str]] = {}
    loads = orjson.loads
    time_field, message_field = fmt.time_field, fmt.message_field
    window_of = windows.index
    valid_batches: set[str] = set()
    min_t, max_t = MIN_TIME_MS, MAX_TIME_MS
    start_ms, until_ms = windows.start_ms, windows.until_ms
    lo = hi = None
    first: list[int] = []
    first_bound = seen.first_bound() if seen is not None else -1
    for offset, raw in enumerate(lines):
        if len(raw) > MAX_LINE_BYTES:
            bad.add("too_long", f"{source}:{first_line_no + offset}", f"{len(raw)} bytes")
            continue
        if not raw.strip():
            bad.add("blank", f"{source}:{first_line_no + offset}")
            continue
        try:
            doc = loads(raw)
        except orjson.JSONDecodeError as exc:
            doc = _loads_overflowing_numbers(raw) if "infinity" in str(exc) else None
            if doc is None:
                reason = "not_utf8" if "utf-8" in str(exc).lower() else "bad_json"
                bad.add(reason, f"{source}:{first_line_no + offset}", str(exc)[:80])
                continue
        if not isinstance(doc, dict):
            bad.add("not_object", f"{source}:{first_line_no + offset}")
            continue
        t = doc.get(time_field)
        if t is None:
            t = get_field(doc, time_field)
        if t is None:
            bad.add("no_time", f"{source}:{first_line_no + offset}")
            continue
        if type(t) is not int or not min_t <= t < max_t:
            t = parse_time_ms(t)  # None for an int outside the range, too
            if t is None:
                bad.add("bad_time", f"{source}:{first_line_no + offset}")
                continue
        if lo is None:
            lo = hi = t
        elif t < lo:
            lo = t
        elif t > hi:
            hi = t
        if t < first_bound:
            first.append(t)
            if len(first) > 4 * FIRST_KEPT:
                seen.add_first(first)
                first, first_bound = [], seen.first_bound()
        w = window_of(t)
        if w < 0:
            if not start_ms <= t < until_ms:
                bad.add(windows.out_of_range(t), f"{source}:{first_line_no + offset}", out_of_range_detail(t, windows))
                continue
            if joiner is None:
                continue
        message = doc.get(message_field)
        if message is None:
            message = get_field(doc, message_field)
        if not isinstance(message, str):
            if w >= 0:
                bad.add("no_message", f"{source}:{first_line_no + offset}")
            continue
        if joiner is not None:
            batch = fmt.batch_of(doc)
            line_no = first_line_no + offset
            events = joiner.push(batch, message, (w, batch, line_no), lambda: f"{source}:{line_no}")
            route_events(out, valid_batches, bad, source, events)
            continue
        route(out, valid_batches, bad, f"{source}:{first_line_no + offset}", w, fmt.batch_of(doc), message)
    if seen is not None and lo is not None:
        seen.add(lo, hi)
        if first:
            seen.add_first(first)
    return out


def out_of_range_detail(t: int, windows: Windows) -> str:
    """What a bad-record example says of a time no window can hold."""
    if t < windows.start_ms:
        return f"{iso_ms(t)}, the time windows begin at {iso_ms(windows.start_ms)}"
    return f"{iso_ms(t)}, at or after {iso_ms(windows.until_ms)}"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _loads_overflowing_numbers(raw: bytes):
    """Standard JSON that orjson refuses only because a number overflows a double
    (1e400: valid JSON, read as inf): the standard library reads it. None otherwise."""
    import json

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


def route(out: dict, valid_batches: set, bad: BadRecords, where: str, w: int, batch: str, message: str) -> None:
    """Append `message` to out[(w, batch)], or count the record as bad_batch (names validated once)."""
    if batch not in valid_batches:
        try:
            nfc = validate_batch_name(batch)
        except InvalidName as exc:
            bad.add("bad_batch", where, str(exc))
            return
        if nfc == batch:
            valid_batches.add(batch)
        batch = nfc
    bucket = out.get((w, batch))
    if bucket is None:
        bucket = out[(w, batch)] = []
    bucket.append(message)


def route_events(out: dict, valid_batches: set, bad: BadRecords, source: str, events) -> None:
    """Route a joiner's completed events, each with its first record's (window, batch, line number),
    to out[(w, batch)]; events of records outside the windows (w < 0) are left out."""
    for (w, batch, line_no), text in events:
        if w >= 0:
            route(out, valid_batches, bad, f"{source}:{line_no}", w, batch, text)


def decode_text_lines(
    lines: Iterable[bytes], bad: BadRecords, source: str, first_line_no: int = 1, joiner=None
) -> list[str]:
    """Plain-text lines as messages; bad lines are counted and skipped. With a `joiner`
    (ops.fetch.multiline) the lines are one stream, joined into events; a blank line is kept when
    it continues an open event (a Go panic's), and events still open stay in the joiner."""
    out: list[str] = []
    append = out.append
    for offset, raw in enumerate(lines):
        if len(raw) > MAX_LINE_BYTES:
            bad.add("too_long", f"{source}:{first_line_no + offset}", f"{len(raw)} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.add("not_utf8", f"{source}:{first_line_no + offset}", f"byte offset {exc.start}")
            continue
        if not text.strip() and (joiner is None or not joiner.continues(None, text)):
            bad.add("blank", f"{source}:{first_line_no + offset}")
            continue
        if joiner is None:
            append(text)
            continue
        line_no = first_line_no + offset
        for _, event in joiner.push(None, text, line_no, lambda: f"{source}:{line_no}"):
            append(event)
    return out


def not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    """Where and why `data` is not UTF-8, for an error message: "is not UTF-8 text: invalid start
    byte 0xff at byte offset 12 (line 2)"."""
    line = data.count(b"\n", 0, exc.start) + 1
    return f"is not UTF-8 text: {exc.reason} 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line})"
