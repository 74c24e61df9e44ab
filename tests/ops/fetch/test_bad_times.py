"""Times outside the valid range (ops.windows.MIN_TIME_MS <= ms < MAX_TIME_MS) are bad
records (`bad_time`), counted and named, on every path of the data stage: the careful
line-by-line parser, the msgspec and pyarrow fast paths, and OpenSearch hits.

Issue 11, item 2: one `{"time": 1e400, ...}` record used to fail its whole window with
`OverflowError: cannot convert float infinity to integer`, on every retry."""

from __future__ import annotations

import json
import math

import pytest

from ops.fetch import local_files
from ops.mask.data_stage import summarize_windows
from ops.fetch.opensearch import hits_to_chunk
from ops.fetch.fast_json import FastJsonBlocks
from ops.fetch.records import REASONS, BadRecords, RecordFormat
from ops.windows import TimeRange, Windows, parse_time_ms

START = 1_732_345_200_000  # 2024-11-23T07:00:00Z
HOUR = 3_600_000
WINDOWS = Windows([(START, START + HOUR)])
MAX_TIME_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z: times are 0 <= ms < this
FIELDS = ("cluster_id", "kubernetes.namespace_name", "deployment")
FORMATS = {
    "dotted-pyarrow": RecordFormat(batch_fields=FIELDS),
    "flat-msgspec": RecordFormat(batch_fields=("cluster_id", "namespace", "deployment")),
    "one-field-msgspec": RecordFormat(batch_fields=("cluster_id",)),
}

# a JSON time value (as written in the file) outside [year 1970, year 10000)
OUT_OF_RANGE = {
    "1e400 (over a double)": b"1e400",
    "-1e400": b"-1e400",
    "1e30": b"1e30",
    "-5": b"-5",
    "-1": b"-1",
    "-0.5": b"-0.5",
    "2**63": str(2**63).encode(),
    "2**70": str(2**70).encode(),
    "year 10000 in ms": str(MAX_TIME_MS).encode(),
    "year 99999 in ms": str(3_093_527_980_800_000).encode(),
    "numeric string 1e20": b'"100000000000000000000"',
    "numeric string year 10000": b'"%d"' % MAX_TIME_MS,
    "ISO year 99999": b'"99999-01-01T00:00:00Z"',
    "ISO year 1": b'"0001-01-01T00:00:00Z"',
    "ISO before 1970": b'"1969-12-31T23:59:59Z"',
    "ISO past year 9999 by its offset": b'"9999-12-31T23:59:59-01:00"',
    "NaN string": b'"NaN"',
    "Infinity string": b'"Infinity"',
}


def _line(time_json: bytes, log: str, **batch) -> bytes:
    doc = json.dumps({"log": log, "cluster_id": "demo", **batch})
    return b'{"time": ' + time_json + b", " + doc[1:].encode() + b"\n"


def _good(i: int) -> bytes:
    return json.dumps({"time": START + i * 1000, "log": f"GET /api/{i % 7} 200", "cluster_id": "demo"}).encode() + b"\n"


def _careful(root, fmt):
    """Lines per window, messages and bad records from the careful per-line reader only."""
    bad, seen, lines, msgs = BadRecords(), TimeRange(), 0, {}
    for shard in local_files.plan_shards(root, fmt, WINDOWS):
        for chunk in shard.read(WINDOWS, bad, seen):
            for (_, batch), ms in chunk.items():
                lines += len(ms)
                for m in ms:
                    msgs[(batch, m)] = msgs.get((batch, m), 0) + 1
    return lines, msgs, bad, seen


def _stage(root, fmt, block_size):
    """The data stage over the folder (fast paths where they apply)."""
    shards = [
        local_files.FileShard(s.path, s.source, s.fmt, s.text_batch, s.file_id, block_size)
        for s in local_files.plan_shards(root, fmt, WINDOWS)
    ]
    return summarize_windows(shards, WINDOWS)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("block_size", [4096, 1 << 20])
