"""What follows a change of a batch's production model, besides the store's event.

- **A production record in artifact storage**, `production/<batch key>.json`: the batch and its
  whole production history (every `ProductionEvent`, oldest first). Artifact storage holds
  everything the store indexes (orchestration.services.restore), and pins are no exception: `logloop store
  restore` re-records these events, so a rebuilt store keeps its pins and its rollback history.
  Retention never touches `production/` (it deletes under its own prefixes only).
- **Production in the Dagster UI.** An `AssetObservation` of `registered_model`, partition = the
  batch, with `production_version`, `production_previous_version`, `production_pinned`,
  `production_change` (promote, rollback, follow, register), `production_changed_by` (who or what),
  `production_reason` and `production_changed_at`: the asset's Events tab (for the batch's
  partition) shows every change. Registration reports production in the materialization's own
  metadata instead (the same keys, of the batch's last change). The Overview's metadata table shows
  the latest materialization's, so after a promote it is the Events tab that tells.
  The CLI records it in the instance of DAGSTER_HOME; without one there is no UI to show it in.

Neither undoes the change when it fails: the store's event is the truth, and the failure is said.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from dagster import AssetKey, AssetObservation, MetadataValue

from ops.naming import batch_key
from resources.artifacts import ArtifactStorage
from resources.store import ProductionEvent, StoreCore
from resources.store_records import ProductionChange

PREFIX = "production"
ASSET = AssetKey("registered_model")


def record_key(batch: str) -> str:
    return f"{PREFIX}/{batch_key(batch)}.json"


def write_record(store: StoreCore, artifacts: ArtifactStorage, batch: str, change: Optional[ProductionChange] = None) -> dict:
    """Write the batch's production record (its whole history, read from the store, or as `change`
    left it) and return it."""
    if change is None:
        models, events = store.registry_state(batch)
        change = ProductionChange(None, models, events)
    events = change.events
    production, pinned = change.production
    doc = {"batch": batch, "production_version": production.version if production else None, "pinned": pinned,
           "events": [e.to_dict() for e in events]}
    with artifacts.writing(record_key(batch)) as tmp, open(tmp, "w") as f:
        json.dump(doc, f, ensure_ascii=False)
    return doc


def read_records(artifacts: ArtifactStorage) -> tuple[list[dict], list[str]]:
    """Every production record in artifact storage, and the problems of those that could not be read."""
    records, problems = [], []
    for key in artifacts.list(PREFIX):
        if not key.endswith(".json"):
            continue
        try:
            with artifacts.reading(key) as path, open(path) as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or not isinstance(doc.get("batch"), str) or not isinstance(doc.get("events"), list):
                raise ValueError("not a production record (batch, events)")
            records.append({**doc, "key": key})
        except Exception as exc:  # one unreadable record must not stop the rest
            problems.append(f"{key}: {type(exc).__name__}: {exc}")
    return records, problems


def event_from_dict(d: dict) -> ProductionEvent:
    """A recorded event back; ValueError (or TypeError) for anything that is not one."""
    from resources.store import PRODUCTION_ACTIONS

    if d.get("action") not in PRODUCTION_ACTIONS:
        raise ValueError(f"unknown production action {d.get('action')!r}")
    for name in ("version", "created_ms"):
        if isinstance(d.get(name), bool) or not isinstance(d.get(name), int):
            raise ValueError(f"production event {name} {d.get(name)!r} is not an integer")
    previous = d.get("previous_version")
    if previous is not None and (isinstance(previous, bool) or not isinstance(previous, int)):
        raise ValueError(f"production event previous_version {previous!r} is not an integer")
    return ProductionEvent(batch=str(d["batch"]), version=d["version"], previous_version=previous, action=d["action"],
                           source=str(d.get("source") or ""), reason=str(d.get("reason") or ""),
                           created_ms=d["created_ms"])


def production_metadata(event: Optional[ProductionEvent], version: Optional[int], pinned: bool) -> dict:
    """The metadata that shows production in the UI (absent values left out)."""
    out: dict = {"production_version": version, "production_pinned": pinned}
    if event is not None:
        out.update({"production_change": event.action, "production_changed_by": event.source or "-",
                    "production_changed_at": MetadataValue.timestamp(event.created_ms / 1000)})
        if event.previous_version is not None:
            out["production_previous_version"] = event.previous_version
        if event.reason:
            out["production_reason"] = event.reason
    return {k: v for k, v in out.items() if v is not None}


def observation(event: ProductionEvent) -> AssetObservation:
    pin = "pinned" if event.pinned else "follows the latest version"
    was = "" if event.previous_version is None else f" (was v{event.previous_version})"
    return AssetObservation(
        asset_key=ASSET, partition=event.batch,
        description=f"production is v{event.version}{was}, {pin}: {event.action} by {event.source or 'unknown'}"
                    + (f": {event.reason}" if event.reason else ""),
        metadata=production_metadata(event, event.version, event.pinned))


def _instance():
    """The Dagster instance of DAGSTER_HOME, or None without one."""
    if not os.environ.get("DAGSTER_HOME", "").strip():
        return None
    from dagster import DagsterInstance

    return DagsterInstance.get()


def after_change(store: StoreCore, artifacts: ArtifactStorage, event: ProductionEvent, *, instance=None,
                 observe: bool = True, change: Optional[ProductionChange] = None) -> list[str]:
    """Write the batch's production record and (with `observe`) report the change to the Dagster
    instance (`instance`, else DAGSTER_HOME's). Returns what failed, in words; raises nothing.
    `change`: the change as the store made it, which saves reading the batch's history again."""
    problems = []
    try:
        write_record(store, artifacts, event.batch, change)
    except Exception as exc:  # noqa: BLE001 - the change is made; a restore would lose it, so say so
        problems.append(f"the production record {record_key(event.batch)} was not written "
                        f"({type(exc).__name__}: {exc}); a store restore would not bring this change back")
    if observe:
        try:
            inst = instance if instance is not None else _instance()
            if inst is not None:
                inst.report_runless_asset_event(observation(event))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"the Dagster UI was not told ({type(exc).__name__}: {exc})")
    return problems
