"""Pushed samples: where they live, how they are registered, and the log source that reads them.

Samples live in the store's own database (ops/fetch/push.py says what a sample is):

- **SQLite and PostgreSQL** (`SQLSamples`): a table `samples (batch, ts_ns, message,
  validation)` with a unique key on (ts_ns, batch), and `sample_clock (batch, last_ns)`.
  A write is one transaction that reads the batch's last timestamp, stamps its samples
  after it (CML's +1 ns) and moves the clock: SQLite's BEGIN IMMEDIATE serialises writers
  across processes, PostgreSQL takes a transaction-scoped advisory lock on the batch. So a
  batch's timestamps are unique across every process that pushes to it, and the unique key is
  the backstop (a violation fails the write; nothing is overwritten).
- **TDengine** (`TDengineSamples`): a super table `samples (ts, sample_ns, message,
  validation) TAGS (batch)`, named and escaped as the store's other tables
  (resources/tdengine_store.py): a child table per (batch, writer process),
  `sp_<sha256(batch)[:24]>_<writer id>`, the batch name kept as the tag, every value through
  `literal()`. Within its child table a process stamps consecutive nanoseconds
  (ops.fetch.push.SampleClock), and no other process writes that table, so TDengine's
  same-timestamp overwrite can never hit a sample. (The same nanosecond may occur in two
  writers' tables of one batch: they are two rows; a sample's identity is (batch, writer,
  ts).) `sample_ns` repeats ts as a plain integer for reading back.

`push()` is the one entry point (the CLI, applications, the HTTP endpoint): it reads or takes
lines, counts the bad ones, draws each sample's split flag and registers chunks of
`chunk` samples per write, as CML recommends.

`SamplesLogSource` reads them back as a LogSource: one shard per window, time-range queries
paged by (timestamp, tiebreak) keyset, each page one chunk of the data stage; counts are one
grouped query per window (`counts_cheaply`), so the sensor's catch-up and observations use it.
A validation-flagged sample is counted under `ops.fetch.push.validation_key(batch)`.

Secrets: passwords travel inside shards as `Secret` (redacted repr) and never reach messages.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterable, Literal, Optional

from pydantic import Field

from ops.naming import InvalidName, validate_batch_name
from ops.secret import Secret
from ops.fetch.push import (
    CLOCK,
    DEFAULT_CHUNK,
    DEFAULT_VALIDATION_SHARE,
    MAX_SAMPLE_BYTES,
    PushStats,
    SplitDraw,
    clean_messages,
    read_messages,
    rebatch,
    validation_key,
)
from ops.fetch.records import BadRecords
from ops.windows import TimeRange, Windows
from resources.log_source import LogSource, LogSourceError
from resources.store import StoreError
from resources.urls import url_without_password

NS_PER_MS = 1_000_000


class SampleTable(ABC):
    """Where a store keeps pushed samples. Picklable (shards carry it to worker processes)."""

    @abstractmethod
    def register(self, batch: str, messages: list[str], flags: list[int]) -> tuple[int, int]:
        """Store the samples with unique timestamps; returns (first_ns, last_ns)."""

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
    def record_results(self, batch: str, results: list[tuple[float, bool, str]], model_version: int) -> tuple[int, int]:
        """Inference results [(score, anomaly, masked form)], one row each with a unique timestamp
        (as samples get theirs); returns (first_ns, last_ns)."""

    @abstractmethod
    def results(self, batch: str, since_ns: Optional[int] = None, limit: int = 1000) -> list[dict]:
        """The batch's recorded results, oldest first: {ts_ns, score, anomaly, masked, model_version}."""


RESULTS_CLOCK = "\x1fresults"  # the results' clock row of a batch (no batch name holds a control character)


# ---- SQLite / PostgreSQL ----------------------------------------------------------------------

_SQL_READY: set = set()
_SQL_LOCK = threading.Lock()


