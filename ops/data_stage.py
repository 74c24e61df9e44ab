"""The data stage for one time window: stream records, mask them, summarise per batch.

Raw logs pass through in chunks and are dropped once counted; only the per-batch
summaries (bounded, see ops.summary) survive the window. Masking is memoised on the
raw message with a bounded cache, because identical raw messages are common (health
checks, retries) and masking is the cost that dominates.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ops.records import BadRecords
from ops.summary import DEFAULT_CAP, DEFAULT_TAIL_SAMPLE, Summary

DEFAULT_CACHE = 100_000


@dataclass
class WindowStats:
    lines: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    bad: BadRecords = field(default_factory=BadRecords)

    def to_dict(self) -> dict:
        return {
            "lines": self.lines,
            "seconds": round(self.seconds, 3),
            "lines_per_s": round(self.lines / self.seconds, 1) if self.seconds else None,
            "cache_hit_share": round(self.cache_hits / self.lines, 4) if self.lines else None,
            "bad_records": self.bad.to_dict(),
        }


class WindowSummarizer:
    """Accumulates chunks of (batch -> messages) into per-batch summaries."""

    def __init__(
        self,
        mask: Callable[[str], str],
        cap: int = DEFAULT_CAP,
        tail_size: int = DEFAULT_TAIL_SAMPLE,
        cache_size: int = DEFAULT_CACHE,
        seed: int = 0,
        bad: BadRecords | None = None,
    ):
        self._mask = mask
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size
        self._counters: dict[str, Counter] = {}
        self._summaries: dict[str, Summary] = {}
        self.cap = cap
        self.tail_size = tail_size
        self._rng = np.random.default_rng(seed)
        self.stats = WindowStats(bad=bad or BadRecords())
        self._misses = 0
        self._t0 = time.perf_counter()

    def _miss(self, message: str) -> str:
        self._misses += 1
        masked = self._mask(message)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()  # cheap bound; hot messages come back within a chunk
        self._cache[message] = masked
        return masked

    def add(self, batch: str, messages: list[str]) -> None:
        get, miss = self._cache.get, self._miss
        masked = [get(m) or miss(m) for m in messages]
        counter = self._counters.get(batch)
        if counter is None:
            counter = self._counters[batch] = Counter()
            self._summaries[batch] = Summary()
        counter.update(masked)
        self.stats.lines += len(messages)
        if len(counter) > self.cap:
            self._fold(batch)

    def add_chunk(self, chunk: dict[str, list[str]]) -> None:
        for batch, messages in chunk.items():
            self.add(batch, messages)

    def _fold(self, batch: str) -> None:
        summary = self._summaries[batch]
        counter = self._counters[batch]
        empty = counter.pop("", 0)
        if empty:
            self.stats.bad.counts["empty_after_masking"] += empty
            self.stats.lines -= empty
        summary.counts = counter  # Counter is a dict; compaction edits it in place
        summary.compact(self.cap, self.tail_size, self._rng)

    def finish(self) -> dict[str, Summary]:
        for batch in list(self._counters):
            self._fold(batch)
            s = self._summaries[batch]
            s.counts = dict(s.counts)
        self.stats.seconds = time.perf_counter() - self._t0
        self.stats.cache_hits = max(0, self.stats.lines - self._misses)
        return {b: s for b, s in self._summaries.items() if s.total}


def summarize_chunks(
    chunks: Iterable[dict[str, list[str]]],
    mask: Callable[[str], str],
    bad: BadRecords | None = None,
    progress: Callable[[WindowStats], None] | None = None,
    progress_every: int = 1_000_000,
    **kwargs,
) -> tuple[dict[str, Summary], WindowStats]:
    """Run a window's chunks through a WindowSummarizer; report progress periodically."""
    summarizer = WindowSummarizer(mask, bad=bad, **kwargs)
    next_report = progress_every
    for chunk in chunks:
        summarizer.add_chunk(chunk)
        if progress and summarizer.stats.lines >= next_report:
            summarizer.stats.seconds = time.perf_counter() - summarizer._t0
            progress(summarizer.stats)
            next_report += progress_every
    summaries = summarizer.finish()
    return summaries, summarizer.stats


def summarize_window_to_file(
    reader: Callable,
    start_ms: int,
    end_ms: int,
    out_path: str,
    masking_rules: list[dict] | None = None,
    **summarizer_kwargs,
) -> dict:
    """Read, mask and summarise one window; write its summaries to `out_path` (Parquet).

    Runs in a worker process: everything it needs arrives as plain, picklable values,
    and it returns only small statistics.
    """
    from ops.masking import Masker
    from ops.summary import write_summaries

    masker = Masker(masking_rules)
    bad = BadRecords()
    summaries, stats = summarize_chunks(reader(start_ms, end_ms, bad), masker.mask, bad=bad, **summarizer_kwargs)
    write_summaries(out_path, summaries, extra_meta={"window_start_ms": start_ms, "window_end_ms": end_ms})
    return {
        **stats.to_dict(),
        "counts": {b: s.total for b, s in summaries.items()},
        "distinct": {b: len(s.counts) for b, s in summaries.items()},
        "compacted": {b: s.compactions for b, s in summaries.items() if s.compactions},
    }