def test_a_time_overflowing_a_double_is_a_bad_record_and_the_window_succeeds(tmp_path, fmt, block_size):
    """The issue's repro: a 1e400 time among good lines."""
    good = [_good(i) for i in range(400)]
    data = b"".join(good[:200]) + b'{"time": 1e400, "log": "x", "cluster_id": "demo"}\n' + b"".join(good[200:])
    (tmp_path / "app.jsonl").write_bytes(data)
    result = _stage(tmp_path, fmt, block_size)  # raised OverflowError before
    assert result.windows[0].lines == 400
    assert sum(s.total for s in result.windows[0].summaries.values()) == 400
    assert result.bad.counts == {"bad_time": 1}
    assert result.bad.examples == [f"app.jsonl:201: {REASONS['bad_time']}"]
    # the file's remembered time range holds only valid times
    (_, lo, hi), = result.time_ranges.values()
    assert (lo, hi) == (START, START + 399_000)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("name", OUT_OF_RANGE)
def test_out_of_range_times_are_bad_on_every_path(tmp_path, fmt, name):
    value = OUT_OF_RANGE[name]
    good = [_good(i) for i in range(50)]
    (tmp_path / "a.jsonl").write_bytes(b"".join(good[:20]) + _line(value, "odd time") + b"".join(good[20:]))
    lines, msgs, bad, seen = _careful(tmp_path, fmt)
    assert bad.counts == {"bad_time": 1}, name
    assert bad.examples[0].startswith("a.jsonl:21: time field"), bad.examples
    assert lines == 50 and ("odd time" not in {m for _, m in msgs})
    assert (seen.lo, seen.hi) == (START, START + 49_000)
    for block_size in (4096, 1 << 20):
        result = _stage(tmp_path, fmt, block_size)
        assert result.bad.counts == bad.counts and result.bad.examples == bad.examples
        assert result.windows[0].lines == lines
        (_, lo, hi), = result.time_ranges.values()
        assert (lo, hi) == (seen.lo, seen.hi)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_the_fast_paths_refuse_blocks_with_out_of_range_integer_times(fmt):
    """Integers the fast paths read as int64 (-5, 2**62) must not be taken as valid times."""
    fast = FastJsonBlocks(fmt)
    assert fast.enabled
    clean = b"".join(_good(i) for i in range(10))
    assert fast.count(clean, WINDOWS) is not None  # clean blocks stay on the fast path
    for t in (-5, -1, MAX_TIME_MS, 2**62, 2**63 - 1):
        seen = TimeRange()
        block = clean + json.dumps({"time": t, "log": "odd", "cluster_id": "demo"}).encode() + b"\n"
        assert fast.count(block, WINDOWS, seen) is None, t
        assert seen.lo is None, t  # nothing remembered from a refused block


def test_the_valid_range_bounds():
    from ops import windows

    assert (windows.MIN_TIME_MS, windows.MAX_TIME_MS) == (0, MAX_TIME_MS)  # 1970-01-01 .. 10000-01-01 UTC
    assert parse_time_ms(0) == 0
    assert parse_time_ms(MAX_TIME_MS - 1) == MAX_TIME_MS - 1
    assert parse_time_ms(1_732_345_200_000.9) == 1_732_345_200_000
    assert parse_time_ms("1732345200000") == 1_732_345_200_000
    assert parse_time_ms("9999-12-31T23:59:59.999Z") == MAX_TIME_MS - 1
    assert parse_time_ms("1970-01-01T00:00:00Z") == 0
    assert parse_time_ms("2024-11-23T07:00:00+00:00") == START
    for v in (MAX_TIME_MS, -1, -0.5, 1e30, 2**70, math.inf, -math.inf, math.nan, True, False, None,
              "NaN", "inf", "-5", "1e400", str(2**70), "99999-01-01", "0001-01-01T00:00:00+01:00",
              "1969-12-31T23:59:59.999Z", "9999-12-31T23:59:59-01:00", [], {}):
        assert parse_time_ms(v) is None, v


def test_out_of_range_times_in_opensearch_hits_are_bad_records():
    fmt = RecordFormat(batch_fields=("cluster_id",))
    hits = [{"_id": f"ok{i}", "sort": [START + i, i], "_source": {"log": "fine", "cluster_id": "c"}} for i in range(3)]
    odd = [1e30, -5, 2**70, math.inf, math.nan, MAX_TIME_MS, "99999-01-01T00:00:00Z", "1969-12-31T00:00:00Z", True]
    hits += [{"_id": f"odd{i}", "sort": [t, 9], "_source": {"log": "odd", "cluster_id": "c"}} for i, t in enumerate(odd)]
    bad, seen = BadRecords(), TimeRange()
    out = hits_to_chunk(hits, fmt, WINDOWS, bad, seen, "logs#0", False, set())
    assert out == {(0, "c"): ["fine"] * 3}
    assert bad.counts == {"bad_time": len(odd)}
    assert bad.examples[0] == f"logs#0/odd0: {REASONS['bad_time']}"
    assert (seen.lo, seen.hi) == (START, START + 2)


