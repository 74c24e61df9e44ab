"""Pushed samples and inference results in TDengine (`TDengineSamples`).

A super table `samples (ts, sample_ns, message, validation) TAGS (batch)`, named and escaped
as the store's other tables (resources/tdengine_store.py): a child table per (batch, writer
process), `sp_<sha256(batch)[:24]>_<writer id>`, the batch name kept as the tag, every value
through `literal()`. Within its child table a process stamps consecutive nanoseconds
(ops.fetch.push.SampleClock), and no other process writes that table, so TDengine's
same-timestamp overwrite can never hit a sample. (The same nanosecond may occur in two
writers' tables of one batch: they are two rows; a sample's identity is (batch, writer, ts).)
`sample_ns` repeats ts as a plain integer for reading back.

Inference results: a super table `inference_results (ts, result_ns, score, anomaly, masked,
model_version, line_count, window_start_ms, window_end_ms, reason, threshold)` with a child table per
(batch, writer process), `ir_<sha256(batch)[:24]>_<writer id>` (`line_count`, as the store's tables
name it, is read back as `lines`). A super table from before `reason` and `threshold` gets them
(ALTER STABLE ... ADD COLUMN, found missing with DESCRIBE) the first time a process uses it; its
older rows read back with reason "" and no threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ops.fetch.push import CLOCK, MAX_SAMPLE_BYTES
from ops.naming import validate_batch_name
from ops.secret import Secret
from resources.sample_table import SampleTable, result_row, result_threshold, result_window
from ops.urls import url_without_password

_TD_READY: set = set()
_TD_STABLE = (
    f"ts TIMESTAMP, sample_ns BIGINT, message VARCHAR({MAX_SAMPLE_BYTES}), validation INT"
)
# columns added after the super table's first release, in order (ALTER STABLE appends; inserts are positional)
_TD_RESULTS_ADDED = (("reason", "VARCHAR(16)"), ("threshold", "DOUBLE"))
_TD_RESULTS = (
    f"ts TIMESTAMP, result_ns BIGINT, score DOUBLE, anomaly INT, masked VARCHAR({MAX_SAMPLE_BYTES}), "
    "model_version BIGINT, line_count BIGINT, window_start_ms BIGINT, window_end_ms BIGINT, "
    + ", ".join(f"{name} {kind}" for name, kind in _TD_RESULTS_ADDED)
)


@dataclass
class TDengineSamples(SampleTable):
    url: str
    database: str = "logloop"
    user: str = "root"
    password: Secret = field(default_factory=lambda: Secret(None))
    timeout_s: float = 30.0
    deadline_s: float = 60.0

    def _store(self):
        from resources.tdengine_store import TDengineStoreCore

        return TDengineStoreCore(url=self.url, database=self.database, user=self.user,
                             password=self.password.get() or "", timeout_s=self.timeout_s, deadline_s=self.deadline_s)

    def describe(self) -> str:
        return f"samples in TDengine at {url_without_password(self.url)} (database {self.database})"

    def __repr__(self) -> str:
        return (f"TDengineSamples(url={url_without_password(self.url)!r}, database={self.database!r}, "
                f"user={self.user!r}, password={self.password!r})")

    def _ready(self):
        store = self._store()
        key = (self.url, self.database, self.user)
        if key not in _TD_READY:
            store._ensure_schema()
            store._sql(f"CREATE STABLE IF NOT EXISTS {self.database}.samples ({_TD_STABLE}) "
                       f"TAGS (batch NCHAR(256))", "cannot create super table samples")
            store._sql(f"CREATE STABLE IF NOT EXISTS {self.database}.inference_results ({_TD_RESULTS}) "
                       f"TAGS (batch NCHAR(256))", "cannot create super table inference_results")
            self._add_missing_columns(store)
            _TD_READY.add(key)
        return store

    def _add_missing_columns(self, store) -> None:
        """A super table created before _TD_RESULTS_ADDED gets those columns (its rows hold NULL there)."""
        present = {r["field"] for r in self._rows(store, f"DESCRIBE {self.database}.inference_results",
                                                  "cannot describe super table inference_results")}
        for name, kind in _TD_RESULTS_ADDED:
            if name not in present:
                store._sql(f"ALTER STABLE {self.database}.inference_results ADD COLUMN {name} {kind}",
                           f"cannot add column {name} to super table inference_results")

    def _rows(self, store, sql: str, what: str) -> list[dict]:
        resp = store._sql(sql, what)
        names = [m[0] for m in resp.get("column_meta") or []]
        return [dict(zip(names, row)) for row in resp.get("data") or []]

    def register(self, batch, messages, flags):
        from resources.tdengine_client import name_hash, writer_id

        if not messages:
            return (0, 0)
        store = self._ready()
        first = CLOCK.block(len(messages))
        return self._write(store, f"sp_{name_hash(batch)}_{writer_id()}", batch, messages, flags, first)

    def register_chunk(self, batch, messages, flags, key):
        """A keyed chunk gets a child table of its own, named from the key. TDengine has no
        transactions, so a chunk cut short by a crash may be partly there: its rows are written again
        at the timestamps they were first given (the table's oldest row is the chunk's first), and
        TDengine's same-timestamp overwrite makes that a no-op for the rows already stored."""
        import hashlib

        from resources.tdengine_client import name_hash

        if not messages:
            return (0, 0)
        store = self._ready()
        child = f"sp_{name_hash(batch)}_k{hashlib.sha256(key.encode()).hexdigest()[:24]}"
        rows = self._rows(store, f"SELECT MIN(sample_ns) AS first, COUNT(ts) AS n FROM {self.database}.samples "
                                 f"WHERE tbname = '{child}'", f"cannot look up a chunk of batch {batch!r}")
        n, first = (int(rows[0]["n"] or 0), rows[0]["first"]) if rows else (0, None)
        if n >= len(messages):
            return None
        first = int(first) if n and first is not None else CLOCK.block(len(messages))
        return self._write(store, child, batch, messages, flags, first)

    def _write(self, store, table: str, batch, messages, flags, first: int) -> tuple[int, int]:
        from resources.tdengine_client import MAX_SQL, literal

        n = len(messages)
        child = f"{self.database}.{table}"
        head = f"INSERT INTO {child} USING {self.database}.samples TAGS ({literal(batch)}) VALUES "
        parts, size = [], len(head)
        for i, (m, f) in enumerate(zip(messages, flags)):
            ts = first + i
            piece = f"({ts}, {ts}, {literal(m)}, {int(f)})"
            if parts and size + len(piece) * 4 > MAX_SQL:  # 4: the most UTF-8 bytes per character
                store._sql(head + "".join(parts), f"cannot register samples of batch {batch!r}")
                parts, size = [], len(head)
            parts.append(piece)
            size += len(piece) * 4 if not piece.isascii() else len(piece)
        store._sql(head + "".join(parts), f"cannot register samples of batch {batch!r}")
        return first, first + n - 1

    def record_results(self, batch, results, model_version, window_ms=None, threshold=None):
        from resources.tdengine_client import literal, name_hash, writer_id

        validate_batch_name(batch)
        if not results:
            return (0, 0)
        store = self._ready()
        child = f"{self.database}.ir_{name_hash(batch)}_{writer_id()}"
        head = f"INSERT INTO {child} USING {self.database}.inference_results TAGS ({literal(batch)}) VALUES "
        items = [result_row(r) for r in results]
        start, end = (("NULL" if v is None else v) for v in result_window(window_ms))
        threshold = result_threshold(threshold)
        limit = "NULL" if threshold is None else repr(threshold)
        first = CLOCK.block(len(items))
        rows = [f"({first + i}, {first + i}, {sc!r}, {an}, {literal(m)}, {int(model_version)}, {n}, {start}, {end}, "
                f"{literal(why)}, {limit})" for i, (sc, an, m, n, why) in enumerate(items)]
        for i in range(0, len(rows), 500):
            store._sql(head + "".join(rows[i:i + 500]), f"cannot record inference results of batch {batch!r}")
        return first, first + len(results) - 1

    def results(self, batch, since_ns=None, limit=1000):
        from resources.tdengine_store import literal

        store = self._ready()
        where = f"batch = {literal(batch)}" + (f" AND ts >= {int(since_ns)}" if since_ns is not None else "")
        rows = self._rows(store, "SELECT result_ns, score, anomaly, masked, line_count, model_version, window_start_ms, "
                                 f"window_end_ms, reason, threshold FROM {self.database}.inference_results WHERE {where} "
                                 f"ORDER BY ts LIMIT {int(limit)}",
                          "cannot read inference results")
        return [{"ts_ns": r["result_ns"], "score": r["score"], "anomaly": bool(r["anomaly"]),
                 "masked": r["masked"], "lines": int(r["line_count"]),
                 "model_version": r["model_version"], "window_start_ms": r["window_start_ms"],
                 "window_end_ms": r["window_end_ms"], "reason": r["reason"] or "", "threshold": r["threshold"]}
                for r in rows]

    def count(self, batch, since_ns=None, until_ns=None):
        from resources.tdengine_store import literal

        store = self._ready()
        where = [f"batch = {literal(batch)}"]
        if since_ns is not None:
            where.append(f"ts >= {int(since_ns)}")
        if until_ns is not None:
            where.append(f"ts < {int(until_ns)}")
        rows = self._rows(store, f"SELECT COUNT(ts) AS n FROM {self.database}.samples WHERE {' AND '.join(where)}",
                          "cannot count samples")
        return int(rows[0]["n"] or 0) if rows else 0

    def window_counts(self, lo_ns, hi_ns):
        store = self._ready()
        rows = self._rows(store, f"SELECT batch, COUNT(ts) AS n FROM {self.database}.samples "
                                 f"WHERE ts >= {int(lo_ns)} AND ts < {int(hi_ns)} PARTITION BY batch",
                          "cannot count samples")
        return {r["batch"]: int(r["n"]) for r in rows if r["n"]}

    def page(self, lo_ns, hi_ns, after, limit):
        # keyset (ts, table): rows of one timestamp in several writers' tables are few (one per writer),
        # so the page restarts at the last timestamp and skips the tables already read at it
        store = self._ready()
        start, seen = (lo_ns, set()) if after is None else after
        want = limit + len(seen)
        while True:
            rows = self._rows(store, f"SELECT batch, sample_ns, message, validation, tbname FROM {self.database}.samples "
                                     f"WHERE ts >= {int(start)} AND ts < {int(hi_ns)} ORDER BY ts LIMIT {want}",
                              "cannot read samples")
            if len(rows) < want or rows[-1]["sample_ns"] != start:
                break
            want *= 2  # a page all at one timestamp: read wider
        out, last_ts, at_last = [], start, set(seen)
        for r in rows:
            ts = r["sample_ns"]
            if ts == start and r["tbname"] in seen:
                continue
            out.append((r["batch"], ts, r["message"], r["validation"]))
            if ts != last_ts:
                last_ts, at_last = ts, set()
            at_last.add(r["tbname"])
            if len(out) >= limit:
                break
        return out, ((last_ts, at_last) if out else after)
