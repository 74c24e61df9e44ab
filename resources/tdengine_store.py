"""The production store on TDengine 3.x, spoken to through taosAdapter's REST API (`taosrest`).

TDengine is an append-only time-series database: no UPDATE, no DELETE of single rows, no
transactions, and a row whose timestamp already exists in the same child table silently
OVERWRITES the old row. Everything below follows from that.

Layout (database created with PRECISION 'ns'; one super table per kind of record, each
with the real batch name as the tag `batch`):

- sample_counts (ts, partition_key, window_start_ms, window_end_ms, line_count, recorded_ns,
  recorded_ms) TAGS (batch)
- task_events (ts, task_id, task_state, run_id, mode, window_start_ms, window_end_ms,
  deadline_ms, message, started_ms, updated_ms, started_ns) TAGS (batch)
- models (ts, version, run_id, artifact, artifact_uri, metrics, window_start_ms,
  window_end_ms, created_ms, parent_version, mode) TAGS (batch)
- labels (ts, form_key, label_value, masked_form, example_line, label_source, model_version,
  created_ms, label_ns) TAGS (batch)
- production (ts, prod_version, prev_version, change_action, change_source, change_reason,
  created_ms, event_ns) TAGS (batch)

`count` and `state` are TDengine keywords, hence `line_count` and `task_state`.

Names and values. Batch names are user data (quotes, semicolons, `../`, unicode). They
never become identifiers: a child table is named from a hash, `<prefix>_<sha256(batch)[:24]>_<writer>`,
and the name itself is kept as the tag. Every value reaches SQL through `literal()`, which
single-quotes strings, escapes backslash and quote (and newline, CR and tab with TDengine's
escapes) and rejects other control characters, NUL included.

Timestamp uniqueness (two writes on the same nanosecond of one child table would silently
overwrite each other). Two mechanisms together make that impossible:

1. Within a process, `allocate_ns()` hands out max(time_ns(), last + 1) under a lock, so no
   two writes of one process ever share a timestamp, however tight the loop.
2. Across processes, child tables are keyed by (batch hash, writer id), where the writer id
   is 64 random bits drawn per process (drawn again after fork). Two processes therefore
   never write the same child table, and (1) covers each table completely; clock skew
   between hosts cannot cause an overwrite either.

The price is one child table per (batch, writing process); TDengine is built for millions
of child tables, and readers always go through the super tables. (Reserving low timestamp
bits for a writer id instead would keep one table per batch, but a random id in a few bits
can collide, so it would make overwrites unlikely rather than impossible.)

"Replace" without UPDATE. Each record_sample_counts call is a generation: all its rows carry
the same recorded_ns (= their ts). A partition's current recording is its newest generation;
a batch's row counts only if it belongs to that generation, so a re-recording that drops a
batch hides its old count, and nothing is ever summed twice. An empty recording writes a
marker row under the reserved batch "" so that it, too, supersedes older generations.

Task events are appended with every field resolved (carry-over happens at write time), so a
task's current state is simply LAST_ROW per (batch, task_id). Events of one task written by
different hosts are ordered by their clocks.

Labels are appended the same way: the current label of a form is LAST_ROW per (batch,
form_key), form_key being the hash store.label_key(batch, form) (forms can be 4000 characters).
A new label's timestamp is also later than that of the label it read as current, so a
correction wins even when the previous label came from a host whose clock runs ahead.

Production changes (promote, rollback, ...) are appended the same way: the batch's events in
timestamp order are its history, the last one wins, and a new event's timestamp is later than
that of the last event it read, so a change made on a host whose clock is behind still comes
last. Two changes of one batch at the same moment both land; the later timestamp wins.

Model registration has no transaction to lean on; see register_model for the race and how the
caller's retry (orchestration/registry.py) resolves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from resources.store import (
    ACTIVE_STATES,
    AnomalyCount,
    BatchStatus,
    Label,
    ModelRecord,
    ProductionEvent,
    PartitionCount,
    Store,
    StoreError,
    Task,
    VersionConflict,
    build_batch_statuses,
    count_new_and_total,
    check_label,
    check_task_args,
    label_key,
    merge_task_event,
    now_ms,
)
from resources.urls import url_without_password

# -- values -------------------------------------------------------------------------------------

_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPE_RE = re.compile(r"[\\'\n\r\t]")
_INT64 = (-(2**63), 2**63 - 1)


def literal(value) -> str:
    """`value` as a TDengine SQL literal: NULL, a decimal integer, or a single-quoted string.

    Strings: backslash and single quote are escaped (\\\\, \\'), newline, CR and tab become
    TDengine's \\n, \\r, \\t; any other control character (NUL included) and unencodable
    text (lone surrogates) raise ValueError, as do other types.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise ValueError("booleans are not stored; pass an int or a str")
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"integer {value} does not fit a BIGINT")
        return str(value)
    if isinstance(value, str):
        bad = _FORBIDDEN_CONTROL.search(value)
        if bad:
            raise ValueError(
                f"text {value[:60]!r} contains the control character U+{ord(bad.group()):04X}, which the store rejects"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text {value[:60]!r} is not valid unicode: {exc.reason}") from exc
        return "'" + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], value) + "'"
    raise ValueError(f"cannot store a {type(value).__name__} value ({value!r})")


