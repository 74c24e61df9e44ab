"""Scoring in production: each time window's lines scored by its batch's current model.

`anomaly_scores` reads the window's summary that the data stage already wrote (masked forms
with counts), so raw logs are never read twice. Each enabled batch's forms are scored once
with the batch's registered model, and the anomaly count per batch and window goes to the
store as a time series (CML's inference table; on TDengine, a super table keyed by window).

For the batches `record_results_batches` (loop settings) or the `record_batches` config names,
each scored form of the window is also written to the store's inference results, as
`logloop score --record` writes lines (resources/sample_table.py): one row per distinct form with
its line count, score, verdict, the verdict's reason, the threshold and the model version, each with a
unique timestamp. A form of a
compacted tail stands for its share of the tail (ops.validate.scoring.score_summary_forms).
Each materialization appends its rows: a window scored again is recorded again.

The materialization's metadata counts lines by verdict reason (ops.validate.verdict.REASONS), per
window and batch and in all, so a jump in anomalies says whether the score, severity or feedback made it.

For the batches `verdict_write_back.batches` (loop settings) or the `write_back_batches` config
names, each scored window's verdicts are also written onto the OpenSearch documents themselves,
where Opni's views read them (`anomaly_level` and the rest: ops/fetch/opensearch_verdicts.py). The
summary holds masked forms, not document ids, so the window is read again with the same source,
each message masked with the data stage's rules and given its form's verdict. Writing again
overwrites. Each window is recorded whole or not at all: its verdicts are written first, then its
inference results and its anomaly counts, so a write that fails (after its retries, or past its
deadline) fails the step with windows before it recorded and this one and later not.
"""

from collections import Counter
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
from resources.log_source import LogSource
from resources.store import AnomalyCount
from resources.store_resources import Store


class AnomalyScoresConfig(Config):
    batches: Optional[list[str]] = Field(
        default=None, description="Batches to score; default: the loop settings' score_batches ('*' = every batch with a model).")
    record_batches: Optional[list[str]] = Field(
        default=None, description="Scored batches whose forms are recorded as inference results (one row per distinct "
        "form of the window, with its line count); default: the loop settings' record_results_batches ('*' = every "
        "scored batch, [] = none).")
    write_back_batches: Optional[list[str]] = Field(
        default=None, description="Scored batches whose verdicts are written onto their OpenSearch documents "
        "(anomaly_level, nulog_confidence, anomaly_reason, model_version, inference_model); default: the loop "
        "settings' verdict_write_back.batches ('*' = every scored batch, [] = none).")


def _named(batch: str, names: list[str]) -> bool:
    return "*" in names or batch in names


class _Scorers:
    """Each batch's production Scorer and version, loaded once per run (None: no registered model)."""

    def __init__(self, store: Store, artifacts: ArtifactStorage):
        self.store, self.artifacts, self.scorers, self.versions = store, artifacts, {}, {}

    def get(self, batch: str):
        from ops.validate.scoring import Scorer

        if batch not in self.scorers:
            model = self.store.get_model(batch)
            if model is None:
                self.scorers[batch] = None
            else:
                with self.artifacts.reading(model.artifact) as model_path:
                    # the batch's feedback takes effect at once, over what the model was trained with
                    self.scorers[batch] = Scorer.from_path(
                        model_path, labels={label.masked: label.label for label in self.store.labels(batch)})
                self.versions[batch] = model.version
        return self.scorers[batch]


def batch_summary(path, batch: str):
    """The batch's window summary, its pushed validation pool merged in (scored with their batch)."""
    from ops.fetch.push import validation_key
    from ops.mask.summary import Summary, read_summary

    summary, pool = read_summary(path, batch), read_summary(path, validation_key(batch))
    return Summary.merge([summary, pool]) if pool.total else summary


def _write_back(log_source: LogSource, key: str, window: tuple[int, int], judged: dict, masker, bulk_docs: int,
                deadline_s: float) -> dict:
    """Write one window's verdicts onto its documents; Failure naming the window when it cannot."""
    from ops.fetch.opensearch_verdicts import Verdict, VerdictWriteError, verdicts_of
    from ops.validate.scoring import score_single_lines

    def score_new(batch: str, forms: list[str]) -> list[Verdict]:
        scorer, total = judged[batch][2], judged[batch][3]
        return [Verdict(f.anomaly, f.score, f.reason) for f in score_single_lines(scorer, forms, total)]

    try:
        stats = log_source.write_back_verdicts(
            window, {b: verdicts_of(forms) for b, (forms, _, _, _) in judged.items()},
            {b: version for b, (_, version, _, _) in judged.items()}, masker.mask, score_new, bulk_docs, deadline_s)
    except VerdictWriteError as exc:
        raise Failure(description=f"window {key}: {exc}. Windows before it are recorded; this one and later are "
                                  f"not (scoring again overwrites what was written)") from None
    return stats.as_dict()


