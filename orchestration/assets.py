"""The asset chain: partition summaries -> training sample -> model -> (check) -> registered model.

Each asset fetches its inputs, calls one function in ops/, and records metadata. Heavy
data is written by the asset itself to artifact storage; assets find their inputs by
the storage keys their upstream recorded in materialization metadata.
"""


import concurrent.futures as cf
import json
import multiprocessing
import os
from typing import Literal, Optional

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, create_model, field_validator

from ops.fetch.push import fold_counts, validation_key
from ops.mask.data_stage import summarize_windows
from ops.mask.masking import load_rules
from ops.mask.summary import Summary, read_summary, write_summaries
from ops.naming import validate_artifact_template
from ops.sample.flagged import resample_flagged
from ops.sample.sampling import combine, read_sample, replay, resample, write_sample
from ops.train.config import NuLogConfig, TrainConfig, tunable_fields
from ops.validate.feedback import train_classifier, without_anomalies
from ops.windows import Windows
from orchestration import contract
from orchestration.contract import FINETUNE, SCRATCH, CandidateRef, ModelRef, SampleRef
from orchestration.k8s import backfill_policy, data_step_k8s_config, train_step_k8s_config
from orchestration.loop_settings import loop_settings
from orchestration.partitions import batch_partitions, time_partitions
from orchestration.tasks import start_task, succeed_task
from orchestration.upstream import upstream_candidate, upstream_sample, window_bound_ms
from resources.artifacts import ArtifactStorage
from resources.log_source import LogSource
from resources.nats_bus import ModelEvents
from resources.store import Store

raw_logs = AssetSpec(
    "raw_logs",
    partitions_def=time_partitions,
    description="The logs where they live (a local folder or an OpenSearch index). Read in windows, never copied.",
    group_name="data",
)


# ---- data stage --------------------------------------------------------------------


# Every numeric run-config field has finite, sane bounds here. Specs are validated by these
# same classes (orchestration.training_spec), so this is the one place ranges are set.
# Floats are finite (pydantic lets inf through a bare `gt=0`).
MAX_TIME_MS = 253_402_300_800_000  # 10000-01-01T00:00Z, the end of ISO-8601 years


class DataStageConfig(Config):
    force: bool = Field(default=False, description="Re-read windows that already have a summary.")
    workers: int = Field(default=0, ge=0, le=1024, description="Worker processes for multi-window runs; 0 = CPU count.")
    cap: int = Field(default=100_000, gt=0, le=100_000_000, description="Distinct masked lines kept per batch before compacting.")


def window_ms(partition_key: str) -> tuple[int, int]:
    window = time_partitions.time_window_for_partition_key(partition_key)
    return int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)


