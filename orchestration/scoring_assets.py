"""Scoring in production: each time window's lines scored by its batch's current model.

`anomaly_scores` reads the window's summary that the data stage already wrote (masked forms
with counts), so raw logs are never read twice. Each enabled batch's forms are scored once
with the batch's registered model, and the anomaly count per batch and window goes to the
store as a time series (CML's inference table; on TDengine, a super table keyed by window).
"""

from typing import Optional

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from orchestration.assets.summaries import partition_summaries
from orchestration.partitions import window_ms
from orchestration.contract import summary_key
from orchestration.k8s import backfill_policy
from orchestration.loop_settings import loop_settings
from orchestration.partitions import time_partitions
from resources.artifacts import ArtifactStorage
from resources.store import AnomalyCount, Store


class AnomalyScoresConfig(Config):
    batches: Optional[list[str]] = Field(
        default=None, description="Batches to score; default: the loop settings' score_batches ('*' = every batch with a model).")


@asset(partitions_def=time_partitions, deps=[partition_summaries], group_name="scoring", kinds={"pytorch"},
       backfill_policy=backfill_policy())
def anomaly_scores(context: AssetExecutionContext, config: AnomalyScoresConfig, store: Store,
                   artifacts: ArtifactStorage) -> MaterializeResult:
    """Score each window's lines with the batch's production model; record anomaly counts per batch."""
    from ops.validate.scoring import Scorer, score_summary
    from ops.mask.summary import read_summary, read_summary_meta

    enabled = config.batches if config.batches is not None else loop_settings().score_batches
    scorers: dict[str, Optional[Scorer]] = {}
    versions: dict[str, int] = {}
    rows, per_window = [], []
    for key in context.partition_keys:
        if not artifacts.exists(summary_key(key)):
            raise Failure(description=f"window {key} has no summary yet; materialize partition_summaries first")
        start, end = window_ms(key)
        with artifacts.reading(summary_key(key)) as path:
            from ops.fetch.push import real_batches, validation_key  # pushed samples' validation pools: scored with their batch

            batches = real_batches(read_summary_meta(path).get("tail_count", {}))
            for batch in batches:
                if "*" not in enabled and batch not in enabled:
                    continue
                if batch not in scorers:
                    model = store.get_model(batch)
                    if model is None:
                        scorers[batch] = None
                    else:
                        with artifacts.reading(model.artifact) as model_path:
                            # the batch's feedback takes effect at once, over what the model was trained with
                            scorers[batch] = Scorer.from_path(
                                model_path, labels={label.masked: label.label for label in store.labels(batch)})
                        versions[batch] = model.version
                scorer = scorers[batch]
                if scorer is None:
                    continue
                summary = read_summary(path, batch)
                pool = read_summary(path, validation_key(batch))
                if pool.total:
                    from ops.mask.summary import Summary

                    summary = Summary.merge([summary, pool])
                lines, anomalies = score_summary(scorer, summary)
                rows.append(AnomalyCount(batch, start, end, lines, anomalies, versions[batch]))
                per_window.append({"window": key, "batch": batch, "lines": lines, "anomalies": anomalies,
                                   "model_version": versions[batch]})
    store.record_anomaly_counts(rows)
    skipped = sorted(b for b, s in scorers.items() if s is None)
    if skipped:
        context.log.info(f"no registered model yet, not scored: {skipped[:20]}")
    return MaterializeResult(metadata={
        "scored": MetadataValue.json(per_window[:500]),
        "lines": sum(r.lines for r in rows),
        "anomalies": sum(r.anomalies for r in rows),
        "batches_without_model": MetadataValue.json(skipped),
    })
