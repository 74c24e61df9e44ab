"""The data stage for time windows: stream records, mask them, summarise per batch.

Raw logs pass through in chunks and are dropped once counted; only the per-batch
summaries (bounded, see ops.mask.summary) survive the window. A chunk maps a key to
{raw message: count} (`FileShard.read_counts`: JSON blocks are parsed and counted
vectorised, see ops.fetch.local_files), so Python touches each distinct raw message of a
block once, not each line; counts add with their multiplicity.

Masking is the cost that dominates, so it is done once per distinct raw message:
memoised with a bounded cache that lives for the worker process (shared by all the
shards that process reads), and, when a pool has several workers, not repeated in
each of them: a shard defers the raw messages its worker has not masked yet (at most
`defer` distinct ones; beyond that it masks them itself) and returns them with their
counts; the parent masks each deferred message once, in chunks spread over the pool,
and adds the counts to the summaries. Summaries merge exactly, so where a message is
masked does not change the counts.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ops.fetch.records import BadRecords
from ops.windows import TimeRange, Windows
from ops.mask.summary import DEFAULT_CAP, DEFAULT_TAIL_SAMPLE, Summary

DEFAULT_CACHE = 100_000
# A worker process costs seconds of CPU before it reads a line (it starts Python and imports the
# reader), about what reading 100 MB of JSON Lines costs here: a default run reads in a pool only
# when each worker gets at least this much of the files' known size (compressed files count 5x).
MIN_BYTES_PER_WORKER = 128 << 20
DEFAULT_DEFER = 20_000       # distinct raw messages a shard may leave to the parent to mask
MAX_HELD = 200_000           # deferred entries the parent holds before it resolves them
OVERFLOW_BATCH = "_overflow_new_batches"  # where records of new batches past the per-window cap go
MAX_OVERFLOW_EXAMPLES = 10

_MASKERS: dict = {}          # per process: rules (as JSON) -> (Masker, mask cache)


def masker_and_cache(masking_rules=None):
    """This process's Masker for `masking_rules` and its raw->masked cache, built once."""
    key = "default" if masking_rules is None else json.dumps(masking_rules, sort_keys=True)
    got = _MASKERS.get(key)
    if got is None:
        from ops.mask.masking import Masker

        got = _MASKERS[key] = (Masker(masking_rules), {})
    return got


