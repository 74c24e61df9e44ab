"""Where the time windows begin: an explicit setting, else the data, else a few days back; never a load failure."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.partitions import (
    derive_start,
    earliest_file_record_ms,
    earliest_summary_ms,
    last_closed_window_ms,
    window_floor_ms,
)

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
DAY = 24 * HOUR


def ms(text: str) -> int:
    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


NOW = ms("2026-11-30 02:35")


def start(**kw):
    kw.setdefault("probe_summaries", lambda: None)
    kw.setdefault("probe_source", lambda deadline: None)
    return derive_start(NOW, "0 * * * *", lookback_days=7, max_days=400, **kw)


def test_the_earliest_of_summaries_and_log_records_floored_to_its_window():
    s = start(probe_summaries=lambda: ms("2026-11-23 05:00"), probe_source=lambda d: ms("2026-11-23 07:12"))
    assert s.key == "2026-11-23-05:00" and "earliest summarised window 2026-11-23T05:00Z" in s.reason
    s = start(probe_summaries=lambda: ms("2026-11-23 05:00"), probe_source=lambda d: ms("2026-11-20 22:59"))
    assert s.key == "2026-11-20-22:00" and "earliest log records, from 2026-11-20T22:59Z" in s.reason


def test_no_data_known_means_lookback_days_back():
    s = start()
    assert s.key == "2026-11-23-02:00" and "7 days back" in s.reason
    # summaries but a source that cannot say (OpenSearch): the lookback too, for catch-up and backfills
    assert start(probe_summaries=lambda: ms("2026-11-29 20:00")).key == "2026-11-23-02:00"
    assert start(probe_summaries=lambda: ms("2026-10-01 00:00")).key == "2026-10-01-00:00"


def test_old_log_files_move_the_start_at_most_max_days_back_but_ingested_windows_always_count():
    s = start(probe_source=lambda d: ms("2019-01-01 00:00"))
    assert s.key == "2025-10-26-02:00" and "at most 400 days back" in s.reason
    assert start(probe_source=lambda d: ms("2019-01-01 00:00"), probe_summaries=lambda: ms("2018-06-01 10:00")).key \
        == "2018-06-01-10:00"


def test_data_in_the_future_still_leaves_the_last_closed_window():
    assert start(probe_source=lambda d: NOW + 5 * DAY).key == "2026-11-30-01:00"
    assert last_closed_window_ms(NOW) == ms("2026-11-30 01:00")


def test_daily_windows_floor_to_the_day():
    s = derive_start(NOW, "0 0 * * *", probe_summaries=lambda: ms("2026-11-23 05:00"), probe_source=lambda d: None,
                     lookback_days=1)
    assert s.key == "2026-11-23-00:00"
    assert window_floor_ms(ms("2026-11-23 05:00"), "*/15 * * * *") == ms("2026-11-23 05:00")
    assert window_floor_ms(ms("2026-11-23 05:14"), "*/15 * * * *") == ms("2026-11-23 05:00")


def test_a_failing_or_slow_probe_never_fails_and_is_bounded_in_time():
    def boom():
        raise OSError("bucket unreachable")

    assert start(probe_summaries=boom, probe_source=lambda d: ms("2026-11-29 00:00")).key == "2026-11-29-00:00"
    t = time.monotonic()
    s = start(probe_summaries=lambda: ms("2026-11-28 00:00"), probe_source=lambda d: time.sleep(30), timeout_s=0.5)
    assert time.monotonic() - t < 5
    assert s.key == "2026-11-23-02:00"  # the summaries said 11-28, the source did not answer: the lookback counts


def test_earliest_summary_from_artifact_keys():
    keys = ["summaries/2026-11-23-07-00.parquet", "summaries/2026-11-23-05-00.parquet", "summaries/junk.parquet",
            "summaries/2026-11-22-05-00.txt"]
    assert earliest_summary_ms(keys) == ms("2026-11-23 05:00")
    assert earliest_summary_ms([]) is None


def test_earliest_log_record_of_json_gzip_and_text_files(tmp_path):
    logs = tmp_path / "logs"
    (logs / "ns").mkdir(parents=True)
    (logs / "a.jsonl").write_text(json.dumps({"time": ms("2026-11-25 10:30"), "log": "x"}) + "\n")
    with gzip.open(logs / "b.jsonl.gz", "wt") as f:
        f.write("not json\n" + json.dumps({"time": "2026-11-24T08:05:00Z", "log": "y"}) + "\n")
    text = logs / "ns" / "app.log"
    text.write_text("plain line\n")
    os.utime(text, (ms("2026-11-26 00:00") / 1000,) * 2)
    deadline = time.monotonic() + 10
    assert earliest_file_record_ms(str(logs), {}, "time", deadline) == ms("2026-11-24 08:05")
    os.utime(text, (ms("2026-11-20 09:00") / 1000,) * 2)  # a text file's lines take its mtime
    assert earliest_file_record_ms(str(logs), {}, "time", deadline) == ms("2026-11-20 09:00")
    # a file the index knows (same size and version) is not read: its recorded range counts
    from ops.fetch.locations import list_files

    a = next(f for f in list_files(str(logs)) if f.rel == "a.jsonl")
    index = {a.path: {"id": a.file_id, "lo": ms("2026-11-01 00:00"), "hi": ms("2026-11-25 10:30")}}
    assert earliest_file_record_ms(str(logs), index, "time", deadline) == ms("2026-11-01 00:00")
    assert earliest_file_record_ms(str(logs), {}, "time", time.monotonic() - 1) is None  # out of time: unknown


def load_start(home: Path, **env) -> dict:
    """What a fresh process (the daemon, the webserver, a run worker) derives when it loads the code."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("LOGLOOP_", "AWS_")) or k in ("LOGLOOP_PARTITION_CRON",)}
    full.update({"LOGLOOP_HOME": str(home), "PYTHONWARNINGS": "ignore", **env})
    code = ("import json, time; t = time.monotonic(); from orchestration.partitions import START, time_partitions; "
            "print(json.dumps({'key': START.key, 'reason': START.reason, 'first': time_partitions.get_first_partition_key(), "
            "'s': time.monotonic() - t}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def test_a_fresh_install_and_the_demo_start_at_their_data(tmp_path):
    from scripts import demo_logs

    home = tmp_path / "home"
    empty = load_start(home)  # nothing at all: a week back
    assert "7 days back" in empty["reason"]
    assert "LOGLOOP_PARTITION_START" not in empty["stderr"]  # one machine: no pod of its own derives it again
    first = demo_logs.default_start_ms(3)
    demo_logs.generate(home / "logs", start_ms=first, hours=3, lines_per_hour=50, seed=0)
    key = dt.datetime.fromtimestamp(first / 1000, dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")
    logs_only = load_start(home)  # logs, nothing ingested yet (the demo before its first materialize)
    assert logs_only["key"] == logs_only["first"] == key and "earliest log record" in logs_only["reason"]
    summaries = home / "artifacts" / "summaries"
    summaries.mkdir(parents=True)
    (summaries / f"{key.replace(':', '-')}.parquet").write_bytes(b"")
    assert load_start(home)["key"] == key  # after ingesting: the same start, so the bar is full from its first window


def test_explicit_settings_win_and_an_unreachable_store_of_artifacts_does_not_block_the_load(tmp_path):
    home = tmp_path / "home"
    assert load_start(home, LOGLOOP_PARTITION_START="2025-01-01-00:00")["first"] == "2025-01-01-00:00"
    loop = tmp_path / "loop.yaml"
    loop.write_text("partition_start: '2026-06-01-00:00'\n")
    got = load_start(home, LOGLOOP_LOOP_CONFIG=str(loop))
    assert got["first"] == "2026-06-01-00:00" and got["reason"] == "partition_start in the loop settings"
    got = load_start(home, LOGLOOP_ARTIFACTS_URL="s3://nowhere/x", AWS_ENDPOINT_URL="http://127.0.0.1:9",
                     AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_MAX_ATTEMPTS="1",
                     LOGLOOP_LOGS_URL="s3://nowhere/logs")
    assert "7 days back" in got["reason"] and got["s"] < 60


def test_on_kubernetes_a_start_derived_in_each_pod_is_a_warning(tmp_path):
    home = tmp_path / "home"
    derived = load_start(home, LOGLOOP_EXECUTOR="k8s")
    assert "7 days back" in derived["reason"]
    assert f"time windows begin at {derived['key']}, derived from the data in this pod; set LOGLOOP_PARTITION_START" \
        in derived["stderr"]
    pinned = load_start(home, LOGLOOP_EXECUTOR="k8s", LOGLOOP_PARTITION_START="2025-01-01-00:00")
    assert "LOGLOOP_PARTITION_START" not in pinned["stderr"]


def test_the_test_suite_pins_the_start():
    from orchestration.partitions import START

    assert START.reason == "LOGLOOP_PARTITION_START" and os.environ["LOGLOOP_PARTITION_START"] == START.key


@pytest.mark.parametrize("value", ["2025", "2025-01-01"])
def test_a_bad_partition_start_in_the_loop_settings_fails_the_load_clearly(tmp_path, value):
    from orchestration.loop_settings import LoopSettingsError, load_loop_settings

    loop = tmp_path / "loop.yaml"
    loop.write_text(f"partition_start: '{value}'\n")
    with pytest.raises(LoopSettingsError, match="partition_start .* is not YYYY-MM-DD-HH:MM"):
        load_loop_settings(str(loop))


# ---- wrong clocks: a handful of mis-dated records does not move the start ---------------------------------

Y1971 = ms("1971-03-01 00:00")


def _records(path: Path, times: list[int]) -> None:
    path.write_text("".join(json.dumps({"time": t, "log": "GET /"}) + "\n" for t in times))


def test_the_start_needs_min_records_at_or_before_it(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    first = ms("2026-11-25 10:00")
    _records(logs / "app.jsonl", [Y1971] + [first + i * 1000 for i in range(50)])
    _records(logs / "other.jsonl", [Y1971 + 1] + [first + 60_000 + i for i in range(50)])
    deadline = time.monotonic() + 10
    assert earliest_file_record_ms(str(logs), {}, "time", deadline, min_records=1) == Y1971  # as before
    assert earliest_file_record_ms(str(logs), {}, "time", deadline, min_records=10) == first + 7000
    assert earliest_file_record_ms(str(logs), {}, "time", deadline, min_records=3) == first
    assert earliest_file_record_ms(str(logs), {}, "time", deadline, min_records=101) is None  # too few: unknown
    # a file the index knows: its earliest record times, as the data stage remembered them
    from ops.fetch.locations import list_files

    a, other = list_files(str(logs))
    index = {a.path: {"id": a.file_id, "lo": Y1971, "hi": first, "first": [Y1971] + [first] * 31},
             other.path: {"id": other.file_id, "lo": first - 1, "hi": first}}  # no "first": its lo counts in full
    assert earliest_file_record_ms(str(logs), index, "time", deadline, min_records=10) == first - 1


def test_one_record_of_1971_in_the_source_index_leaves_the_start_at_the_data(tmp_path):
    """As reported: the data stage read a file holding one 1971 record and remembered it in the
    source index; a fresh process then derived a start 400 days back."""
    from ops.mask.data_stage import summarize_windows
    from ops.windows import Windows
    from resources.log_source import LocalLogSource

    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    first = ms("2026-11-25 10:00")
    _records(home / "logs" / "app.jsonl", [Y1971] + [first + i * 60_000 for i in range(120)])
    source = LocalLogSource(path=str(home / "logs"), index_path=str(home / "source-index.json"))
    windows = Windows([(first, first + 3 * HOUR)])
    result = summarize_windows(source.shards(windows), windows)
    source.remember(result.time_ranges, result.first_times)
    entry, = json.loads((home / "source-index.json").read_text()).values()
    assert entry["lo"] == Y1971 and entry["first"][:2] == [Y1971, first]
    got = load_start(home)
    assert got["key"] == "2026-11-25-10:00" and "earliest log records" in got["reason"], got
    # one record is enough when the setting says so: then the 1971 record moves it, at most 400 days back
    assert "at most 400 days back" in load_start(home, LOGLOOP_PARTITION_START_MIN_RECORDS="1")["reason"]
