"""A protocol-level fake OpenSearch for tests and benchmarks (real HTTP, real JSON).

It listens on 127.0.0.1:<free port> (a threaded `http.server`) and answers, in
OpenSearch's documented request and response shapes, the subset of the REST API that
`ops.fetch.opensearch` and `resources.opensearch_source` use; the client under test is
the real opensearch-py. Emulated, exactly:

- `GET /` and `HEAD /`: cluster info (`version.number`, default "3.3.0").
- `POST /<index>/_search/point_in_time?keep_alive=<t>`: create a PIT ->
  {"pit_id", "_shards", "creation_time"}. `DELETE /_search/point_in_time` with
  {"pit_id": [...]} -> {"pits": [{"pit_id", "successful"}]}; `.../_all` too. A PIT
  expires when its keep-alive (extended by each search's `pit.keep_alive`) runs out,
  or after `expire_pits_after` pages (fault injection); a search on it then gets
  HTTP 404 `search_phase_execution_exception` with root cause
  `search_context_missing_exception`, as OpenSearch answers.
- `POST /_search` with `pit` (and `POST /<index>/_search` without): `query`, `size`,
  `sort` (ascending only; fields, `_shard_doc`, `_index`, `_id`, `_doc`), `search_after` (one
  value per sort field), `slice` {"id", "max"} (max > 1), `_source` (false, a list,
  or {"includes", "excludes"} with exact paths; a dotted path matches a literal
  dotted key or nested objects), `track_total_hits`, and `aggs` of type `filters`
  (keyed or anonymous, nestable) -> `aggregations.<name>.buckets`. Hits carry
  `_index`, `_id`, `_score` (null), `_source`, `sort` and, when named queries
  (`_name`) matched, `matched_queries` (a list).
- `POST /<index>/_count` with an optional query -> {"count", "_shards"}.
- Queries: `match_all`, `bool` (filter, must, must_not, should,
  minimum_should_match), `range` (gte/gt/lte/lt; `format` accepted, values epoch ms),
  `term`, `terms`, `exists`, `match` (OR of lowercase word tokens, a stand-in for
  the standard analyzer). Anything else is HTTP 400 `parsing_exception`.
- Errors use OpenSearch's shape {"error": {"root_cause": [...], "type", "reason"},
  "status"}; a missing index is 404 `index_not_found_exception`; with `auth` set, a
  request without the right basic credentials or API key is 401.

Differences from OpenSearch that do not matter to the client: one index per request
(a pattern must resolve to one index); the time field is the only date field (ISO
strings in it are read as dates, sort values are epoch ms); slice membership is the
document's ordinal modulo `max` (OpenSearch hashes `_id`; both are a stable partition
of the documents); `_shard_doc` is the document's ordinal in time order, and with
`scramble_ties` a reopened PIT orders ties the other way (so a client that resumes a
new PIT with old tiebreaker values is caught).

Documents are held in memory (`ListCorpus`) or generated on demand
(`GeneratedCorpus`, the benchmark's Loghub lines cycled) so millions of documents
cost no memory. Fault injection: `fail_next(n, status)`, `delay_next(n, seconds)`,
`expire_pits_after(pages)`. Every request is logged in `requests`.
"""

from __future__ import annotations

import base64
import bisect
import fnmatch
import http.server
import os
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import orjson

from ops.fetch.records import get_field
from ops.windows import parse_time_ms

HOUR = 3_600_000
MISSING_LONG = 9223372036854775807
_TOKEN = re.compile(r"\w+")


# ---- documents -------------------------------------------------------------------


class Corpus:
    """Documents in time order: ordinal i -> (_id, time ms or None, _source)."""

    time_field = "time"
    n = 0

    def get(self, i: int) -> tuple[str, Optional[int], dict]:
        raise NotImplementedError


class ListCorpus(Corpus):
    def __init__(self, docs: list[dict], time_field: str = "time", ids: Optional[list[str]] = None):
        self.time_field = time_field
        rows = []
        for k, doc in enumerate(docs):
            t = get_field(doc, time_field)
            t = parse_time_ms(t) if t is not None else None
            rows.append((t is None, t or 0, k, ids[k] if ids else f"doc-{k}", doc))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        self.rows = [(r[3], None if r[0] else r[1], r[4]) for r in rows]
        self.n = len(self.rows)

    def get(self, i):
        return self.rows[i]