@dataclass
class NewBatchCap:
    """At most `max_new` batches per window that are not in `known`; records of any further new
    batch are routed to OVERFLOW_BATCH, counted, and a few of those batch names kept as examples.

    A batch field holding a random value per record (a request id, a UUID) would otherwise make
    one batch, one summary and one Dagster partition per record: memory and the materialization
    event would grow with the data. With the cap they grow with `max_new`. Keys are
    (window index, batch); `max_new=None` admits everything.
    """

    known: frozenset = frozenset()
    max_new: int | None = None
    admitted: dict = field(default_factory=dict)   # window index -> new batches admitted
    records: int = 0                                # records routed to the overflow batch
    examples: list = field(default_factory=list)    # batch names routed there (the first few)

    def route(self, key):
        """The key `key`'s records go to: itself, or (its window, OVERFLOW_BATCH)."""
        if self.max_new is None or not isinstance(key, tuple):
            return key
        w, batch = key
        if batch in self.known or batch == OVERFLOW_BATCH:
            return key
        seen = self.admitted.setdefault(w, set())
        if batch in seen:
            return key
        if len(seen) < self.max_new:
            seen.add(batch)
            return key
        if len(self.examples) < MAX_OVERFLOW_EXAMPLES and batch not in self.examples:
            self.examples.append(batch)
        return (w, OVERFLOW_BATCH)

    def merge(self, other: "NewBatchCap") -> None:
        self.records += other.records
        room = MAX_OVERFLOW_EXAMPLES - len(self.examples)
        self.examples.extend([b for b in other.examples if b not in self.examples][:room])

    def shipped(self) -> "NewBatchCap":
        """What a worker sends back: the counts, not the admitted names (the parent routes again)."""
        return NewBatchCap(max_new=self.max_new, records=self.records, examples=list(self.examples))


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
    """Accumulates chunks of (key -> messages) or (key -> {message: count}) into per-key summaries.

    A key is a batch, or (window index, batch) when one read feeds several windows.
    `cache` may be a dict shared with other summarizers (same masking); it is kept
    below `cache_size` entries. With `defer` > 0, up to that many distinct (key, raw
    message) pairs missing from the cache are not masked but kept in `pending`
    with their counts, for the caller to mask and add.
    """

    def __init__(
        self,
        mask: Callable[[str], str],
        cap: int = DEFAULT_CAP,
        tail_size: int = DEFAULT_TAIL_SAMPLE,
        cache_size: int = DEFAULT_CACHE,
        seed: int = 0,
        bad: BadRecords | None = None,
        cache: dict | None = None,
        defer: int = 0,
        known_batches: frozenset = frozenset(),
        max_new_batches: int | None = None,
    ):
        self._mask = mask
        self.batch_cap = NewBatchCap(frozenset(known_batches), max_new_batches)
        self._cache: dict[str, str] = {} if cache is None else cache
        self._defer = defer
        self.pending: dict[tuple, int] = {}  # (key, raw message) -> count, not masked yet
        self.deferred_lines = 0
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

    def add(self, batch, messages: list[str]) -> None:
        self.add_counts(batch, Counter(messages))

    def add_counts(self, batch, counts: dict[str, int]) -> int:
        """Add {raw message: count} to `batch`; returns the number of lines added."""
        get, miss = self._cache.get, self._miss
        routed = self.batch_cap.route(batch)
        overflowed, batch = routed != batch, routed
        counter = self._counters.get(batch)
        if counter is None:
            counter = self._counters[batch] = Counter()
            self._summaries[batch] = Summary()
        pending, defer = self.pending, self._defer
        total = deferred = 0
        for raw, c in counts.items():
            total += c
            masked = get(raw)
            if masked is None:
                if defer:
                    pk = (batch, raw)
                    if pk in pending:
                        pending[pk] += c
                        deferred += c
                        continue
                    if len(pending) < defer:
                        pending[pk] = c
                        deferred += c
                        continue
                masked = miss(raw)
            counter[masked] += c
        self.stats.lines += total
        self.deferred_lines += deferred
        if overflowed:
            self.batch_cap.records += total
        if len(counter) > self.cap:
            self._fold(batch)
        return total

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
        self.stats.cache_hits = max(0, self.stats.lines - self._misses - self.deferred_lines)
        return {b: s for b, s in self._summaries.items() if s.total}

    @property
    def misses(self) -> int:
        return self._misses


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
    pending: list = field(default_factory=list)  # [(key, raw message, count)] left to mask
    masks: int = 0                               # messages this shard masked itself
    deferred_lines: int = 0                      # lines behind `pending`
    overflow: NewBatchCap = field(default_factory=NewBatchCap)  # records past the new-batch cap


def summarize_shard(shard, windows: Windows, masking_rules=None, defer: int = 0, multiline=None,
                    **summarizer_kwargs) -> ShardResult:
    """Read one shard (a file, a PIT slice) for `windows`: mask, summarise per (window, batch).

    Runs in a worker process: its inputs are plain picklable values, and it returns
    only bounded summaries and statistics, plus at most `defer` raw messages (with
    their counts) that this process had not masked yet, for the caller to mask.
    Shards with `read_counts` give counted chunks; others' message lists are counted.
    With `multiline` rules (ops.fetch.multiline.load_multiline), the shard joins the lines of
    each stream into events, so the counts are of events.
    """
    from ops.fetch.multiline import Joiner, compiled

    masker, cache = masker_and_cache(masking_rules)
    bad, seen = BadRecords(), TimeRange()
    summarizer = WindowSummarizer(masker.mask, bad=bad, cache=cache, defer=defer, **summarizer_kwargs)
    lines: dict[int, int] = {}
    ml = compiled(multiline)
    extra = (Joiner(ml, bad),) if ml is not None else ()
    read_counts = getattr(shard, "read_counts", None)
    if read_counts is not None:
        chunks = read_counts(windows, bad, seen, *extra)
    else:
        chunks = ({key: Counter(msgs) for key, msgs in c.items()} for c in shard.read(windows, bad, seen, *extra))
    for chunk in chunks:
        for key, counts in chunk.items():
            n = summarizer.add_counts(key, counts)
            lines[key[0]] = lines.get(key[0], 0) + n
    summaries = summarizer.finish()
    pending = [(key, raw, c) for (key, raw), c in summarizer.pending.items()]
    return ShardResult(
        summaries, lines, bad, seen, summarizer.stats.seconds, summarizer.stats.cache_hits, peak_rss_mb(),
        pending, summarizer.misses, summarizer.deferred_lines, summarizer.batch_cap.shipped(),
    )


