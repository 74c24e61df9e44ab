"""Registration: the validated candidate becomes the batch's next versioned artifact."""

from __future__ import annotations

import json
import uuid

from dagster import Failure

from ops.artifact import read_artifact, write_artifact
from ops.naming import batch_key
from orchestration.checks import validation_key
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


def lineage_parent(candidate_meta: dict, latest):
    """A fine-tune's parent is the model it started from; a scratch model's, the one it replaces."""
    if candidate_meta.get("mode") == "finetune" and candidate_meta.get("parent_version") is not None:
        return candidate_meta["parent_version"]
    return latest.version if latest else None


def register_candidate(
    *, batch, candidate_key, train_run_id, window, name, template, store: Store, artifacts: ArtifactStorage,
    version_label=None,
) -> ModelRecord:
    existing = [m for m in store.list_models(batch) if m.run_id == train_run_id]
    if existing:
        return existing[0]
    try:
        with artifacts.reading(validation_key(candidate_key)) as path, open(path) as f:
            validation = json.load(f)
    except FileNotFoundError:
        raise Failure(description=f"candidate {candidate_key} was never validated; run the nulog_model_quality check")
    if not validation.get("passed"):
        raise Failure(description=f"candidate {candidate_key} failed validation: {validation.get('failures')}")

    with artifacts.reading(candidate_key) as path:
        candidate = read_artifact(path)
    parent = store.get_model(batch)
    for _ in range(5):  # another writer may take the version between read and insert
        version = (parent.version if parent else 0) + 1
        key = f"models/{batch_key(batch)}/{artifact_name(template, name, version, batch)}"
        meta = {
            **candidate.meta, "batch": batch, "version": version, "window_start_ms": window[0],
            "window_end_ms": window[1], "parent_version": lineage_parent(candidate.meta, parent),
            "mode": candidate.meta.get("mode", "scratch"), "train_run_id": train_run_id, "version_label": version_label,
        }
        with artifacts.writing(key) as tmp:
            write_artifact(tmp, candidate.model, candidate.vocab, candidate.masking_rules, candidate.model_config,
                           metrics=validation["metrics"], meta=meta, train_config=candidate.config.get("train"))
        record = ModelRecord(
            batch=batch, version=version, run_id=train_run_id, artifact=key, artifact_uri=artifacts.uri(key),
            metrics=validation["metrics"], window_start_ms=window[0], window_end_ms=window[1],
            parent_version=meta["parent_version"], mode=meta["mode"],
        )
        try:
            return store.register_model(record)
        except VersionConflict:
            artifacts.delete(key)
            parent = store.get_model(batch)
        except Exception:
            # a locked or unreachable store: unless the row made it in after all, nothing points
            # at the artifact, so it goes (when the store cannot say, it stays for a retry to reuse)
            if _not_registered(store, batch, train_run_id):
                artifacts.delete(key)
            raise
    raise Failure(description=f"could not allocate a version for batch {batch!r}: too many concurrent registrations")


def _not_registered(store: Store, batch: str, train_run_id: str) -> bool:
    """True only when the store answers and holds no row for this training run."""
    try:
        return not any(m.run_id == train_run_id for m in store.list_models(batch))
    except Exception:
        return False
