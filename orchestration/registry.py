"""Registration: the validated candidate becomes the batch's next versioned artifact.

Versions are numbered after the batch's LATEST registered version. Whether the new version
becomes production: a batch that follows its latest version (no pin) moves to it, and the
change is recorded (action "register", and in the batch's production record in artifact storage,
orchestration.production); a pinned batch stays on its pinned version unless
LOGLOOP_PROMOTE_NEW_VERSIONS is true, which moves production to the new version and unpins
the batch.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Optional

from dagster import Failure

from ops.register.artifact import read_artifact_meta, restamp_artifact
from ops.naming import batch_key
from orchestration.contract import FINETUNE, CandidateRef, ModelRef, model_key
from resources.artifacts import ArtifactStorage
from resources.store import ModelRecord, StoreCore, VersionConflict
from resources.store_records import ProductionChange, ProductionEvent, production_state


def artifact_name(template: str, name: str, version: int, batch: str) -> str:
    """The artifact's file name: checked by the one template validator specs use (ops.naming)."""
    from ops.naming import InvalidName, render_artifact_name

    key = batch_key(batch)  # an invalid batch is not the template's fault
    try:
        return render_artifact_name(template, name=name, version=version, uuid=uuid.uuid4().hex, batch=key)
    except InvalidName as exc:
        raise Failure(description=f"artifact name template {template!r} is invalid: {exc}") from exc


def promote_new_versions() -> bool:
    """LOGLOOP_PROMOTE_NEW_VERSIONS: true moves a pinned batch's production to each newly
    registered version (and unpins it); false (the default) leaves a pin where it is."""
    from orchestration.config import settings
    from orchestration.loop_settings import LoopSettingsError

    try:
        return settings().promote_new_versions
    except LoopSettingsError as exc:
        raise Failure(description=str(exc)) from None


def lineage_parent(candidate: ModelRef, production):
    """A fine-tune's parent is the model it started from; a scratch model's, the production model
    it was gated against and would replace."""
    if candidate.mode == FINETUNE and candidate.parent_version is not None:
        return candidate.parent_version
    return production.version if production else None


@dataclass(frozen=True)
class Registration:
    """A registered version, and the batch's production after it (what registered_model shows)."""

    record: ModelRecord
    change: ProductionChange

    @property
    def production(self) -> tuple[Optional[ModelRecord], bool]:
        return self.change.production

    @property
    def last_event(self) -> Optional[ProductionEvent]:
        return self.change.events[-1] if self.change.events else None


def register_candidate(
    candidate: CandidateRef, *, name, template, store: StoreCore, artifacts: ArtifactStorage, version_label=None,
) -> Registration:
    """The candidate as the batch's next version: keyed by the run that trained it (idempotent).

    Three round trips to the store whatever the number of versions: one read of the batch's
    registry (models and production events, one snapshot), the insert, and the production change,
    which returns what the production record and the asset's metadata show. (A lost race for the
    version costs one read and one insert more per retry.)"""
    batch, candidate_key, train_run_id = candidate.batch, candidate.key, candidate.run_id
    move_pin = promote_new_versions()  # a bad value fails before anything is written
    models, events = store.registry_state(batch)
    existing = [m for m in models if m.run_id == train_run_id]
    if existing:  # registered before: its production change may not have been recorded yet
        return Registration(existing[0], _recorded(store, artifacts, store.new_version_change(
            batch, existing[0].version, source=f"registry:{train_run_id}", move_pin=move_pin)))
    try:
        with artifacts.reading(candidate.validation_key) as path, open(path) as f:
            validation = json.load(f)
    except FileNotFoundError:
        raise Failure(description=f"candidate {candidate_key} was never validated; run the nulog_model_quality check")
    if not validation.get("passed"):
        raise Failure(description=f"candidate {candidate_key} failed validation: {validation.get('failures')}")

    with artifacts.reading(candidate_key) as candidate_path:
        registered = _register_version(store, artifacts, candidate, candidate_path, validation, models, events,
                                       template, name, version_label, move_pin)
    if registered is None:
        raise Failure(description=f"could not allocate a version for batch {batch!r}: too many concurrent registrations")
    return registered


def _register_version(store: StoreCore, artifacts: ArtifactStorage, candidate: CandidateRef, candidate_path: str,
                      validation: dict, models, events, template: str, name: str, version_label: Optional[str],
                      move_pin: bool) -> Optional[Registration]:
    """The candidate copied to the next free version's key and its row inserted; None when other
    writers took the version five times in a row."""
    batch, train_run_id = candidate.batch, candidate.run_id
    window = (candidate.sample.window_start_ms, candidate.sample.window_end_ms)
    candidate_meta = read_artifact_meta(candidate_path)
    lineage = ModelRef.from_meta(candidate_meta)
    for _ in range(5):  # another writer may take the version between read and insert
        latest, (production, _) = (models[-1] if models else None), production_state(models, events)
        version = (latest.version if latest else 0) + 1
        key = model_key(batch, artifact_name(template, name, version, batch))
        version_ref = replace(lineage, batch=batch, version=version, window_start_ms=window[0],
                              window_end_ms=window[1], parent_version=lineage_parent(lineage, production),
                              train_run_id=train_run_id, version_label=version_label)
        meta = {**candidate_meta, **version_ref.to_meta()}  # the feedback labels and classifier stay
        with artifacts.writing(key) as tmp:
            restamp_artifact(candidate_path, tmp, metrics=validation["metrics"], meta=meta)
        record = ModelRecord(
            batch=batch, version=version, run_id=train_run_id, artifact=key, artifact_uri=artifacts.uri(key),
            metrics=validation["metrics"], window_start_ms=window[0], window_end_ms=window[1],
            parent_version=version_ref.parent_version, mode=version_ref.mode,
        )
        try:
            registered = store.register_model(record)
        except VersionConflict:
            artifacts.delete(key)
            models, events = store.registry_state(batch)
            continue
        except Exception:
            # a locked or unreachable store: unless the row made it in after all, nothing points
            # at the artifact, so it goes (when the store cannot say, it stays for a retry to reuse)
            if _not_registered(store, batch, train_run_id):
                artifacts.delete(key)
            raise
        return Registration(registered, _recorded(store, artifacts, store.new_version_change(
            batch, registered.version, source=f"registry:{train_run_id}", move_pin=move_pin)))
    return None


def _recorded(store: StoreCore, artifacts: ArtifactStorage, change: ProductionChange) -> ProductionChange:
    """A new version became production: the batch's production record follows (restore reads it).
    The run's materialization shows production in the UI (registered_model's metadata)."""
    if change.event is None:
        return change
    from orchestration.production import after_change

    for problem in after_change(store, artifacts, change.event, observe=False, change=change):
        import logging

        logging.getLogger(__name__).warning(problem)
    return change


def _not_registered(store: StoreCore, batch: str, train_run_id: str) -> bool:
    """True only when the store answers and holds no row for this training run."""
    try:
        return not any(m.run_id == train_run_id for m in store.list_models(batch))
    except Exception:
        return False