def name_hash(batch: str) -> str:
    return hashlib.sha256(batch.encode("utf-8")).hexdigest()[:24]


# -- timestamps ---------------------------------------------------------------------------------

_clock_lock = threading.Lock()
_clock = {"last_ns": 0, "writer": secrets.token_hex(8)}


def _after_fork() -> None:
    global _clock_lock
    _clock_lock = threading.Lock()
    _clock["last_ns"] = 0
    _clock["writer"] = secrets.token_hex(8)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def allocate_ns(after: int = 0) -> int:
    """A nanosecond timestamp no earlier call in this process has had: max(now, last + 1),
    and later than `after` (a timestamp this write must follow)."""
    with _clock_lock:
        ts = max(time.time_ns(), _clock["last_ns"] + 1, after + 1)
        _clock["last_ns"] = ts
        return ts


def writer_id() -> str:
    """This process's writer id (16 hex digits): part of every child table it writes."""
    return _clock["writer"]


# -- schema -------------------------------------------------------------------------------------

_NAME = 256  # batch names are at most 200 characters (ops.naming.MAX_BATCH_NAME)
_STABLES = {
    "sample_counts": (
        "ts TIMESTAMP, partition_key NCHAR(256), window_start_ms BIGINT, window_end_ms BIGINT, "
        "line_count BIGINT, recorded_ns BIGINT, recorded_ms BIGINT"
    ),
    "task_events": (
        "ts TIMESTAMP, task_id NCHAR(256), task_state VARCHAR(16), run_id NCHAR(256), mode VARCHAR(16), "
        "window_start_ms BIGINT, window_end_ms BIGINT, deadline_ms BIGINT, message NCHAR(4000), "
        "started_ms BIGINT, updated_ms BIGINT, started_ns BIGINT"
    ),
    # A time series per batch: ts is the window's start, so re-scoring a window overwrites its
    # row (TDengine's same-timestamp overwrite is the intended upsert here), and the child
    # table has no writer id: every writer of a batch's window must land on the same row.
    "anomaly_counts": (
        "ts TIMESTAMP, window_start_ms BIGINT, window_end_ms BIGINT, line_count BIGINT, anomalies BIGINT, "
        "model_version BIGINT, recorded_ms BIGINT"
    ),
    "models": (
        "ts TIMESTAMP, version BIGINT, run_id NCHAR(256), artifact NCHAR(1024), artifact_uri NCHAR(1024), "
        "metrics VARCHAR(8192), window_start_ms BIGINT, window_end_ms BIGINT, created_ms BIGINT, "
        "parent_version BIGINT, mode VARCHAR(16)"
    ),
    # store.MAX_LABEL_FORM, MAX_LABEL_EXAMPLE and MAX_LABEL_SOURCE characters
    "labels": (
        "ts TIMESTAMP, form_key VARCHAR(64), label_value VARCHAR(16), masked_form NCHAR(4000), "
        "example_line NCHAR(2000), label_source NCHAR(200), model_version BIGINT, created_ms BIGINT, label_ns BIGINT"
    ),
    # store.MAX_CHANGE_REASON and MAX_LABEL_SOURCE characters; change_action one of PRODUCTION_ACTIONS
    "production": (
        "ts TIMESTAMP, prod_version BIGINT, prev_version BIGINT, change_action VARCHAR(16), "
        "change_source NCHAR(200), change_reason NCHAR(1000), created_ms BIGINT, event_ns BIGINT"
    ),
}
_PREFIX = {"sample_counts": "sc", "task_events": "te", "models": "md", "anomaly_counts": "ac", "labels": "lb",
           "production": "pd"}
