"""What the stores keep, and the rules every store applies: the records (tasks, models, sample
and anomaly counts, labels, production changes), the task states, and the pure functions that
validate, merge and interpret them. No I/O and no Dagster: resources/store.py is the interface,
resources/sql_store.py, sqlite_store.py and tdengine_store.py the implementations.

Task lifecycle: a task is a sequence of appended events (TDengine has no UPDATE); its current
state is its last event. The states are TaskState: unknown, scheduling, running (ACTIVE_STATES)
and succeeded, failed, dead (TERMINAL_STATES). orchestration/tasks.py makes every transition.

Labels (user feedback): "this masked form of batch B is normal / an anomaly". Labels are
appended events too; the current label of a (batch, masked form) is its latest event, so a
correction simply appends another. The form a label is stored under is `label_form(masked)`:
control characters become U+FFFD and a form longer than MAX_LABEL_FORM characters is cut
(the rest replaced by "...", as task messages are); readers matching scored lines against
labels compare `label_form(masker.mask(line))`.

Production (which version of a batch scores, is fine-tuned from and is the gate's champion): a
batch follows its latest version until someone pins it (promote, rollback); a pinned batch stays
on its version when newer ones register (follow_latest unpins it). Every change is an appended
`ProductionEvent` (who, when, why; the last one wins, as for tasks and labels), in every store.
`production_state` and `production_history` derive production and the rollback stack from the
batch's models and events; the stores only keep the events.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Optional

from ops.naming import validate_batch_name
from ops.validate.feedback import LABELS, label_form
from ops.windows import now_ms


class TaskState(StrEnum):
    """The state of a training task: the state of its last event."""

    UNKNOWN = "unknown"
    SCHEDULING = "scheduling"   # asked for (logloop train), its run not started yet
    RUNNING = "running"         # its run's first asset started it
    SUCCEEDED = "succeeded"     # its model was registered
    FAILED = "failed"           # its run failed or was canceled, or never came, or lost its process
    DEAD = "dead"               # reaped: past its deadline


TASK_STATES = tuple(TaskState)
ACTIVE_STATES = (TaskState.UNKNOWN, TaskState.SCHEDULING, TaskState.RUNNING)  # someone works on the batch
TERMINAL_STATES = tuple(s for s in TaskState if s not in ACTIVE_STATES)
UNSUCCESSFUL_STATES = (TaskState.FAILED, TaskState.DEAD)  # attempts that count against a retry's run key
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
    # production (production_state): what a fine-tune starts from, and where its new data begins
    production_version: Optional[int] = None
    production_watermark_ms: Optional[int] = None
    pinned: bool = False
    failed_attempts: int = 0        # tasks of the batch that failed or died (a retry's run key counts them)

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


@dataclass
class ProductionChange:
    """A production change as a store made it: the event (None: nothing changed) and the batch's
    models and events it was planned on, the event appended."""

    event: Optional[ProductionEvent]
    models: list[ModelRecord]
    events: list[ProductionEvent]

    @property
    def production(self) -> tuple[Optional[ModelRecord], bool]:
        return production_state(self.models, self.events)


# -- production rules -------------------------------------------------------------------------------


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
    return (cut(_LABEL_CONTROL.sub("\ufffd", source), MAX_LABEL_SOURCE),
            cut(_LABEL_CONTROL.sub("\ufffd", reason), MAX_CHANGE_REASON))


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


def version_of(batch: str, models: list[ModelRecord], version: int) -> ModelRecord:
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


# -- task, label and status rules ------------------------------------------------------------------


def check_task_args(state: str, mode: Optional[str]) -> None:
    if state not in TASK_STATES:
        raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(TASK_STATES)}")
    if mode is not None and mode not in TASK_MODES:
        raise ValueError(f"unknown task mode {mode!r}; expected one of {', '.join(TASK_MODES)}")


_LABEL_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")  # also in source and example


def cut(text: str, most: int) -> str:
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
        source=cut(_LABEL_CONTROL.sub("\ufffd", source), MAX_LABEL_SOURCE), model_version=model_version,
        example=cut(_LABEL_CONTROL.sub("\ufffd", example), MAX_LABEL_EXAMPLE),
    )


def merge_task_event(
    current: Optional[Task], task_id: str, batch: str, state: str, at_ms: int, *, run_id, mode,
    window_start_ms, window_end_ms, deadline_ms, message,
) -> Task:
    """The task after one more event: given fields replace, left-out (None) fields carry over."""
    check_task_args(state, mode)
    state = TaskState(state).value  # stored as its plain text
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
    production: Optional[dict[str, tuple[int, Optional[int], bool]]] = None,
    attempts: Optional[dict[str, int]] = None,
) -> list[BatchStatus]:
    """Assemble statuses from per-table query results.

    latest_models: batch -> (version, window_end_ms); counts: batch -> (new, total) samples of
    its current partitions; active: batch -> newest active task; production: batch ->
    (version, window_end_ms, pinned) (production_of); attempts: batch -> failed or dead tasks.
    """
    production, attempts = production or {}, attempts or {}
    out = []
    for batch in sorted(batches):
        version, watermark = latest_models.get(batch, (None, None))
        new, total = counts.get(batch, (0, 0))
        prod_version, prod_watermark, pinned = production.get(batch, (version, watermark, False))
        out.append(BatchStatus(
            batch=batch, model_version=version, watermark_ms=watermark, new_count=new, total_count=total,
            active_task=active.get(batch), finetunes_in_a_row=finetunes.get(batch, 0),
            production_version=prod_version, production_watermark_ms=prod_watermark, pinned=pinned,
            failed_attempts=attempts.get(batch, 0),
        ))
    return out


def production_of(latest_models: dict[str, tuple[int, Optional[int]]], watermarks: dict[tuple[str, int], Optional[int]],
                  last_events: dict[str, tuple[int, str]]) -> dict[str, tuple[int, Optional[int], bool]]:
    """batch -> (production version, its window_end_ms, pinned): production_state's rule, from the
    latest models, every (batch, version)'s watermark and each batch's last production event
    (version, action), as the grouped status reads give them."""
    out = {}
    for batch, (version, watermark) in latest_models.items():
        event = last_events.get(batch)
        if event is not None and event[1] in PINNING_ACTIONS and (batch, event[0]) in watermarks:
            out[batch] = (event[0], watermarks[(batch, event[0])], True)
        else:
            out[batch] = (version, watermark, False)
    return out


def latest_and_finetunes(models) -> tuple[dict, dict]:
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


def registry_status(batch: str, models: list[ModelRecord], events: list[ProductionEvent]) -> BatchStatus:
    """What a run decides on when it was asked for (not triggered by counts): the batch's latest and
    production versions and its fine-tunes in a row, from Store.registry_state. No counts, no task."""
    latest, finetunes = latest_and_finetunes(
        (m.batch, m.version, m.window_end_ms, m.mode) for m in sorted(models, key=lambda m: -m.version))
    production, pinned = production_state(models, events)
    version, watermark = latest.get(batch, (None, None))
    return BatchStatus(batch=batch, model_version=version, watermark_ms=watermark, new_count=0, total_count=0,
                       active_task=None, finetunes_in_a_row=finetunes.get(batch, 0),
                       production_version=production.version if production else None,
                       production_watermark_ms=production.window_end_ms if production else None, pinned=pinned)
