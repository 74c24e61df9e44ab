"""The validation gate: a blocking check on the trained model; when it fails, nothing is registered.

The gate also sets the model's score threshold: calibrated on the validation split so that the score
alone flags at most the flag budget of its lines (ops.validate.verdict.calibrate_threshold), unless
the run config fixes one. The threshold goes into the model's metrics (artifact and registry), which
every Scorer of the model reads."""


import json
import math
from typing import Optional

from dagster import AssetCheckExecutionContext, AssetCheckResult, Config, asset_check
from pydantic import Field

from ops.sample.sampling import read_sample
from ops.validate.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from orchestration.assets.train import nulog_model
from orchestration.contract import validation_key
from orchestration.loop_settings import loop_settings
from orchestration.partitions import batch_partitions
from orchestration.upstream import upstream_candidate
from resources.artifacts import ArtifactStorage
from resources.nats_bus import ModelEvents
from resources.store_resources import Store


class ValidationConfig(Config):
    top_k: int = Field(default=DEFAULT_TOP_K, gt=0, le=100_000, description="k of NuLog's top-k rule (Opni uses 50).")
    threshold: Optional[float] = Field(
        default=None, ge=0, le=1, allow_inf_nan=False,
        description=f"A line scoring below this is an anomaly; default: calibrated on the validation split to the flag "
        f"budget (Opni's fixed value is {DEFAULT_THRESHOLD}).")
    flag_budget: Optional[float] = Field(
        default=None, ge=0, le=1, allow_inf_nan=False,
        description="The share of validation lines the score alone may flag, to which the threshold is calibrated; "
        "default: the loop settings' flag_budget.")
    min_top_k_accuracy: float = Field(default=0.8, ge=0, le=1, allow_inf_nan=False, description="Floor on validation top-k accuracy.")
    max_anomaly_share: float = Field(default=0.2, ge=0, le=1, allow_inf_nan=False, description="Most validation lines flagged.")
    champion_tolerance: Optional[float] = Field(
        default=None, ge=0, le=1, allow_inf_nan=False,
        description="How much lower the candidate's top-k accuracy may be than the current model's on the "
        "same validation lines; default: the loop settings' champion_tolerance.",
    )


@asset_check(asset=nulog_model, blocking=True, partitions_def=batch_partitions)
def nulog_model_quality(
    context: AssetCheckExecutionContext, config: ValidationConfig, artifacts: ArtifactStorage, store: Store,
    model_events: ModelEvents,
) -> AssetCheckResult:
    """Top-k accuracy and flagged share on the validation split must clear the gate, and the
    candidate (challenger) must not be worse than the current model (champion) on the same lines.
    A failed gate is announced (model_rejected)."""
    batch = context.partition_key
    candidate = upstream_candidate(context.instance, context.run.run_id, batch)
    failures, metrics = judge(candidate.key, candidate.sample.key, batch, config, artifacts, store)
    histogram = metrics.pop("score_histogram", None)  # plotted, not kept with the model's metrics
    result = gate_result(artifacts, candidate.key, config, failures, metrics, histogram)
    if failures:
        from orchestration.services.model_events import announce, model_rejected

        announce(model_events, artifacts, "model_rejected",
                 *model_rejected(batch, candidate.run_id, candidate.key, failures, _finite(metrics), context.run.tags),
                 log=context.log)
    return result