_VOID_BATCH = ""  # reserved tag of the marker row an empty recording writes
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_SQL = 512 * 1024  # bytes per INSERT statement (TDengine's default limit is 1 MiB)
_ready: set[tuple] = set()
_ready_lock = threading.Lock()

_TASK_SELECT = (
    "LAST_ROW(started_ns) AS started_ns, LAST_ROW(task_state) AS task_state, LAST_ROW(run_id) AS run_id, "
    "LAST_ROW(mode) AS mode, LAST_ROW(window_start_ms) AS window_start_ms, "
    "LAST_ROW(window_end_ms) AS window_end_ms, LAST_ROW(started_ms) AS started_ms, "
    "LAST_ROW(deadline_ms) AS deadline_ms, LAST_ROW(updated_ms) AS updated_ms, LAST_ROW(message) AS message"
)
_LABEL_SELECT = (
    "LAST_ROW(label_ns) AS label_ns, LAST_ROW(label_value) AS label_value, LAST_ROW(masked_form) AS masked_form, "
    "LAST_ROW(example_line) AS example_line, LAST_ROW(label_source) AS label_source, "
    "LAST_ROW(model_version) AS model_version, LAST_ROW(created_ms) AS created_ms"
)
_MODEL_COLS = (
    "batch, version, run_id, artifact, artifact_uri, metrics, window_start_ms, window_end_ms, created_ms, "
    "parent_version, mode"
)


