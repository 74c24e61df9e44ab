"""Time on the log's own clock: epoch milliseconds, the windows partitions cover, and the
range a read has seen. Shared by every stage and by resources/ and orchestration/."""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

# The valid range of a record's time, in epoch milliseconds: MIN_TIME_MS <= ms < MAX_TIME_MS,
# from 1970-01-01T00:00:00Z up to (not including) 10000-01-01T00:00:00Z, the first instant
# a four-digit ISO-8601 year cannot write. The one definition every reader applies (the
# careful per-line parser, both fast paths of FastJsonBlocks, OpenSearch hits): a time
# outside it (negative, huge, 1e400 read as infinity, NaN) is a bad record, `bad_time`.
MIN_TIME_MS = 0
MAX_TIME_MS = 253_402_300_800_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MS = dt.timedelta(milliseconds=1)


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 (UTC, to the second), as messages show a record's time."""
    return (_EPOCH + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time_ms(value: Any) -> int | None:
    """Epoch milliseconds from an int/float (ms), a string of digits (ms) or an ISO-8601
    string; None when it is none of these or lies outside [MIN_TIME_MS, MAX_TIME_MS)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if MIN_TIME_MS <= value < MAX_TIME_MS else None
    if isinstance(value, float):  # NaN fails both comparisons; inf the second
        return int(value) if MIN_TIME_MS <= value < MAX_TIME_MS else None
    if isinstance(value, str):
        try:
            if value.isdigit():
                return parse_time_ms(int(value))
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        ms = (parsed - _EPOCH) // _ONE_MS  # exact, and no float overflow at the ends
        return ms if MIN_TIME_MS <= ms < MAX_TIME_MS else None
    return None



class Windows:
    """Sorted, non-overlapping time windows [start, end) in epoch ms; finds a time's window.

    `start_ms` and `until_ms` bound the times any window of the loop could ever hold: the first
    time window's start (the partition start) and the run's clock plus the allowed skew. A record
    outside [start_ms, until_ms) will never be summarised, so readers count it as bad
    (`time_before_start`, `time_in_future`) instead of passing over it like a record of another
    window. Unset, they are the valid range of times, and nothing more is counted.
    """

    def __init__(self, bounds: Sequence[tuple[int, int]], *, start_ms: int | None = None, until_ms: int | None = None):
        self.bounds = sorted((int(a), int(b)) for a, b in bounds)
        self.start_ms = MIN_TIME_MS if start_ms is None else max(MIN_TIME_MS, int(start_ms))
        self.until_ms = MAX_TIME_MS if until_ms is None else min(MAX_TIME_MS, int(until_ms))
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

    def out_of_range(self, t: int) -> str | None:
        """Why a valid time can never be in a window of the loop (a bad-record reason), or None."""
        if t < self.start_ms:
            return "time_before_start"
        if t >= self.until_ms:
            return "time_in_future"
        return None

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether any window meets the closed range [lo, hi]."""
        return any(a <= hi and lo < b for a, b in self.bounds)


FIRST_KEPT = 32  # earliest record times a read keeps per file, so a start needs that many records at most


@dataclass
class TimeRange:
    """The range of times a read has seen, and its FIRST_KEPT earliest record times (sorted;
    left empty by readers whose records share one time, like a text file's lines). Where the
    partitions begin is derived from these, so a few mis-dated records cannot move it."""

    lo: int | None = None
    hi: int | None = None
    first: list[int] = field(default_factory=list)

    def add(self, lo: int, hi: int) -> None:
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def first_bound(self) -> int:
        """Times below this would enter `first` (MAX_TIME_MS while it has room)."""
        return self.first[-1] if len(self.first) >= FIRST_KEPT else MAX_TIME_MS

    def add_first(self, times) -> None:
        """Keep the FIRST_KEPT earliest of `first` and `times` (ints, already known to hold one below
        `first_bound()`; callers check the bound first, so the hot path costs one comparison)."""
        bound = self.first_bound()
        self.first = heapq.nsmallest(FIRST_KEPT, [*self.first, *(int(t) for t in times if t < bound)])


