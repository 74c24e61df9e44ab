"""Rebuilding the store from artifact storage, which holds everything the store indexes.

A lost or replaced store (a deleted SQLite file, a fresh TDengine database) would otherwise
stall the loop: windows already summarised are never read again, so their sample counts
would never come back, and model versions would start over at 1. Each window's summary
holds its per-batch line counts, and each registered model's artifact holds its registry
row (meta.json and metrics.json), so both are re-recorded from there. Each batch's production
record (`production/<batch key>.json`, orchestration.production, rewritten at every change of
production) holds its production history, so pins and the rollback history come back too: its
events are re-recorded for a batch whose store holds none.
"""

from __future__ import annotations

import json
import zipfile

from ops.register.artifact import ArtifactError, read_artifact_meta
from ops.mask.summary import read_summary_meta, summary_totals
from orchestration.contract import MODELS, SUMMARIES, ModelRef
from orchestration.partitions import time_partitions
from resources.artifact_core import ArtifactStorageCore
from resources.store import StoreCore, VersionConflict
from resources.store_records import ModelRecord


def restore_store(store: StoreCore, artifacts: ArtifactStorageCore, log=None) -> dict:
    """Re-record every window's sample counts from its summary, and every registered model that
    the registry lacks from its artifact. Idempotent: recording a window again replaces it, and
    a model already registered is left alone. Returns what was done, by kind."""
    report = {"windows": 0, "models": 0, "production_changes": 0, "problems": []}
    for key in artifacts.list(SUMMARIES):
        if not key.endswith(".parquet"):
            continue
        try:
            with artifacts.reading(key) as path:
                meta, totals = read_summary_meta(path), summary_totals(path)
            start, end = int(meta["window_start_ms"]), int(meta["window_end_ms"])
        except Exception as exc:  # one unreadable file must not stop the rest
            report["problems"].append(f"{key}: {type(exc).__name__}: {exc}")
            continue
        partition_key = time_partitions.get_partition_key_for_timestamp(start / 1000)
        from ops.fetch.push import fold_counts  # a pushed batch's validation pool counts in the batch

        store.record_sample_counts(partition_key, start, end, fold_counts(totals))
        report["windows"] += 1

    registered = {(m.batch, m.version) for m in store.list_models()}
    found = []
    for key in artifacts.list(MODELS):
        if not key.endswith(".zip"):
            continue
        try:
            with artifacts.reading(key) as path:
                meta = read_artifact_meta(path)
                with zipfile.ZipFile(path) as z:
                    metrics = json.loads(z.read("metrics.json")) if "metrics.json" in z.namelist() else {}
            found.append((meta["batch"], int(meta["version"]), key, ModelRef.from_meta(meta), metrics))
        except (ArtifactError, KeyError, ValueError, TypeError, zipfile.BadZipFile, OSError) as exc:
            report["problems"].append(f"{key}: {exc}")
    for batch, version, key, ref, metrics in sorted(found, key=lambda f: (f[0], f[1])):
        if (batch, version) in registered:
            continue
        record = ModelRecord(
            batch=batch, version=version, run_id=ref.train_run_id or key, artifact=key,
            artifact_uri=artifacts.uri(key), metrics=metrics if isinstance(metrics, dict) else {},
            window_start_ms=ref.window_start_ms, window_end_ms=ref.window_end_ms,
            parent_version=ref.parent_version, mode=ref.mode,
        )
        try:
            store.register_model(record)
            registered.add((batch, version))
            report["models"] += 1
        except VersionConflict as exc:
            report["problems"].append(f"{key}: version {version} of {batch!r} is taken by another run ({exc})")
    _restore_production(store, artifacts, report)
    if log is not None and (report["windows"] or report["models"] or report["production_changes"] or report["problems"]):
        log.warning(f"restored the store from artifact storage: {report['windows']} window(s) of sample counts, "
                    f"{report['models']} model version(s), {report['production_changes']} production change(s)"
                    + (f"; {len(report['problems'])} problem(s): {report['problems'][:5]}" if report["problems"] else ""))
    return report


def _restore_production(store: StoreCore, artifacts: ArtifactStorageCore, report: dict) -> None:
    """Re-record each batch's production history from its production record, where the store holds
    none for that batch (a store that kept its events knows better than the last record)."""
    from orchestration.production import event_from_dict, read_records

    records, problems = read_records(artifacts)
    report["problems"].extend(problems)
    recorded = {e.batch for e in store.production_events()}
    for record in records:
        batch = record["batch"]
        if batch in recorded:
            continue
        try:
            events = [event_from_dict({**e, "batch": batch}) for e in record["events"] if isinstance(e, dict)]
            report["production_changes"] += store.restore_production_events(batch, events)
        except (ValueError, TypeError, KeyError) as exc:
            report["problems"].append(f"{record['key']}: {type(exc).__name__}: {exc}")
