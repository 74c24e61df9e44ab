"""Pushed samples and inference results in SQLite or PostgreSQL (`SQLSamples`).

A table `samples (batch, ts_ns, message, validation)` with a unique key on (ts_ns, batch), and
`sample_clock (batch, last_ns)`. A write is one transaction that reads the batch's last
timestamp, stamps its samples after it (CML's +1 ns) and moves the clock: SQLite's BEGIN
IMMEDIATE serialises writers across processes, PostgreSQL takes a transaction-scoped advisory
lock on the batch. So a batch's timestamps are unique across every process that pushes to it,
and the unique key is the backstop (a violation fails the write; nothing is overwritten).

Inference results: a table `inference_results (batch, ts_ns, score, anomaly, masked, lines,
model_version, window_start_ms, window_end_ms, reason, threshold)`, stamped by the same kind of clock
under the batch's results clock row (a store from before `reason` and `threshold` gets them when it
opens: resources/sql_schema.py, add_missing_columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ops.fetch.push import CLOCK
from ops.naming import validate_batch_name
from ops.secret import Secret
from resources.sample_table import SampleTable, result_row, result_threshold, result_window
from ops.urls import url_without_password

RESULTS_CLOCK = "\x1fresults"  # the results' clock row of a batch (no batch name holds a control character)

@dataclass
class SQLSamples(SampleTable):
    url: str                                  # sqlite:///path or postgresql://user@host/db
    password: Secret = field(default_factory=lambda: Secret(None))
    timeout_s: float = 30.0

    def _store(self):
        from resources.sql_store import SQLStoreCore
        from resources.sqlite_store import SQLiteStoreCore

        if self.url.startswith("sqlite:///"):
            return SQLiteStoreCore(path=self.url[len("sqlite:///"):], timeout_s=self.timeout_s)
        return SQLStoreCore(url=self.url, password=self.password.get(), timeout_s=self.timeout_s)

    def describe(self) -> str:
        return f"samples in the store at {url_without_password(self.url)}"

    def __repr__(self) -> str:  # no password, also not one inside the URL
        return f"SQLSamples(url={url_without_password(self.url)!r}, password={self.password!r})"

    def _tx(self, write: bool = False):
        """The store's transaction: it creates missing tables (these with its own) once per process."""
        store = self._store()
        return store, store._tx(write=write)

    def register(self, batch, messages, flags):
        return self._register(batch, messages, flags, None)

    def register_chunk(self, batch, messages, flags, key):
        return self._register(batch, messages, flags, key)

    def _register(self, batch, messages, flags, key):
        n = len(messages)
        if n == 0:
            return (0, 0)
        import sqlalchemy as sa

        from resources.sql_schema import push_chunks, sample_clock as clock, samples

        store, tx = self._tx(write=True)
        with tx as conn:
            store._lock(conn, "samples", batch)
            if key is not None:  # the chunk's row and its samples commit together, or neither does
                done = conn.execute(sa.select(push_chunks.c.first_ns).where(
                    push_chunks.c.batch == batch, push_chunks.c.chunk_key == key)).first()
                if done is not None:
                    return None
            first = self._stamp(conn, clock, batch, n)
            if key is not None:
                conn.execute(push_chunks.insert(), {"batch": batch, "chunk_key": key, "first_ns": first,
                                                    "last_ns": first + n - 1})
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    "INSERT INTO samples (batch, ts_ns, message, validation) VALUES (?, ?, ?, ?)",
                    [(batch, first + i, m, f) for i, (m, f) in enumerate(zip(messages, flags))],
                )
            else:
                conn.execute(samples.insert(), [{"batch": batch, "ts_ns": first + i, "message": m, "validation": f}
                                                for i, (m, f) in enumerate(zip(messages, flags))])
        return first, first + n - 1

    def _stamp(self, conn, clock, key: str, n: int) -> int:
        """The first of `n` timestamps after the clock row `key`'s last one; the row moves past them."""
        import sqlalchemy as sa

        last = conn.execute(sa.select(clock.c.last_ns).where(clock.c.batch == key)).scalar()
        first = CLOCK.block(n, after=last or 0)
        if last is None:
            conn.execute(clock.insert(), {"batch": key, "last_ns": first + n - 1})
        else:
            conn.execute(clock.update().where(clock.c.batch == key).values(last_ns=first + n - 1))
        return first

    def record_results(self, batch, results, model_version, window_ms=None, threshold=None):
        validate_batch_name(batch)
        if not results:
            return (0, 0)
        rows = [result_row(r) for r in results]
        start, end = result_window(window_ms)
        threshold = result_threshold(threshold)
        from resources.sql_schema import inference_results, sample_clock as clock

        table = inference_results
        store, tx = self._tx(write=True)
        with tx as conn:
            store._lock(conn, "results", batch)
            first = self._stamp(conn, clock, batch + RESULTS_CLOCK, len(rows))
            conn.execute(table.insert(), [
                {"batch": batch, "ts_ns": first + i, "score": sc, "anomaly": an, "masked": m, "lines": n,
                 "model_version": int(model_version), "window_start_ms": start, "window_end_ms": end,
                 "reason": why, "threshold": threshold}
                for i, (sc, an, m, n, why) in enumerate(rows)])
        return first, first + len(results) - 1

    def results(self, batch, since_ns=None, limit=1000):
        import sqlalchemy as sa

        from resources.sql_schema import inference_results

        t = inference_results
        q = (sa.select(t.c.ts_ns, t.c.score, t.c.anomaly, t.c.masked, t.c.lines, t.c.model_version,
                       t.c.window_start_ms, t.c.window_end_ms, t.c.reason, t.c.threshold)
             .where(t.c.batch == batch))
        if since_ns is not None:
            q = q.where(t.c.ts_ns >= since_ns)
        q = q.order_by(t.c.ts_ns).limit(limit)
        _, tx = self._tx()
        with tx as conn:
            return [{"ts_ns": r[0], "score": float(r[1]), "anomaly": bool(r[2]), "masked": r[3], "lines": int(r[4]),
                     "model_version": r[5], "window_start_ms": r[6], "window_end_ms": r[7], "reason": r[8],
                     "threshold": None if r[9] is None else float(r[9])} for r in conn.execute(q)]

    def count(self, batch, since_ns=None, until_ns=None):
        import sqlalchemy as sa

        from resources.sql_schema import samples

        q = sa.select(sa.func.count()).select_from(samples).where(samples.c.batch == batch)
        if since_ns is not None:
            q = q.where(samples.c.ts_ns >= since_ns)
        if until_ns is not None:
            q = q.where(samples.c.ts_ns < until_ns)
        _, tx = self._tx()
        with tx as conn:
            return int(conn.execute(q).scalar() or 0)

    def window_counts(self, lo_ns, hi_ns):
        import sqlalchemy as sa

        from resources.sql_schema import samples

        q = (sa.select(samples.c.batch, sa.func.count()).where(samples.c.ts_ns >= lo_ns, samples.c.ts_ns < hi_ns)
             .group_by(samples.c.batch))
        _, tx = self._tx()
        with tx as conn:
            return {b: int(n) for b, n in conn.execute(q)}

    def page(self, lo_ns, hi_ns, after, limit):
        import sqlalchemy as sa

        from resources.sql_schema import samples as s

        q = sa.select(s.c.batch, s.c.ts_ns, s.c.message, s.c.validation).where(s.c.ts_ns >= lo_ns, s.c.ts_ns < hi_ns)
        if after is not None:
            t, b = after
            q = q.where(sa.or_(s.c.ts_ns > t, sa.and_(s.c.ts_ns == t, s.c.batch > b)))
        q = q.order_by(s.c.ts_ns, s.c.batch).limit(limit)
        _, tx = self._tx()
        with tx as conn:
            rows = [tuple(r) for r in conn.execute(q)]
        return rows, ((rows[-1][1], rows[-1][0]) if rows else after)