def _sql_tables():
    import sqlalchemy as sa

    md = sa.MetaData()
    samples = sa.Table(
        "samples", md,
        sa.Column("batch", sa.Text, nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("validation", sa.SmallInteger, nullable=False),
        sa.UniqueConstraint("ts_ns", "batch", name="samples_ts_batch"),
    )
    clock = sa.Table(
        "sample_clock", md,
        sa.Column("batch", sa.Text, primary_key=True),
        sa.Column("last_ns", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "inference_results", md,
        sa.Column("batch", sa.Text, nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("anomaly", sa.SmallInteger, nullable=False),
        sa.Column("masked", sa.Text, nullable=False),
        sa.Column("model_version", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("batch", "ts_ns", name="inference_results_batch_ts"),
    )
    return md, samples, clock


@dataclass
class SQLSamples(SampleTable):
    url: str                                  # sqlite:///path or postgresql://user@host/db
    password: Secret = field(default_factory=lambda: Secret(None))
    timeout_s: float = 30.0

    def _store(self):
        from resources.sql_store import SQLStore
        from resources.sqlite_store import SQLiteStore

        if self.url.startswith("sqlite:///"):
            return SQLiteStore(path=self.url[len("sqlite:///"):], timeout_s=self.timeout_s)
        return SQLStore(url=self.url, password=self.password.get(), timeout_s=self.timeout_s)

    def describe(self) -> str:
        return f"samples in the store at {url_without_password(self.url)}"

    def __repr__(self) -> str:  # no password, also not one inside the URL
        return f"SQLSamples(url={url_without_password(self.url)!r}, password={self.password!r})"

    def _tx(self, write: bool = False):
        store = self._store()
        key = (self.url, os.getpid())
        if key not in _SQL_READY:
            with _SQL_LOCK, store._tx(write=True) as conn:
                store._lock(conn, "schema", "samples")
                _sql_tables()[0].create_all(conn)
                _SQL_READY.add(key)
        return store, store._tx(write=write)

    def register(self, batch, messages, flags):
        import sqlalchemy as sa

        n = len(messages)
        if n == 0:
            return (0, 0)
        _, samples, clock = _sql_tables()
        store, tx = self._tx(write=True)
        with tx as conn:
            store._lock(conn, "samples", batch)
            last = conn.execute(sa.select(clock.c.last_ns).where(clock.c.batch == batch)).scalar()
            first = CLOCK.block(n, after=last or 0)
            if last is None:
                conn.execute(clock.insert(), {"batch": batch, "last_ns": first + n - 1})
            else:
                conn.execute(clock.update().where(clock.c.batch == batch).values(last_ns=first + n - 1))
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
        import sqlalchemy as sa

        last = conn.execute(sa.select(clock.c.last_ns).where(clock.c.batch == key)).scalar()
        first = CLOCK.block(n, after=last or 0)
        if last is None:
            conn.execute(clock.insert(), {"batch": key, "last_ns": first + n - 1})
        else:
            conn.execute(clock.update().where(clock.c.batch == key).values(last_ns=first + n - 1))
        return first

    def record_results(self, batch, results, model_version):
        validate_batch_name(batch)
        if not results:
            return (0, 0)
        md, _, clock = _sql_tables()
        table = md.tables["inference_results"]
        store, tx = self._tx(write=True)
        with tx as conn:
            store._lock(conn, "results", batch)
            first = self._stamp(conn, clock, batch + RESULTS_CLOCK, len(results))
            conn.execute(table.insert(), [
                {"batch": batch, "ts_ns": first + i, "score": float(sc), "anomaly": int(bool(an)),
                 "masked": _clean(m), "model_version": int(model_version)}
                for i, (sc, an, m) in enumerate(results)])
        return first, first + len(results) - 1

    def results(self, batch, since_ns=None, limit=1000):
        import sqlalchemy as sa

        md, _, _ = _sql_tables()
        t = md.tables["inference_results"]
        q = sa.select(t.c.ts_ns, t.c.score, t.c.anomaly, t.c.masked, t.c.model_version).where(t.c.batch == batch)
        if since_ns is not None:
            q = q.where(t.c.ts_ns >= since_ns)
        q = q.order_by(t.c.ts_ns).limit(limit)
        _, tx = self._tx()
        with tx as conn:
            return [{"ts_ns": r[0], "score": float(r[1]), "anomaly": bool(r[2]), "masked": r[3], "model_version": r[4]}
                    for r in conn.execute(q)]

    def count(self, batch, since_ns=None, until_ns=None):
        import sqlalchemy as sa

        _, samples, _ = _sql_tables()
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

        _, samples, _ = _sql_tables()
        q = (sa.select(samples.c.batch, sa.func.count()).where(samples.c.ts_ns >= lo_ns, samples.c.ts_ns < hi_ns)
             .group_by(samples.c.batch))
        _, tx = self._tx()
        with tx as conn:
            return {b: int(n) for b, n in conn.execute(q)}

    def page(self, lo_ns, hi_ns, after, limit):
        import sqlalchemy as sa

        _, s, _ = _sql_tables()
        q = sa.select(s.c.batch, s.c.ts_ns, s.c.message, s.c.validation).where(s.c.ts_ns >= lo_ns, s.c.ts_ns < hi_ns)
        if after is not None:
            t, b = after
            q = q.where(sa.or_(s.c.ts_ns > t, sa.and_(s.c.ts_ns == t, s.c.batch > b)))
        q = q.order_by(s.c.ts_ns, s.c.batch).limit(limit)
        _, tx = self._tx()
        with tx as conn:
            rows = [tuple(r) for r in conn.execute(q)]
        return rows, ((rows[-1][1], rows[-1][0]) if rows else after)


# ---- TDengine ---------------------------------------------------------------------------------

_TD_READY: set = set()
_TD_STABLE = (
    f"ts TIMESTAMP, sample_ns BIGINT, message VARCHAR({MAX_SAMPLE_BYTES}), validation INT"
)
# the score in millionths (an integer: exact round trips, and the fake emulates no DOUBLE)
_TD_RESULTS = (
    f"ts TIMESTAMP, result_ns BIGINT, score_ppm BIGINT, anomaly INT, masked VARCHAR({MAX_SAMPLE_BYTES}), "
    "model_version BIGINT"
)


def _clean(text: str) -> str:
    """A masked form as a stored value: control characters (but tab, LF, CR) as U+FFFD, cut to the limit."""
    from ops.fetch.push import _CONTROL

    text = _CONTROL.sub("\ufffd", text)
    while len(text.encode("utf-8")) > MAX_SAMPLE_BYTES:
        text = text[: len(text) * 3 // 4]
    return text


@dataclass
class TDengineSamples(SampleTable):
    url: str
    database: str = "logloop"
    user: str = "root"
    password: Secret = field(default_factory=lambda: Secret(None))
    timeout_s: float = 30.0

    def _store(self):
        from resources.tdengine_store import TDengineStore

        return TDengineStore(url=self.url, database=self.database, user=self.user,
                             password=self.password.get() or "", timeout_s=self.timeout_s)

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
            _TD_READY.add(key)
        return store

    def _rows(self, store, sql: str, what: str) -> list[dict]:
        resp = store._sql(sql, what)
        names = [m[0] for m in resp.get("column_meta") or []]
        return [dict(zip(names, row)) for row in resp.get("data") or []]

    def register(self, batch, messages, flags):
        from resources.tdengine_client import MAX_SQL, literal, name_hash, writer_id

        n = len(messages)
        if n == 0:
            return (0, 0)
        store = self._ready()
        child = f"{self.database}.sp_{name_hash(batch)}_{writer_id()}"
        head = f"INSERT INTO {child} USING {self.database}.samples TAGS ({literal(batch)}) VALUES "
        first = CLOCK.block(n)
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

    def record_results(self, batch, results, model_version):
        from resources.tdengine_client import literal, name_hash, writer_id

        validate_batch_name(batch)
        if not results:
            return (0, 0)
        store = self._ready()
        child = f"{self.database}.ir_{name_hash(batch)}_{writer_id()}"
        head = f"INSERT INTO {child} USING {self.database}.inference_results TAGS ({literal(batch)}) VALUES "
        first = CLOCK.block(len(results))
        rows = [f"({first + i}, {first + i}, {int(round(float(sc) * 1e6))}, {int(bool(an))}, {literal(_clean(m))}, "
                f"{int(model_version)})" for i, (sc, an, m) in enumerate(results)]
        for i in range(0, len(rows), 500):
            store._sql(head + "".join(rows[i:i + 500]), f"cannot record inference results of batch {batch!r}")
        return first, first + len(results) - 1

    def results(self, batch, since_ns=None, limit=1000):
        from resources.tdengine_store import literal

        store = self._ready()
        where = f"batch = {literal(batch)}" + (f" AND ts >= {int(since_ns)}" if since_ns is not None else "")
        rows = self._rows(store, f"SELECT result_ns, score_ppm, anomaly, masked, model_version FROM "
                                 f"{self.database}.inference_results WHERE {where} ORDER BY ts LIMIT {int(limit)}",
                          "cannot read inference results")
        return [{"ts_ns": r["result_ns"], "score": r["score_ppm"] / 1e6, "anomaly": bool(r["anomaly"]),
                 "masked": r["masked"], "model_version": r["model_version"]} for r in rows]

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


# ---- from a store -------------------------------------------------------------------------------


def samples_for_store(store) -> SampleTable:
    """The sample table next to an initialised store resource."""
    from resources.sql_store import SQLStore
    from resources.sqlite_store import SQLiteStore
    from resources.tdengine_store import TDengineStore

    if isinstance(store, TDengineStore):
        return TDengineSamples(store.url, store.database, store.user, Secret(store.password), store.timeout_s)
    if isinstance(store, SQLiteStore):
        return SQLSamples(f"sqlite:///{store.path}", timeout_s=store.timeout_s)
    if isinstance(store, SQLStore):
        return SQLSamples(store.url, Secret(store.password), store.timeout_s)
    raise StoreError(f"pushed samples need a SQLite, PostgreSQL or TDengine store, not {type(store).__name__}")


# ---- push -----------------------------------------------------------------------------------------


def push(
    batch: str,
    lines: "IO[bytes] | Iterable[str]",
    table: Optional[SampleTable] = None,
    *,
    fmt: str = "text",
    message_field: str = "log",
    validation_share: float = DEFAULT_VALIDATION_SHARE,
    seed: Optional[int] = None,
    chunk: int = DEFAULT_CHUNK,
    source: str = "input",
) -> PushStats:
    """Register log lines as samples of `batch`; returns what happened (PushStats).

    `lines`: a binary stream (text or JSON Lines, per `fmt`), or an iterable of messages
    (str). `table`: where (default: the configured store's). InvalidName for a batch name that
    cannot be one; StoreError when the store fails (the chunks before it stay registered).
    """
    validate_batch_name(batch)
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    draw = SplitDraw(validation_share, seed)
    if table is None:
        from orchestration.resources import resource

        table = samples_for_store(resource("store"))
    stats = PushStats()
    t0 = time.perf_counter()
    if hasattr(lines, "read"):
        messages = read_messages(lines, stats, fmt, message_field, source)
    else:
        messages = (clean_messages(part, stats, source) for part in _parts(lines, chunk))
    offset = 0
    for part in rebatch(messages, chunk):
        flags = draw.flags(len(part))
        first, last = table.register(batch, part, flags)
        stats.registered += len(part)
        stats.validation += sum(flags)
        stats.first_ns = first if stats.first_ns is None else stats.first_ns
        stats.last_ns = last
        offset += len(part)
    stats.seconds = time.perf_counter() - t0
    return stats


def _parts(items: Iterable, size: int):
    buf = []
    for x in items:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


# ---- the log source -------------------------------------------------------------------------------


@dataclass
class SamplesShard:
    """One window's samples, read in pages (runs in a data-stage worker)."""

    table: SampleTable
    window: int
    page_size: int = 10_000
    path: str = ""

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange):
        a, b = windows.bounds[self.window]
        valid: set[str] = set()
        after, lo = None, None
        while True:
            try:
                rows, after = self.table.page(a * NS_PER_MS, b * NS_PER_MS, after, self.page_size)
            except StoreError as exc:
                raise LogSourceError(str(exc)) from None
            if not rows:
                break
            chunk: dict = {}
            for batch, ts, message, flag in rows:
                if batch not in valid:
                    try:
                        validate_batch_name(batch)
                    except InvalidName as exc:
                        bad.add("bad_batch", f"sample {batch!r}@{ts}", str(exc))
                        continue
                    valid.add(batch)
                key = (self.window, validation_key(batch) if flag else batch)
                counter = chunk.get(key)
                if counter is None:
                    counter = chunk[key] = Counter()
                counter[message] += 1
            lo = rows[0][1] // NS_PER_MS if lo is None else lo
            seen.add(lo, rows[-1][1] // NS_PER_MS)
            yield {k: dict(c) for k, c in chunk.items()}
            if len(rows) < self.page_size:
                break

    def read(self, windows, bad, seen):
        for chunk in self.read_counts(windows, bad, seen):
            yield {k: [m for m, c in counts.items() for _ in range(c)] for k, counts in chunk.items()}


class SamplesLogSource(LogSource):
    """Samples pushed to logloop (`logloop push`), read from the store's database."""

    backend: Literal["sql", "tdengine"] = Field(description="sql: SQLite or PostgreSQL; tdengine: TDengine REST.")
    url: str = Field(description="The store's URL: sqlite:///path, postgresql://user@host/db, or taosAdapter's http URL.")
    password: Optional[str] = Field(default=None, repr=False, description="The database password (use EnvVar).")
    database: str = Field(default="logloop", description="TDengine database.")
    user: str = Field(default="root", description="TDengine user.")
    page_size: int = Field(default=10_000, gt=0, le=1_000_000, description="Samples per page (one data-stage chunk).")
    timeout_s: float = Field(default=30.0, gt=0)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (url_without_password(value) if name == "url" else value)

    def table(self) -> SampleTable:
        if self.backend == "tdengine":
            return TDengineSamples(self.url, self.database, self.user, Secret(self.password), self.timeout_s)
        return SQLSamples(self.url, Secret(self.password), self.timeout_s)

    def describe(self) -> str:
        return f"pushed {self.table().describe()}"

    def shards(self, windows: Windows) -> list[SamplesShard]:
        table = self.table()
        return [SamplesShard(table, w, self.page_size, f"samples:{a}") for w, (a, _) in enumerate(windows.bounds)]

    @property
    def counts_cheaply(self) -> bool:
        return True  # one grouped query per window

    def count(self, windows: Windows, batches: list[str]) -> dict[tuple[int, str], int]:
        table = self.table()
        out = {}
        try:
            for w, (a, b) in enumerate(windows.bounds):
                got = table.window_counts(a * NS_PER_MS, b * NS_PER_MS)
                for batch in batches:
                    out[(w, batch)] = got.get(batch, 0)
        except StoreError as exc:
            raise LogSourceError(str(exc)) from None
        return out
