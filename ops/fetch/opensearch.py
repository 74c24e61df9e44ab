"""Reading windows of logs from OpenSearch: one Point-in-Time (PIT) slice per shard.

An `OpenSearchShard` is one slice (`{"id": i, "max": n}`) of a PIT search over a set of
windows. It runs in a data-stage worker process: it opens its own PIT on the index
(`POST /<index>/_search/point_in_time?keep_alive=...`), pages through its slice with
`search_after`, sorted by the time field and a tiebreaker (`_shard_doc` on OpenSearch
>= 3.3, else `_id`, or a unique field; the index name before it), asking only for the fields it uses
(`_source` includes), and deletes the PIT at the end (`DELETE /_search/point_in_time`
with {"pit_id": [...]}). Each page of hits becomes one chunk, in exactly the shape
`FileShard.read` yields (`hits_to_chunk`), so the data stage treats both sources alike.

Each slice opens its own PIT (in its worker) rather than sharing one opened by the
parent: the worker can always delete what it opened, even when it fails. Slices still
read every document exactly once: OpenSearch assigns a document to a slice by its
shard, or by a hash of its `_id`, the same in every PIT over the same shards. A
document indexed between two slices' PIT openings is read by its slice or not at all,
as if a single PIT had been opened a moment earlier or later.

Failures:

- transient errors (connection errors and timeouts, HTTP 429 and 5xx) are retried with
  exponential backoff and jitter; the retried request is the same page (same PIT, same
  `search_after`), so a failure mid-window never re-reads what was already read;
- an expired PIT (HTTP 404 whose error names `search_context_missing_exception`, as
  OpenSearch answers for a PIT whose keep-alive ran out or that a node lost) is
  reopened, and the read goes on from the last time value read: the query is narrowed
  to `time >= last time`, and the hits at that exact time that were already read are
  skipped by index and `_id` (tiebreaker values such as `_shard_doc` are only meaningful within
  one PIT), so there are no duplicates and no gaps. If the reopened PIT spans a
  different number of shards (a wildcard index pattern that gained an index), slice
  membership may have changed, so this is a hard failure rather than a silent risk;
- a PIT create answered with 404 search_context_missing (the node lost the new PIT's contexts
  before it could lengthen their keep-alive: a node under heavy load) is tried again;
- anything else, or a transient error that outlasts the retries, raises
  `OpenSearchReadError` naming the index, windows, slice and reason; the data stage
  then fails the run and records nothing for its partitions.

Secrets: the connection settings travel to the worker inside the pickled shard (over
the process pool's local pipe; they are never written anywhere). Passwords and API
keys are wrapped in `Secret`, whose repr/str is redacted, and every error message is
scrubbed of their values, so they never reach logs, run metadata or exceptions.
Reading them from environment variables inside the worker was the alternative, but
the Dagster resource holds resolved values (`EnvVar`), not variable names, and a
resource built in code (tests, scripts) has no variable at all.

No Dagster import here: this module is plain Python for worker processes.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence


from ops.fetch.opensearch_client import Connection, OpenSearchReadError, PitExpired, call_with_retries
from ops.fetch.records import BadRecords, RecordFormat, get_field, route
from ops.windows import MAX_TIME_MS, MIN_TIME_MS, TimeRange, Windows, parse_time_ms


# ---- queries ---------------------------------------------------------------------


def time_ranges(windows: Windows) -> list[tuple[int, int]]:
    """The windows as the fewest [start, end) ranges (adjacent windows merged)."""
    merged: list[list[int]] = []
    for a, b in windows.bounds:
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def range_query(time_field: str, start: Optional[int] = None, end: Optional[int] = None) -> dict:
    bounds: dict[str, Any] = {}
    if start is not None:
        bounds["gte"] = start
    if end is not None:
        bounds["lt"] = end
    bounds["format"] = "epoch_millis"
    return {"range": {time_field: bounds}}


def windows_query(time_field: str, windows: Windows) -> dict:
    ranges = [range_query(time_field, a, b) for a, b in time_ranges(windows)]
    if len(ranges) == 1:
        return ranges[0]
    return {"bool": {"should": ranges, "minimum_should_match": 1}}


@dataclass(frozen=True)
class QuerySpec:
    """What to read besides time: named batch filters and exclusions (plain JSON, picklable)."""

    batch_queries: tuple[tuple[str, dict], ...] = ()   # (batch name, query); empty: batches from fields
    must_not: tuple[dict, ...] = ()                    # exclusions (flagged anomalies, keywords)

    def query(self, time_field: str, windows: Windows, floor: Optional[int] = None) -> dict:
        filters: list[dict] = [windows_query(time_field, windows)]
        if floor is not None:
            filters.append(range_query(time_field, floor))
        bool_q: dict[str, Any] = {"filter": filters}
        if self.must_not:
            bool_q["must_not"] = list(self.must_not)
        if self.batch_queries:
            # named queries: each hit lists the batches it matched in `matched_queries`
            bool_q["should"] = [{"bool": {"filter": [q], "_name": name}} for name, q in self.batch_queries]
            bool_q["minimum_should_match"] = 1
        return {"bool": bool_q}


def time_spans(windows: Windows, n: int) -> list[tuple[int, int]]:
    """About `n` contiguous [start, end) spans covering the windows, for shards that each read their
    documents in time order (multiline joining): groups of whole windows when there are at least n
    windows, else each window cut into equal parts. Only an event that crosses a cut is split."""
    bounds = list(windows.bounds)
    if not bounds:
        return []
    n = max(1, n)
    if len(bounds) >= n:
        size = -(-len(bounds) // n)
        return [(bounds[i][0], bounds[min(i + size, len(bounds)) - 1][1]) for i in range(0, len(bounds), size)]
    parts = max(1, n // len(bounds))
    out = []
    for a, b in bounds:
        cuts = [a + (b - a) * k // parts for k in range(parts + 1)]
        out.extend((x, y) for x, y in zip(cuts, cuts[1:]) if y > x)
    return out


# ---- hits -> chunks --------------------------------------------------------------


def hits_to_chunk(
    hits: Sequence[dict],
    fmt: RecordFormat,
    windows: Windows,
    bad: BadRecords,
    seen: TimeRange,
    where: str,
    named_batches: bool,
    valid: set,
    joiner=None,
) -> dict[tuple[int, str], list[str]]:
    """A page of hits as {(window index, batch): [message, ...]}, the chunk shape of
    `FileShard.read`. The time is the hit's first sort value (epoch ms, as OpenSearch
    gives for date and long fields) and must lie in ops.windows' valid range
    [MIN_TIME_MS, MAX_TIME_MS), as in files; bad records are counted under ops.fetch.records reasons.
    With a multiline `joiner` (ops.fetch.multiline), consecutive documents of one stream (its
    batches) that a shipper split from one event are joined again; the event is routed by its
    first document, and an event still open at the end of the page waits in the joiner."""
    out: dict[tuple[int, str], list[str]] = {}
    window_of = windows.index
    mf = fmt.message_field
    lo = hi = None
    for h in hits:
        sort = h.get("sort") or ()
        t = sort[0] if sort else None
        if type(t) is not int or not MIN_TIME_MS <= t < MAX_TIME_MS:
            t = parse_time_ms(t) if t is not None else None  # None outside the range too
            if t is None:
                bad.add("bad_time", f"{where}/{h.get('_id')}")
                continue
        if lo is None or t < lo:
            lo = t
        if hi is None or t > hi:
            hi = t
        w = window_of(t)
        if w < 0:
            continue
        src = h.get("_source") or {}
        message = src.get(mf)
        if message is None:
            message = get_field(src, mf)
        if not isinstance(message, str):
            bad.add("no_message", f"{where}/{h.get('_id')}")
            continue
        batches = (h.get("matched_queries") or ()) if named_batches else (fmt.batch_of(src),)
        if isinstance(batches, dict):  # include_named_queries_score: {name: score}
            batches = tuple(batches)
        if joiner is not None:
            stream, hit = tuple(batches), f"{where}/{h.get('_id')}"
            route_joined(out, valid, bad, joiner.push(stream, message, (w, stream, hit), lambda: hit))
            continue
        for batch in batches:
            route(out, valid, bad, f"{where}/{h.get('_id')}", w, batch, message)
    if lo is not None:
        seen.add(lo, hi)
    return out


def route_joined(out: dict, valid: set, bad: BadRecords, events) -> None:
    """Route a joiner's completed events, each with its first hit's (window, batches, name)."""
    for (w, batches, hit), text in events:
        for batch in batches:
            route(out, valid, bad, hit, w, batch, text)


# ---- the shard -------------------------------------------------------------------


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class OpenSearchShard:
    """One PIT slice of an index for a set of windows. Picklable; runs in a worker."""

    conn: Connection
    index: str
    fmt: RecordFormat
    spec: QuerySpec = QuerySpec()
    slice_id: int = 0
    slices: int = 1
    page_size: int = 5000
    keep_alive: str = "5m"
    tiebreaker: str = "_shard_doc"
    span: Optional[tuple[int, int]] = None   # only documents of [start, end) ms (a time span, not a slice)

    @property
    def path(self) -> str:  # how the data stage names a shard
        if self.span is not None:
            return f"opensearch:{self.index}#span-{self.span[0]}-{self.span[1]}"
        return f"opensearch:{self.index}#slice-{self.slice_id}-of-{self.slices}"

    @property
    def file_id(self) -> None:
        return None

    def where(self, windows: Windows) -> str:
        """The slice and its windows, as error messages name them."""
        span = f"[{_iso(windows.lo)}, {_iso(windows.hi)})" if len(windows) else "[]"
        return f"index {self.index!r}, windows {span}, slice {self.slice_id + 1}/{self.slices}"

    def read(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        """Chunks {(window index, batch): [message, ...]}, one per page of hits; with a multiline
        `joiner`, messages are events (see `hits_to_chunk`; read time spans, `span_shards`, so that
        a stream's documents come in order)."""
        if not len(windows):
            return
        valid: set = set()
        named = bool(self.spec.batch_queries)
        where = f"{self.index}#{self.slice_id}" if self.span is None else f"{self.index}@{self.span[0]}"
        for hits in self.pages(windows):
            chunk = hits_to_chunk(hits, self.fmt, windows, bad, seen, where, named, valid, joiner)
            if chunk:
                yield chunk
        if joiner is not None:
            tail: dict = {}
            route_joined(tail, valid, bad, joiner.flush())
            if tail:
                yield tail

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        """Like `read`, each chunk mapping (window index, batch) -> {raw message: count}
        (the shape of `FileShard.read_counts`)."""
        for chunk in self.read(windows, bad, seen, joiner):
            yield {key: Counter(msgs) for key, msgs in chunk.items()}

    def pages(self, windows: Windows, sleep=time.sleep) -> Iterator[list[dict]]:
        """The slice's hits for `windows`, a page at a time, each hit exactly once."""
        conn, where = self.conn, self.where(windows)
        client = conn.client()
        if self.tiebreaker == "_id":
            # before 3.3 `_id` is the only unique tiebreaker; the node warns on every page that
            # sorting on it loads fielddata, which would fill the run's logs with one known fact
            warnings.filterwarnings("ignore", message="Loading the fielddata on the _id field", module="opensearchpy")
        fields = [self.fmt.message_field, *([] if self.spec.batch_queries else self.fmt.batch_fields)]
        sort = [{self.fmt.time_field: {"order": "asc"}}, {self.tiebreaker: {"order": "asc"}}]
        # Neither `_id` nor `_shard_doc` (as OpenSearch 3.3 computes it) is unique across the indices
        # of a pattern or alias: two documents can share time and tiebreaker, and search_after would
        # skip the second at a page boundary. The index name before the tiebreaker makes the key unique.
        sort.insert(1, {"_index": {"order": "asc"}})
        state = {"pit": None, "shards": None}

        def open_pit():
            # A node opens a PIT in two steps: shard contexts with its own initial keep-alive
            # (point_in_time.init.keep_alive), then the requested one. A node too busy to take the
            # second step in time loses the contexts and answers 404 search_context_missing to the
            # create itself: that is worth another try, as a transient error is.
            for attempt in range(conn.retries + 1):
                try:
                    resp = call_with_retries(
                        conn,
                        lambda: client.create_pit(index=self.index, params={"keep_alive": self.keep_alive}),
                        f"opening a PIT ({where})",
                        sleep,
                    )
                    break
                except PitExpired as exc:
                    if attempt == conn.retries:
                        raise OpenSearchReadError(conn.scrub(
                            f"opening a PIT ({where}): {exc} after {attempt + 1} attempts")) from None
                    sleep(min(conn.max_backoff_s, conn.backoff_s * (2**attempt)))
            total = (resp.get("_shards") or {}).get("total")
            if state["shards"] is not None and total != state["shards"]:
                raise OpenSearchReadError(
                    f"reopening the PIT ({where}): it spans {total} shards, the expired one "
                    f"{state['shards']}; slices would not line up, so the read stops"
                )
            state["pit"], state["shards"] = resp["pit_id"], total

        try:
            open_pit()
            after = None
            floor = None               # after a reopen: read from this time on
            skip_time, skip_ids = None, set()
            group_time, group_ids = None, set()
            reopens = 0
            while True:
                query = self.spec.query(self.fmt.time_field, windows, floor)
                if self.span is not None:
                    query["bool"]["filter"].append(range_query(self.fmt.time_field, *self.span))
                body: dict[str, Any] = {
                    "size": self.page_size,
                    "query": query,
                    "sort": sort,
                    "_source": {"includes": fields},
                    "pit": {"id": state["pit"], "keep_alive": self.keep_alive},
                    "track_total_hits": False,
                }
                if self.slices > 1:
                    body["slice"] = {"id": self.slice_id, "max": self.slices}
                if after is not None:
                    body["search_after"] = after
                try:
                    resp = call_with_retries(conn, lambda: client.search(body=body), f"reading ({where})", sleep)
                except PitExpired:
                    reopens += 1
                    if reopens > conn.retries + 1:
                        raise OpenSearchReadError(f"reading ({where}): the PIT keeps expiring; "
                                                  f"raise keep_alive (now {self.keep_alive})") from None
                    open_pit()
                    # tiebreaker values belong to the old PIT: go on from the last time
                    # read, skipping the hits at that time that were already read
                    after = None
                    if group_time is not None:
                        floor, skip_time, skip_ids = group_time, group_time, set(group_ids)
                    continue
                state["pit"] = resp.get("pit_id") or state["pit"]
                reopens = 0  # only reopens without progress in between count
                hits = resp["hits"]["hits"]
                if not hits:
                    return
                after = hits[-1]["sort"]
                fresh = []
                for h in hits:
                    t = h["sort"][0]
                    key = (h.get("_index"), h.get("_id"))  # ids repeat across indices
                    if skip_ids and t == skip_time and key in skip_ids:
                        continue
                    if t != group_time:
                        group_time, group_ids = t, set()
                    group_ids.add(key)
                    fresh.append(h)
                if skip_ids and hits[-1]["sort"][0] != skip_time:
                    skip_time, skip_ids = None, set()
                if fresh:
                    yield fresh
        finally:
            if state["pit"]:
                try:
                    client.delete_pit(body={"pit_id": [state["pit"]]})
                except Exception:  # noqa: BLE001 - it expires by itself
                    pass
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