# ---- wrong clocks: times valid in themselves that no window of the loop can ever hold ----------------

DAY = 24 * HOUR
Y1971 = 31_536_000_000 + 5_000      # 1971-01-01T00:00:05Z
Y2100 = 4_102_444_800_000           # 2100-01-01T00:00:00Z


def _bounded() -> Windows:
    """The run's windows with the loop's bounds: its first window began a day earlier, the clock allows a day ahead."""
    return Windows([(START, START + HOUR)], start_ms=START - DAY, until_ms=START + 2 * DAY)


def _clocks_file(tmp_path, n: int = 3000) -> None:
    """n good records in the window, one dated 1971 first, one dated 2100 in the middle, and one of a
    later window (not bad: that window will read it)."""
    good = [_good(i % 3600) for i in range(n)]
    (tmp_path / "app.jsonl").write_bytes(
        _line(str(Y1971).encode(), "clock not set yet") + b"".join(good[: n // 2])
        + _line(str(Y2100).encode(), "clock far ahead") + b"".join(good[n // 2:])
        + _line(str(START + 3 * HOUR).encode(), "a later window"))


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("block_size", [4096, 1 << 20])
def test_records_no_window_can_hold_are_counted_by_reason_with_an_example(tmp_path, fmt, block_size):
    BOUNDED = _bounded()
    _clocks_file(tmp_path)
    shards = [local_files.FileShard(s.path, s.source, s.fmt, s.text_batch, s.file_id, block_size)
              for s in local_files.plan_shards(tmp_path, fmt, BOUNDED)]
    result = summarize_windows(shards, BOUNDED)
    assert result.windows[0].lines == 3000
    assert result.bad.counts == {"time_before_start": 1, "time_in_future": 1}
    assert result.bad.examples == [
        f"app.jsonl:1: {REASONS['time_before_start']}: 1971-01-01T00:00:05Z, the time windows begin at 2024-11-22T07:00:00Z",
        f"app.jsonl:1502: {REASONS['time_in_future']}: 2100-01-01T00:00:00Z, at or after 2024-11-25T07:00:00Z",
    ]
    # the careful reader counts the same
    bad = BadRecords()
    for shard in local_files.plan_shards(tmp_path, fmt, BOUNDED):
        for _ in shard.read(BOUNDED, bad, TimeRange()):
            pass
    assert bad.counts == result.bad.counts and bad.examples == result.bad.examples
    # the file's time range still holds every valid time, mis-dated ones included (the index plans reads by it)
    (_, lo, hi), = result.time_ranges.values()
    assert (lo, hi) == (Y1971, Y2100)


def test_windows_without_the_loops_bounds_count_nothing_more(tmp_path):
    """Sensors and counts build plain windows: records outside them are other windows' business."""
    _clocks_file(tmp_path, 100)
    result = summarize_windows(local_files.plan_shards(tmp_path, FORMATS["flat-msgspec"], WINDOWS), WINDOWS)
    assert result.windows[0].lines == 100 and not result.bad.counts


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_each_file_keeps_its_earliest_record_times_on_every_path(tmp_path, fmt):
    """What the partition start is derived from: the FIRST_KEPT earliest times of each file."""
    from ops.windows import FIRST_KEPT

    BOUNDED = _bounded()
    _clocks_file(tmp_path, 3000)
    want = sorted([Y1971] + [START + i * 1000 for i in range(3000 % 3600)])[:FIRST_KEPT]
    for block_size in (4096, 1 << 20):
        shards = [local_files.FileShard(s.path, s.source, s.fmt, s.text_batch, s.file_id, block_size)
                  for s in local_files.plan_shards(tmp_path, fmt, BOUNDED)]
        result = summarize_windows(shards, BOUNDED)
        assert list(result.first_times.values()) == [want]
    seen = TimeRange()
    for shard in local_files.plan_shards(tmp_path, fmt, BOUNDED):
        for _ in shard.read(BOUNDED, BadRecords(), seen):
            pass
    assert seen.first == want
