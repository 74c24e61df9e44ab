"""Stage 6, register: `registered_model`, the candidate that passed its gate published as the batch's
next version and announced (orchestration.registry). Stage 5, the gate, is orchestration/checks/quality.py."""

from typing import Optional

from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, field_validator

from ops.naming import validate_artifact_template
from orchestration.partitions import batch_partitions
from orchestration.tasks import succeed_task
from orchestration.upstream import upstream_candidate
from resources.artifacts import ArtifactStorage
from resources.nats_bus import ModelEvents
from resources.store_resources import Store
from orchestration.assets.train import nulog_model


class RegisterConfig(Config):
    model_name: str = Field(default="nulog", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    artifact_name_template: str = Field(default="{name}-{version}-{uuid}.zip")
    model_version_label: Optional[str] = Field(default=None, description="A human version label (Odahu's spec.model.version).")

    @field_validator("artifact_name_template")
    @classmethod
    def _safe_template(cls, template: str) -> str:
        return validate_artifact_template(template)  # before training, not after it


@asset(partitions_def=batch_partitions, deps=[nulog_model], group_name="model", kinds={"python"})
def registered_model(
    context: AssetExecutionContext, config: RegisterConfig, store: Store, artifacts: ArtifactStorage,
    model_events: ModelEvents,
) -> MaterializeResult:
    """Publish the validated candidate as the batch's next model version, and announce it (model_ready).

    Registration is keyed by the run that trained the candidate, so registering the
    same candidate twice (a retry, a re-execution) never creates a second version.
    """
    from orchestration.services.model_events import announce, model_ready
    from orchestration.registry import register_candidate  # here, not above: it loads torch

    batch = context.partition_key
    candidate = upstream_candidate(context.instance, context.run.run_id, batch)
    registration = register_candidate(
        candidate,
        name=config.model_name,
        template=config.artifact_name_template,
        version_label=config.model_version_label,
        store=store,
        artifacts=artifacts,
    )
    record = registration.record
    context.log.info(f"batch {batch!r}: version {record.version} at {record.artifact_uri}")
    if candidate.checkpoint_key:  # the model is safe in the registry; the resume point is not needed
        artifacts.delete(candidate.checkpoint_key)
    if candidate.sample.task_id:
        succeed_task(store, candidate.sample.task_id, batch, context.run.run_id, record.version)
    announced = announce(model_events, artifacts, "model_ready", *model_ready(record, config.model_name, context.run.tags),
                         log=context.log)
    from orchestration.production import production_metadata

    production, pinned = registration.production  # the new version, or a pinned older one
    return MaterializeResult(
        metadata={
            **production_metadata(registration.last_event, production.version if production else None, pinned),
            "version": record.version,
            "mode": record.mode,
            "parent_version": record.parent_version,
            "artifact": record.artifact,
            "artifact_uri": MetadataValue.path(record.artifact_uri),
            "top_k_accuracy": record.metrics.get("top_k_accuracy"),
            "anomaly_share": record.metrics.get("anomaly_share"),
            **({"model_ready_published": announced} if model_events.enabled else {}),
        }
    )