@asset(
    partitions_def=time_partitions,
    backfill_policy=backfill_policy(),
    deps=[raw_logs],
    group_name="data",
    kinds={"python", "parquet"},
    op_tags={"dagster-k8s/config": data_step_k8s_config()},
)
def partition_summaries(
    context: AssetExecutionContext,
    config: DataStageConfig,
    log_source: LogSource,
    store: Store,
    artifacts: ArtifactStorage,
) -> MaterializeResult:
    """Fetch each time window's logs, mask them and summarise them per batch.

    A window already summarised is not read again (unless `force`). Each window's
    summary goes to artifact storage as Parquet; its line counts per batch go to the store.
    """
    todo, skipped = [], []
    for key in context.partition_keys:
        (skipped if artifacts.exists(contract.summary_key(key)) and not config.force else todo).append(key)
    if skipped:
        context.log.info(f"{len(skipped)} window(s) already summarised, not read again: {skipped[:5]}")
    windows = Windows([window_ms(k) for k in todo])
    shards = log_source.shards(windows) if todo else []
    workers = max(1, min(config.workers or os.cpu_count() or 1, len(shards)))
    context.log.info(f"reading {len(todo)} window(s) from {log_source.describe()}: {len(shards)} shard(s), {workers} worker(s)")

    def progress(done: int, total: int, lines: int) -> None:
        context.log.info(f"shard {done}/{total} done, {lines} lines so far")

    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    try:
        result = summarize_windows(shards, windows, load_rules(), pool=pool, cap=config.cap, progress=progress)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    log_source.remember(result.time_ranges)

    rows, batches = [], set()
    for key, (start, end), window in zip(todo, windows.bounds, result.windows):
        with artifacts.writing(contract.summary_key(key)) as tmp:  # visible only once complete
            write_summaries(tmp, window.summaries, extra_meta={"window_start_ms": start, "window_end_ms": end})
        counts = fold_counts({b: s.total for b, s in window.summaries.items()})  # pushed validation pools count in their batch
        store.record_sample_counts(key, start, end, counts)
        batches.update(counts)
        rows.append({"window": key, "lines": window.lines, "counts": counts,
                     "distinct": {b: len(s.counts) for b, s in window.summaries.items()}})

    new = [b for b in sorted(batches) if not context.instance.has_dynamic_partition(batch_partitions.name, b)]
    if new:
        context.instance.add_dynamic_partitions(batch_partitions.name, new)
    from ops.plots import tidy_metadata

    return MaterializeResult(
        metadata=tidy_metadata({
            "source": log_source.describe(),
            "windows_read": len(todo),
            "windows_skipped": len(skipped),
            **({"first_window": MetadataValue.timestamp(min(s for s, _ in windows.bounds) / 1000),
                "last_window_end": MetadataValue.timestamp(max(e for _, e in windows.bounds) / 1000)} if todo else {}),
            "shards": result.shards,
            "lines": result.lines,
            "lines_per_s": result.lines / result.seconds if result.seconds else None,
            "seconds": result.seconds,
            "peak_worker_rss_mb": result.peak_worker_rss_mb,
            "bad_records": result.bad.total,
            "bad_by_reason": MetadataValue.json(dict(result.bad.counts)),
            "bad_examples": MetadataValue.json(result.bad.examples),
            "batches": MetadataValue.json(sorted(batches)),
            "new_batches": MetadataValue.json(new),
            "windows": MetadataValue.json(rows[:200]),
        })
    )


# ---- resample ----------------------------------------------------------------------


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
                      description="finetune: new data since the current model's watermark plus a replay share; "
                      "auto: finetune when the batch has a model, else scratch.")
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
    mode, parent = config.mode, None
    if mode in ("finetune", "auto"):
        parent = store.get_model(batch)
        if parent is None and mode == "finetune":
            context.log.warning(f"batch {batch!r} has no model to fine-tune; training from scratch")
        mode = "finetune" if parent is not None else "scratch"
    task_id = start_task(context, store, batch, mode, settings.task_time_limit_s)

    start_ms = window_bound_ms(config.window_start)
    if parent is not None and start_ms is None:
        start_ms = parent.window_end_ms
    end_ms = window_bound_ms(config.window_end)
    if config.time_intervals:
        # whole windows overlapping any interval: summaries are per window
        parts = sorted({(p.window_start_ms, p.partition_key): p for iv in config.time_intervals
                        for p in store.partition_counts(batch, iv.start_ms, iv.end_ms) if p.count > 0}.items())
        parts = [p for _, p in parts]
    else:
        parts = [p for p in store.partition_counts(batch, start_ms, end_ms) if p.count > 0]
    if not parts:
        raise Failure(
            description=f"no samples for batch {batch!r} in window [{config.window_start}, {config.window_end}): "
            "nothing to train, nothing registered",
            metadata={"batch": batch, "outcome": "no samples"},
        )

    def summaries(key):
        for p in parts:
            with artifacts.reading(contract.summary_key(p.partition_key)) as path:
                yield read_summary(path, key)

    replay_n = round(config.t * settings.replay_share) if parent is not None else 0
    merged = Summary.merge(summaries(batch), cap=config.merge_cap, seed=config.seed)
    flagged = Summary.merge(summaries(validation_key(batch)), cap=config.merge_cap, seed=config.seed)
    if flagged.total:  # pushed samples: each keeps the split it was registered with (ops.sample.flagged)
        sample = resample_flagged(merged, flagged, config.t - replay_n, seed=config.seed)
        merged = Summary(tail_count=merged.tail_count + flagged.tail_count)  # for exact_counts below
    else:
        sample = resample(merged, config.t - replay_n, seed=config.seed, validation_share=config.validation_share)
    replayed = []
    if parent is not None:
        previous_key = parent_sample_key(parent.artifact, artifacts)
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


