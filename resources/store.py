"""The store: sample counts per batch and window, the model registry and training tasks.

One interface, swappable implementations: SQLStore in resources/sql_store.py, on
SQLite (SQLiteStore, the embedded default) or PostgreSQL; TDengineStore for production
in resources/tdengine_store.py. `SQLiteStore` and `SQLStore` are importable from here
too. Batch names are always bound as values, never spliced into SQL.

Task lifecycle: a task is a sequence of appended events (TDengine has no UPDATE);
its current state is its last event. States: unknown, scheduling, running (the
ACTIVE ones) and succeeded, failed, dead (terminal).

Labels (user feedback): "this masked form of batch B is normal / an anomaly". Labels are
appended events too; the current label of a (batch, masked form) is its latest event, so a
correction simply appends another. The form a label is stored under is `label_form(masked)`:
control characters become U+FFFD and a form longer than MAX_LABEL_FORM characters is cut
(the rest replaced by "...", as task messages are); readers matching scored lines against
labels compare `label_form(masker.mask(line))`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Optional

from dagster import ConfigurableResource

from ops.feedback import LABELS, MAX_LABEL_FORM, label_form  # noqa: F401  (re-exported: stores and CLI use them here)
from ops.naming import validate_batch_name


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class VersionConflict(StoreError):
    """Another registration took this version first; re-read and retry."""


TASK_STATES = ("unknown", "scheduling", "running", "succeeded", "failed", "dead")
ACTIVE_STATES = ("unknown", "scheduling", "running")
TASK_MODES = ("scratch", "finetune")
MAX_TASK_MESSAGE = 4000  # characters kept of a task event's message (the rest is cut, marked with "...")
MAX_LABEL_EXAMPLE = 2000  # characters kept of a label's example line
MAX_LABEL_SOURCE = 200    # characters kept of a label's source


@dataclass
class Task:
    task_id: str
    batch: str
    state: str
    run_id: str
    mode: str                       # "scratch" | "finetune"
    window_start_ms: Optional[int]
    window_end_ms: Optional[int]
    started_ms: int                 # time of the task's first event
    deadline_ms: Optional[int]
    updated_ms: int                 # time of the task's last event
    message: str = ""               # the last event's message

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchStatus:
    batch: str
    model_version: Optional[int]    # latest registered version
    watermark_ms: Optional[int]     # the latest model's window_end_ms
    new_count: int                  # samples in partitions with window_start_ms >= watermark (all without one)
    total_count: int                # samples in all partitions
    active_task: Optional[Task]     # the newest task in an ACTIVE state
    finetunes_in_a_row: int         # consecutive latest models with mode == "finetune"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelRecord:
    batch: str
    version: int
    run_id: str
    artifact: str                   # storage key of the artifact zip
    artifact_uri: str
    metrics: dict = field(default_factory=dict)
    window_start_ms: Optional[int] = None
    window_end_ms: Optional[int] = None   # the data watermark: samples before it were seen
    created_ms: int = 0
    parent_version: Optional[int] = None
    mode: str = "scratch"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PartitionCount:
    partition_key: str
    batch: str
    window_start_ms: int
    window_end_ms: int
    count: int


@dataclass
class AnomalyCount:
    """Scored lines and anomalies of one batch in one time window (CML's inference table)."""

    batch: str
    window_start_ms: int
    window_end_ms: int
    lines: int
    anomalies: int
    model_version: int


@dataclass
class Label:
    """The label of one masked form of a batch: what a user said its lines are."""

    batch: str
    masked: str                         # the masked form (the lines' event key), as label_form() stores it
    label: str                          # "normal" | "anomaly"
    created_ms: int                     # when this label was given
    source: str = ""                    # who or what labelled it, e.g. "cli:alice"
    model_version: Optional[int] = None  # the batch's latest registered version when labelled
    example: str = ""                   # a raw line of the form, as given (cut to MAX_LABEL_EXAMPLE)

    def to_dict(self) -> dict:
        return asdict(self)


class Store(ConfigurableResource, ABC):
    @abstractmethod
    def record_sample_counts(
        self, partition_key: str, window_start_ms: int, window_end_ms: int, counts: dict[str, int]
    ) -> None:
        """Counts of lines per batch for one partition; re-recording a partition replaces it."""

    @abstractmethod
    def partition_counts(
        self, batch: str, start_ms: Optional[int] = None, end_ms: Optional[int] = None
    ) -> list[PartitionCount]:
        """The partitions holding samples of `batch`, overlapping [start_ms, end_ms), by time."""

    @abstractmethod
    def register_model(self, record: ModelRecord) -> ModelRecord:
        """Insert `record` at its version; idempotent per (batch, run_id).

        Returns the existing row when this run already registered; raises
        VersionConflict when another run holds the version.
        """

    @abstractmethod
    def list_models(self, batch: Optional[str] = None) -> list[ModelRecord]: ...

    def get_model(self, batch: str, version: Optional[int] = None) -> Optional[ModelRecord]:
        models = [m for m in self.list_models(batch) if version is None or m.version == version]
        return models[-1] if models else None

    # -- tasks -------------------------------------------------------------------------------

    @abstractmethod
    def record_task_event(
        self,
        task_id: str,
        batch: str,
        state: str,
        *,
        run_id: Optional[str] = None,
        mode: Optional[str] = None,
        window_start_ms: Optional[int] = None,
        window_end_ms: Optional[int] = None,
        deadline_ms: Optional[int] = None,
        message: str = "",
    ) -> Task:
        """Append one event to task `task_id` and return the task's new current state.

        Fields left out (None) are carried over from the task's current state, so ultimately
        from its first event; on a first event run_id defaults to "" and mode to "scratch".
        `message` belongs to the event and is not carried over. started_ms is the time of
        the first event, updated_ms the time of this one. ValueError for an unknown state or
        mode, or a batch that differs from the task's.
        """

    @abstractmethod
    def get_task(self, task_id: str) -> Optional[Task]: ...

    @abstractmethod
    def list_tasks(self, batch: Optional[str] = None, state: Optional[str] = None) -> list[Task]:
        """Current state of each task (optionally of one batch / in one state), newest first."""

    def active_tasks(self) -> list[Task]:
        """Tasks whose current state is unknown, scheduling or running, newest first."""
        return [t for t in self.list_tasks() if t.state in ACTIVE_STATES]

    @abstractmethod
    def batch_statuses(self) -> list[BatchStatus]:
        """One status per batch known to the store, by batch name, read with one grouped query per table."""

    @abstractmethod
    def record_anomaly_counts(self, counts: list[AnomalyCount]) -> None:
        """Anomaly counts per batch and window; recording a (batch, window) again replaces it."""

    @abstractmethod
    def anomaly_counts(self, batch: str, start_ms: Optional[int] = None, end_ms: Optional[int] = None) -> list[AnomalyCount]:
        """The batch's anomaly counts over time, oldest window first."""

    # -- labels (user feedback) ------------------------------------------------------------------

    @abstractmethod
    def record_label(
        self, batch: str, masked: str, label: str, *, source: str = "", model_version: Optional[int] = None,
        example: str = "",
    ) -> tuple[Label, Optional[Label]]:
        """Append a label of `masked` (a masked form of `batch`); the latest label of a form wins.

        Returns (the new label, the form's label before this one, None if it had none), so a
        caller can say "was anomaly, now normal". The form is stored as label_form(masked), the
        example and source cut to their maximum lengths (see check_label). ValueError for an
        invalid batch name, an unknown label, an empty form, or a model_version that is not an int.
        """

    @abstractmethod
    def labels(self, batch: Optional[str] = None) -> list[Label]:
        """The current label of each (batch, masked form), of one batch or all: the latest wins.
        Oldest first, by when each form got its current label (a relabelled form moves last)."""

    def ping(self) -> None:
        """Raise StoreError (naming the store, never its password) unless the store answers."""


def check_task_args(state: str, mode: Optional[str]) -> None:
    if state not in TASK_STATES:
        raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(TASK_STATES)}")
    if mode is not None and mode not in TASK_MODES:
        raise ValueError(f"unknown task mode {mode!r}; expected one of {', '.join(TASK_MODES)}")


