"""Partitions: log data by time window, models by batch (one model per batch).

Where the time windows begin (`time_partitions`' start), first match wins:

1. `LOGLOOP_PARTITION_START` (YYYY-MM-DD-HH:MM, UTC), the explicit override;
2. `partition_start` in the loop settings (config/loop.yaml);
3. the data, read when the code location loads: the earliest of
   - the earliest window already summarised (`summaries/<window>.parquet` in artifact storage),
     so a window that was ever materialized always stays a partition;
   - with the file source, the time of the N-th earliest record of the log files, N being
     `partition_start_min_records` (the source index's earliest times of each file; files it does
     not know yet: a JSON file's first records, a text file's mtime, which all its lines take),
     never more than `partition_max_days` back. A handful of records with a wrong clock (1971)
     moves nothing; the data stage counts them as bad (`time_before_start`). Fewer than N
     records in all: as if the earliest record were unknown;
   - `partition_lookback_days` ago when the source's earliest record is unknown (OpenSearch,
     an empty or unreadable folder): then there are windows for catch-up and backfills;
   floored to its window, and never later than the last closed window.

Deriving it lists one folder (or prefix) and reads the first lines of at most
PEEK_MAX_FILES files, in a thread given START_TIMEOUT_S: what was not found by then counts as
unknown, and any error there counts as no data. It never fails the load. The daemon, the
webserver and the run workers each derive it when they load the code, so they agree when they
see the same LOGLOOP_* environment; as data only ever adds windows, a start never moves past
a window that was summarised (unless summaries are deleted).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from dagster import DynamicPartitionsDefinition, TimeWindowPartitionsDefinition

from orchestration.config import settings

PARTITION_FMT = "%Y-%m-%d-%H:%M"
PARTITION_CRON = settings().partition_cron  # "0 0 * * *": daily windows
START_TIMEOUT_S = 5.0
PEEK_MAX_FILES = 500
PEEK_MAX_BYTES = 1 << 20
DAY_MS = 86_400_000
_SUMMARY_FMT = "%Y-%m-%d-%H-%M"  # partition_slug() of a PARTITION_FMT key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    key: str      # the first window's start, PARTITION_FMT (UTC)
    reason: str   # where it comes from, for logs and `logloop` output


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def _fmt(ms: int) -> str:
    return _utc(ms).strftime("%Y-%m-%dT%H:%MZ")


def window_floor_ms(ms: int, cron: str = PARTITION_CRON) -> int:
    """The start of the window (of `cron`, UTC) that holds `ms`."""
    probe = TimeWindowPartitionsDefinition(cron_schedule=cron, start=_utc(ms - 800 * DAY_MS), fmt=PARTITION_FMT,
                                           timezone="UTC")
    key = probe.get_partition_key_for_timestamp(ms / 1000)
    return int(probe.time_window_for_partition_key(key).start.timestamp() * 1000)


def last_closed_window_ms(now_ms: int, cron: str = PARTITION_CRON) -> int:
    """The start of the last window that has ended by `now_ms`."""
    current = window_floor_ms(now_ms, cron)
    return window_floor_ms(current - 1, cron)


# ---- what the data says ------------------------------------------------------------------


def earliest_summary_ms(keys: list[str]) -> Optional[int]:
    """The earliest window among artifact keys `summaries/<window>.parquet`."""
    found = []
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if not name.endswith(".parquet"):
            continue
        try:
            when = dt.datetime.strptime(name[: -len(".parquet")], _SUMMARY_FMT).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
        found.append(int(when.timestamp() * 1000))
    return min(found) if found else None


def _first_record_times(path: str, time_field: str) -> Optional[list[int]]:
    """The times of the first records (of the first FIRST_KEPT lines) of a JSON Lines file; None
    when the file is plain text (by its name and its first line, as the data stage decides)."""
    import orjson

    from ops.fetch.local_files import file_format, sniff_json
    from ops.fetch.records import get_field
    from ops.fetch.streams import open_stream
    from ops.windows import FIRST_KEPT, parse_time_ms

    named_json, compression = file_format(path)
    with open_stream(path, compression, regular_only=True) as stream:
        data = b""
        while data.count(b"\n") < FIRST_KEPT and len(data) < PEEK_MAX_BYTES:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            data += chunk
    if not named_json and not sniff_json(data, time_field):
        return None
    times = []
    for line in data.split(b"\n")[:FIRST_KEPT]:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            ms = parse_time_ms(get_field(doc, time_field))
            if ms is not None:
                times.append(ms)
    return times


def earliest_file_record_ms(root: str, index: dict, time_field: str, deadline: float,
                            min_records: int = 1) -> Optional[int]:
    """The time of the `min_records`-th earliest record of the log files under `root` (None when
    there are fewer): for a file the index knows (same size and version), its earliest record times
    (an entry without them, a text file's or one written before they were kept: its `lo`, counted
    as `min_records` records); else a JSON file's first records, or a text file's mtime, which all
    its lines take (also counted as `min_records` records)."""
    import heapq

    from ops.fetch.local_files import file_format
    from ops.fetch.locations import list_files

    times: list[int] = []
    peeked = 0
    for file in list_files(root):
        if time.monotonic() > deadline:
            break
        entry = index.get(file.path)
        if isinstance(entry, dict) and entry.get("id") == file.file_id and isinstance(entry.get("lo"), int):
            first = entry.get("first")
            if isinstance(first, list) and all(type(t) is int for t in first):
                times.extend(first)
            else:
                times.extend([entry["lo"]] * min_records)
            continue
        if peeked >= PEEK_MAX_FILES:  # enough files opened: the rest are told by their names alone
            found = [] if file_format(file.path)[0] else None
        else:
            peeked += 1
            try:
                found = _first_record_times(file.path, time_field)
            except Exception:  # noqa: BLE001 - an unreadable file tells nothing here; the data stage reports it
                continue
        if found is not None:
            times.extend(found)
        elif file.mtime_ms is not None:
            times.extend([file.mtime_ms] * min_records)  # a text file's lines take its mtime
        if len(times) > 64 * min_records:
            times = heapq.nsmallest(min_records, times)
    earliest = heapq.nsmallest(min_records, times)
    return earliest[-1] if len(earliest) >= min_records else None


def _probe_summaries() -> Optional[int]:
    from orchestration.resources import artifact_storage

    return earliest_summary_ms(artifact_storage().list("summaries"))


def _probe_source(deadline: float) -> Optional[int]:
    """The file source's earliest record (of partition_start_min_records); None when it is unknown
    (OpenSearch, no files, too few records)."""
    current = settings()
    if current.opensearch_hosts:
        return None
    from ops.fetch.local_files import load_index
    from orchestration.loop_settings import loop_settings
    from orchestration.settings import data_home, logs_dir
    from resources.log_source import file_source_location

    where = file_source_location(logs_dir(), data_home() / "source-index.json", current.logs_url, current.artifacts_url)
    try:
        index = load_index(where["index_path"])
    except Exception:  # noqa: BLE001 - the index only saves reading the files
        index = {}
    return earliest_file_record_ms(str(where["path"]), index, current.time_field, deadline,
                                   loop_settings().partition_start_min_records)


def derive_start(now_ms: int, cron: str = PARTITION_CRON, *, lookback_days: float = 7, max_days: float = 400,
                 timeout_s: float = START_TIMEOUT_S,
                 probe_summaries: Callable[[], Optional[int]] = _probe_summaries,
                 probe_source: Callable[[float], Optional[int]] = _probe_source) -> Start:
    """The first window from the data (see the module's docstring). Never raises."""
    # imported here, not in the thread: a thread that imports while this module is being imported
    # could wait on the import lock until the timeout
    import importlib

    for module in ("ops.fetch.local_files", "ops.fetch.records", "orchestration.resources", "resources.log_source"):
        importlib.import_module(module)

    found: dict = {}
    deadline = time.monotonic() + timeout_s

    def probe() -> None:
        for name, fn in (("summaries", probe_summaries), ("source", lambda: probe_source(deadline))):
            try:
                found[name] = fn()
            except Exception as exc:  # noqa: BLE001 - no data known from there; never fail the load
                found[name] = None
                log.debug("partition start: %s unreadable: %s", name, exc)

    worker = threading.Thread(target=probe, name="logloop-partition-start", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning("partition start: the data did not answer in %.0f s; windows begin %g days back unless "
                    "earlier data was found (set LOGLOOP_PARTITION_START to fix the start)", timeout_s, lookback_days)
    candidates = []
    summaries, source = found.get("summaries"), found.get("source")
    if summaries is not None:
        candidates.append((summaries, f"the earliest summarised window {_fmt(summaries)}"))
    if source is not None:
        floor = now_ms - int(max_days * DAY_MS)
        candidates.append((max(source, floor), f"the earliest log records, from {_fmt(source)}"
                           + (f", at most {max_days:g} days back" if source < floor else "")))
    else:
        candidates.append((now_ms - int(lookback_days * DAY_MS),
                           f"{lookback_days:g} days back (the source's earliest record is not known)"))
    ms, reason = min(candidates)
    start = min(window_floor_ms(ms, cron), last_closed_window_ms(now_ms, cron))
    return Start(_utc(start).strftime(PARTITION_FMT), f"from the data: {reason}")


def partition_start(now_ms: Optional[int] = None) -> Start:
    """The first window: partition_start (LOGLOOP_PARTITION_START over the loop settings file), else the data."""
    from orchestration.loop_settings import loop_settings

    loop = loop_settings()  # invalid settings fail the load, as everywhere
    if loop.partition_start:
        where = settings().origin("partition_start")
        return Start(loop.partition_start, where if where.startswith("LOGLOOP_") else "partition_start in the loop settings")
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    return derive_start(now_ms, PARTITION_CRON, lookback_days=loop.partition_lookback_days,
                        max_days=loop.partition_max_days)


START = partition_start()
log.info("time windows begin at %s (%s)", START.key, START.reason)
if settings().executor == "k8s" and START.reason.startswith("from the data"):
    # each run pod and step pod derives it again when it loads; a pod whose look at the data timed out,
    # or that loads hours later, could disagree with the run about which windows exist
    log.warning("time windows begin at %s, derived from the data in this pod; set LOGLOOP_PARTITION_START "
                "so that every pod agrees on it and none reads the data to find it", START.key)

time_partitions = TimeWindowPartitionsDefinition(
    cron_schedule=PARTITION_CRON,
    start=START.key,
    fmt=PARTITION_FMT,
    timezone="UTC",
)

batch_partitions = DynamicPartitionsDefinition(name="batches")
START_MS = int(time_partitions.start.timestamp() * 1000)  # records before it are never summarised


def iso(ms: int) -> str:
    """A time in ms since the epoch as ISO 8601 (UTC), as run configs and messages show it."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat()


def last_closed_keys(n: int, current_time: dt.datetime | None = None) -> list[str]:
    """The keys of the last n closed time windows, oldest first (without listing every key)."""
    now = current_time or dt.datetime.now(dt.timezone.utc)
    window = time_partitions.time_window_for_partition_key(time_partitions.get_partition_key_for_timestamp(now.timestamp()))
    keys: list[str] = []
    while len(keys) < n:
        window = time_partitions.get_prev_partition_window(window.start)
        if window is None:
            break
        keys.append(time_partitions.get_partition_key_for_timestamp(window.start.timestamp()))
    return keys[::-1]


def window_ms(partition_key: str) -> tuple[int, int]:
    """The [start, end) of a time partition in epoch ms."""
    window = time_partitions.time_window_for_partition_key(partition_key)
    return int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)
