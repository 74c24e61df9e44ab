"""The production store on TDengine 3.x, spoken to through taosAdapter's REST API (`taosrest`).

TDengine is an append-only time-series database: no UPDATE, no DELETE of single rows, no
transactions, and a row whose timestamp already exists in the same child table silently
OVERWRITES the old row. Everything below follows from that.

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

The plumbing (literals, unique timestamps per writer, the super tables' layout, REST calls) is in
resources/tdengine_client.py.
"""

from __future__ import annotations

import json
from typing import Optional

from ops.windows import now_ms
from resources.store import VersionConflict
from resources.store_records import (
    ACTIVE_STATES,
    AnomalyCount,
    BatchStatus,
    Label,
    ModelRecord,
    PartitionCount,
    ProductionChange,
    ProductionEvent,
    Task,
    build_batch_statuses,
    check_label,
    check_task_args,
    count_new_and_total,
    label_key,
    latest_and_finetunes,
    UNSUCCESSFUL_STATES,
    merge_task_event,
    production_of,
)
from resources.tdengine_client import (
    PREFIX,
    VOID_BATCH,
    TDengineBase,
    allocate_ns,
    last_row,
    literal,
    name_hash,
    where_batch,
)

_TASK_SELECT = last_row("started_ns", "task_state", "run_id", "mode", "window_start_ms", "window_end_ms", "started_ms",
                        "deadline_ms", "updated_ms", "message")
_LABEL_SELECT = last_row("label_ns", "label_value", "masked_form", "example_line", "label_source", "model_version",
                         "created_ms")
_PARTITION_SELECT = "LAST_ROW(recorded_ns) AS gen, " + last_row("window_start_ms", "window_end_ms", "line_count")
_MODEL_COLS = (
    "batch, version, run_id, artifact, artifact_uri, metrics, window_start_ms, window_end_ms, created_ms, "
    "parent_version, mode"
)


class TDengineStoreCore(TDengineBase):
    """Store on TDengine through taosAdapter's REST API (see the module docstring for the design)."""

    def _last_rows(self, stable: str, key: str, select: str, where: str = "", what: str = "query failed") -> list[dict]:
        """The last row of each (batch, `key`) of `stable` (`select`: its columns, as last_row gives them):
        the current state of each task, label or partition recording, appended as events."""
        return self._rows(f"SELECT batch, {key}, {select} FROM {self.database}.{stable}{where} PARTITION BY batch, {key}",
                          what)

    # -- sample counts --------------------------------------------------------------------------

    def record_sample_counts(self, partition_key, window_start_ms, window_end_ms, counts):
        for batch in counts:
            if batch == VOID_BATCH:
                raise ValueError("the empty batch name is reserved")
        gen, at = allocate_ns(), now_ms()
        rows = [
            (batch, (gen, partition_key, int(window_start_ms), int(window_end_ms), int(n), gen, at))
            for batch, n in counts.items()
        ] or [(VOID_BATCH, (gen, partition_key, int(window_start_ms), int(window_end_ms), 0, gen, at))]
        self._insert("sample_counts", rows, f"cannot record sample counts of partition {partition_key!r}")

    def _current_partitions(self, batch: Optional[str]) -> list[dict]:
        """The current recording's row of every (batch, partition) — of one batch, or of all."""
        db = self.database
        if batch is None:
            rows = self._last_rows("sample_counts", "partition_key", _PARTITION_SELECT)
            newest: dict[str, int] = {}
            for r in rows:
                newest[r["partition_key"]] = max(newest.get(r["partition_key"], r["gen"]), r["gen"])
        else:
            rows = self._last_rows("sample_counts", "partition_key", _PARTITION_SELECT, where_batch(batch))
            newest = {
                r["partition_key"]: r["gen"]
                for r in self._rows(
                    f"SELECT partition_key, MAX(recorded_ns) AS gen FROM {db}.sample_counts GROUP BY partition_key"
                )
            }
        return [r for r in rows if r["batch"] != VOID_BATCH and r["gen"] == newest.get(r["partition_key"])]

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
            child = f"{self.database}.{PREFIX['anomaly_counts']}_{name_hash(c.batch)}"
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
        where = where_batch(batch)
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
        where = where_batch(batch)
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
        models, events = self.list_models(batch), [e for _, e in timed]
        event = plan(models, events)
        if event is None:
            return ProductionChange(None, models, events)
        ts = allocate_ns(after=timed[-1][0] if timed else 0)  # after the change it read, whatever the clocks
        event.created_ms = ts // 1_000_000
        values = (ts, event.version, event.previous_version, event.action, event.source, event.reason,
                  event.created_ms, ts)
        self._insert("production", [(batch, values)], f"cannot record a production change of batch {batch!r}")
        return ProductionChange(event, models, events + [event])

    # -- tasks ----------------------------------------------------------------------------------

    def _tasks(self, where: str = "") -> list[tuple[int, Task]]:
        rows = self._last_rows("task_events", "task_id", _TASK_SELECT, where)
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
        where = where_batch(batch)
        return [t for _, t in self._tasks(where) if state is None or t.state == state]

    # -- labels ---------------------------------------------------------------------------------

    def _labels(self, where: str = "") -> list[tuple[int, Label]]:
        """(timestamp of the current label, label) of each (batch, form), oldest first."""
        rows = self._last_rows("labels", "form_key", _LABEL_SELECT, where, "cannot read labels")
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
        where = where_batch(batch)
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
        latest, finetunes = latest_and_finetunes(
            (batch, version, held[(batch, version)]["window_end_ms"], held[(batch, version)]["mode"])
            for batch, version in sorted(held, key=lambda k: (k[0], -k[1])))
        active: dict[str, Task] = {}
        attempts: dict[str, int] = {}
        batches = set(latest) | {r["batch"] for r in partitions}
        for _, task in tasks:  # newest first
            batches.add(task.batch)
            if task.state in ACTIVE_STATES and task.batch not in active:
                active[task.batch] = task
            attempts[task.batch] = attempts.get(task.batch, 0) + (task.state in UNSUCCESSFUL_STATES)
        last_events = {e.batch: (e.version, e.action) for _, e in self._production_events(None)}  # oldest first
        watermarks = {key: r["window_end_ms"] for key, r in held.items()}
        rows = [(r["batch"], r["window_start_ms"], r["line_count"]) for r in partitions]
        return build_batch_statuses(batches, latest, finetunes, count_new_and_total(latest, rows), active,
                                    production_of(latest, watermarks, last_events), attempts)

    def ping(self) -> None:
        resp = self._sql("SELECT SERVER_VERSION()", "unreachable")
        if not resp.get("data"):
            self._fail("unreachable", "SELECT SERVER_VERSION() returned nothing")
