"""Retention's plan: what artifact storage may forget now, and why. Deletes nothing.

A `RetentionPolicy` (orchestration/loop_models.py) says what to keep; `plan` decides, from the
store and a listing of artifact storage, what may go: a `Plan` of `Item`s, each with its reason,
and what stays, counted by reason. orchestration/services/retention.py applies it;
orchestration/sensors/retention.py runs both in the loop.

What is kept, whatever the policy:
- **models/**: per batch the last `keep_versions` versions, the production one
  (`store.get_model(batch)`), the one `logloop models rollback` would go back to (the previous
  production version, `resources.store.rollback_target`), and every zip the registry does not know (a registration in flight,
  or a store that lost its rows: `logloop store restore` registers them). An older version is
  *retired*: its zip is replaced, at the same key, by a stub holding only meta.json (marked
  `"retired"`, without the feedback labels and classifier) and metrics.json: the weights, vocabulary
  and rules are gone, and loading it fails ("missing member(s) ..."). Registry rows are never
  deleted: they stay as the batch's history. The stub is why a restore still works: stores accept
  versions only in sequence (version n needs n-1), so a restore of a lost store must find every
  version's meta, or it could not re-register the kept ones. `retired(artifacts, key)`
  (orchestration/services/retention.py) tells a stub.
- **runs/<batch>/<run>/** and **checkpoints/<batch>/<run>.pt**: everything of a run still in
  flight (or queued, or being re-executed: a re-execution reads its parent run's outputs), of a
  run whose task is still active, and of a run that finished less than `finished_run_grace_hours`
  ago (a retry resumes from its checkpoint, a re-execution from failure reads its sample). Of the
  other runs, the training sample of every kept model version stays (a fine-tune replays its
  parent's training split, `orchestration.contract.ModelRef.sample_key`); the rest goes.
- **summaries/**: windows that ended less than `keep_summaries_days` ago. An older window goes
  with its sample counts in the store (re-recorded as empty, which every store reads as "this
  window holds no samples"), so no count points at a missing summary: the window simply drops out
  of future trainings (a scratch model then learns from the last `keep_summaries_days` days; a
  fine-tune whose parent's watermark is older than that loses the unseen windows before it).
  A backfill of `partition_summaries` for such a window reads the source again, if it still has
  the logs. Windows of a batch with a training in flight wait for the next sweep.
- Anything else (outbox/, production/ (the production records), the source index, keys in an
  unknown layout) is never touched: `apply` (orchestration/services/retention.py) refuses a key outside
  models/, runs/, checkpoints/ and summaries/.

A store that holds nothing while artifact storage holds summaries or models was lost or replaced:
then nothing is deleted until it is restored (`logloop store restore`, or the new_samples_sensor).
A restore after retention rebuilds what was kept: the windows whose summaries remain, and every
model version's row (the retired ones from their stubs), so numbering goes on where it was.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Collection, Optional

from ops.naming import batch_key
from orchestration.contract import CHECKPOINTS, MODELS, RUNS, SAMPLE_FILE, SUMMARIES, ModelRef, summary_key
from orchestration.loop_settings import RetentionPolicy
from resources.artifact_core import ArtifactStorageCore, LocalArtifactStorageCore
from resources.store import StoreCore
from resources.store_records import ACTIVE_STATES

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# The only folders retention looks in or deletes from; outbox/ and everything else is not its business.
PREFIXES = (CHECKPOINTS, RUNS, MODELS, SUMMARIES)
KINDS = ("checkpoint", "run", "model", "summary")  # also the order of deletion: the cheapest to lose first
# (a "model" item is retired, not deleted: see orchestration.services.retention.retire_model)
SAMPLE = SAMPLE_FILE


# ---- the plan ------------------------------------------------------------------------------------


@dataclass
class Item:
    """One thing to delete: an artifact key, or (summaries) a window with its store counts."""

    kind: str                                # checkpoint | run | model | summary
    key: Optional[str]                       # None: a window whose summary is already gone (counts only)
    reason: str
    bytes: Optional[int] = None              # None where the storage cannot say cheaply
    batch: Optional[str] = None              # models
    version: Optional[int] = None            # models
    run_id: Optional[str] = None             # runs, checkpoints
    partition_key: Optional[str] = None      # summaries
    window_start_ms: Optional[int] = None
    window_end_ms: Optional[int] = None
    counts_in_store: bool = False            # summaries: the store holds sample counts to retire

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Plan:
    now_ms: int
    policy: dict
    items: list[Item] = field(default_factory=list)
    kept: dict = field(default_factory=dict)     # what stays and why: counts by reason
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.items)

    def totals(self, items: Optional[list[Item]] = None) -> dict:
        items = self.items if items is None else items
        out = {}
        for kind in KINDS:
            mine = [i for i in items if i.kind == kind]
            sizes = [i.bytes for i in mine if i.key is not None]
            out[kind] = {"count": len(mine),
                         "bytes": sum(sizes) if all(s is not None for s in sizes) else None}
        return out

    def to_dict(self) -> dict:
        return {"now_ms": self.now_ms, "policy": self.policy, "totals": self.totals(),
                "items": [i.to_dict() for i in self.items], "kept": self.kept, "notes": self.notes}


def plan(store: StoreCore, artifacts: ArtifactStorageCore, policy: RetentionPolicy, now_ms: int,
         in_flight_run_ids: Optional[Collection[str]], *, recently_finished_run_ids: Collection[str] = ()) -> Plan:
    """What the policy lets go now. Reads the store and lists artifact storage; deletes nothing.

    `in_flight_run_ids`: the Dagster runs not finished (queued to canceling) and the runs they
    re-execute; None when no Dagster instance can be asked (then only runs whose task has ended are
    judged). `recently_finished_run_ids`: runs that ended within the grace period, kept like runs in
    flight (the instance knows when a run without a task ended; the store knows it for the rest).
    """
    out = Plan(now_ms=now_ms, policy=policy.model_dump())
    kept: dict[str, int] = {}

    def keep(why: str, n: int = 1) -> None:
        kept[why] = kept.get(why, 0) + n

    statuses = store.batch_statuses()
    models = store.list_models()
    tasks = store.list_tasks()
    listing = {prefix: artifacts.list(prefix) for prefix in PREFIXES}
    if not statuses and not models and (listing["summaries"] or listing["models"]):
        out.notes.append("the store holds nothing, but artifact storage holds summaries or models: the store was "
                         "lost or replaced; nothing is deleted until it is restored ('logloop store restore')")
        return out

    busy = {t.batch for t in tasks if t.state in ACTIVE_STATES}
    known = {s.batch for s in statuses} | {m.batch for m in models} | {t.batch for t in tasks}
    batch_of_key = {batch_key(b): b for b in known}

    # -- models: the newest versions and production stay; the registry keeps every row ---------------
    present_models = set(listing["models"])
    kept_models = []
    registered = set()
    events: dict[str, list] = {}
    if models:
        for e in store.production_events():
            events.setdefault(e.batch, []).append(e)
    for batch in sorted({m.batch for m in models}):
        rows = sorted((m for m in models if m.batch == batch), key=lambda m: m.version)
        registered.update(m.artifact for m in rows)
        production, fallback = production_and_rollback(store, batch, rows, events.get(batch, []))
        newest = {m.version for m in rows[-policy.keep_versions:]}
        deferred = 0
        for m in rows:
            if m.artifact not in present_models:
                continue  # gone already (or never under models/)
            if production is not None and m.version == production:
                keep("model: production")
                kept_models.append(m)
            elif fallback is not None and m.version == fallback:
                keep("model: what 'logloop models rollback' goes back to")
                kept_models.append(m)
            elif m.version in newest:
                keep(f"model: one of the last {policy.keep_versions} versions")
                kept_models.append(m)
            elif batch in busy:
                deferred += 1
                kept_models.append(m)
            else:
                try:
                    meta = artifact_meta(artifacts, m.artifact)
                except Exception as exc:  # unreadable: left alone, said so
                    out.notes.append(f"{m.artifact}: meta.json unreadable ({type(exc).__name__}: {exc}); left alone")
                    continue
                if meta.get("retired"):
                    keep("model: retired already (a stub: the registry's history)")
                    continue
                what = f"v{m.version} of {batch!r} is older than the last {policy.keep_versions} version(s) and not in production"
                out.items.append(Item("model", m.artifact, what, _size(artifacts, m.artifact), batch=batch, version=m.version))
        if deferred:
            keep("model: its batch has a training in flight", deferred)
            out.notes.append(f"{batch!r} has a training in flight: {deferred} old model version(s) wait for the next sweep")
    unregistered = [k for k in listing["models"] if k.endswith(".zip") and k not in registered]
    if unregistered:
        keep("model: not in the registry", len(unregistered))
        out.notes.append(f"{len(unregistered)} model artifact(s) the registry does not know are left alone (a registration "
                         f"in flight, or rows a lost store no longer has: 'logloop store restore' registers them), "
                         f"e.g. {unregistered[0]}")

    # -- runs and checkpoints of finished runs -------------------------------------------------------
    if policy.delete_finished_runs:
        grace_ms = int(policy.finished_run_grace_hours * HOUR_MS)
        task_of_run = {}
        for t in tasks:  # newest first: a run's newest task decides
            if t.run_id:
                task_of_run.setdefault(t.run_id, t)
        in_flight = None if in_flight_run_ids is None else set(in_flight_run_ids)
        recent = set(recently_finished_run_ids)

        def finished(run_id: str) -> tuple[bool, str]:
            if in_flight is not None and run_id in in_flight:
                return False, "run: in flight"
            if run_id in recent:
                return False, "run: finished within the grace period"
            task = task_of_run.get(run_id)
            if task is not None:
                if task.state in ACTIVE_STATES:
                    return False, f"run: its task is {task.state}"
                if now_ms - task.updated_ms < grace_ms:
                    return False, "run: finished within the grace period"
                return True, f"its task {task.task_id} is {task.state}"
            if in_flight is None:
                return False, "run: no task, and no Dagster instance to ask (DAGSTER_HOME)"
            return True, "no task, and its Dagster run is finished"

        folders: dict[tuple[str, str], list[str]] = {}
        odd = 0
        for key in listing["runs"]:
            parts = key.split("/")
            if len(parts) == 4:
                folders.setdefault((parts[1], parts[2]), []).append(key)
            else:
                odd += 1
        to_delete: list[tuple[str, str, str, list[str]]] = []
        for (bkey, run_id), keys in sorted(folders.items()):
            done, why = finished(run_id)
            if done:
                to_delete.append((bkey, run_id, why, keys))
            else:
                keep(why, len(keys))
        # the training samples of kept models (and of unregistered zips) stay: fine-tunes replay them
        needs = {bkey for bkey, _, _, keys in to_delete if any(k.endswith("/" + SAMPLE) for k in keys)}
        protected, unsure = _kept_samples(artifacts, kept_models, unregistered, needs, out.notes)
        for bkey, run_id, why, keys in to_delete:
            batch = batch_of_key.get(bkey)
            for key in keys:
                if key.endswith("/" + SAMPLE) and (key in protected or bkey in unsure):
                    keep("run: the training sample of a kept model version")
                    continue
                out.items.append(Item("run", key, f"run {run_id}" + (f" of {batch!r}" if batch else "") + f": {why}",
                                      _size(artifacts, key), batch=batch, run_id=run_id))
        for key in listing["checkpoints"]:
            parts = key.split("/")
            if len(parts) != 3 or not parts[2].endswith(".pt"):
                odd += 1
                continue
            run_id = parts[2][:-3]
            done, why = finished(run_id)
            if not done:
                keep(why.replace("run:", "checkpoint:"))
                continue
            batch = batch_of_key.get(parts[1])
            out.items.append(Item("checkpoint", key, f"run {run_id}" + (f" of {batch!r}" if batch else "") + f": {why}",
                                  _size(artifacts, key), batch=batch, run_id=run_id))
        if odd:
            out.notes.append(f"{odd} key(s) under runs/ or checkpoints/ in an unknown layout are left alone")

    # -- summaries past their age, with their counts in the store ----------------------------------------
    if policy.keep_summaries_days is not None:
        cutoff = now_ms - int(policy.keep_summaries_days * DAY_MS)
        windows: dict[str, list] = {}  # partition key -> [start, end, batches]
        for s in statuses:
            for p in store.partition_counts(s.batch, None, cutoff):
                w = windows.setdefault(p.partition_key, [p.window_start_ms, p.window_end_ms, set()])
                w[2].add(p.batch)
        by_summary = {summary_key(pk): pk for pk in windows}
        seen = set()
        odd = 0
        deferred = 0
        for key in listing["summaries"]:
            pk = by_summary.get(key) or _partition_key_of(key)
            bounds = windows[pk][:2] if pk in windows else _window_of(pk)
            if pk is None or bounds is None:
                odd += 1
                continue
            seen.add(pk)
            start, end = bounds
            if end > cutoff:
                keep("summary: younger than keep_summaries_days")
                continue
            holders = windows.get(pk, [0, 0, set()])[2]
            if holders & busy:
                deferred += 1
                continue
            out.items.append(Item("summary", key, f"window {pk} ended over {policy.keep_summaries_days:g} day(s) ago",
                                  _size(artifacts, key), partition_key=pk, window_start_ms=start, window_end_ms=end,
                                  counts_in_store=pk in windows))
        for pk, (start, end, holders) in sorted(windows.items()):
            if pk in seen or end > cutoff:
                continue
            if holders & busy:
                deferred += 1
                continue
            out.items.append(Item("summary", None, f"window {pk} ended over {policy.keep_summaries_days:g} day(s) ago "
                                  "and its summary is gone: its sample counts pointed at nothing",
                                  partition_key=pk, window_start_ms=start, window_end_ms=end, counts_in_store=True))
        if deferred:
            keep("summary: a batch of the window has a training in flight", deferred)
            out.notes.append(f"{deferred} old window(s) hold batches with a training in flight: they wait for the next sweep")
        if odd:
            out.notes.append(f"{odd} key(s) under summaries/ that name no time window are left alone")

    out.items.sort(key=lambda i: (KINDS.index(i.kind), i.key or "", i.partition_key or ""))
    out.kept = dict(sorted(kept.items()))
    return out


_SUMMARY_NAME = re.compile(r"^summaries/(\d{4}-\d{2}-\d{2}-\d{2})-(\d{2})\.parquet$")


def _partition_key_of(key: str) -> Optional[str]:
    """'summaries/2026-11-23-07-00.parquet' -> '2026-11-23-07:00' (the partition format), else None."""
    m = _SUMMARY_NAME.match(key)
    return f"{m.group(1)}:{m.group(2)}" if m else None


def _window_of(partition_key: Optional[str]) -> Optional[tuple[int, int]]:
    """(start, end) in epoch ms of the window a partition key names, by the partitions' cron, even for
    a window before the partitions' start; None for a key that names no window."""
    if partition_key is None:
        return None
    from dagster import TimeWindowPartitionsDefinition

    from orchestration.partitions import PARTITION_FMT, time_partitions

    try:
        start = dt.datetime.strptime(partition_key, PARTITION_FMT).replace(tzinfo=dt.timezone.utc)
        probe = TimeWindowPartitionsDefinition(cron_schedule=time_partitions.cron_schedule, start=start,
                                               fmt=PARTITION_FMT, timezone="UTC")
        window = probe.time_window_for_partition_key(partition_key)
    except Exception:  # not a window of this code location's cron
        return None
    return int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)