def parent_sample_key(parent_artifact: str, artifacts: ArtifactStorage) -> Optional[str]:
    """The training sample of a parent model, from its artifact's meta.json (to replay it)."""
    from ops.register.artifact import read_artifact_meta

    with artifacts.reading(parent_artifact) as path:
        return ModelRef.from_meta(read_artifact_meta(path)).sample_key


# ---- train -------------------------------------------------------------------------


# The tunable fields of the training loop's and the model's configs (ops.train.config: defaults,
# bounds, descriptions), as the nulog_model asset's run config.
TrainAssetConfig = create_model(
    "TrainAssetConfig", __base__=Config, __module__=__name__,
    **{name: (typ, Field(default=default, **kwargs))
       for name, (typ, default, kwargs) in tunable_fields(TrainConfig, NuLogConfig).items()},
)


@asset(
    partitions_def=batch_partitions,
    deps=[training_sample],
    group_name="model",
    kinds={"pytorch"},
    op_tags={"dagster-k8s/config": train_step_k8s_config()},
)
def nulog_model(
    context: AssetExecutionContext, config: TrainAssetConfig, artifacts: ArtifactStorage
) -> MaterializeResult:
    """Train NuLog on the batch's training sample; checkpoint each epoch so a retry resumes."""
    from ops.register.artifact import read_artifact, write_artifact
    from ops.train.loop import TrainingDiverged, train
    from ops.train.vocab import Vocab

    batch = context.partition_key
    sample = upstream_sample(context.instance, context.run.run_id, batch)
    with artifacts.reading(sample.key) as path:
        train_lines, validation_lines = read_sample(path)
    mode, start_model, escalation = sample.mode, None, None
    if mode == FINETUNE:
        with artifacts.reading(sample.parent_artifact) as path:
            parent = read_artifact(path)
        oov = parent.vocab.oov_share(train_lines)
        if oov > loop_settings().max_oov_share:
            escalation = f"new data's OOV share {oov:.3f} > {loop_settings().max_oov_share}: trained from scratch"
            context.log.warning(escalation)
            mode = SCRATCH
        else:
            vocab, start_model = parent.vocab, parent.model
            context.log.info(f"fine-tuning v{sample.parent_version} (OOV share of new data {oov:.3f})")
    if start_model is None:
        vocab = Vocab.build(train_lines)
    cfg = TrainConfig(**{name: getattr(config, name) for name in tunable_fields(TrainConfig)})
    model_cfg = start_model.cfg if start_model is not None else NuLogConfig(vocab_size=len(vocab), max_len=config.max_len)
    # keyed by the run that drew the sample: a re-execution of this step resumes it
    checkpoint_key = contract.checkpoint_key(batch, sample.run_id)
    # The checkpoint lives in artifact storage (a retry may run in another pod, on another disk):
    # fetched to a local temp file before training, put back after each epoch.
    import shutil
    import tempfile

    from resources.artifacts import ArtifactStorageError

    checkpoint_dir = tempfile.mkdtemp(prefix="logloop-checkpoint-")
    checkpoint = os.path.join(checkpoint_dir, "checkpoint.pt")
    if artifacts.exists(checkpoint_key):
        with artifacts.reading(checkpoint_key) as path:
            shutil.copyfile(path, checkpoint)

    def upload_checkpoint(path: str) -> None:
        try:
            with artifacts.writing(checkpoint_key) as tmp:
                shutil.copyfile(path, tmp)
        except (ArtifactStorageError, OSError) as exc:  # costs only the resume point, not the training
            context.log.warning(f"epoch checkpoint not saved to {artifacts.uri(checkpoint_key)}: {exc}")

    step_losses: list[tuple[float, float]] = []  # (fractional epoch, loss since the last report)

    def progress(p: dict) -> None:
        from ops.train.progress import progress_line

        context.log.info(progress_line(p))
        if p.get("steps"):
            step_losses.append((p["epoch"] - 1 + p["step"] / p["steps"], p.get("recent_loss", p["loss"])))

    try:
        result = train(train_lines, vocab, cfg, model=start_model, progress=progress, checkpoint_path=checkpoint,
                       model_config=model_cfg, on_checkpoint=upload_checkpoint)
    except TrainingDiverged as exc:
        raise Failure(description=f"batch {batch!r}: {exc}", metadata={"batch": batch, "outcome": "diverged"}) from exc
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    labels = {}
    if sample.labels_key:  # runs sampled before feedback existed have none
        with artifacts.reading(sample.labels_key) as path, open(path) as f:
            labels = json.load(f)
    candidate = CandidateRef(sample=sample, run_id=context.run.run_id, key=contract.candidate_key(batch, context.run.run_id),
                             checkpoint_key=checkpoint_key, mode=mode, escalation=escalation)
    with artifacts.writing(candidate.key) as tmp:
        write_artifact(
            tmp, result.model, vocab, load_rules(), model_cfg,
            metrics={"loss_curve": result.losses},
            meta={**ModelRef.of_candidate(candidate).to_meta(),
                  "feedback": labels, "feedback_model": train_classifier(labels) if labels else None},
            train_config=cfg,
        )
    from ops.plots import loss_curve_png, markdown_image, round_sig, sparkline, tidy_metadata

    window = {f"window_{end}": MetadataValue.timestamp(ms / 1000)
              for end, ms in (("start", sample.window_start_ms), ("end", sample.window_end_ms)) if ms is not None}
    # the UI shows short markdown inline (the trend, an SVG) and long markdown behind "[Show Markdown]" (the plot)
    trend = sparkline([loss for _, loss in step_losses] or result.losses, alt="loss trend")
    return MaterializeResult(
        metadata=tidy_metadata({
            "final_loss": result.losses[-1] if result.losses else None,
            **({"loss_trend": MetadataValue.md(trend)} if trend else {}),
            "loss_plot": MetadataValue.md(markdown_image(
                loss_curve_png(result.losses, step_losses, title=f"{batch}: training loss"), "loss curve")),
            # the reference the gate and registered_model read; the timestamps are for people
            **candidate.to_metadata(),
            **window,
            # the loss per epoch as data (tests and scripts read it); the plot above is for people
            "loss_curve": MetadataValue.json({"epoch": list(range(1, len(result.losses) + 1)),
                                              "loss": [round_sig(x) for x in result.losses]}),
            "epochs": len(result.losses),
            "vocab_size": len(vocab),
            "oov_share_validation": vocab.oov_share(validation_lines),
            "logs_per_s": result.logs_per_s,
            "rows_per_s": result.rows_per_s,
            "train_s": result.train_s,
            "device": result.device,
            "resumed_from_epoch": result.resumed_from,
        })
    )


# ---- register ----------------------------------------------------------------------


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
    from orchestration.model_events import announce, model_ready
    from orchestration.registry import register_candidate  # here, not above: it loads torch

    batch = context.partition_key
    candidate = upstream_candidate(context.instance, context.run.run_id, batch)
    record = register_candidate(
        candidate,
        name=config.model_name,
        template=config.artifact_name_template,
        version_label=config.model_version_label,
        store=store,
        artifacts=artifacts,
    )
    context.log.info(f"batch {batch!r}: version {record.version} at {record.artifact_uri}")
    if candidate.checkpoint_key:  # the model is safe in the registry; the resume point is not needed
        artifacts.delete(candidate.checkpoint_key)
    if candidate.sample.task_id:
        succeed_task(store, candidate.sample.task_id, batch, context.run.run_id, record.version)
    announced = announce(model_events, artifacts, "model_ready", *model_ready(record, config.model_name, context.run.tags),
                         log=context.log)
    from orchestration.production import production_metadata

    production, pinned = store.production(batch)  # the new version, or a pinned older one
    events = store.production_events(batch)
    return MaterializeResult(
        metadata={
            **production_metadata(events[-1] if events else None, production.version if production else None, pinned),
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
