"""Turning raw log lines into (time, batch, message) records, counting what is bad.

Bad input never crashes a partition and is never dropped uncounted: each skipped
line is counted under a reason, and the first few are kept as examples naming the
file and line number.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import orjson

from ops.naming import InvalidName, validate_batch_name

MAX_LINE_BYTES = 1_048_576
MAX_EXAMPLES = 10

REASONS = {
    "blank": "blank line",
    "not_utf8": "bytes are not valid UTF-8",
    "too_long": f"line longer than {MAX_LINE_BYTES} bytes",
    "bad_json": "malformed JSON",
    "not_object": "JSON value is not an object",
    "no_time": "time field missing",
    "bad_time": "time field is not epoch-ms or ISO-8601",
    "no_message": "message field missing or not a string",
    "bad_batch": "batch name is invalid",
    "empty_after_masking": "nothing left after masking",
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


def parse_time_ms(value: Any) -> int | None:
    """Epoch milliseconds from an int/float (ms) or an ISO-8601 string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            if value.isdigit():
                return int(value)
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return int(parsed.timestamp() * 1000)
    return None


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


@dataclass(frozen=True)
class RecordFormat:
    """How a JSON log document maps to a record. Field names are configurable."""

    time_field: str = "time"
    message_field: str = "log"
    batch_fields: Sequence[str] = ()
    default_batch: str = "default"
    batch_separator: str = "/"

    def batch_of(self, doc: dict) -> str:
        if not self.batch_fields:
            return self.default_batch
        values = [get_field(doc, f) for f in self.batch_fields]
        if all(v is None for v in values):
            return self.default_batch
        return self.batch_separator.join("" if v is None else str(v) for v in values)


class Windows:
    """Sorted, non-overlapping time windows [start, end) in epoch ms; finds a time's window."""

    def __init__(self, bounds: Sequence[tuple[int, int]]):
        self.bounds = sorted((int(a), int(b)) for a, b in bounds)
        self.starts = [a for a, _ in self.bounds]
        for (a, b), (c, _) in zip(self.bounds, self.bounds[1:]):
            if b > c:
                raise ValueError(f"windows overlap: [{a}, {b}) and [{c}, ...)")
        self.lo = self.bounds[0][0] if self.bounds else 0
        self.hi = self.bounds[-1][1] if self.bounds else 0

    def __len__(self) -> int:
        return len(self.bounds)

    def index(self, t: int) -> int:
        """The window holding t, or -1."""
        if t < self.lo or t >= self.hi:
            return -1
        i = bisect.bisect_right(self.starts, t) - 1
        return i if t < self.bounds[i][1] else -1

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether any window meets the closed range [lo, hi]."""
        return any(a <= hi and lo < b for a, b in self.bounds)


@dataclass
class TimeRange:
    lo: int | None = None
    hi: int | None = None

    def add(self, lo: int, hi: int) -> None:
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)


def parse_json_lines(
    lines: Iterable[bytes],
    fmt: RecordFormat,
    windows: Windows,
    bad: BadRecords,
    source: str,
    first_line_no: int = 1,
    seen: TimeRange | None = None,
) -> dict[tuple[int, str], list[str]]:
    """Parse JSON Lines into {(window index, batch): [message, ...]} for records inside a window.

    `seen` collects the range of all valid times, in or out of the windows, so a
    file's time range can be remembered and the file skipped later.
    """
    out: dict[tuple[int, str], list[str]] = {}
    loads = orjson.loads
    time_field, message_field = fmt.time_field, fmt.message_field
    window_of = windows.index
    valid_batches: set[str] = set()
    lo = hi = None
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
        if type(t) is not int:
            t = parse_time_ms(t)
            if t is None:
                bad.add("bad_time", f"{source}:{first_line_no + offset}")
                continue
        if lo is None:
            lo = hi = t
        elif t < lo:
            lo = t
        elif t > hi:
            hi = t
        w = window_of(t)
        if w < 0:
            continue
        message = doc.get(message_field)
        if message is None:
            message = get_field(doc, message_field)
        if not isinstance(message, str):
            bad.add("no_message", f"{source}:{first_line_no + offset}")
            continue
        batch = fmt.batch_of(doc)
        if batch not in valid_batches:
            try:
                validate_batch_name(batch)
            except InvalidName as exc:
                bad.add("bad_batch", f"{source}:{first_line_no + offset}", str(exc))
                continue
            valid_batches.add(batch)
        bucket = out.get((w, batch))
        if bucket is None:
            bucket = out[(w, batch)] = []
        bucket.append(message)
    if seen is not None and lo is not None:
        seen.add(lo, hi)
    return out


def decode_text_lines(
    lines: Iterable[bytes], bad: BadRecords, source: str, first_line_no: int = 1
) -> list[str]:
    """Plain-text lines as messages; bad lines are counted and skipped."""
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
        if not text.strip():
            bad.add("blank", f"{source}:{first_line_no + offset}")
            continue
        append(text)
    return out


class OverlongLine(bytes):
    """Stands in for a line too long to keep in memory; only its size is kept."""

    def __new__(cls, size: int) -> "OverlongLine":
        obj = super().__new__(cls, b"")
        obj.size = size
        return obj

    def __len__(self) -> int:  # the parsers' length check sees the real size
        return self.size


def read_line_blocks(stream, block_size: int = 1 << 20, max_line: int = MAX_LINE_BYTES):
    """Yield (first_line_no, [line bytes...]) from a binary stream, a block at a time.

    Memory stays bounded by the block size plus one kept line: a line longer than
    `max_line` is never accumulated, it is replaced by an `OverlongLine` marker.
    """
    line_no = 1
    carry = b""
    skipping = 0  # bytes of an over-long line seen so far, while discarding it
    while True:
        block = stream.read(block_size)
        if not block:
            break
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                skipping += len(block)
                continue
            lines: list[bytes] = [OverlongLine(skipping + nl)]
            block = block[nl + 1 :]
            skipping = 0
        else:
            lines = []
        has_cr = b"\r" in block or b"\r" in carry
        parts = (carry + block).split(b"\n") if carry else block.split(b"\n")
        carry = parts.pop()
        lines.extend(parts)
        if len(carry) > max_line:
            skipping, carry = len(carry), b""
        if lines:
            # strip the \r of CRLF files
            lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines] if has_cr else lines
            yield line_no, lines
            line_no += len(lines)
    if skipping:
        yield line_no, [OverlongLine(skipping)]
    elif carry:
        yield line_no, [carry[:-1] if carry.endswith(b"\r") else carry]
