"""Retention: what artifact storage may forget, and forgetting it.

Without it nothing is ever deleted: every run leaves its folder (sample, candidate, validation,
labels), every failed run its checkpoint, every registration one more model zip, every hour one
more window summary. A `RetentionPolicy` says what to keep; `plan` decides, from the store and a
listing of artifact storage, what may go (and deletes nothing); `apply` deletes it. The
`retention_sensor` runs both as part of the loop (no run is started) and `logloop cleanup`
(orchestration.cli.retention) from the command line, with `--dry-run`.

Three modules:
- orchestration/services/retention_plan.py: the plan (what may go and why; what is kept, whatever the
  policy). It deletes nothing.
- here: applying a plan (deleting, retiring model versions to stubs, the report), and telling a
  retired stub (`retired`).
- orchestration/sensors/retention.py: the Dagster side (the runs the instance knows, the sensor).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from orchestration.services.retention_plan import PREFIXES, Item, Plan, artifact_meta, production_and_rollback
from resources.artifact_core import ArtifactStorageCore, LocalArtifactStorageCore
from resources.store import StoreCore


@dataclass
class Report:
    dry_run: bool
    deleted: list[Item] = field(default_factory=list)   # with dry_run: what would be deleted
    failed: list[tuple[Item, str]] = field(default_factory=list)
    skipped: list[tuple[Item, str]] = field(default_factory=list)  # changed since the plan (a new production)
    left: list[Item] = field(default_factory=list)      # not reached within the time limit
    notes: list[str] = field(default_factory=list)
    kept: dict = field(default_factory=dict)

    def totals(self) -> dict:
        return Plan(0, {}).totals(self.deleted)

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        parts = []
        for kind, t in self.totals().items():
            if t["count"]:
                size = f", {_human(t['bytes'])}" if t["bytes"] else ""
                noun = {"checkpoint": "checkpoint(s)", "run": "run file(s)", "model": "model version(s) (weights; rows stay)",
                        "summary": "window(s) of summaries"}[kind]
                parts.append(f"{t['count']} {noun}{size}")
        text = f"retention: {verb} " + ("; ".join(parts) if parts else "nothing")
        if self.failed:
            text += f"; {len(self.failed)} failed (first: {self.failed[0][0].key}: {self.failed[0][1]})"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped ({self.skipped[0][1]})"
        if self.left:
            text += f"; {len(self.left)} left for the next sweep (time limit)"
        return text

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run, "totals": self.totals(),
            "deleted": [i.to_dict() for i in self.deleted],
            "failed": [{**i.to_dict(), "error": e} for i, e in self.failed],
            "skipped": [{**i.to_dict(), "why": w} for i, w in self.skipped],
            "left": len(self.left), "kept": self.kept, "notes": self.notes,
        }


def dry_run(p: Plan) -> Report:
    """The report `apply` would give, deleting nothing."""
    return Report(dry_run=True, deleted=list(p.items), notes=list(p.notes), kept=dict(p.kept))


def check_key(key: str) -> str:
    """Retention deletes under its own prefixes only (never outbox/ or anything else)."""
    from ops.naming import validate_key

    validate_key(key)
    if key.split("/", 1)[0] not in PREFIXES or "/" not in key:
        raise ValueError(f"retention never deletes {key!r}: it is outside {', '.join(p + '/' for p in PREFIXES)}")
    return key


def apply(p: Plan, artifacts: ArtifactStorageCore, log=None, *, store: Optional[StoreCore] = None,
          time_limit_s: Optional[float] = None) -> Report:
    """Delete what the plan lists, in its order; one failure does not stop the rest.

    With `store` (needed for summaries), a model version that became production (or the rollback
    target) since the plan is skipped, and a window's sample counts are retired before its summary goes. With
    `time_limit_s`, what is not reached in time is reported as left.
    """
    report = Report(dry_run=False, notes=list(p.notes), kept=dict(p.kept))
    started = time.monotonic()
    protected: dict[str, tuple[Optional[int], Optional[int]]] = {}
    for item in p.items:
        if time_limit_s is not None and time.monotonic() - started > time_limit_s:
            report.left.append(item)
            continue
        try:
            if item.key is not None:
                check_key(item.key)
            if item.kind == "model" and store is not None:
                if item.batch not in protected:
                    protected[item.batch] = production_and_rollback(
                        store, item.batch, store.list_models(item.batch), store.production_events(item.batch))
                production, fallback = protected[item.batch]
                if production == item.version:
                    report.skipped.append((item, f"v{item.version} of {item.batch!r} is in production now"))
                    continue
                if fallback == item.version:
                    report.skipped.append((item, f"v{item.version} of {item.batch!r} is what a rollback goes back to now"))
                    continue
            if item.kind == "summary" and item.counts_in_store:
                if store is None:
                    raise ValueError("retiring a window's sample counts needs the store")
                store.record_sample_counts(item.partition_key, item.window_start_ms, item.window_end_ms, {})
            if item.kind == "model":
                retire_model(artifacts, item.key, p.now_ms, item.reason)
            elif item.key is not None:
                artifacts.delete(item.key)
            report.deleted.append(item)
        except Exception as exc:  # the store, the bucket, a key: reported, the rest goes on
            report.failed.append((item, f"{type(exc).__name__}: {exc}"))
            if log is not None:
                log.warning(f"retention: could not delete {item.key or item.partition_key}: {exc}")
    if isinstance(artifacts, LocalArtifactStorageCore):
        _prune_empty_folders(artifacts, [i.key for i in report.deleted if i.key])
    if log is not None:
        (log.warning if report.failed else log.info)(report.describe())
        for item in report.deleted[:200]:
            log.info(f"deleted {item.key or 'the sample counts of window ' + str(item.partition_key)}: {item.reason}")
    return report


RETIRED_NOTE = ("This model version was retired by logloop's retention policy: its weights, vocabulary and "
                "masking rules were deleted. meta.json and metrics.json remain as the registry's history "
                "(they let `logloop store restore` re-register it).\n")
DROPPED_META = ("feedback", "feedback_model")  # the bulk of meta.json; the history needs neither


def retire_model(artifacts: ArtifactStorageCore, key: str, at_ms: int, reason: str = "") -> None:
    """Replace the model zip at `key` by its stub: meta.json (marked retired) and metrics.json only."""
    with artifacts.reading(key) as path, zipfile.ZipFile(path) as z:
        meta = json.loads(z.read("meta.json"))
        metrics = z.read("metrics.json") if "metrics.json" in z.namelist() else b"{}"
    if not isinstance(meta, dict):
        raise ValueError(f"{key}: meta.json is not an object")
    if meta.get("retired"):
        return
    meta = {k: v for k, v in meta.items() if k not in DROPPED_META}
    meta["retired"] = {"at_ms": at_ms, "by": "logloop retention", "reason": reason}
    with artifacts.writing(key) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("meta.json", json.dumps(meta))
            z.writestr("metrics.json", metrics)
            z.writestr("RETIRED.txt", RETIRED_NOTE)


def retired(artifacts: ArtifactStorageCore, key: str) -> Optional[dict]:
    """When the model zip at `key` is a retired stub: {"at_ms", "by", "reason"}; else None (also when
    it is missing or unreadable)."""
    try:
        value = artifact_meta(artifacts, key).get("retired")
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def _prune_empty_folders(artifacts: LocalArtifactStorageCore, keys: list[str]) -> None:
    """Remove the folders the deletions left empty (runs/<batch>/<run>/...), never a prefix itself."""
    root = Path(artifacts.root)
    folders = {Path(k).parent for k in keys}
    for folder in sorted(folders, key=lambda f: -len(f.parts)):
        while len(folder.parts) > 1:
            try:
                os.rmdir(root / folder)  # only when empty
            except OSError:
                break
            folder = folder.parent


def _human(n: Optional[int]) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
