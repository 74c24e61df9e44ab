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

Production (which version of a batch scores, is fine-tuned from and is the gate's champion):
`get_model(batch)` returns it, `latest_model(batch)` the newest registered version. A batch
follows its latest version until someone pins it (`promote`, `rollback`); a pinned batch stays
on its version when newer ones register (`follow_latest` unpins it). Every change is an appended
`ProductionEvent` (who, when, why; the last one wins, as for tasks and labels), in every store.
`production_state` and `production_history` derive production and the rollback stack from the
batch's models and events; the stores only keep the events.
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
MAX_LABEL_SOURCE = 200    # characters kept of a label's source (and of a production change's)
MAX_CHANGE_REASON = 1000  # characters kept of a production change's reason
# production changes: promote and rollback pin the batch to a version; register (a new version
# became production: the batch follows its latest, or LOGLOOP_PROMOTE_NEW_VERSIONS moved the pin)
# and follow (unpinned: production is the latest version again) leave it following its latest
PRODUCTION_ACTIONS = ("promote", "rollback", "register", "follow")
PINNING_ACTIONS = ("promote", "rollback")


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
    """What the new-sample sensor decides on. The version and watermark are the LATEST registered
    model's, not production's: "new data" is data no registered model has seen yet, so that a
    pinned batch whose newer versions are not promoted is not retrained on the same data every
    tick. (A fine-tune still starts from production: training_sample's parent is get_model, and the
    sensor starts its new data at production's watermark.)"""

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


class ProductionError(ValueError):
    """A production change that cannot be made: unknown batch or version, already production,
    nothing to roll back to. The message says why, in words for the CLI."""


@dataclass
class ProductionEvent:
    """One change of a batch's production model: what it became, what it was, who, when and why."""

    batch: str
    version: int                        # the production version after the change
    previous_version: Optional[int]     # the production version before it (None: there was none)
    action: str                         # promote | rollback | register | follow (PRODUCTION_ACTIONS)
    source: str = ""                    # who or what changed it: "cli:alice", "registry:<run id>"
    reason: str = ""
    created_ms: int = 0

    @property
    def pinned(self) -> bool:
        """After this change the batch stays on `version` whatever registers next."""
        return self.action in PINNING_ACTIONS

    def to_dict(self) -> dict:
        return {**asdict(self), "pinned": self.pinned}


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
        """Version `version` of the batch; without one, its PRODUCTION model (the pinned version,
        else the latest): what scoring, fine-tuning and the gate's champion use."""
        if version is not None:
            return next((m for m in self.list_models(batch) if m.version == version), None)
        return self.production(batch)[0]

    def latest_model(self, batch: str) -> Optional[ModelRecord]:
        """The newest registered version of the batch, production or not (version numbering)."""
        models = self.list_models(batch)
        return models[-1] if models else None

    # -- production ------------------------------------------------------------------------------

    def production(self, batch: str) -> tuple[Optional[ModelRecord], bool]:
        """(the batch's production model, whether it is pinned); (None, False) without models."""
        models, events = self._production_inputs(batch)
        return production_state(models, events)

    def _production_inputs(self, batch: str) -> tuple[list[ModelRecord], list[ProductionEvent]]:
        """The batch's models (by version) and production events (oldest first); a store reads
        them in one snapshot where it can."""
        return self.list_models(batch), self.production_events(batch)

    @abstractmethod
    def production_events(self, batch: Optional[str] = None) -> list[ProductionEvent]:
        """Every recorded change of production, of one batch or all, oldest first."""

    @abstractmethod
    def _change_production(self, batch: str, plan) -> Optional[ProductionEvent]:
        """Read the batch's models and events, call plan(models, events) -> event or None, append
        the event; on stores with transactions, all in one, serialised per batch. Returns the event."""

    def promote(self, batch: str, version: int, *, source: str = "", reason: str = "") -> ProductionEvent:
        """Pin production of `batch` to `version`. ProductionError for an unknown batch or version,
        a version whose registry metrics show a failed gate (gate_problem), or a version that is
        production and pinned already (pinning the version a batch follows is
        a change: the batch stops following its latest)."""
        check_version(version)
        source, reason = check_change_text(batch, source, reason)

        def plan(models, events):
            if not models:
                raise ProductionError(f"no model registered for batch {batch!r}")
            current, pinned = production_state(models, events)
            problem = gate_problem(_version_of(batch, models, version))
            if problem:
                raise ProductionError(f"version {version} of batch {batch!r} cannot be production: {problem}")
            if current.version == version and pinned:
                raise ProductionError(f"version {version} is already production of batch {batch!r} (pinned)")
            return ProductionEvent(batch, version, current.version, "promote", source, reason, now_ms())

        return self._change_production(batch, plan)

    def rollback(self, batch: str, *, source: str = "", reason: str = "") -> ProductionEvent:
        """Pin production of `batch` back to the version that was production before the current
        one; each further rollback goes one step further back (see production_history).
        ProductionError when the batch has no model, no earlier production version, or that
        version is no longer registered."""
        source, reason = check_change_text(batch, source, reason)

        def plan(models, events):
            current, _ = production_state(models, events)
            if current is None:
                raise ProductionError(f"no model registered for batch {batch!r}")
            target = rollback_target(models, events, current.version)
            if target is None:
                raise ProductionError(f"batch {batch!r} has no earlier production version than v{current.version} "
                                      "to roll back to")
            if not any(m.version == target for m in models):
                raise ProductionError(f"the previous production version v{target} of batch {batch!r} is no longer "
                                      "registered; promote another version instead ('logloop models promote')")
            return ProductionEvent(batch, target, current.version, "rollback", source, reason, now_ms())

        return self._change_production(batch, plan)

    def follow_latest(self, batch: str, *, source: str = "", reason: str = "") -> ProductionEvent:
        """Unpin `batch`: production is its latest version again, and moves with each new one.
        ProductionError when the batch has no model or is not pinned."""
        source, reason = check_change_text(batch, source, reason)

        def plan(models, events):
            current, pinned = production_state(models, events)
            if current is None:
                raise ProductionError(f"no model registered for batch {batch!r}")
            if not pinned:
                raise ProductionError(f"batch {batch!r} already follows its latest version (v{current.version})")
            return ProductionEvent(batch, models[-1].version, current.version, "follow", source, reason, now_ms())

        return self._change_production(batch, plan)

    def record_new_version(self, batch: str, version: int, *, source: str = "", move_pin: bool = False,
                           reason: str = "") -> Optional[ProductionEvent]:
        """After registering `version`: record that it became production (the batch follows its
        latest), or make it production of a pinned batch when `move_pin`, unpinning it. None when
        nothing changed: the batch is pinned (and not move_pin), `version` is not the latest, or
        its change is recorded already (a repeated registration)."""
        check_version(version)
        source, reason = check_change_text(batch, source, reason)

        def plan(models, events):
            if not models or models[-1].version != version:
                return None
            if any(e.version == version and e.action == "register" for e in events):
                return None
            before, pinned = production_state(models[:-1], events)  # production just before this version
            if pinned and not move_pin:
                return None
            why = reason or (f"v{version} registered; LOGLOOP_PROMOTE_NEW_VERSIONS moves the pin from v{before.version}"
                             if pinned else f"v{version} registered; the batch follows its latest version")
            return ProductionEvent(batch, version, before.version if before else None, "register", source,
                                   _cut(why, MAX_CHANGE_REASON), now_ms())

        return self._change_production(batch, plan)

    def restore_production_events(self, batch: str, events: list[ProductionEvent]) -> int:
        """Re-record `events` of `batch` (oldest first) as they were, skipping any recorded already
        (same version, previous version, action and time): a store restore. Returns how many.
        (TDengine stamps each event with its own insert time, so there the times are the restore's.)"""
        added = 0
        for event in events:
            check_version(event.version)
            if event.batch != batch or event.action not in PRODUCTION_ACTIONS:
                raise ValueError(f"not a production event of batch {batch!r}: {event}")
            source, reason = check_change_text(batch, event.source, event.reason)
            event = ProductionEvent(batch, event.version, event.previous_version, event.action, source, reason,
                                    event.created_ms)

            def plan(models, existing, event=event):
                same = (event.version, event.previous_version, event.action, event.created_ms)
                if any((e.version, e.previous_version, e.action, e.created_ms) == same for e in existing):
                    return None
                return event

            if self._change_production(batch, plan) is not None:
                added += 1
        return added

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


def check_version(version) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ProductionError(f"model version {version!r} is not a positive integer")


def check_change_text(batch: str, source, reason) -> tuple[str, str]:
    """A production change's batch, source and reason checked; the texts as stores keep them
    (control characters U+FFFD, cut to MAX_LABEL_SOURCE and MAX_CHANGE_REASON characters)."""
    validate_batch_name(batch)
    for name, value in (("source", source), ("reason", reason)):
        if not isinstance(value, str):
            raise ValueError(f"production change {name} {value!r} is not a string")
    return (_cut(_LABEL_CONTROL.sub("\ufffd", source), MAX_LABEL_SOURCE),
            _cut(_LABEL_CONTROL.sub("\ufffd", reason), MAX_CHANGE_REASON))


def gate_problem(model: ModelRecord) -> Optional[str]:
    """Why the registry row of `model` does not show a passed gate, or None.

    Only candidates that passed their gate are registered, so this holds for every version the
    registry made; it catches rows without the gate's figures (a store rebuilt from an artifact
    that lost its metrics.json) and non-finite figures (stored as null), which fail the gate."""
    metrics = model.metrics if isinstance(model.metrics, dict) else {}
    accuracy = metrics.get("top_k_accuracy")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or accuracy != accuracy:
        return "its registry row has no gate metrics (top_k_accuracy), so it cannot be shown to have passed its gate"
    nulls = sorted(k for k in ("top_k_accuracy", "anomaly_share") if k in metrics and metrics[k] is None)
    if nulls:
        return f"its gate metrics are not finite ({', '.join(nulls)}): it failed its gate"
    return None


def _version_of(batch: str, models: list[ModelRecord], version: int) -> ModelRecord:
    found = next((m for m in models if m.version == version), None)
    if found is None:
        versions = [m.version for m in models]
        shown = ", ".join(map(str, versions[-10:])) + (f" (and {len(versions) - 10} older)" if len(versions) > 10 else "")
        raise ProductionError(f"batch {batch!r} has no version {version} (registered: {shown})")
    return found


def production_state(models: list[ModelRecord], events: list[ProductionEvent]) -> tuple[Optional[ModelRecord], bool]:
    """(production model, pinned) from the batch's models (by version) and events (oldest first).

    The last event decides: a promote or rollback pins its version; otherwise (no events, or a
    register or follow event) production is the latest version. A pinned version that is no
    longer registered (a store rebuilt from artifacts keeps no events) falls back to the latest.
    """
    latest = models[-1] if models else None
    if events and events[-1].pinned:
        pinned = next((m for m in models if m.version == events[-1].version), None)
        if pinned is not None:
            return pinned, True
    return latest, False


def production_history(events: list[ProductionEvent]) -> list[int]:
    """The stack of production versions, oldest first, that rollback walks back down.

    Each change pushes its version (and first its previous version, when that is not on top:
    a change that was not recorded, such as a version registered before production was
    tracked); a rollback pops back down to the version it went to. So v1, v2, v3 registered,
    then promote v1: rollback gives v3, rollback again v2, then v1."""
    stack: list[int] = []
    for e in events:
        if e.action == "rollback":
            while stack and stack[-1] != e.version:
                stack.pop()
            if not stack:
                stack.append(e.version)
            continue
        if e.previous_version is not None and (not stack or stack[-1] != e.previous_version):
            stack.append(e.previous_version)
        if not stack or stack[-1] != e.version:
            stack.append(e.version)
    return stack


def rollback_target(models: list[ModelRecord], events: list[ProductionEvent], current: int) -> Optional[int]:
    """The version a rollback from production version `current` goes to, None when there is none.
    Before its first recorded change a batch followed its latest version, so below the bottom of
    the recorded history the previous production version is the newest one registered before."""
    stack = production_history(events)
    bottom = stack[0] if stack else current
    while stack and stack[-1] == current:
        stack.pop()
    if stack:
        return stack[-1]
    return max((m.version for m in models if m.version < bottom), default=None)


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
