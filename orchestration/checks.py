"""The validation gate: a blocking check on the trained model; when it fails, nothing is registered."""


import json
from typing import Optional

from dagster import AssetCheckExecutionContext, AssetCheckResult, Config, asset_check
from pydantic import Field

from orchestration.assets import nulog_model, read_sample
from orchestration.loop_settings import loop_settings
from orchestration.partitions import batch_partitions
from orchestration.upstream import latest_metadata
from resources.artifacts import ArtifactStorage
from resources.store import Store


class ValidationConfig(Config):
    top_k: int = Field(default=50, gt=0, description="k of NuLog's top-k rule (Opni uses 50).")
    threshold: float = Field(default=0.7, gt=0, le=1, description="A line scoring below this is an anomaly.")
    min_top_k_accuracy: float = Field(default=0.8, ge=0, le=1, description="Floor on validation top-k accuracy.")
    max_anomaly_share: float = Field(default=0.2, ge=0, le=1, description="Most validation lines flagged.")
    champion_tolerance: Optional[float] = Field(
        default=None, ge=0, le=1,
        description="How much lower the candidate's top-k accuracy may be than the current model's on the "
        "same validation lines; default: the loop settings' champion_tolerance.",
    )


def validation_key(candidate_key: str) -> str:
    return candidate_key.rsplit("/", 1)[0] + "/validation.json"


@asset_check(asset=nulog_model, blocking=True, partitions_def=batch_partitions)
def nulog_model_quality(
    context: AssetCheckExecutionContext, config: ValidationConfig, artifacts: ArtifactStorage, store: Store
) -> AssetCheckResult:
    """Top-k accuracy and flagged share on the validation split must clear the gate, and the
    candidate (challenger) must not be worse than the current model (champion) on the same lines."""
    from ops.artifact import read_artifact
    from ops.evaluate import evaluate

    batch = context.partition_key
    upstream = latest_metadata(context.instance, "nulog_model", batch)
    with artifacts.reading(upstream["candidate_key"]) as path:
        candidate = read_artifact(path)
    with artifacts.reading(upstream["sample_key"]) as path:
        _, validation_lines = read_sample(path)

    metrics = evaluate(candidate.model, candidate.vocab, validation_lines, top_k=config.top_k, threshold=config.threshold)
    metrics["oov_share"] = candidate.vocab.oov_share(validation_lines)
    if validation_lines:
        from ops.evaluate import token_ranks
        from ops.templates import masked_templates

        forms = [f for f, _ in validation_lines]
        ranks = token_ranks(candidate.model, candidate.vocab, forms)
        metrics["template_count"] = len(set(masked_templates(dict(zip(forms, ranks)), config.top_k).values()))
    failures = []
    if not validation_lines:
        failures.append("the validation split is empty")
    if metrics["top_k_accuracy"] < config.min_top_k_accuracy:
        failures.append(f"top-{config.top_k} accuracy {metrics['top_k_accuracy']:.3f} < {config.min_top_k_accuracy}")
    if metrics["anomaly_share"] > config.max_anomaly_share:
        failures.append(f"flagged share {metrics['anomaly_share']:.3f} > {config.max_anomaly_share}")
    champion = store.get_model(batch)
    if champion is not None and validation_lines:
        with artifacts.reading(champion.artifact) as path:
            current = read_artifact(path)
        champ = evaluate(current.model, current.vocab, validation_lines, top_k=config.top_k, threshold=config.threshold)
        tolerance = config.champion_tolerance if config.champion_tolerance is not None else loop_settings().champion_tolerance
        metrics["champion_version"] = champion.version
        metrics["champion_top_k_accuracy"] = champ["top_k_accuracy"]
        metrics["champion_anomaly_share"] = champ["anomaly_share"]
        if metrics["top_k_accuracy"] < champ["top_k_accuracy"] - tolerance:
            failures.append(
                f"challenger top-{config.top_k} accuracy {metrics['top_k_accuracy']:.3f} is worse than champion "
                f"v{champion.version}'s {champ['top_k_accuracy']:.3f} by more than {tolerance}"
            )
    passed = not failures
    with artifacts.writing(validation_key(upstream["candidate_key"])) as tmp:
        with open(tmp, "w") as f:
            json.dump({"passed": passed, "failures": failures, "metrics": metrics,
                       "candidate_key": upstream["candidate_key"], "config": config.model_dump()}, f)
    return AssetCheckResult(
        passed=passed,
        description="; ".join(failures) or "candidate clears the gate",
        metadata={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    )
