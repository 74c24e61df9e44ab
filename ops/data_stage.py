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

from ops.records import BadRecords, TimeRange, Windows
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
    """Accumulates chunks of (key -> messages) into per-key summaries.

    A key is a batch, or (window index, batch) when one read feeds several windows.
    """

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


@dataclass
class ShardResult:
    summaries: dict          # (window index, batch) -> Summary
    lines: dict              # window index -> lines kept
    bad: BadRecords
    seen: TimeRange          # the shard's whole time range, for the source index
    seconds: float
    cache_hits: int
    peak_rss_mb: float


def summarize_shard(shard, windows: Windows, masking_rules=None, **summarizer_kwargs) -> ShardResult:
    """Read one shard (a file, a PIT slice) for `windows`: mask, summarise per (window, batch).

    Runs in a worker process: its inputs are plain picklable values, and it returns
    only bounded summaries and statistics.
    """
    from ops.masking import Masker

    masker = Masker(masking_rules)
    bad, seen = BadRecords(), TimeRange()
    summarizer = WindowSummarizer(masker.mask, bad=bad, **summarizer_kwargs)
    lines: dict[int, int] = {}
    for chunk in shard.read(windows, bad, seen):
        for key, messages in chunk.items():
            summarizer.add(key, messages)
            lines[key[0]] = lines.get(key[0], 0) + len(messages)
    summaries = summarizer.finish()
    return ShardResult(summaries, lines, bad, seen, summarizer.stats.seconds, summarizer.stats.cache_hits, peak_rss_mb())


def peak_rss_mb() -> float:
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@dataclass
class WindowResult:
    summaries: dict[str, Summary]
    lines: int


@dataclass
class RunResult:
    windows: list[WindowResult]
    bad: BadRecords
    shards: int
    seconds: float
    lines: int
    peak_worker_rss_mb: float
    time_ranges: dict        # shard path -> (shard identity, lo, hi)
    cache_hits: int


def summarize_windows(
    shards,
    windows: Windows,
    masking_rules=None,
    pool=None,
    cap: int = DEFAULT_CAP,
    progress: Callable[[int, int, int], None] | None = None,
    **summarizer_kwargs,
) -> RunResult:
    """Summarise many windows from many shards, in parallel when `pool` is given.

    Shard results are merged per (window, batch) as they arrive; summaries merge
    exactly, so the split into shards does not change the counts.
    """
    t0 = time.perf_counter()
    merged: dict = {}
    lines = [0] * len(windows)
    bad = BadRecords()
    peak, hits = 0.0, 0
    ranges = {}
    kwargs = dict(cap=cap, **summarizer_kwargs)
    if pool is None:
        results = (summarize_shard(s, windows, masking_rules, **kwargs) for s in shards)
    else:
        futures = [pool.submit(summarize_shard, s, windows, masking_rules, **kwargs) for s in shards]
        results = (f.result() for f in futures)
    for done, (shard, r) in enumerate(zip(shards, results), 1):
        for key, summary in r.summaries.items():
            prev = merged.get(key)
            merged[key] = summary if prev is None else Summary.merge([prev, summary], cap=cap)
        for w, n in r.lines.items():
            lines[w] += n
        bad.merge(r.bad)
        peak, hits = max(peak, r.peak_rss_mb), hits + r.cache_hits
        ranges[getattr(shard, "path", str(done))] = (getattr(shard, "file_id", None), r.seen.lo, r.seen.hi)
        if progress:
            progress(done, len(shards), sum(lines))
    per_window = [WindowResult({}, n) for n in lines]
    for (w, batch), summary in merged.items():
        per_window[w].summaries[batch] = summary
    return RunResult(per_window, bad, len(shards), time.perf_counter() - t0, sum(lines), peak, ranges, hits)