def production_and_rollback(store: StoreCore, batch: str, rows, events) -> tuple[Optional[int], Optional[int]]:
    """(the batch's production version, the version `logloop models rollback` would go back to):
    the two versions retention never retires; None where there is none."""
    from resources.store import rollback_target

    production = store.get_model(batch)
    if production is None:
        return None, None
    return production.version, rollback_target(rows, events, production.version)


def _size(artifacts: ArtifactStorageCore, key: str) -> Optional[int]:
    """The object's size where that costs nothing (a local file); None elsewhere."""
    if isinstance(artifacts, LocalArtifactStorageCore):
        try:
            return (Path(artifacts.root) / key).stat().st_size
        except OSError:
            return None
    return None


def artifact_meta(artifacts: ArtifactStorageCore, key: str) -> dict:
    """meta.json of a model zip, without loading (or importing) torch."""
    with artifacts.reading(key) as path, zipfile.ZipFile(path) as z:
        meta = json.loads(z.read("meta.json"))
    if not isinstance(meta, dict):
        raise ValueError("meta.json is not an object")
    return meta


def _kept_samples(artifacts: ArtifactStorageCore, kept_models, unregistered: list[str], batch_keys: set[str],
                  notes: list[str]) -> tuple[set[str], set[str]]:
    """The sample keys of kept model versions (and unregistered zips) under the given batch folders,
    and the batch folders where some model's meta could not be read (all their samples stay)."""
    protected: set[str] = set()
    unsure: set[str] = set()
    if not batch_keys:
        return protected, unsure
    keys = [(batch_key(m.batch), m.artifact) for m in kept_models]
    keys += [(k.split("/")[1], k) for k in unregistered if k.count("/") == 2]
    for bkey, artifact in keys:
        if bkey not in batch_keys:
            continue
        try:
            sample = ModelRef.from_meta(artifact_meta(artifacts, artifact)).sample_key
        except Exception as exc:  # an unreadable zip: keep every sample of its batch rather than guess
            unsure.add(bkey)
            notes.append(f"{artifact}: meta.json unreadable ({type(exc).__name__}: {exc}); every training sample "
                         f"under runs/{bkey}/ stays")
            continue
        if sample:
            protected.add(sample)
    return protected, unsure