@asset(partitions_def=time_partitions, deps=[partition_summaries], group_name="scoring", kinds={"pytorch"},
       backfill_policy=backfill_policy())
def anomaly_scores(context: AssetExecutionContext, config: AnomalyScoresConfig, store: Store,
                   artifacts: ArtifactStorage, log_source: LogSource) -> MaterializeResult:
    """Score each window's lines with the batch's production model; record anomaly counts per batch,
    the scored forms of the batches configured for it as inference results, and write the verdicts
    onto the OpenSearch documents of the batches configured for that."""
    from ops.fetch.push import real_batches
    from ops.mask.summary import read_summary_meta
    from ops.validate.scoring import forms_by_reason, score_summary_forms, summary_tally

    settings = loop_settings()
    enabled = config.batches if config.batches is not None else settings.score_batches
    recorded = config.record_batches if config.record_batches is not None else settings.record_results_batches
    write_back = config.write_back_batches if config.write_back_batches is not None else \
        settings.verdict_write_back.batches
    masker = None
    if write_back:
        if not hasattr(log_source, "write_back_verdicts"):
            raise Failure(description=f"verdicts can be written back only onto OpenSearch documents; the log source "
                                      f"is {log_source.describe()} (unset verdict_write_back.batches)")
        from ops.mask.masking import Masker, load_rules

        masker = Masker(load_rules())  # the data stage's rules: the summaries' forms are theirs
    scorers, table = _Scorers(store, artifacts), None
    rows, per_window, updated, flagged_by = [], [], 0, Counter()
    for key in context.partition_keys:
        if not artifacts.exists(summary_key(key)):
            raise Failure(description=f"window {key} has no summary yet; materialize partition_summaries first")
        start, end = window_ms(key)
        window_rows, results, judged, scored = [], [], {}, []
        with artifacts.reading(summary_key(key)) as path:
            for batch in real_batches(read_summary_meta(path).get("tail_count", {})):
                scorer = scorers.get(batch) if _named(batch, enabled) else None
                if scorer is None:
                    continue
                version, summary = scorers.versions[batch], batch_summary(path, batch)
                forms = score_summary_forms(scorer, summary)
                lines, anomalies = summary_tally(summary, forms)
                reasons = forms_by_reason(forms)
                flagged_by.update(reasons["flagged_by"])
                window_rows.append(AnomalyCount(batch, start, end, lines, anomalies, version))
                scored.append({"window": key, "batch": batch, "lines": lines, "anomalies": anomalies,
                               "model_version": version, "threshold": scorer.threshold, **reasons})
                if _named(batch, recorded):
                    results.append((batch, forms, version, scorer.threshold))
                    scored[-1]["results_recorded"] = len(forms)
                if _named(batch, write_back):
                    judged[batch] = (forms, version, scorer, summary.total)
        if judged:
            written = _write_back(log_source, key, (start, end), judged, masker,
                                  settings.verdict_write_back.bulk_docs, settings.verdict_write_back.deadline_s)
            context.log.info(f"window {key}: verdicts written onto {written['updated']} document(s) of "
                             f"{sorted(judged)[:10]}; {written['deleted']} deleted meanwhile")
            updated += written["updated"]
            for row in scored:
                if row["batch"] in judged:
                    row["verdicts_written"] = written
        for batch, forms, version, threshold in results:
            from resources.samples import samples_for_store

            table = table or samples_for_store(store)
            table.record_results(batch, [(f.score, f.anomaly, f.masked, f.lines, f.reason) for f in forms],
                                 version, window_ms=(start, end), threshold=threshold)
        store.record_anomaly_counts(window_rows)
        rows.extend(window_rows)
        per_window.extend(scored)
    skipped = sorted(b for b, s in scorers.scorers.items() if s is None)
    if skipped:
        context.log.info(f"no registered model yet, not scored: {skipped[:20]}")
    return MaterializeResult(metadata={
        "scored": MetadataValue.json(per_window[:500]),
        "lines": sum(r.lines for r in rows),
        "anomalies": sum(r.anomalies for r in rows),
        "results_recorded": sum(w.get("results_recorded", 0) for w in per_window),
        "documents_updated": updated,
        "flagged_by": MetadataValue.json(dict(sorted(flagged_by.items()))),
        "batches_without_model": MetadataValue.json(skipped),
    })
