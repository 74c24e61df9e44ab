"""Stage 3, sample: `training_sample`, a batch's window summaries merged and drawn from (ops.sample)."""

import json
from typing import Literal, Optional

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from ops.fetch.push import validation_key
from ops.mask.summary import Summary, read_summary
from ops.sample.flagged import resample_flagged
from ops.sample.sampling import combine, read_sample, replay, resample, write_sample
from ops.validate.feedback import without_anomalies
from orchestration import contract
from ops.train.decisions import FINETUNE, SCRATCH, Decision, decide_run, escalate_on_vocabulary
from orchestration.contract import ModelRef, SampleRef
from orchestration.loop_settings import loop_settings
from orchestration.partitions import batch_partitions
from orchestration.tasks import start_task
from orchestration.upstream import window_bound_ms
from resources.artifacts import ArtifactStorage
from resources.store_resources import Store
from resources.store_records import ModelRecord, TaskState, registry_status
from ops.windows import MAX_TIME_MS
from orchestration.assets.summaries import partition_summaries


# Every numeric run-config field has finite, sane bounds here. Specs are validated by these
# same classes (orchestration.services.training_spec), so this is the one place ranges are set.
# Floats are finite (pydantic lets inf through a bare `gt=0`).
class TimeInterval(Config):
    start_ms: int = Field(ge=0, lt=MAX_TIME_MS, description="Epoch milliseconds, inclusive.")
    end_ms: int = Field(gt=0, le=MAX_TIME_MS, description="Epoch milliseconds, exclusive.")


class ResampleConfig(Config):
    t: int = Field(default=128_000, gt=0, le=100_000_000, description="Training-set size to draw.")
    validation_share: float = Field(default=0.2, ge=0.0, lt=1.0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, lt=2**32)
    window_start: Optional[str] = Field(default=None, description="ISO time or partition key; default: all data.")
    window_end: Optional[str] = Field(default=None, description="ISO time or partition key (exclusive).")
    merge_cap: int = Field(default=1_000_000, gt=0, le=100_000_000, description="Distinct forms kept while merging windows.")
    # Literal types become enums in Dagster's config schema, so the launchpad flags bad values
    mode: Literal["scratch", "finetune", "auto"] = Field(default="scratch",
                      description="finetune: new data since the production model's watermark plus a replay share; "
                      "auto: finetune when the batch has a model, else scratch (ops.train.decisions decides).")
    parent_version: Optional[int] = Field(default=None, ge=1, description="The version a fine-tune starts from, as "
                                          "the loop decided it; without one the run decides when it starts.")
    escalation: Optional[str] = Field(default=None, max_length=1000,
                                      description="Why the loop trains from scratch instead of fine-tuning (recorded).")
    time_intervals: Optional[list[TimeInterval]] = Field(
        default=None, description="Train on the windows overlapping these intervals (instead of window_start/end).")


@asset(
    partitions_def=batch_partitions,
    # A batch's sample draws on every time window that holds its lines: each batch partition
    # depends on all window partitions (the store says which of them hold the batch).
    deps=[AssetDep(partition_summaries, partition_mapping=AllPartitionMapping())],
    group_name="model",
    kinds={"python", "parquet"},
)
def training_sample(
    context: AssetExecutionContext, config: ResampleConfig, store: Store, artifacts: ArtifactStorage
) -> MaterializeResult:
    """Merge the batch's window summaries and draw exactly t lines by global sqrt weights.

    A fine-tune draws from the data since the current model's watermark and replays a
    share of that model's own training split, so it does not forget.
    """
    batch = context.partition_key
    settings = loop_settings()
    models, events = store.registry_state(batch)
    decision = given_decision(batch, config, models, events, settings.max_finetunes_in_a_row)
    task_id = start_task(context, store, batch, decision.action, settings.task_time_limit_s)
    context.log.info(f"{decision.action}: {decision.reason}")
    parent = parent_model(batch, decision, models)
    parts = data_windows(store, batch, config, decision)
    parent_sample, merged = None, None
    if parent is not None and parts:
        # the vocabulary rule needs the new data and the parent's vocabulary: the run is the first to hold both
        from ops.register.artifact import read_artifact_vocab  # here, not above: it loads torch

        with artifacts.reading(parent.artifact) as path:
            parent_sample, vocab = parent_sample_key(path), read_artifact_vocab(path)
        merged = merge_summaries(artifacts, parts, batch, config)
        oov = vocab.oov_share(merged.counts.items())
        escalated = escalate_on_vocabulary(decision, oov, settings.max_oov_share)
        if escalated is not decision:
            context.log.warning(f"batch {batch!r}: {escalated.escalation}")
            store.record_task_event(task_id, batch, TaskState.RUNNING, mode=escalated.action, message=escalated.escalation)
            decision, parent, merged = escalated, None, None
            parts = data_windows(store, batch, config, decision)
        else:
            context.log.info(f"fine-tuning v{parent.version} (OOV share of new data {oov:.3f})")
    if not parts:
        raise Failure(
            description=f"no samples for batch {batch!r} in window [{config.window_start}, {config.window_end}): "
            "nothing to train, nothing registered",
            metadata={"batch": batch, "outcome": "no samples"},
        )

    replay_n = round(config.t * settings.replay_share) if parent is not None else 0
    merged = merged or merge_summaries(artifacts, parts, batch, config)
    flagged = merge_summaries(artifacts, parts, validation_key(batch), config)
    if flagged.total:  # pushed samples: each keeps the split it was registered with (ops.sample.flagged)
        sample = resample_flagged(merged, flagged, config.t - replay_n, seed=config.seed)
        merged = Summary(tail_count=merged.tail_count + flagged.tail_count)  # for exact_counts below
    else:
        sample = resample(merged, config.t - replay_n, seed=config.seed, validation_share=config.validation_share)
    replayed = []
    if parent is not None:
        previous_key = parent_sample
        if previous_key and artifacts.exists(previous_key):
            with artifacts.reading(previous_key) as path:
                previous_train, _ = read_sample(path)
            replayed = replay(previous_train, replay_n, seed=config.seed)
            sample.train = combine(sample.train, replayed)
        else:
            context.log.warning(f"v{parent.version}'s training sample is gone; fine-tuning on new data only")
    # feedback: the model never learns a line labelled (or nearest to) anomaly as normal; the labels
    # travel to the model (nulog_model) through a snapshot next to the sample
    labels = {label.masked: label.label for label in store.labels(batch)}
    sample.train, dropped = without_anomalies(sample.train, labels)
    ref = SampleRef(
        batch=batch, run_id=context.run.run_id, key=contract.sample_key(batch, context.run.run_id),
        labels_key=contract.labels_key(batch, context.run.run_id), task_id=task_id,
        parent_version=parent.version if parent else None, parent_artifact=parent.artifact if parent else None,
        window_start_ms=parts[0].window_start_ms, window_end_ms=parts[-1].window_end_ms,
        escalation=decision.escalation, decision=decision.reason,
    )
    with artifacts.writing(ref.key) as tmp:
        write_sample(tmp, sample)
    with artifacts.writing(ref.labels_key) as tmp, open(tmp, "w") as f:
        json.dump(labels, f)
    from ops.plots import tidy_metadata

    return MaterializeResult(
        # the reference nulog_model reads (None, e.g. no parent, is left out, not shown as "null"),
        # then figures for people
        metadata=tidy_metadata({
            **ref.to_metadata(),
            "labels": len(labels),
            "dropped_labelled_anomaly_lines": dropped,
            "population": sample.population,
            "sample_size": sample.size,
            "replayed_lines": sum(c for _, c in replayed),
            "train_lines": sum(c for _, c in sample.train),
            "validation_lines": sample.validation_lines,
            "distinct_train_forms": len(sample.train),
            "exact_counts": merged.exact,
            "window_start": MetadataValue.timestamp(parts[0].window_start_ms / 1000),
            "window_end": MetadataValue.timestamp(parts[-1].window_end_ms / 1000),
            "windows": len(parts),
        })
    )