class TDengineStore(Store):
    """Store on TDengine through taosAdapter's REST API (see the module docstring for the design)."""

    url: str = "http://localhost:6041"
    database: str = "logloop"
    user: str = "root"
    # required: pass dagster EnvVar("..."); never logged, never put in an error message, never in repr()
    password: str = Field(repr=False, description="taosAdapter password (use EnvVar).")
    timeout_s: float = 10.0

    def __repr_args__(self):
        """What repr() and str() show: no password, and the url without a password in its user info."""
        for name, value in super().__repr_args__():
            yield name, (url_without_password(value) if name == "url" else value)

    # -- plumbing -------------------------------------------------------------------------------

    def _where(self) -> str:
        """The URL without user info: what error messages name."""
        try:
            parts = urlsplit(self.url if "://" in self.url else "http://" + self.url)
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        except ValueError:
            return "<unparseable url>"

    def _fail(self, what: str, detail: str, exc: Optional[BaseException] = None):
        text = f"TDengine store at {self._where()} (database {self.database}): {what}: {detail}"
        if self.password:
            text = text.replace(self.password, "***")
        raise StoreError(text) from exc

    def _sql(self, sql: str, what: str = "query failed") -> dict:
        import requests
        import taosrest

        try:
            client = taosrest.RestClient(
                self.url, user=self.user, password=self.password, timeout=self.timeout_s, convert_timestamp=False
            )
            return client.sql(sql)
        except taosrest.HTTPError as exc:
            if exc.status_code == 401:
                self._fail(what, f"authentication failed for user {self.user!r} (HTTP 401)", None)
            self._fail(what, f"HTTP {exc.status_code} ({exc.msg or 'error'})", None)
        except taosrest.Error as exc:
            self._fail(what, f"TDengine error 0x{(exc.errno or 0) & 0xFFFF:04x}: {exc.msg}", None)
        except requests.exceptions.Timeout:
            self._fail(what, f"no answer within {self.timeout_s} s", None)
        except requests.exceptions.ConnectionError:
            self._fail(what, "cannot connect (is taosAdapter running and the URL right?)", None)
        except requests.exceptions.RequestException as exc:
            self._fail(what, f"HTTP request failed: {type(exc).__name__}", None)
        except (ValueError, KeyError, TypeError) as exc:
            self._fail(what, f"answer is not a TDengine REST response ({type(exc).__name__})", None)

    def _rows(self, sql: str, what: str = "query failed") -> list[dict]:
        self._ensure_schema()
        resp = self._sql(sql, what)
        names = [m[0] for m in resp.get("column_meta") or []]
        return [dict(zip(names, row)) for row in resp.get("data") or []]

    def _ensure_schema(self) -> None:
        key = (self._where(), self.database, self.user)
        if key in _ready:
            return
        if not _DB_NAME.match(self.database):
            raise StoreError(f"TDengine database name {self.database!r} is not a plain identifier")
        with _ready_lock:
            if key in _ready:
                return
            self._sql(f"CREATE DATABASE IF NOT EXISTS {self.database} PRECISION 'ns'", "cannot create the database")
            for stable, columns in _STABLES.items():
                self._sql(
                    f"CREATE STABLE IF NOT EXISTS {self.database}.{stable} ({columns}) TAGS (batch NCHAR({_NAME}))",
                    f"cannot create super table {stable}",
                )
            _ready.add(key)

    def _child(self, stable: str, batch: str) -> str:
        return f"{self.database}.{_PREFIX[stable]}_{name_hash(batch)}_{writer_id()}"

    def _insert(self, stable: str, rows: list[tuple[str, tuple]], what: str) -> None:
        """INSERT rows [(batch, values)] into their child tables, in statements of bounded size."""
        self._ensure_schema()
        pieces = []
        for batch, values in rows:
            if not isinstance(batch, str):
                raise ValueError(f"batch name {batch!r} is not a string")
            pieces.append(
                f"{self._child(stable, batch)} USING {self.database}.{stable} TAGS ({literal(batch)}) "
                f"VALUES ({', '.join(literal(v) for v in values)})"
            )
        statement, size = [], 0
        for piece in pieces:
            if statement and size + len(piece.encode("utf-8")) > _MAX_SQL:
                self._sql("INSERT INTO " + " ".join(statement), what)
                statement, size = [], 0
            statement.append(piece)
            size += len(piece.encode("utf-8")) + 1
        if statement:
            self._sql("INSERT INTO " + " ".join(statement), what)

    # -- sample counts --------------------------------------------------------------------------

    def record_sample_counts(self, partition_key, window_start_ms, window_end_ms, counts):
        for batch in counts:
            if batch == _VOID_BATCH:
                raise ValueError("the empty batch name is reserved")
        gen, at = allocate_ns(), now_ms()
        rows = [
            (batch, (gen, partition_key, int(window_start_ms), int(window_end_ms), int(n), gen, at))
            for batch, n in counts.items()
        ] or [(_VOID_BATCH, (gen, partition_key, int(window_start_ms), int(window_end_ms), 0, gen, at))]
        self._insert("sample_counts", rows, f"cannot record sample counts of partition {partition_key!r}")

    def _current_partitions(self, batch: Optional[str]) -> list[dict]:
        """The current recording's row of every (batch, partition) — of one batch, or of all."""
        db = self.database
        latest = (
            "LAST_ROW(recorded_ns) AS gen, LAST_ROW(window_start_ms) AS window_start_ms, "
            "LAST_ROW(window_end_ms) AS window_end_ms, LAST_ROW(line_count) AS line_count"
        )
        if batch is None:
            rows = self._rows(
                f"SELECT batch, partition_key, {latest} FROM {db}.sample_counts PARTITION BY batch, partition_key"
            )
            newest: dict[str, int] = {}
            for r in rows:
                newest[r["partition_key"]] = max(newest.get(r["partition_key"], r["gen"]), r["gen"])
        else:
            rows = self._rows(
                f"SELECT batch, partition_key, {latest} FROM {db}.sample_counts "
                f"WHERE batch = {literal(batch)} PARTITION BY batch, partition_key"
            )
            newest = {
                r["partition_key"]: r["gen"]
                for r in self._rows(
                    f"SELECT partition_key, MAX(recorded_ns) AS gen FROM {db}.sample_counts GROUP BY partition_key"
                )
            }
        return [r for r in rows if r["batch"] != _VOID_BATCH and r["gen"] == newest.get(r["partition_key"])]

    def partition_counts(self, batch, start_ms=None, end_ms=None):
        out = [
            PartitionCount(r["partition_key"], r["batch"], r["window_start_ms"], r["window_end_ms"], r["line_count"])
            for r in self._current_partitions(batch)
            if (start_ms is None or r["window_end_ms"] > start_ms) and (end_ms is None or r["window_start_ms"] < end_ms)
        ]
        return sorted(out, key=lambda p: (p.window_start_ms, p.partition_key))

    # -- anomaly counts -----------------------------------------------------------------------

    def record_anomaly_counts(self, counts):
        self._ensure_schema()
        pieces = []
        for c in counts:
            child = f"{self.database}.{_PREFIX['anomaly_counts']}_{name_hash(c.batch)}"
            values = (int(c.window_start_ms) * 1_000_000, int(c.window_start_ms), int(c.window_end_ms), int(c.lines),
                      int(c.anomalies), int(c.model_version), now_ms())
            pieces.append(f"{child} USING {self.database}.anomaly_counts TAGS ({literal(c.batch)}) "
                          f"VALUES ({', '.join(literal(v) for v in values)})")
        if pieces:
            self._sql("INSERT INTO " + " ".join(pieces), "cannot record anomaly counts")

    def anomaly_counts(self, batch, start_ms=None, end_ms=None):
        rows = self._rows(
            f"SELECT window_start_ms, window_end_ms, line_count, anomalies, model_version FROM {self.database}.anomaly_counts "
            f"WHERE batch = {literal(batch)} ORDER BY ts",
            "cannot read anomaly counts",
        )
        out = []
        for r in rows:
            start = r["window_start_ms"]
            if (start_ms is None or r["window_end_ms"] > start_ms) and (end_ms is None or start < end_ms):
                out.append(AnomalyCount(batch, start, r["window_end_ms"], r["line_count"], r["anomalies"], r["model_version"]))
        return out

    # -- models ---------------------------------------------------------------------------------

    def list_models(self, batch=None):
        """Registered models, by batch then version.

        Without transactions two registrations can both append the same version; the one
        with the earliest timestamp (then the smaller run_id) holds it, the others are
        shadowed (never shown) and their writers were told VersionConflict.
        """
        where = f" WHERE batch = {literal(batch)}" if batch is not None else ""
        rows = self._rows(f"SELECT {_MODEL_COLS} FROM {self.database}.models{where} ORDER BY ts, run_id")
        held: dict[tuple[str, int], ModelRecord] = {}
        runs: set[tuple[str, str]] = set()
        for r in rows:
            key = (r["batch"], r["version"])
            if key in held or (r["batch"], r["run_id"]) in runs:
                continue
            held[key] = ModelRecord(
                batch=r["batch"], version=r["version"], run_id=r["run_id"], artifact=r["artifact"],
                artifact_uri=r["artifact_uri"], metrics=json.loads(r["metrics"] or "{}"),
                window_start_ms=r["window_start_ms"], window_end_ms=r["window_end_ms"], created_ms=r["created_ms"],
                parent_version=r["parent_version"], mode=r["mode"],
            )
            runs.add((r["batch"], r["run_id"]))
        return [held[k] for k in sorted(held)]

    def register_model(self, record):
        """Append `record` at its version; idempotent per (batch, run_id).

        TDengine has no transactions, so this is check, append, verify:
        1. read the batch's models: this run already holds a version -> return it;
           record.version != latest + 1 -> VersionConflict;
        2. append the row;
        3. read again: if the version is held by another run's row (earlier timestamp), our
           row is shadowed for good and we raise VersionConflict.
        The caller (orchestration/registry.py) answers VersionConflict by re-reading the latest
        version and retrying at latest + 1, so a lost race costs one retry, never a duplicate.
        Residual window: a rival whose row carries an EARLIER timestamp but becomes visible only
        after our verifying read (its insert still in flight, or its host's clock behind ours)
        wins the version after we were told we had it. The window is one insert latency plus
        the clock skew between writers; concurrent registrations of one batch are rare
        (one training run per batch at a time), and keeping hosts NTP-synced keeps it small.
        """
        models = self.list_models(record.batch)
        for m in models:
            if m.run_id == record.run_id:
                return m
        latest = max((m.version for m in models), default=0)
        if record.version != latest + 1:
            raise VersionConflict(f"batch {record.batch!r} is at version {latest or None}, not {record.version - 1}")
        record.created_ms = record.created_ms or now_ms()
        values = (
            allocate_ns(), record.version, record.run_id, record.artifact, record.artifact_uri,
            json.dumps(record.metrics, sort_keys=True), record.window_start_ms, record.window_end_ms,
            record.created_ms, record.parent_version, record.mode,
        )
        self._insert("models", [(record.batch, values)], f"cannot register model {record.batch!r} v{record.version}")
        holder = next((m for m in self.list_models(record.batch) if m.version == record.version), None)
        if holder is None or holder.run_id != record.run_id:
            raise VersionConflict(
                f"batch {record.batch!r} version {record.version} was taken by run "
                f"{holder.run_id if holder else '?'!r} at the same time"
            )
        return holder

    # -- production -----------------------------------------------------------------------------

    def _production_events(self, batch: Optional[str]) -> list[tuple[int, ProductionEvent]]:
        """(timestamp, event) of the batch's production changes (or all batches'), oldest first."""
        where = f" WHERE batch = {literal(batch)}" if batch is not None else ""
        rows = self._rows(
            "SELECT batch, prod_version, prev_version, change_action, change_source, change_reason, created_ms, "
            f"event_ns FROM {self.database}.production{where} ORDER BY ts",
            "cannot read production changes",
        )
        out = [(r["event_ns"], ProductionEvent(
            batch=r["batch"], version=r["prod_version"], previous_version=r["prev_version"],
            action=r["change_action"], source=r["change_source"] or "", reason=r["change_reason"] or "",
            created_ms=r["created_ms"],
        )) for r in rows]
        out.sort(key=lambda ne: (ne[0], ne[1].batch))
        return out

    def production_events(self, batch=None):
        return [e for _, e in self._production_events(batch)]

    def _change_production(self, batch, plan):
        literal(batch)  # reject bad text before any I/O
        timed = self._production_events(batch)
        event = plan(self.list_models(batch), [e for _, e in timed])
        if event is None:
            return None
        ts = allocate_ns(after=timed[-1][0] if timed else 0)  # after the change it read, whatever the clocks
        event.created_ms = ts // 1_000_000
        values = (ts, event.version, event.previous_version, event.action, event.source, event.reason,
                  event.created_ms, ts)
        self._insert("production", [(batch, values)], f"cannot record a production change of batch {batch!r}")
        return event

    # -- tasks ----------------------------------------------------------------------------------

    def _tasks(self, where: str = "") -> list[tuple[int, Task]]:
        rows = self._rows(
            f"SELECT batch, task_id, {_TASK_SELECT} FROM {self.database}.task_events{where} PARTITION BY batch, task_id"
        )
        tasks = [
            (r["started_ns"], Task(
                task_id=r["task_id"], batch=r["batch"], state=r["task_state"], run_id=r["run_id"], mode=r["mode"],
                window_start_ms=r["window_start_ms"], window_end_ms=r["window_end_ms"], started_ms=r["started_ms"],
                deadline_ms=r["deadline_ms"], updated_ms=r["updated_ms"], message=r["message"] or "",
            ))
            for r in rows
        ]
        tasks.sort(key=lambda st: (st[0], st[1].task_id), reverse=True)
        return tasks

    def record_task_event(self, task_id, batch, state, *, run_id=None, mode=None, window_start_ms=None,
                          window_end_ms=None, deadline_ms=None, message=""):
        check_task_args(state, mode)
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task_id must be a non-empty string")
        literal(task_id), literal(batch), literal(message or "")  # reject bad text before any I/O
        current = self._tasks(f" WHERE task_id = {literal(task_id)}")
        ts = allocate_ns()
        task = merge_task_event(
            current[0][1] if current else None, task_id, batch, state, ts // 1_000_000, run_id=run_id, mode=mode,
            window_start_ms=window_start_ms, window_end_ms=window_end_ms, deadline_ms=deadline_ms, message=message,
        )
        started_ns = current[0][0] if current else ts
        values = (
            ts, task.task_id, task.state, task.run_id, task.mode, task.window_start_ms, task.window_end_ms,
            task.deadline_ms, task.message, task.started_ms, task.updated_ms, started_ns,
        )
        self._insert("task_events", [(batch, values)], f"cannot record an event of task {task_id!r}")
        return task

    def get_task(self, task_id):
        found = self._tasks(f" WHERE task_id = {literal(task_id)}")
        return found[0][1] if found else None

    def list_tasks(self, batch=None, state=None):
        if state is not None:
            check_task_args(state, None)
        where = f" WHERE batch = {literal(batch)}" if batch is not None else ""
        return [t for _, t in self._tasks(where) if state is None or t.state == state]

    # -- labels ---------------------------------------------------------------------------------

    def _labels(self, where: str = "") -> list[tuple[int, Label]]:
        """(timestamp of the current label, label) of each (batch, form), oldest first."""
        rows = self._rows(
            f"SELECT batch, form_key, {_LABEL_SELECT} FROM {self.database}.labels{where} PARTITION BY batch, form_key",
            "cannot read labels",
        )
        out = [
            (r["label_ns"], Label(
                batch=r["batch"], masked=r["masked_form"], label=r["label_value"], created_ms=r["created_ms"],
                source=r["label_source"] or "", model_version=r["model_version"], example=r["example_line"] or "",
            ))
            for r in rows
        ]
        out.sort(key=lambda nl: (nl[0], nl[1].batch, nl[1].masked))
        return out

    def record_label(self, batch, masked, label, *, source="", model_version=None, example=""):
        new = check_label(batch, masked, label, source, model_version, example)
        key = label_key(new.batch, new.masked)
        for text in (new.batch, new.masked, new.source, new.example):
            literal(text)  # reject bad text before any I/O
        current = self._labels(f" WHERE batch = {literal(new.batch)} AND form_key = {literal(key)}")
        previous_ns, previous = current[-1] if current else (0, None)
        ts = allocate_ns(after=previous_ns)
        new.created_ms = ts // 1_000_000
        values = (ts, key, new.label, new.masked, new.example, new.source, new.model_version, new.created_ms, ts)
        self._insert("labels", [(new.batch, values)], f"cannot record a label of batch {new.batch!r}")
        return new, previous

    def labels(self, batch=None):
        where = f" WHERE batch = {literal(batch)}" if batch is not None else ""
        return [lab for _, lab in self._labels(where)]

    # -- status ---------------------------------------------------------------------------------

    def batch_statuses(self) -> list[BatchStatus]:
        partitions = self._current_partitions(None)
        models = self._rows(
            f"SELECT batch, version, run_id, window_end_ms, mode FROM {self.database}.models ORDER BY ts, run_id"
        )
        tasks = self._tasks()
        held: dict[tuple[str, int], dict] = {}
        runs: set[tuple[str, str]] = set()
        for r in models:  # the same shadowing rule as list_models
            if (r["batch"], r["version"]) in held or (r["batch"], r["run_id"]) in runs:
                continue
            held[(r["batch"], r["version"])] = r
            runs.add((r["batch"], r["run_id"]))
        latest: dict[str, tuple[int, Optional[int]]] = {}
        finetunes: dict[str, int] = {}
        broken: set[str] = set()
        for (batch, version) in sorted(held, key=lambda k: (k[0], -k[1])):
            r = held[(batch, version)]
            if batch not in latest:
                latest[batch], finetunes[batch] = (version, r["window_end_ms"]), 0
            if batch in broken:
                continue
            if r["mode"] == "finetune":
                finetunes[batch] += 1
            else:
                broken.add(batch)
        active: dict[str, Task] = {}
        batches = set(latest) | {r["batch"] for r in partitions}
        for _, task in tasks:  # newest first
            batches.add(task.batch)
            if task.state in ACTIVE_STATES and task.batch not in active:
                active[task.batch] = task
        rows = [(r["batch"], r["window_start_ms"], r["line_count"]) for r in partitions]
        return build_batch_statuses(batches, latest, finetunes, count_new_and_total(latest, rows), active)

    def ping(self) -> None:
        resp = self._sql("SELECT SERVER_VERSION()", "unreachable")
        if not resp.get("data"):
            self._fail("unreachable", "SELECT SERVER_VERSION() returned nothing")