def workers_worth_starting(shards, most: int) -> int:
    """How many worker processes (at most `most`) are worth starting for `shards`: one per
    MIN_BYTES_PER_WORKER of input; `most` when a shard's size is unknown (a query, a sample table)."""
    total = 0
    for shard in shards:
        size = getattr(shard, "size_bytes", None)
        if size is None:
            return most
        total += size * (5 if getattr(shard, "compression", None) else 1)
    return max(1, min(most, total // MIN_BYTES_PER_WORKER))


def mask_messages(raws: list[str], masking_rules=None, cache_size: int = DEFAULT_CACHE) -> tuple[list[str], float]:
    """Mask raw messages (a worker task); returns the masked forms and the peak RSS.

    The masks also go into this worker's cache, so its later shards count those
    messages themselves instead of deferring them again.
    """
    masker, cache = masker_and_cache(masking_rules)
    mask = masker.mask
    masks = [mask(r) for r in raws]
    if len(cache) + len(raws) > cache_size:
        cache.clear()
    if len(raws) <= cache_size:
        cache.update(zip(raws, masks))
    return masks, peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's own peak resident memory. On Linux getrusage's ru_maxrss of a spawned
    worker starts from its parent's peak at spawn time, so /proc's VmHWM is read instead."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
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
    overflow: NewBatchCap = field(default_factory=NewBatchCap)  # records of new batches past the cap
    first_times: dict = field(default_factory=dict)  # shard path -> its earliest record times (TimeRange.first)


def summarize_windows(
    shards,
    windows: Windows,
    masking_rules=None,
    pool=None,
    cap: int = DEFAULT_CAP,
    progress: Callable[[int, int, int], None] | None = None,
    multiline=None,
    known_batches=frozenset(),
    max_new_batches: int | None = None,
    **summarizer_kwargs,
) -> RunResult:
    """Summarise many windows from many shards, in parallel when `pool` is given.

    Shard results are merged per (window, batch) as they arrive; summaries merge
    exactly, so the split into shards does not change the counts. With a pool of
    several workers, raw messages a shard deferred are masked once each, in chunks
    submitted to the same pool, and their counts added when the masks are back (at
    the end, or whenever the deferred entries held here exceed MAX_HELD). At most
    two shards per worker are in flight, so results held here stay bounded.
    `multiline`: the rules joining lines into events (None: every line is its own event).
    `max_new_batches`: batches per window not in `known_batches` kept as themselves; records of
    further new batches are summarised under OVERFLOW_BATCH (NewBatchCap), in each worker and
    again here, so neither holds more than that many new batches per window.
    """
    t0 = time.perf_counter()
    merged: dict = {}
    lines = [0] * len(windows)
    bad = BadRecords()
    peak, hits = 0.0, 0
    ranges, first_times = {}, {}
    workers = getattr(pool, "_max_workers", 1) if pool is not None else 1
    defer = summarizer_kwargs.pop("defer", DEFAULT_DEFER if workers > 1 else 0)
    cache_size = summarizer_kwargs.get("cache_size", DEFAULT_CACHE)
    known_batches = frozenset(known_batches)
    kwargs = dict(cap=cap, defer=defer, multiline=multiline, known_batches=known_batches,
                  max_new_batches=max_new_batches, **summarizer_kwargs)
    batch_cap = NewBatchCap(known_batches, max_new_batches)

    known: dict[str, str] = {}      # masks learned here (deferred messages)
    inflight: set[str] = set()
    mask_jobs: list = []            # (raw messages, future of their masks)
    held: list = []                 # results' pending entries, waiting for masks
    held_n = deferred_lines = masked_here = 0

    def add_summary(key, summary):
        routed = batch_cap.route(key)
        if routed != key:
            batch_cap.records += summary.total
            key = routed
        prev = merged.get(key)
        merged[key] = summary if prev is None else Summary.merge([prev, summary], cap=cap)

    def resolve():
        nonlocal peak, held_n, masked_here
        for raws, fut in mask_jobs:
            masks, rss = fut.result()
            known.update(zip(raws, masks))
            peak = max(peak, rss)
            masked_here += len(raws)
        mask_jobs.clear()
        inflight.clear()
        per_key: dict = {}
        for entries in held:
            for key, raw, c in entries:
                masked = known[raw]
                if not masked:
                    bad.counts["empty_after_masking"] += c
                    continue
                counter = per_key.get(key)
                if counter is None:
                    counter = per_key[key] = Counter()
                counter[masked] += c
        held.clear()
        held_n = 0
        for key, counter in per_key.items():
            add_summary(key, Summary.merge([Summary(counts=dict(counter))], cap=cap))
        if len(known) > cache_size:
            known.clear()

    def submit_masks(raws: list[str]):
        step = max(256, -(-len(raws) // workers))
        for i in range(0, len(raws), step):
            part = raws[i : i + step]
            mask_jobs.append((part, pool.submit(mask_messages, part, masking_rules, cache_size)))

    if pool is None:
        results = (summarize_shard(s, windows, masking_rules, **kwargs) for s in shards)
    else:
        def in_order():
            todo, running = iter(shards), deque()
            for shard in todo:
                running.append(pool.submit(summarize_shard, shard, windows, masking_rules, **kwargs))
                if len(running) >= 2 * workers:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()

        results = in_order()
    for done, (shard, r) in enumerate(zip(shards, results), 1):
        for key, summary in r.summaries.items():
            add_summary(key, summary)
        for w, n in r.lines.items():
            lines[w] += n
        bad.merge(r.bad)
        batch_cap.merge(r.overflow)
        peak, hits = max(peak, r.peak_rss_mb), hits + r.cache_hits
        ranges[getattr(shard, "path", str(done))] = (getattr(shard, "file_id", None), r.seen.lo, r.seen.hi)
        if r.seen.first:
            first_times[getattr(shard, "path", str(done))] = r.seen.first
        if r.pending:
            fresh = [raw for _, raw, _ in r.pending if raw not in known and raw not in inflight]
            if fresh:
                fresh = list(dict.fromkeys(fresh))
                inflight.update(fresh)
                if pool is None:
                    mask_jobs.append((fresh, _Done(mask_messages(fresh, masking_rules))))
                else:
                    submit_masks(fresh)
            held.append(r.pending)
            held_n += len(r.pending)
            deferred_lines += r.deferred_lines
            if held_n > MAX_HELD or all(fut.done() for _, fut in mask_jobs):
                resolve()  # while the workers read on, rather than all at the end
        if progress:
            progress(done, len(shards), sum(lines))
    resolve()
    hits += max(0, deferred_lines - masked_here)
    per_window = [WindowResult({}, n) for n in lines]
    for (w, batch), summary in merged.items():
        if summary.total:
            per_window[w].summaries[batch] = summary
    return RunResult(per_window, bad, len(shards), time.perf_counter() - t0, sum(lines), peak, ranges, hits,
                     batch_cap.shipped(), first_times)


class _Done:
    """A finished 'future' (masks computed in this process)."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value

    def done(self) -> bool:
        return True
