"""Where a store keeps pushed samples: the interface every backend implements.

Samples live in the store's own database (ops/fetch/push.py says what a sample is), beside the
inference results that `logloop score --record` and the anomaly_scores asset write. Two backends
implement `SampleTable`:

- resources/sql_samples.py: SQLite and PostgreSQL (`SQLSamples`);
- resources/tdengine_samples.py: TDengine (`TDengineSamples`).

resources/samples.py registers samples (`push()`) and picks the table next to a store;
resources/samples_source.py reads them back as a LogSource.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from typing import Optional

from ops.fetch.push import MAX_SAMPLE_BYTES


class SampleTable(ABC):
    """Where a store keeps pushed samples. Picklable (shards carry it to worker processes)."""

    @abstractmethod
    def register(self, batch: str, messages: list[str], flags: list[int]) -> tuple[int, int]:
        """Store the samples with unique timestamps; returns (first_ns, last_ns)."""

    @abstractmethod
    def register_chunk(self, batch: str, messages: list[str], flags: list[int], key: str) -> Optional[tuple[int, int]]:
        """As register(), once per `key` (ops.fetch.push.chunk_key): None when a chunk with this key
        was registered before (nothing is written again), else (first_ns, last_ns)."""

    @abstractmethod
    def count(self, batch: str, since_ns: Optional[int] = None, until_ns: Optional[int] = None) -> int: ...

    @abstractmethod
    def window_counts(self, lo_ns: int, hi_ns: int) -> dict[str, int]:
        """Samples per batch with lo_ns <= ts < hi_ns."""

    @abstractmethod
    def page(self, lo_ns: int, hi_ns: int, after: Optional[tuple], limit: int) -> tuple[list[tuple], Optional[tuple]]:
        """Up to `limit` samples [(batch, ts_ns, message, validation)] in [lo_ns, hi_ns) after the
        keyset position `after` (None: from the start), in time order; and the next position."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def record_results(self, batch: str, results: list[tuple], model_version: int,
                       window_ms: Optional[tuple[int, int]] = None,
                       threshold: Optional[float] = None) -> tuple[int, int]:
        """Inference results [(score, anomaly, masked form[, lines[, reason]])], one row each with a
        unique timestamp (as samples get theirs); returns (first_ns, last_ns). `lines`: how many scored
        lines the row stands for (default 1: one row per line, as `logloop score --record` writes;
        anomaly_scores writes one row per distinct form of a window with its line count). `reason`:
        why the verdict is what it is (ops.validate.verdict.REASONS; default "": not said).
        `window_ms`: the [start, end) of the time window the lines came from (anomaly_scores), so a
        backfill's rows say which window they describe; None for lines with no window. `threshold`:
        the score threshold the verdicts were judged against (None: not said)."""

    @abstractmethod
    def results(self, batch: str, since_ns: Optional[int] = None, limit: int = 1000) -> list[dict]:
        """The batch's recorded results, oldest first: {ts_ns, score, anomaly, masked, lines, reason,
        threshold, model_version, window_start_ms, window_end_ms} (the window None when the rows had
        none; reason "" and threshold None for rows recorded before verdicts said why)."""


def result_row(item) -> tuple[float, int, str, int, str]:
    """A result (score, anomaly, masked[, lines[, reason]]) as stored values: (score, 0|1, cleaned masked
    form, lines, reason)."""
    from ops.validate.verdict import REASONS

    if not 3 <= len(item) <= 5:
        raise ValueError(f"a result is (score, anomaly, masked[, lines[, reason]]), got {len(item)} values")
    score, anomaly, masked = item[:3]
    lines = item[3] if len(item) > 3 else 1
    reason = item[4] if len(item) > 4 else ""
    if isinstance(lines, bool) or not isinstance(lines, numbers.Integral) or lines < 0:
        raise ValueError(f"a result's lines must be a count (an int >= 0), got {lines!r}")
    if reason != "" and reason not in REASONS:
        raise ValueError(f"a result's reason must be one of {', '.join(REASONS)}, got {reason!r}")
    return float(score), int(bool(anomaly)), clean_masked(masked), int(lines), reason


def result_threshold(threshold) -> Optional[float]:
    """The threshold recorded with results: a number in [0, 1], or None."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"a result's threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def clean_masked(text: str) -> str:
    """A masked form as a stored value: control characters (but tab, LF, CR) as U+FFFD, cut to the limit."""
    from ops.fetch.push import _CONTROL

    text = _CONTROL.sub("\ufffd", text)
    while len(text.encode("utf-8")) > MAX_SAMPLE_BYTES:
        text = text[: len(text) * 3 // 4]
    return text


def result_window(window_ms) -> tuple[Optional[int], Optional[int]]:
    """(start, end) ms of a result's window, checked; (None, None) for none."""
    if window_ms is None:
        return None, None
    start, end = (int(v) for v in window_ms)
    if not 0 <= start < end:
        raise ValueError(f"a result's window is [start, end) in epoch ms with start < end, got {window_ms!r}")
    return start, end