def given_decision(batch: str, config: ResampleConfig, models, events, max_finetunes_in_a_row: int) -> Decision:
    """The run's decision: the one its run config carries (the sensor decided it: a scratch run, or
    a fine-tune of `parent_version`), else the request's mode (`logloop train`, NATS, the launchpad)
    decided now by ops.train.decisions against the batch's registry."""
    if config.mode == SCRATCH:
        return Decision(batch, SCRATCH, config.escalation or "scratch run", escalation=config.escalation)
    if config.mode == FINETUNE and config.parent_version is not None:  # its window_start is the decision's
        return Decision(batch, FINETUNE, f"fine-tune of v{config.parent_version}", parent_version=config.parent_version,
                        window_start_ms=window_bound_ms(config.window_start))
    return decide_run(registry_status(batch, models, events), None, max_finetunes_in_a_row, request=config.mode)


def parent_model(batch: str, decision: Decision, models) -> Optional[ModelRecord]:
    if decision.parent_version is None:
        return None
    parent = next((m for m in models if m.version == decision.parent_version), None)
    if parent is None:
        raise Failure(description=f"batch {batch!r} has no version {decision.parent_version} to fine-tune "
                                  f"(registered: {[m.version for m in models][-10:]}); nothing trained",
                      metadata={"batch": batch, "outcome": "no parent"})
    return parent


def data_windows(store: Store, batch: str, config: ResampleConfig, decision: Decision) -> list:
    """The partitions with samples the run draws from: the request's window when it gives one, else
    the decision's (a fine-tune's new data starts at its parent's watermark; a scratch run reads all,
    also when the vocabulary rule turned a decided fine-tune into one)."""
    if config.time_intervals:
        # whole windows overlapping any interval: summaries are per window
        parts = sorted({(p.window_start_ms, p.partition_key): p for iv in config.time_intervals
                        for p in store.partition_counts(batch, iv.start_ms, iv.end_ms) if p.count > 0}.items())
        return [p for _, p in parts]
    requested = None if config.parent_version is not None else window_bound_ms(config.window_start)
    start_ms = decision.window_start_ms if requested is None else requested
    return [p for p in store.partition_counts(batch, start_ms, window_bound_ms(config.window_end)) if p.count > 0]


def merge_summaries(artifacts: ArtifactStorage, parts, key: str, config: ResampleConfig) -> Summary:
    def summaries():
        for p in parts:
            with artifacts.reading(contract.summary_key(p.partition_key)) as path:
                yield read_summary(path, key)

    return Summary.merge(summaries(), cap=config.merge_cap, seed=config.seed)


def parent_sample_key(parent_path) -> Optional[str]:
    """The training sample of a parent model, from its artifact's meta.json (to replay it)."""
    from ops.register.artifact import read_artifact_meta

    return ModelRef.from_meta(read_artifact_meta(parent_path)).sample_key