_LABEL_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")  # also in source and example


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def label_key(batch: str, form: str) -> str:
    """A fixed-length key of a (batch, stored form): what stores index and lock on instead of a
    form that may be 4000 characters long."""
    return hashlib.sha256(json.dumps([batch, form]).encode("utf-8")).hexdigest()


def check_label(batch: str, masked: str, label: str, source: str = "", model_version: Optional[int] = None,
                example: str = "", at_ms: Optional[int] = None) -> Label:
    """Validate a label's arguments and return the Label as stores keep it (see Store.record_label)."""
    validate_batch_name(batch)
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
    form = label_form(masked)
    if model_version is not None and (isinstance(model_version, bool) or not isinstance(model_version, int)):
        raise ValueError(f"model_version {model_version!r} is not an integer")
    for name, value in (("source", source), ("example", example)):
        if not isinstance(value, str):
            raise ValueError(f"label {name} {value!r} is not a string")
    return Label(
        batch=batch, masked=form, label=label, created_ms=now_ms() if at_ms is None else at_ms,
        source=_cut(_LABEL_CONTROL.sub("\ufffd", source), MAX_LABEL_SOURCE), model_version=model_version,
        example=_cut(_LABEL_CONTROL.sub("\ufffd", example), MAX_LABEL_EXAMPLE),
    )


