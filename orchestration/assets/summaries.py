"""Stages 1 and 2, fetch and mask: `raw_logs` (the logs where they live) and `partition_summaries`,
one summary per time window, written by the data stage (ops.mask.data_stage)."""

import concurrent.futures as cf
import multiprocessing
import os

from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from ops.fetch.push import fold_counts
from ops.mask.data_stage import OVERFLOW_BATCH, summarize_windows, workers_worth_starting
from ops.mask.masking import load_rules
from ops.mask.summary import write_summaries
from ops.windows import Windows, now_ms
from orchestration import contract
from orchestration.k8s import backfill_policy, data_step_k8s_config
from orchestration.loop_settings import loop_settings
from orchestration.partitions import START_MS, batch_partitions, time_partitions
from resources.artifacts import ArtifactStorage
from resources.log_source import LogSource
from resources.store_resources import Store
from orchestration.partitions import window_ms


raw_logs = AssetSpec(
    "raw_logs",
    partitions_def=time_partitions,
    description="The logs where they live (a local folder or an OpenSearch index). Read in windows, never copied.",
    group_name="data",
)


# Every numeric run-config field has finite, sane bounds here. Specs are validated by these
# same classes (orchestration.services.training_spec), so this is the one place ranges are set.
# Floats are finite (pydantic lets inf through a bare `gt=0`).
class DataStageConfig(Config):
    force: bool = Field(default=False, description="Re-read windows that already have a summary.")
    workers: int = Field(default=0, ge=0, le=1024, description="Worker processes for multi-window runs; 0 = one per "
                         "CPU core when the files are large enough to pay for starting them (ops.mask.data_stage."
                         "MIN_BYTES_PER_WORKER), else none.")
    cap: int = Field(default=100_000, gt=0, le=100_000_000, description="Distinct masked lines kept per batch before compacting.")


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
    """Fetch each time window's logs, join the lines of multiline events (loop settings `multiline`),
    mask them and summarise them per batch.

    A window already summarised is not read again (unless `force`). Each window's
    summary goes to artifact storage as Parquet; its line counts per batch go to the store.
    """
    todo, skipped = [], []
    for key in context.partition_keys:
        (skipped if artifacts.exists(contract.summary_key(key)) and not config.force else todo).append(key)
    if skipped:
        context.log.info(f"{len(skipped)} window(s) already summarised, not read again: {skipped[:5]}")
    # records no window of the loop can ever hold are counted as bad, not passed over
    windows = Windows([window_ms(k) for k in todo], start_ms=START_MS,
                      until_ms=now_ms() + 1000 * loop_settings().future_tolerance_s)
    multiline = loop_settings().multiline.rules()
    # joining a stack trace's lines needs each stream's records in order within a shard
    shards = (log_source.ordered_shards(windows) if multiline["parsers"] else log_source.shards(windows)) if todo else []
    # as many as asked for; by default one per core, when the input is large enough to pay for them
    workers = max(1, min(config.workers or workers_worth_starting(shards, os.cpu_count() or 1), len(shards)))
    context.log.info(f"reading {len(todo)} window(s) from {log_source.describe()}: {len(shards)} shard(s), {workers} worker(s)")

    def progress(done: int, total: int, lines: int) -> None:
        context.log.info(f"shard {done}/{total} done, {lines} lines so far")

    # one call for the known batches, rather than one per batch found
    known = frozenset(context.instance.get_dynamic_partitions(batch_partitions.name))
    max_new = loop_settings().max_new_batches_per_window
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    try:
        result = summarize_windows(shards, windows, load_rules(), pool=pool, cap=config.cap, progress=progress,
                                   multiline=multiline, known_batches=known, max_new_batches=max_new)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    log_source.remember(result.time_ranges, result.first_times)

    rows, batches = [], set()
    for key, (start, end), window in zip(todo, windows.bounds, result.windows):
        with artifacts.writing(contract.summary_key(key)) as tmp:  # visible only once complete
            write_summaries(tmp, window.summaries, extra_meta={"window_start_ms": start, "window_end_ms": end})
        counts = fold_counts({b: s.total for b, s in window.summaries.items()})  # pushed validation pools count in their batch
        store.record_sample_counts(key, start, end, counts)
        batches.update(counts)
        rows.append((key, window.lines, counts, {b: len(s.counts) for b, s in window.summaries.items()}))

    new = sorted(batches - known)
    if new:
        context.instance.add_dynamic_partitions(batch_partitions.name, new)
    overflow = None
    if result.overflow.records:
        fields = ", ".join(getattr(log_source, "batch_fields", None) or []) or "(the source's batch filters)"
        overflow = {"records": result.overflow.records, "batch": OVERFLOW_BATCH, "max_new_batches_per_window": max_new,
                    "batch_fields": fields, "example_batches": result.overflow.examples}
        context.log.warning(
            f"{result.overflow.records} record(s) of new batches past the cap of {max_new} new batches per window "
            f"were summarised under batch {OVERFLOW_BATCH}: the batch field(s) {fields} hold too many distinct "
            f"values (e.g. {', '.join(map(repr, result.overflow.examples[:3]))}); choose other batch_fields, or "
            "raise max_new_batches_per_window in the loop settings")
    from ops.plots import tidy_metadata

    # Each window's own partition records its own figures; what only the run as a whole knows (its
    # throughput, the bad records, which cannot always be placed in a window) is named run_*.
    first_seen = set()
    for key, lines, counts, distinct in rows:  # a new batch is named in the first window that holds it
        arrived = [b for b in new if b in counts and b not in first_seen]
        first_seen.update(arrived)
        context.add_asset_metadata(window_metadata(key, read=True, lines=lines, counts=counts, distinct=distinct,
                                                   new=arrived), partition_key=key)
    for key in skipped:
        context.add_asset_metadata(window_metadata(key, read=False), partition_key=key)
    return MaterializeResult(
        metadata=tidy_metadata({
            "source": log_source.describe(),
            "run_windows_read": len(todo),
            "run_windows_skipped": len(skipped),
            "run_shards": result.shards,
            "multiline_parsers": ", ".join(multiline["parsers"]) or "off",
            "run_lines": result.lines,
            "run_lines_per_s": result.lines / result.seconds if result.seconds else None,
            "run_seconds": result.seconds,
            "run_peak_worker_rss_mb": result.peak_worker_rss_mb,
            "run_bad_records": result.bad.total,
            **({"run_bad_by_reason": MetadataValue.json(dict(result.bad.counts)),
                "run_bad_examples": MetadataValue.json(result.bad.examples)} if result.bad.total else {}),
            **({"run_batch_overflow": MetadataValue.json(overflow)} if overflow else {}),
        })
    )


def window_metadata(key: str, read: bool, lines: int = 0, counts: dict | None = None, distinct: dict | None = None,
                    new: list | None = None) -> dict:
    """One window's partition metadata: its bounds, whether this run read it, and its lines by batch."""
    start, end = window_ms(key)
    meta = {"window_start": MetadataValue.timestamp(start / 1000), "window_end": MetadataValue.timestamp(end / 1000),
            "read": "read in this run" if read else "summarised before, not read again"}
    if read:
        meta.update({"lines": lines, "batch_lines": MetadataValue.json(counts or {}),
                     "distinct_forms": MetadataValue.json(distinct or {})})
        if new:
            meta["new_batches"] = MetadataValue.json(new)
    return meta
