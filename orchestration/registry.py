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
import os
import uuid
from dataclasses import replace

from dagster import Failure

from ops.register.artifact import read_artifact, write_artifact
from ops.naming import batch_key
from orchestration.contract import FINETUNE, CandidateRef, ModelRef, model_key
from resources.artifacts import ArtifactStorage
from resources.store import ModelRecord, Store, VersionConflict


def artifact_name(template: str, name: str, version: int, batch: str) -> str:
    """The artifact's file name: checked by the one template validator specs use (ops.naming)."""
    from ops.naming import InvalidName, render_artifact_name

    key = batch_key(batch)  # an invalid batch is not the template's fault
    try:
        return render_artifact_name(template, name=name, version=version, uuid=uuid.uuid4().hex, batch=key)
    except InvalidName as exc:
        raise Failure(description=f"artifact name template {template!r} is invalid: {exc}") from exc


PROMOTE_NEW_VERSIONS = "LOGLOOP_PROMOTE_NEW_VERSIONS"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def promote_new_versions() -> bool:
    """LOGLOOP_PROMOTE_NEW_VERSIONS: true moves a pinned batch's production to each newly
    registered version (and unpins it); false (the default) leaves a pin where it is."""
    value = os.environ.get(PROMOTE_NEW_VERSIONS, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise Failure(description=f"{PROMOTE_NEW_VERSIONS}={value!r} is not a boolean "
                                  f"(use one of {', '.join(v for v in _TRUE + _FALSE if v)})")
    return value in _TRUE


def lineage_parent(candidate: ModelRef, production):
    """A fine-tune's parent is the model it started from; a scratch model's, the production model
    it was gated against and would replace."""
    if candidate.mode == FINETUNE and candidate.parent_version is not None:
        return candidate.parent_version
    return production.version if production else None


def register_candidate(
    candidate: CandidateRef, *, name, template, store: Store, artifacts: ArtifactStorage, version_label=None,
) -> ModelRecord:
    """The candidate as the batch's next version: keyed by the run that trained it (idempotent)."""
    batch, candidate_key, train_run_id = candidate.batch, candidate.key, candidate.run_id
    window = (candidate.sample.window_start_ms, candidate.sample.window_end_ms)
    move_pin = promote_new_versions()  # a bad value fails before anything is written
    existing = [m for m in store.list_models(batch) if m.run_id == train_run_id]
    if existing:  # registered before: its production change may not have been recorded yet
        _recorded(store, artifacts, store.record_new_version(batch, existing[0].version, source=f"registry:{train_run_id}",
                                                             move_pin=move_pin))
        return existing[0]
    try:
        with artifacts.reading(candidate.validation_key) as path, open(path) as f:
            validation = json.load(f)
    except FileNotFoundError:
        raise Failure(description=f"candidate {candidate_key} was never validated; run the nulog_model_quality check")
    if not validation.get("passed"):
        raise Failure(description=f"candidate {candidate_key} failed validation: {validation.get('failures')}")

    with artifacts.reading(candidate_key) as path:
        artifact = read_artifact(path)
    lineage = ModelRef.from_meta(artifact.meta)
    latest, production = store.latest_model(batch), store.get_model(batch)
    for _ in range(5):  # another writer may take the version between read and insert
        version = (latest.version if latest else 0) + 1
        key = model_key(batch, artifact_name(template, name, version, batch))
        version_ref = replace(lineage, batch=batch, version=version, window_start_ms=window[0],
                              window_end_ms=window[1], parent_version=lineage_parent(lineage, production),
                              train_run_id=train_run_id, version_label=version_label)
        meta = {**artifact.meta, **version_ref.to_meta()}  # the feedback labels and classifier stay
        with artifacts.writing(key) as tmp:
            write_artifact(tmp, artifact.model, artifact.vocab, artifact.masking_rules, artifact.model_config,
                           metrics=validation["metrics"], meta=meta, train_config=artifact.config.get("train"),
                           multiline_rules=artifact.multiline_rules)
        record = ModelRecord(
            batch=batch, version=version, run_id=train_run_id, artifact=key, artifact_uri=artifacts.uri(key),
            metrics=validation["metrics"], window_start_ms=window[0], window_end_ms=window[1],
            parent_version=version_ref.parent_version, mode=version_ref.mode,
        )
        try:
            registered = store.register_model(record)
        except VersionConflict:
            artifacts.delete(key)
            latest, production = store.latest_model(batch), store.get_model(batch)
            continue
        except Exception:
            # a locked or unreachable store: unless the row made it in after all, nothing points
            # at the artifact, so it goes (when the store cannot say, it stays for a retry to reuse)
            if _not_registered(store, batch, train_run_id):
                artifacts.delete(key)
            raise
        _recorded(store, artifacts, store.record_new_version(batch, registered.version, source=f"registry:{train_run_id}",
                                                             move_pin=move_pin))
        return registered
    raise Failure(description=f"could not allocate a version for batch {batch!r}: too many concurrent registrations")


def _recorded(store: Store, artifacts: ArtifactStorage, event) -> None:
    """A new version became production: the batch's production record follows (restore reads it).
    The run's materialization shows production in the UI (registered_model's metadata)."""
    if event is None:
        return
    from orchestration.production import after_change

    for problem in after_change(store, artifacts, event, observe=False):
        import logging

        logging.getLogger(__name__).warning(problem)


def _not_registered(store: Store, batch: str, train_run_id: str) -> bool:
    """True only when the store answers and holds no row for this training run."""
    try:
        return not any(m.run_id == train_run_id for m in store.list_models(batch))
    except Exception:
        return False
