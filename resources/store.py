"""The store: sample counts per batch and window, the model registry, training tasks, labels and
production changes, behind one interface (`StoreCore`) with swappable implementations:

- resources/sqlite_store.py: SQLiteStoreCore, the embedded default (one SQLite file);
- resources/sql_store.py: SQLStoreCore, the same store on SQLAlchemy Core, on SQLite or PostgreSQL;
- resources/tdengine_store.py: TDengineStoreCore, the production store on TDengine.

These are plain pydantic models: the `logloop` command uses them without importing Dagster. The
Dagster resources that assets and sensors take (`Store`, `SQLiteStore`, `SQLStore`,
`TDengineStore`) are thin subclasses of them in resources/store_resources.py, so both run the same
code; orchestration/store_choice.py picks one from the settings.

What they keep, and the rules they share (task states and transitions' merging, label and
production rules), is in resources/store_records.py. Batch names are always bound as values,
never spliced into SQL.

`get_model(batch)` returns a batch's PRODUCTION version (what scoring, fine-tuning and the gate's
champion use), `latest_model(batch)` its newest registered one; promote, rollback, follow_latest
and record_new_version append production changes (see store_records for the rules).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from pydantic import BaseModel, ConfigDict

from ops.windows import now_ms
from resources.errors import StoreError, VersionConflict  # noqa: F401  (raised and caught by the stores' users)
from resources.store_records import (
    ACTIVE_STATES,
    MAX_CHANGE_REASON,
    AnomalyCount,
    BatchStatus,
    Label,
    ModelRecord,
    PartitionCount,
    PRODUCTION_ACTIONS,
    ProductionChange,
    ProductionError,
    ProductionEvent,
    Task,
    check_change_text,
    check_version,
    cut,
    gate_problem,
    production_state,
    rollback_target,
    version_of,
)


class StoreCore(BaseModel, ABC):
    """The store's interface and the rules every implementation shares. Frozen, as Dagster's
    resources are: a store is where the records are, not a holder of state."""

    model_config = ConfigDict(frozen=True)

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
        models, events = self.registry_state(batch)
        return production_state(models, events)

    def registry_state(self, batch: str) -> tuple[list[ModelRecord], list[ProductionEvent]]:
        """The batch's models (by version) and production events (oldest first); a store reads
        them in one snapshot where it can. Everything a batch's registry knows: production
        (production_state), the latest version, a training run's version."""
        return self.list_models(batch), self.production_events(batch)

    @abstractmethod
    def production_events(self, batch: Optional[str] = None) -> list[ProductionEvent]:
        """Every recorded change of production, of one batch or all, oldest first."""

    @abstractmethod
    def _change_production(self, batch: str, plan) -> ProductionChange:
        """Read the batch's models and events, call plan(models, events) -> event or None, append
        the event; on stores with transactions, all in one, serialised per batch. Returns the event
        with the models and events it was planned on (the new event appended)."""

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
            problem = gate_problem(version_of(batch, models, version))
            if problem:
                raise ProductionError(f"version {version} of batch {batch!r} cannot be production: {problem}")
            if current.version == version and pinned:
                raise ProductionError(f"version {version} is already production of batch {batch!r} (pinned)")
            return ProductionEvent(batch, version, current.version, "promote", source, reason, now_ms())

        return self._change_production(batch, plan).event

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

        return self._change_production(batch, plan).event

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

        return self._change_production(batch, plan).event

    def record_new_version(self, batch: str, version: int, *, source: str = "", move_pin: bool = False,
                           reason: str = "") -> Optional[ProductionEvent]:
        """After registering `version`: record that it became production (the batch follows its
        latest), or make it production of a pinned batch when `move_pin`, unpinning it. None when
        nothing changed: the batch is pinned (and not move_pin), `version` is not the latest, or
        its change is recorded already (a repeated registration)."""
        return self.new_version_change(batch, version, source=source, move_pin=move_pin, reason=reason).event

    def new_version_change(self, batch: str, version: int, *, source: str = "", move_pin: bool = False,
                           reason: str = "") -> ProductionChange:
        """record_new_version, returning the batch's models and production events as they are after
        it (one round trip: registration needs no further read to show and record production)."""
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
                                   cut(why, MAX_CHANGE_REASON), now_ms())

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

            if self._change_production(batch, plan).event is not None:
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
