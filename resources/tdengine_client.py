"""TDengine plumbing for resources/tdengine_store.py: SQL literals, unique timestamps, the super
tables, and the REST calls (through taosAdapter's REST API, `taosrest`).

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
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from resources.store import StoreCore, StoreError
from ops.urls import url_without_password


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
PREFIX = {"sample_counts": "sc", "task_events": "te", "models": "md", "anomaly_counts": "ac", "labels": "lb",
           "production": "pd"}
VOID_BATCH = ""  # reserved tag of the marker row an empty recording writes
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_SQL = 512 * 1024  # bytes per INSERT statement (TDengine's default limit is 1 MiB)
_ready: set[tuple] = set()
_ready_lock = threading.Lock()

def last_row(*columns: str) -> str:
    """The select list of the last row's `columns` per partition (the current state of a task, a
    label, a partition's recording): TDengine's LAST_ROW, each under its own name."""
    return ", ".join(f"LAST_ROW({c}) AS {c}" for c in columns)




def where_batch(batch: Optional[str]) -> str:
    """The WHERE clause of one batch's rows (the name as a literal), or none for all batches."""
    return f" WHERE batch = {literal(batch)}" if batch is not None else ""


class TDengineBase(StoreCore):
    """A store on TDengine: where it is and how to talk to it. TDengineStoreCore (resources/tdengine_store.py)
    keeps the records."""

    url: str = "http://localhost:6041"
    database: str = "logloop"
    user: str = "root"
    # required: the resource gets a Dagster EnvVar("..."), the CLI the value from the settings; never logged, never put in an error message, never in repr()
    password: str = Field(repr=False, description="taosAdapter password (on the resource: an EnvVar).")
    timeout_s: float = 10.0
    deadline_s: float = Field(default=60.0, gt=0, description="Total time one REST request may take (deadlines.tdengine_s).")

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

        from ops.deadline import DeadlineExceeded, with_deadline

        try:
            client = taosrest.RestClient(
                self.url, user=self.user, password=self.password, timeout=self.timeout_s, convert_timestamp=False
            )
            return with_deadline(lambda: client.sql(sql), self.deadline_s, "tdengine-rest")
        except DeadlineExceeded as exc:
            self._fail(what, f"{exc} (deadlines.tdengine_s)", None)
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
        return f"{self.database}.{PREFIX[stable]}_{name_hash(batch)}_{writer_id()}"

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
            if statement and size + len(piece.encode("utf-8")) > MAX_SQL:
                self._sql("INSERT INTO " + " ".join(statement), what)
                statement, size = [], 0
            statement.append(piece)
            size += len(piece.encode("utf-8")) + 1
        if statement:
            self._sql("INSERT INTO " + " ".join(statement), what)