class GeneratedCorpus(Corpus):
    """n documents over `windows` hours, like benchmarks/data_stage.py writes them:
    window w holds ceil(n / windows) lines, evenly spaced, message lines[i % len(lines)]."""

    def __init__(self, n: int, lines: list[str], windows: int = 8, batch: str = "bench", start_ms: int = 0):
        self.n, self.lines, self.windows, self.batch, self.start_ms = n, lines, windows, batch, start_ms
        self.per = -(-n // windows)

    def get(self, i):
        w, j = divmod(i, self.per)
        k = min(self.per, self.n - w * self.per)
        t = self.start_ms + w * HOUR + j * (HOUR // max(k, 1))
        return str(i), t, {"time": t, "log": self.lines[i % len(self.lines)], "cluster_id": self.batch}


# ---- errors ----------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, type_: str, reason: str, **extra):
        self.status, self.type, self.reason, self.extra = status, type_, reason, extra

    def body(self) -> dict:
        cause = {"type": self.type, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def pit_missing(pit_id: str) -> ApiError:
    err = ApiError(404, "search_phase_execution_exception", "all shards failed")
    missing = {"type": "search_context_missing_exception", "reason": f"No search context found for id [{pit_id[:12]}]"}
    err.extra = {"phase": "query", "grouped": True,
                 "failed_shards": [{"shard": -1, "index": None, "reason": missing}]}
    err.root = missing
    return err


def _error_body(err: ApiError) -> dict:
    body = err.body()
    root = getattr(err, "root", None)
    if root:
        body["error"]["root_cause"] = [root]
    return body


# ---- queries ---------------------------------------------------------------------


def _field_value(corpus: Corpus, doc_id: str, t: Optional[int], src: dict, name: str):
    if name == corpus.time_field:
        return t
    if name == "_id":
        return doc_id
    return get_field(src, name)


def _values(v) -> list:
    return v if isinstance(v, list) else [v]


def _tokens(text) -> set:
    return set(_TOKEN.findall(str(text).lower())) if text is not None else set()


def matches(q: dict, corpus: Corpus, doc: tuple, names: Optional[list]) -> bool:
    """Whether the document matches query `q`; names of matching named queries go to `names`."""
    if not isinstance(q, dict) or len(q) != 1:
        raise ApiError(400, "parsing_exception", f"query malformed: {orjson.dumps(q).decode()[:80]}")
    (kind, arg), = q.items()
    doc_id, t, src = doc
    name = arg.get("_name") if isinstance(arg, dict) else None
    if kind == "match_all":
        ok = True
    elif kind == "bool":
        ok = True
        for clause in ("filter", "must"):
            for sub in _values(arg.get(clause, [])):
                if not matches(sub, corpus, doc, names):
                    ok = False
        for sub in _values(arg.get("must_not", [])):
            if matches(sub, corpus, doc, None):
                ok = False
        should = _values(arg.get("should", []))
        if should:
            default_msm = 0 if (arg.get("filter") or arg.get("must")) else 1
            msm = int(arg.get("minimum_should_match", default_msm))
            hits = sum(1 for sub in should if matches(sub, corpus, doc, names))
            ok = ok and hits >= msm
    elif kind in ("range", "term", "terms", "exists", "match"):
        spec = {k: v for k, v in arg.items() if k not in ("_name", "boost")}
        if kind == "exists":
            value = _field_value(corpus, doc_id, t, src, spec["field"])
            ok = value is not None and value != []
        else:
            if len(spec) != 1:
                raise ApiError(400, "parsing_exception", f"[{kind}] query doesn't support multiple fields")
            (fname, cond), = spec.items()
            value = _field_value(corpus, doc_id, t, src, fname)
            if kind == "range":
                if isinstance(value, str):
                    value = parse_time_ms(value)
                ok = value is not None and not isinstance(value, (list, dict))
                if ok:
                    for op, bound in cond.items():
                        if op == "gte":
                            ok = ok and value >= bound
                        elif op == "gt":
                            ok = ok and value > bound
                        elif op == "lte":
                            ok = ok and value <= bound
                        elif op == "lt":
                            ok = ok and value < bound
                        elif op not in ("format", "time_zone", "boost"):
                            raise ApiError(400, "parsing_exception", f"[range] query does not support [{op}]")
            elif kind == "term":
                want = cond["value"] if isinstance(cond, dict) else cond
                ok = want in _values(value)
            elif kind == "terms":
                ok = any(v in cond for v in _values(value))
            else:  # match
                text = cond["query"] if isinstance(cond, dict) else cond
                ok = bool(_tokens(text) & set().union(*(_tokens(v) for v in _values(value))))
    else:
        raise ApiError(400, "parsing_exception", f"unknown query [{kind}]")
    if ok and name and names is not None:
        names.append(name)
    return ok


# ---- _source filtering -----------------------------------------------------------


def _set_path(out: dict, parts: list[str], value) -> None:
    for p in parts[:-1]:
        out = out.setdefault(p, {})
    out[parts[-1]] = value


def filter_source(src: dict, spec) -> Optional[dict]:
    if spec is None or spec is True:
        return src
    if spec is False:
        return None
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list):
        includes, excludes = spec, []
    else:
        includes, excludes = spec.get("includes", []), spec.get("excludes", [])
    out: dict = {}
    if not includes:
        out = dict(src)
    for path in includes:
        if path in src:
            out[path] = src[path]
        parts = path.split(".")
        if len(parts) > 1:
            value: Any = src
            for p in parts:
                if not isinstance(value, dict) or p not in value:
                    value = None
                    break
                value = value[p]
            if value is not None:
                _set_path(out, parts, value)
    for path in excludes:
        out.pop(path, None)
    return out


# ---- the server state ------------------------------------------------------------


@dataclass
class Pit:
    index: str
    gen: int
    expires: float
    keep_alive_ms: int
    pages: int = 0


def parse_keep_alive(value: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(value or ""))
    if not m:
        raise ApiError(400, "illegal_argument_exception", f"failed to parse setting [keep_alive] with value [{value}]")
    return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]


def _parse_sort(sort) -> list[tuple[str, str]]:
    out = []
    for item in _values(sort or []):
        if isinstance(item, str):
            out.append((item, "asc"))
        else:
            (name, spec), = item.items()
            order = spec if isinstance(spec, str) else spec.get("order", "asc")
            out.append((name, order))
    for name, order in out:
        if order != "asc":
            raise ApiError(400, "illegal_argument_exception", f"the fake OpenSearch sorts ascending only ({name})")
    return out


class State:
    def __init__(self, indexes: dict[str, Corpus], version: str = "3.3.0", auth=None, stateless_pits=False,
                 scramble_ties=False, shards: int = 1):
        self.indexes = indexes
        self.version = version
        self.auth = auth                 # ("basic", user, password) or ("apikey", "<scheme> <key>")
        self.stateless_pits = stateless_pits
        self.scramble_ties = scramble_ties
        self.shards = shards
        self.pits: dict[str, Pit] = {}
        self.generations: dict[str, int] = {}
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self._fail: list = []            # [remaining, status, match, skip first]
        self._delay: list = []           # [remaining, seconds, match, skip first]
        self.expire_after: Optional[int] = None

    # fault injection
    def fail_next(self, n: int, status: int = 500, match: str = "^/_search$", after: int = 0):
        """The next n requests whose path matches the regex `match` (after skipping
        `after` of them) fail with `status`. The default matches PIT search pages."""
        self._fail.append([n, status, match, after])

    def delay_next(self, n: int, seconds: float, match: str = "^/_search$", after: int = 0):
        """The next n matching requests (after skipping `after`) are answered `seconds` late."""
        self._delay.append([n, seconds, match, after])

    def expire_pits_after(self, pages: Optional[int]):
        self.expire_after = pages

    def _take(self, faults: list, path: str):
        with self.lock:
            for f in faults:
                if f[0] > 0 and re.search(f[2], path):
                    if f[3] > 0:
                        f[3] -= 1
                        continue
                    f[0] -= 1
                    return f[1]
        return None

    # helpers
    def resolve(self, pattern: str) -> tuple[str, Corpus]:
        names = [n for n in self.indexes if any(fnmatch.fnmatchcase(n, p) for p in pattern.split(","))]
        if not names:
            raise ApiError(404, "index_not_found_exception", f"no such index [{pattern}]",
                           index=pattern, **{"resource.type": "index_or_alias", "resource.id": pattern})
        if len(names) > 1:
            raise ApiError(400, "illegal_argument_exception", "the fake OpenSearch searches one index at a time")
        return names[0], self.indexes[names[0]]

    def shards_info(self) -> dict:
        return {"total": self.shards, "successful": self.shards, "skipped": 0, "failed": 0}

    def info(self) -> dict:
        return {
            "name": "fake-node", "cluster_name": "fake-opensearch", "cluster_uuid": "fake-uuid",
            "version": {"distribution": "opensearch", "number": self.version, "build_type": "tar",
                        "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "2.19.0",
                        "minimum_index_compatibility_version": "2.0.0"},
            "tagline": "The OpenSearch Project: https://opensearch.org/",
        }

    def create_pit(self, pattern: str, params: dict) -> dict:
        if "keep_alive" not in params:
            raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: keep alive not specified;")
        ka = parse_keep_alive(params["keep_alive"][0])
        name, _ = self.resolve(pattern)
        with self.lock:
            gen = self.generations.get(name, 0)
            self.generations[name] = gen + 1
            raw = orjson.dumps({"i": name, "g": gen, "u": uuid.uuid4().hex})
            pit_id = base64.urlsafe_b64encode(raw).decode()
            self.pits[pit_id] = Pit(name, gen, time.monotonic() + ka / 1000, ka)
        return {"pit_id": pit_id, "_shards": self.shards_info(), "creation_time": int(time.time() * 1000)}

    def delete_pits(self, body: Optional[dict], all_: bool = False) -> dict:
        with self.lock:
            ids = list(self.pits) if all_ else _values((body or {}).get("pit_id", []))
            out = [{"pit_id": p, "successful": self.pits.pop(p, None) is not None or self.stateless_pits} for p in ids]
        return {"pits": out}

    def use_pit(self, spec: dict) -> Pit:
        pit_id = spec.get("id", "")
        try:
            decoded = orjson.loads(base64.urlsafe_b64decode(pit_id.encode()))
        except Exception:
            raise ApiError(400, "illegal_argument_exception", "invalid id") from None
        now = time.monotonic()
        with self.lock:
            pit = self.pits.get(pit_id)
            if pit is None and self.stateless_pits:
                return Pit(decoded["i"], decoded["g"], now + 60, 60_000)
            if pit is None or pit.expires < now:
                self.pits.pop(pit_id, None)
                raise pit_missing(pit_id)
            if self.expire_after is not None and pit.pages >= self.expire_after:
                del self.pits[pit_id]
                raise pit_missing(pit_id)
            pit.pages += 1
            if spec.get("keep_alive"):
                pit.keep_alive_ms = parse_keep_alive(spec["keep_alive"])
            pit.expires = now + pit.keep_alive_ms / 1000
            return pit

    # search
    def search(self, index_pattern: Optional[str], body: dict) -> dict:
        t0 = time.perf_counter()
        pit = None
        if body.get("pit"):
            if index_pattern:
                raise ApiError(400, "action_request_validation_exception",
                               "Validation Failed: 1: [indices] cannot be used with point in time;")
            pit = self.use_pit(body["pit"])
            name = pit.index
            corpus = self.indexes[name]
        else:
            name, corpus = self.resolve(index_pattern or "*")
        query = body.get("query") or {"match_all": {}}
        size = int(body.get("size", 10))
        sort = _parse_sort(body.get("sort"))
        for fname, _ in sort:
            if fname == "_shard_doc" and tuple(int(x) for x in self.version.split(".")[:2]) < (3, 3):
                raise ApiError(400, "query_shard_exception", "No mapping found for [_shard_doc] in order to sort on")
        after = body.get("search_after")
        if after is not None and len(after) != len(sort):
            raise ApiError(400, "illegal_argument_exception",
                           f"search_after has {len(after)} value(s) but sort has {len(sort)}.")
        sl = body.get("slice")
        sid, smax = 0, 1
        if sl:
            sid, smax = int(sl["id"]), int(sl["max"])
            if smax <= 1:
                raise ApiError(400, "illegal_argument_exception", "max must be greater than 1")
            if not 0 <= sid < smax:
                raise ApiError(400, "illegal_argument_exception", "id must be lower than max")
        scrambled = pit is not None and self.scramble_ties and pit.gen % 2 == 1

        def shard_doc(i):
            return corpus.n - 1 - i if scrambled else i

        def sort_values(i, doc):
            out = []
            for fname, _ in sort:
                if fname == "_shard_doc":
                    out.append(shard_doc(i))
                elif fname == "_doc":
                    out.append(i)
                elif fname == "_index":
                    out.append(name)
                else:
                    v = _field_value(corpus, doc[0], doc[1], doc[2], fname)
                    if isinstance(v, list):
                        v = min(v) if v else None
                    out.append(MISSING_LONG if v is None else v)
            return out

        hits = []
        fast = (
            size > 0 and not scrambled and [f for f, _ in sort if f != "_index"] == [corpus.time_field, "_shard_doc"]
        )
        if fast:
            # documents are in (time, ordinal) order: page from the search_after position
            start = int(after[-1]) + 1 if after is not None else 0  # _shard_doc is last (after _index, if any)
            first = start + ((sid - start) % smax)
            for i in range(first, corpus.n, smax):
                doc = corpus.get(i)
                names: list = []
                if matches(query, corpus, doc, names):
                    hits.append(self._hit(name, doc, body, sort_values(i, doc), names))
                    if len(hits) >= size:
                        break
        elif size > 0:
            found = []
            for i in range(sid, corpus.n, smax):
                doc = corpus.get(i)
                names = []
                if matches(query, corpus, doc, names):
                    found.append((sort_values(i, doc), i, doc, names))
            found.sort(key=lambda r: r[0])
            start = bisect.bisect_right([r[0] for r in found], list(after)) if after is not None else 0
            for values, i, doc, names in found[start : start + size]:
                hits.append(self._hit(name, doc, body, values, names))
        resp: dict[str, Any] = {"took": 0, "timed_out": False, "_shards": self.shards_info(), "hits": {}}
        if pit is not None:
            resp["pit_id"] = body["pit"]["id"]
        hits_obj: dict[str, Any] = {"max_score": None, "hits": hits}
        track = body.get("track_total_hits", True)
        if track is not False or body.get("aggs") or body.get("aggregations"):
            total = sum(1 for i in range(sid, corpus.n, smax) if matches(query, corpus, corpus.get(i), None))
            if track is not False:
                hits_obj["total"] = {"value": total, "relation": "eq"}
        resp["hits"] = hits_obj
        aggs = body.get("aggs") or body.get("aggregations")
        if aggs:
            docs = [corpus.get(i) for i in range(sid, corpus.n, smax)]
            docs = [d for d in docs if matches(query, corpus, d, None)]
            resp["aggregations"] = self._aggs(aggs, corpus, docs)
        resp["took"] = int((time.perf_counter() - t0) * 1000)
        return resp

    def _hit(self, index, doc, body, values, names) -> dict:
        hit = {"_index": index, "_id": doc[0], "_score": None}
        src = filter_source(doc[2], body.get("_source"))
        if src is not None:
            hit["_source"] = src
        hit["sort"] = values
        if names:
            hit["matched_queries"] = names
        return hit

    def _aggs(self, aggs: dict, corpus: Corpus, docs: list) -> dict:
        out = {}
        for agg_name, spec in aggs.items():
            sub = spec.get("aggs") or spec.get("aggregations")
            kinds = [k for k in spec if k not in ("aggs", "aggregations", "meta")]
            if kinds != ["filters"]:
                raise ApiError(400, "parsing_exception", f"the fake OpenSearch has no aggregation [{kinds}]")
            filters = spec["filters"]["filters"]
            named = isinstance(filters, dict)
            items = filters.items() if named else enumerate(filters)
            buckets: Any = {} if named else []
            for key, q in items:
                inside = [d for d in docs if matches(q, corpus, d, None)]
                bucket: dict[str, Any] = {"doc_count": len(inside)}
                if sub:
                    bucket.update(self._aggs(sub, corpus, inside))
                if named:
                    buckets[key] = bucket
                else:
                    buckets.append(bucket)
            out[agg_name] = {"buckets": buckets}
        return out

    def count(self, index_pattern: str, body: Optional[dict]) -> dict:
        _, corpus = self.resolve(index_pattern)
        query = (body or {}).get("query") or {"match_all": {}}
        n = sum(1 for i in range(corpus.n) if matches(query, corpus, corpus.get(i), None))
        return {"count": n, "_shards": self.shards_info()}

    def check_auth(self, headers) -> None:
        if not self.auth:
            return
        got = headers.get("Authorization", "")
        if self.auth[0] == "basic":
            want = "Basic " + base64.b64encode(f"{self.auth[1]}:{self.auth[2]}".encode()).decode()
        else:
            want = self.auth[1]
        if got != want:
            raise ApiError(401, "security_exception", "Unauthorized")


# ---- HTTP ------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State = None  # set per server class

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status: int, obj, head: bool = False):
        data = orjson.dumps(obj)
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        if not head:
            self._headers_buffer.append(b"\r\n" + data)  # one write: headers and body
            self.flush_headers()
        else:
            self.end_headers()

    def _handle(self, method: str):
        state = self.server.state
        parts = urlsplit(self.path)
        path, params = parts.path, parse_qs(parts.query)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = None
        entry = {"method": method, "path": path, "params": {k: v[0] for k, v in params.items()}, "body": None}
        try:
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise ApiError(400, "parse_exception", "request body is not valid JSON") from None
            entry["body"] = body
            with state.lock:
                state.requests.append(entry)
            delay = state._take(state._delay, path)
            if delay:
                time.sleep(delay)
            status = state._take(state._fail, path)
            if status:
                kind = "exception" if status >= 500 else "rejected_execution_exception"
                if status == 404:  # a node that lost the PIT's contexts, as a busy one does
                    kind = "search_context_missing_exception"
                raise ApiError(status, kind, f"injected fault ({status})")
            state.check_auth(self.headers)
            segs = [s for s in path.split("/") if s]
            if not segs and method in ("GET", "HEAD"):
                result = state.info()
            elif segs == ["_search", "point_in_time"] and method == "DELETE":
                result = state.delete_pits(body)
            elif segs == ["_search", "point_in_time", "_all"] and method == "DELETE":
                result = state.delete_pits(None, all_=True)
            elif len(segs) == 3 and segs[1:] == ["_search", "point_in_time"] and method == "POST":
                result = state.create_pit(segs[0], params)
            elif segs == ["_search"] and method in ("GET", "POST"):
                result = state.search(None, body or {})
            elif len(segs) == 2 and segs[1] == "_search" and method in ("GET", "POST"):
                result = state.search(segs[0], body or {})
            elif len(segs) == 2 and segs[1] == "_count" and method in ("GET", "POST"):
                result = state.count(segs[0], body)
            else:
                raise ApiError(400, "illegal_argument_exception", f"no handler found for uri [{path}] and method [{method}]")
            entry["status"] = 200
            self._send(200, result, head=method == "HEAD")
        except ApiError as err:
            entry["status"] = err.status
            self._send(err.status, _error_body(err), head=method == "HEAD")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PUT(self):
        self._handle("PUT")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class FakeOpenSearch:
    """The fake server in this process (a daemon thread). Use as a context manager."""

    def __init__(self, indexes: dict[str, Corpus] | None = None, **state_kwargs):
        self.state = State(indexes or {}, **state_kwargs)
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.state = self.state
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeOpenSearch":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> list[dict]:
        return self.state.requests

    def searches(self) -> list[dict]:
        return [r for r in self.state.requests if r["path"] == "/_search"]


def serve_generated(conn, n: int, lines: list[str], windows: int, processes: int = 1) -> None:
    """Process target: serve a GeneratedCorpus as index "logs" until SIGTERM.

    Sends the port through `conn` (a multiprocessing Connection). With processes > 1
    the listening socket is shared by that many forked processes (PITs are then
    stateless: any well-formed PIT id is valid, none expires)."""
    state = State({"logs": GeneratedCorpus(n, lines, windows)}, stateless_pits=processes > 1)
    server = _Server(("127.0.0.1", 0), Handler)
    server.state = state
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
            server.serve_forever(poll_interval=0.05)
            os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    conn.send(server.server_address[1])
    conn.close()
    server.serve_forever(poll_interval=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