def merge_task_event(
    current: Optional[Task], task_id: str, batch: str, state: str, at_ms: int, *, run_id, mode,
    window_start_ms, window_end_ms, deadline_ms, message,
) -> Task:
    """The task after one more event: given fields replace, left-out (None) fields carry over."""
    check_task_args(state, mode)
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task_id must be a non-empty string")
    message = message or ""
    if len(message) > MAX_TASK_MESSAGE:
        message = message[: MAX_TASK_MESSAGE - 3] + "..."
    if current is None:
        return Task(
            task_id=task_id, batch=batch, state=state, run_id=run_id or "", mode=mode or "scratch",
            window_start_ms=window_start_ms, window_end_ms=window_end_ms, started_ms=at_ms,
            deadline_ms=deadline_ms, updated_ms=at_ms, message=message,
        )
    if current.batch != batch:
        raise ValueError(f"task {task_id!r} belongs to batch {current.batch!r}, not {batch!r}")

    def pick(given, old):
        return old if given is None else given

    return Task(
        task_id=task_id, batch=batch, state=state, run_id=pick(run_id, current.run_id),
        mode=pick(mode, current.mode), window_start_ms=pick(window_start_ms, current.window_start_ms),
        window_end_ms=pick(window_end_ms, current.window_end_ms), started_ms=current.started_ms,
        deadline_ms=pick(deadline_ms, current.deadline_ms), updated_ms=max(at_ms, current.updated_ms),
        message=message,
    )


def count_new_and_total(
    latest_models: dict[str, tuple[int, Optional[int]]], partitions
) -> dict[str, tuple[int, int]]:
    """batch -> (new, total) from (batch, window_start_ms, count) rows of current partitions."""
    out: dict[str, list[int]] = {}
    for batch, start_ms, count in partitions:
        acc = out.setdefault(batch, [0, 0])
        acc[1] += count
        watermark = latest_models.get(batch, (None, None))[1]
        if watermark is None or start_ms >= watermark:
            acc[0] += count
    return {b: (n, t) for b, (n, t) in out.items()}


def build_batch_statuses(
    batches: set[str],
    latest_models: dict[str, tuple[int, Optional[int]]],
    finetunes: dict[str, int],
    counts: dict[str, tuple[int, int]],
    active: dict[str, Task],
) -> list[BatchStatus]:
    """Assemble statuses from per-table query results.

    latest_models: batch -> (version, window_end_ms); counts: batch -> (new, total) samples of
    its current partitions; active: batch -> newest active task.
    """
    out = []
    for batch in sorted(batches):
        version, watermark = latest_models.get(batch, (None, None))
        new, total = counts.get(batch, (0, 0))
        out.append(BatchStatus(
            batch=batch, model_version=version, watermark_ms=watermark, new_count=new, total_count=total,
            active_task=active.get(batch), finetunes_in_a_row=finetunes.get(batch, 0),
        ))
    return out


def task_sort_key(task: Task):
    return (task.started_ms, task.updated_ms, task.task_id)


def now_ms() -> int:
    return int(time.time() * 1000)


def _latest_and_finetunes(models) -> tuple[dict, dict]:
    """From (batch, version, window_end_ms, mode) rows ordered by batch then version descending."""
    latest: dict[str, tuple[int, Optional[int]]] = {}
    finetunes: dict[str, int] = {}
    broken: set[str] = set()
    for batch, version, window_end_ms, mode in models:
        if batch not in latest:
            latest[batch] = (version, window_end_ms)
            finetunes[batch] = 0
        if batch in broken:
            continue
        if mode == "finetune":
            finetunes[batch] += 1
        else:
            broken.add(batch)
    return latest, finetunes


def _model_from_row(r) -> ModelRecord:
    return ModelRecord(
        batch=r[0], version=r[1], run_id=r[2], artifact=r[3], artifact_uri=r[4], metrics=json.loads(r[5]),
        window_start_ms=r[6], window_end_ms=r[7], created_ms=r[8], parent_version=r[9], mode=r[10],
    )


def __getattr__(name: str):
    """`from resources.store import SQLiteStore` (or SQLStore): the SQL store, loaded on first use
    (resources/sql_store.py imports this module, so it cannot be imported at the top)."""
    if name in ("SQLiteStore", "SQLStore"):
        from resources import sql_store

        return getattr(sql_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
