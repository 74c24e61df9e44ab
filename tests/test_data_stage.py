"""Reading windows from local files, bad input, and the streaming summariser."""

import io
import json
import os

import pytest

from ops import local_files
from ops.data_stage import WindowSummarizer, summarize_chunks, summarize_windows
from ops.masking import Masker
from ops.records import BadRecords, RecordFormat, Windows, read_line_blocks
from ops.summary import read_summary, read_summary_meta, write_summaries

FMT = RecordFormat(batch_fields=("cluster_id", "kubernetes.namespace_name"))
HOUR = 3_600_000


def jl(**doc) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_json_lines_grouped_by_batch_and_filtered_by_window(tmp_path):
    write(
        tmp_path / "a.jsonl",
        jl(time=10, log="in a", cluster_id="c1", kubernetes={"namespace_name": "ns"})
        + jl(time=HOUR + 5, log="next window", cluster_id="c1", kubernetes={"namespace_name": "ns"})
        + jl(time=20, log="flat key", **{"cluster_id": "c2", "kubernetes.namespace_name": "x"})
        + jl(time="1970-01-01T00:00:00.030Z", log="iso time")
    )
    bad = BadRecords()
    chunks = list(local_files.read_window(tmp_path, FMT, 0, HOUR, bad))
    merged = {}
    for c in chunks:
        for b, msgs in c.items():
            merged.setdefault(b, []).extend(msgs)
    assert merged == {"c1/ns": ["in a"], "c2/x": ["flat key"], "default": ["iso time"]}
    assert bad.total == 0


def test_bad_input_is_skipped_counted_and_named(tmp_path):
    good = jl(time=1, log="ok line")
    data = (
        good
        + b"\n"                                   # blank
        + b"{not json\n"                          # malformed JSON
        + jl(log="no time here")                  # missing time
        + jl(time="yesterday", log="x")           # bad time
        + jl(time=2, message="wrong field")       # no message
        + b'{"time": 3, "log": "caf\xe9"}\n'      # not UTF-8
        + b"[1, 2]\n"                             # not an object
        + b'{"time": 4, "log": "' + b"x" * 1_100_000 + b'"}\n'  # over 1 MB
        + good
    )
    write(tmp_path / "bad.jsonl", data)
    bad = BadRecords()
    msgs = [m for c in local_files.read_window(tmp_path, FMT, 0, HOUR, bad) for ms in c.values() for m in ms]
    assert msgs == ["ok line", "ok line"]
    assert bad.counts == {
        "blank": 1, "bad_json": 1, "no_time": 1, "bad_time": 1, "no_message": 1,
        "not_utf8": 1, "not_object": 1, "too_long": 1,
    }
    assert bad.total == 8
    assert any(e.startswith("bad.jsonl:3: malformed JSON") for e in bad.examples)
    assert any(e.startswith("bad.jsonl:9: line longer than") for e in bad.examples)


def test_plain_text_takes_file_time_and_folder_batch(tmp_path):
    f = write(tmp_path / "team-a" / "app.log", b"hello world\n\xff\xfe broken\n\nsecond line\r\n")
    os.utime(f, (100, 100))  # mtime 100 s = 100_000 ms
    bad = BadRecords()
    chunks = list(local_files.read_window(tmp_path, FMT, 0, HOUR, bad))
    assert chunks == [{"team-a": ["hello world", "second line"]}]
    assert bad.counts == {"not_utf8": 1, "blank": 1}
    assert list(local_files.read_window(tmp_path, FMT, HOUR, 2 * HOUR, BadRecords())) == []


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(local_files.read_window(tmp_path / "nope", FMT, 0, HOUR, BadRecords()))


def test_long_lines_are_never_held_whole():
    data = b"short\n" + b"y" * 50_000 + b"\nafter\n"
    blocks = list(read_line_blocks(io.BytesIO(data), block_size=1024, max_line=4096))
    lines = [ln for _, ls in blocks for ln in ls]
    assert [len(ln) for ln in lines] == [5, 50_000, 5]
    assert lines[0] == b"short" and lines[2] == b"after"
    assert bytes(lines[1]) == b""  # only the size was kept


def test_summarizer_counts_masked_forms_per_batch_with_cache():
    calls = []

    def mask(m):
        calls.append(m)
        return " ".join("<num>" if w.isdigit() else w for w in m.lower().split())

    s = WindowSummarizer(mask)
    s.add("b1", ["GET 1", "GET 2", "GET 1", "POST 3"])
    s.add("b2", ["GET 1"])
    out = s.finish()
    assert out["b1"].counts == {"get <num>": 3, "post <num>": 1}
    assert out["b2"].counts == {"get <num>": 1}
    assert calls.count("GET 1") == 1  # memoised on the raw message
    assert s.stats.lines == 5 and s.stats.cache_hits == 2


def test_summarizer_bounds_memory_when_every_line_is_distinct():
    s = WindowSummarizer(lambda m: m, cap=1_000, tail_size=100, cache_size=500)
    for i in range(20):
        s.add("b", [f"line {i} {j}" for j in range(1_000)] + ["hot"] * 100)
    out = s.finish()["b"]
    assert len(out.counts) <= 1_000 and out.total == 22_000 and out.counts["hot"] == 2_000


def test_lines_empty_after_masking_are_counted_bad():
    bad = BadRecords()
    out, stats = summarize_chunks([{"b": ["x", "", "y"]}], lambda m: m, bad=bad)
    assert out["b"].counts == {"x": 1, "y": 1} and bad.counts["empty_after_masking"] == 1


def test_windows_from_shards_merge_exactly_and_round_trip_parquet(tmp_path):
    logs = tmp_path / "logs"
    docs = lambda lo, hi: b"".join(  # noqa: E731
        jl(time=i * 60_000, log=f"user {i % 7} logged in from 10.0.0.{i % 3}", cluster_id="c", kubernetes={"namespace_name": "n"})
        for i in range(lo, hi)
    )
    write(logs / "a.jsonl", docs(0, 90))     # spans both windows
    write(logs / "b.jsonl", docs(90, 120))   # second window only
    windows = Windows([(0, HOUR), (HOUR, 2 * HOUR)])
    shards = local_files.plan_shards(logs, FMT, windows)
    result = summarize_windows(shards, windows)
    assert [w.lines for w in result.windows] == [60, 60] and result.lines == 120
    one = result.windows[1].summaries["c/n"]
    # the same window read as one piece gives the same counts
    whole, _ = summarize_chunks(local_files.read_window(logs, FMT, HOUR, 2 * HOUR, BadRecords()), Masker().mask)
    assert one.counts == whole["c/n"].counts
    out = tmp_path / "s.parquet"
    write_summaries(out, result.windows[0].summaries, extra_meta={"window_end_ms": HOUR})
    assert read_summary(out, "c/n").counts == result.windows[0].summaries["c/n"].counts
    assert read_summary(out, "'; DROP TABLE x; --").total == 0
    assert read_summary_meta(out)["window_end_ms"] == HOUR
    # the index learned each file's time range: a later run for window 2 skips a.jsonl? no,
    # a.jsonl spans into window 2; a run for window 1 alone skips b.jsonl
    index = {p: {"id": fid, "lo": lo, "hi": hi} for p, (fid, lo, hi) in result.time_ranges.items()}
    later = local_files.plan_shards(logs, FMT, Windows([(0, HOUR)]), index)
    assert [s.source for s in later] == ["a.jsonl"]
    (logs / "b.jsonl").write_bytes(docs(0, 5))  # the file changed: read again
    assert len(local_files.plan_shards(logs, FMT, Windows([(0, HOUR)]), index)) == 2