def judge(candidate_key: str, sample_key: str, batch: str, config: ValidationConfig, artifacts: ArtifactStorage,
          store: Store) -> tuple[list[str], dict]:
    """The gate's failures (none: it passes) and the metrics they rest on."""
    from ops.register.artifact import ArtifactError, read_artifact
    from ops.validate.evaluate import evaluate, score_lines
    from ops.train.model import nonfinite_parameters

    try:
        with artifacts.reading(candidate_key) as path:
            candidate = read_artifact(path)
    except ArtifactError as exc:  # e.g. non-finite weights: a clear failed gate, not a crash
        return [f"the candidate is unusable: {exc}"], {}
    with artifacts.reading(sample_key) as path:
        _, validation_lines = read_sample(path)

    failures = []
    broken = nonfinite_parameters(candidate.model)
    if broken:
        failures.append(f"the candidate's weights are not finite ({', '.join(broken[:5])})")
    budget = config.flag_budget if config.flag_budget is not None else loop_settings().flag_budget
    metrics = evaluate(candidate.model, candidate.vocab, validation_lines, top_k=config.top_k,
                       threshold=config.threshold, flag_budget=None if config.threshold is not None else budget)
    threshold = metrics["threshold"]
    if validation_lines:
        from ops.validate.templates import masked_templates

        forms = [f for f, _ in validation_lines]
        # templates come from the lines themselves, not from the model's ranks (ops/validate/templates.py)
        metrics["template_count"] = len(set(masked_templates(dict.fromkeys(forms, []), config.top_k).values()))
    labels = candidate.meta.get("feedback") or {}
    if labels and validation_lines:
        # how the verdict without feedback (model and severity) agrees with the users' labels
        from ops.validate.feedback import precision_recall
        from ops.validate.verdict import judge

        labelled = [(f, c) for f, c in validation_lines if f in labels]
        if labelled:
            forms = [f for f, _ in labelled]
            scores = score_lines(candidate.model, candidate.vocab, forms, config.top_k)
            flags = [flag for flag, _ in judge(forms, scores, [c for _, c in labelled], threshold,
                                               total=sum(c for _, c in validation_lines))]
            metrics.update(precision_recall(flags, [labels[f] for f in forms], [c for _, c in labelled]))
    if not validation_lines:
        failures.append("the validation split is empty")
    # written as "not (good)" so that NaN, for which every comparison is false, fails
    if not metrics["top_k_accuracy"] >= config.min_top_k_accuracy:
        failures.append(f"top-{config.top_k} accuracy {metrics['top_k_accuracy']:.3f} < {config.min_top_k_accuracy}")
    if not metrics["anomaly_share"] <= config.max_anomaly_share:
        failures.append(f"flagged share {metrics['anomaly_share']:.3f} > {config.max_anomaly_share}")
    champion = store.get_model(batch)
    if champion is not None and validation_lines:
        with artifacts.reading(champion.artifact) as path:
            current = read_artifact(path)
        from ops.validate.scoring import model_threshold

        # the champion as it scores: at its own threshold, unless the run config fixes one for both
        champ = evaluate(current.model, current.vocab, validation_lines, top_k=config.top_k,
                         threshold=config.threshold if config.threshold is not None else model_threshold(current))
        tolerance = config.champion_tolerance if config.champion_tolerance is not None else loop_settings().champion_tolerance
        metrics["champion_version"] = champion.version
        metrics["champion_top_k_accuracy"] = champ["top_k_accuracy"]
        metrics["champion_anomaly_share"] = champ["anomaly_share"]
        if not metrics["top_k_accuracy"] >= champ["top_k_accuracy"] - tolerance:
            failures.append(
                f"challenger top-{config.top_k} accuracy {metrics['top_k_accuracy']:.3f} is worse than champion "
                f"v{champion.version}'s {champ['top_k_accuracy']:.3f} by more than {tolerance}"
            )
    nonfinite = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if nonfinite:
        failures.append(f"metric(s) not finite: {', '.join(nonfinite)}")
    return failures, metrics


def gate_result(artifacts: ArtifactStorage, candidate_key: str, config: ValidationConfig, failures: list[str],
                metrics: dict, histogram: dict | None = None) -> AssetCheckResult:
    """The verdict, written next to the candidate (registration reads it) and returned to Dagster."""
    passed = not failures
    with artifacts.writing(validation_key(candidate_key)) as tmp:
        with open(tmp, "w") as f:
            # NaN is not JSON: a non-finite figure is stored as null
            json.dump({"passed": passed, "failures": failures, "metrics": _finite(metrics),
                       "candidate_key": candidate_key, "config": config.model_dump()}, f, allow_nan=False)
    from dagster import MetadataValue

    from ops.plots import markdown_image, round_sig, score_histogram_png

    # the figures, rounded for people (validation.json above keeps them exact); absent ones left out
    metadata = {k: round_sig(v) if isinstance(v, float) else v
                for k, v in _finite(metrics).items() if isinstance(v, (int, float))}
    # the validation scores' histogram ({"edges", "counts"}, from ops.validate.evaluate.evaluate)
    for key in ("flagged_by", "normal_by"):  # validation lines by verdict reason (ops.validate.verdict.REASONS)
        if isinstance(metrics.get(key), dict):
            metadata[key] = MetadataValue.json(metrics[key])
    hist = histogram
    if hist:
        png = score_histogram_png(hist["edges"], hist["counts"], threshold=metrics.get("threshold", DEFAULT_THRESHOLD))
        metadata["score_histogram"] = MetadataValue.md(markdown_image(png, "validation score histogram"))
    return AssetCheckResult(
        passed=passed,
        description="; ".join(failures) or "candidate clears the gate",
        metadata=metadata,
    )


def _finite(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
