"""Reading windows from local files, bad input, and the streaming summariser."""

import io
import json
import os

import pytest

from ops.fetch import local_files, streams
from ops.mask.data_stage import WindowSummarizer, summarize_chunks, summarize_windows
from ops.mask.masking import Masker
from ops.fetch.framing import read_line_blocks
from ops.fetch.records import BadRecords, RecordFormat
from ops.windows import Windows
from ops.mask.summary import read_summary, read_summary_meta, write_summaries

FMT = RecordFormat(batch_fields=("cluster_id", "kubernetes.namespace_name"))
# flat field names take the msgspec fast path; dotted ones the pyarrow one
FLAT = RecordFormat(batch_fields=("cluster_id", "team"))
ONE = RecordFormat(batch_fields=("cluster_id",))
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


# ---- the vectorised fast path gives what the careful per-line path gives ---------

def _careful(root, fmt, windows):
    """Summaries and bad counts from the per-line reader (FileShard.read) only."""
    from ops.mask.data_stage import WindowSummarizer

    masker, bad = Masker(), BadRecords()
    per_window = [WindowSummarizer(masker.mask, bad=bad) for _ in range(len(windows))]
    lines = [0] * len(windows)
    from ops.windows import TimeRange

    for shard in local_files.plan_shards(root, fmt, windows):
        for chunk in shard.read(windows, bad, TimeRange()):
            for (w, batch), msgs in chunk.items():
                per_window[w].add(batch, msgs)
                lines[w] += len(msgs)
    out = [{b: s.counts for b, s in wsum.finish().items()} for wsum in per_window]
    return out, lines, bad


def _mixed_file(n_good=3000):
    """Good lines in blocks of their own, then blocks mixing good and bad lines."""
    docs = []
    for i in range(n_good):
        docs.append(jl(time=i * 1000, log=f"user {i % 13} logged in from 10.0.{i % 5}.{i % 7} ünïcødé ✓",
                       cluster_id=f"c{i % 3}", kubernetes={"namespace_name": f"ns{i % 2}"}))
    docs += [
        jl(time="1970-01-01T00:00:01.500Z", log="iso time", cluster_id="c0"),
        jl(time=1500.7, log="float time", cluster_id="c0"),
        jl(time=7, log="literal dotted", **{"cluster_id": "c1", "kubernetes.namespace_name": "flat"}),
        jl(time=8, log="literal null", **{"cluster_id": "c1", "kubernetes.namespace_name": None}, kubernetes={"namespace_name": "x"}),
        jl(time=9, log="numeric batch", cluster_id=5),
        b"\n", b"   \n", b"{not json\n", b"[1, 2]\n", b'{"time": 3, "log": "caf\xe9"}\n',
        jl(log="no time"), jl(time="yesterday", log="x"), jl(time=2, message="wrong field"),
        jl(time=10, log="bad batch", cluster_id="a...b"),
        jl(time=11, log="   "), jl(time=12, log=""),
        b'{"time": 13, "log": "nan", "x": NaN}\n',
        b'{"time": 14, "log": "two"} {"time": 15, "log": "objects"}\n',
        b'{"time": 16, "log": "dup", "time": 17}\n',
        b'{"time": 4, "log": "' + b"x" * 1_100_000 + b'"}\n',
        jl(time=10 ** 12, log="outside every window", cluster_id="c0"),
        jl(time=-5, log="before every window"),
        b'{"time": 18, "log": "crlf line", "cluster_id": "c2"}\r\n',
        b'{"time": 20, "log": "a number over a double", "x": 1e400, "cluster_id": "c2"}\n',
        b'{"time": 21, "log": "a lone surrogate", "x": "\\ud800"}\n',
        b'{"time": 22, "log": "raw\tcontrol character"}\n',
        b'{"time": 23, "log": "big int time"}\n'.replace(b"23", b"9" * 30, 1),
        b'{"time": 24, "log": "team only", "team": "t1"}\n',
        b'{"ti\\u006de": 26, "log": "escaped keys", "cluster\\u005fid": "c2"}\n',
        jl(time=25, log="null batch fields", cluster_id=None, team=None),
        jl(time=19, log="line without a final newline", cluster_id="c2").rstrip(b"\n"),
    ]
    # bad lines spread between good ones, so that some blocks are clean and some not
    good, rest = docs[:n_good], docs[n_good:]
    out = good[: n_good // 2]
    for i, d in enumerate(rest):
        out.append(d)
        out.extend(good[n_good // 2 + i * 20 : n_good // 2 + (i + 1) * 20])
    out.extend(good[n_good // 2 + len(rest) * 20 :])
    return b"".join(out)


@pytest.mark.parametrize("fmt", [FMT, FLAT, ONE], ids=["dotted-pyarrow", "flat-msgspec", "one-field-msgspec"])
@pytest.mark.parametrize("block_size", [4096, 1 << 16, 1 << 20])
def test_fast_path_matches_careful_path(tmp_path, block_size, fmt):
    logs = tmp_path / "logs"
    write(logs / "mixed.jsonl", _mixed_file())
    write(logs / "clean.jsonl", b"".join(jl(time=i * 700, log=f"GET /api/{i % 9} 200 {i}ms", cluster_id="c0",
                                           kubernetes={"namespace_name": "ns0"}) for i in range(4000)))
    write(logs / "team" / "plain.log", b"plain text line 1\nplain text line 1\n\xff bad\n")
    os.utime(logs / "team" / "plain.log", (100, 100))
    windows = Windows([(0, 1000_000), (1000_000, 4 * 1000_000)])
    want, want_lines, want_bad = _careful(logs, fmt, windows)
    shards = [
        local_files.FileShard(s.path, s.source, s.fmt, s.text_batch, s.file_id, block_size)
        for s in local_files.plan_shards(logs, fmt, windows)
    ]
    for defer in (0, 5):  # masked in the shard, or deferred to the caller
        result = summarize_windows(shards, windows, defer=defer)
        got = [{b: s.counts for b, s in w.summaries.items()} for w in result.windows]
        assert got == want
        assert [w.lines for w in result.windows] == want_lines
        assert result.bad.counts == want_bad.counts
        assert sorted(result.bad.examples) == sorted(want_bad.examples)
    assert want_bad.counts["too_long"] == 1 and want_bad.counts["bad_json"] >= 5
    assert want[0]["c2"]["a number over a double"] == 1  # valid JSON, kept
    if fmt is ONE:
        assert want[0]["default"]["team only"] == 1
    elif fmt is FMT:
        assert want[0]["c1"] == {"literal null": 1}  # `"a.b": null` wins over the nested a.b
        assert want[0]["c1/flat"] == {"literal dotted": 1} and "c1/x" not in want[0]
    else:
        assert want[0]["-/t1"] == {"team only": 1} and want[0]["default"]["null batch fields"] == 1


def test_fast_path_is_taken_for_clean_blocks_and_refused_for_odd_ones():
    from ops.fetch.fast_json import FastJsonBlocks

    fast = FastJsonBlocks(FMT)
    w = Windows([(0, HOUR)])
    clean = jl(time=1, log="a", cluster_id="c", kubernetes={"namespace_name": "n"}) + jl(time=2, log="a", cluster_id="c")
    assert fast.count(clean, w) == {(0, "c/n"): {"a": 1}, (0, "c"): {"a": 1}}  # as batch_of names
    flat = FastJsonBlocks(FLAT)
    assert flat._decoder is not None and fast._decoder is None
    two = jl(time=1, log="a", cluster_id="c") + jl(time=2, log="a", cluster_id="c") + jl(time=HOUR + 1, log="b")
    w2 = Windows([(0, HOUR), (HOUR, 2 * HOUR)])
    assert flat.count(two, w2) == {(0, "c"): {"a": 2}, (1, "default"): {"b": 1}}
    one = FastJsonBlocks(ONE)
    assert one.count(two, w2) == {(0, "c"): {"a": 2}, (1, "default"): {"b": 1}}
    same = jl(time=1, log="a", cluster_id="c") + jl(time=HOUR + 1, log="b", cluster_id="c") + jl(time=3 * HOUR, log="x", cluster_id="c")
    assert one.count(same, w2) == {(0, "c"): {"a": 1}, (1, "c"): {"b": 1}}  # one batch, two windows, one outside
    assert one.count(jl(time=5, log="z") * 3, w2) == {(0, "default"): {"z": 3}}
    for odd in [
        jl(time="1970-01-01T00:00:00Z", log="iso"),
        jl(time=1, log="a") + b"\n",
        jl(time=1, log="a").rstrip(b"\n") + b"  \n",
        b'{"time": 1, "log": "caf\xe9"}\n',
        b'{"time": 1, "log": "a", "x": Infinity}\n',
        jl(time=1, message="no log"),
        jl(time=1, log="a", cluster_id=3),
        jl(time=1.5, log="float time"),
        jl(time=True, log="bool time"),
        jl(time=1, log="a") + jl(time=2, log="a").rstrip(b"\n") + b" " + jl(time=3, log="b"),  # two on a line
        b'{"time": 1, "log": "a", "x": "\xff"}\n',  # bad UTF-8 outside the fields read
        b'{"time": ' + b"9" * 25 + b', "log": "a"}\n',
        jl(time=1, log="a", cluster_id="a...b"),
    ]:
        assert fast.count(odd, w) is None, odd
        assert flat.count(odd, w) is None, odd
        assert one.count(odd, w) is None, odd


def test_pool_defers_masking_to_the_parent_and_counts_stay_exact(tmp_path):
    import concurrent.futures as cf
    import multiprocessing

    logs = tmp_path / "logs"
    for k in range(3):
        write(logs / f"{k}.jsonl", b"".join(jl(time=i * 1000 + k, log=f"job {i % 50} done in {i % 11} s",
                                              cluster_id="c") for i in range(2000)))
    windows = Windows([(0, 1000 * 1000), (1000 * 1000, 2000 * 1000)])
    shards = local_files.plan_shards(logs, FMT, windows)
    serial = summarize_windows(shards, windows)
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = summarize_windows(shards, windows, pool=pool)
    assert [w.lines for w in parallel.windows] == [w.lines for w in serial.windows] == [3000, 3000]
    for a, b in zip(parallel.windows, serial.windows):
        assert {k: s.counts for k, s in a.summaries.items()} == {k: s.counts for k, s in b.summaries.items()}


def test_plain_text_counting_equals_the_careful_path(tmp_path):
    from collections import Counter

    from ops.fetch.records import BadRecords, RecordFormat
    from ops.windows import TimeRange, Windows

    logs = tmp_path / "logs"
    clean = b"".join(f"GET /item/{i % 7} took {i % 3}ms é\r\n".encode("utf-8") for i in range(5000))
    write(logs / "svc" / "clean.log", clean)
    write(logs / "svc" / "dirty.log", b"ok line\n\n" + b"x" * (1 << 20 + 1) + b"\nok line\n\xff\xfe\nok line\n")
    fmt = RecordFormat()
    windows = Windows([(0, 4_102_444_800_000)])
    for block_size in (64, 4096, 1 << 20):
        for shard in local_files.plan_shards(logs, fmt, windows, block_size=block_size):
            bad_fast, bad_slow = BadRecords(), BadRecords()
            fast, slow = Counter(), Counter()
            for chunk in shard.read_counts(windows, bad_fast, TimeRange()):
                for (w, batch), counts in chunk.items():
                    for msg, n in counts.items():
                        fast[(w, batch, msg)] += n
            for chunk in shard.read(windows, bad_slow, TimeRange()):
                for (w, batch), msgs in chunk.items():
                    for msg in msgs:
                        slow[(w, batch, msg)] += 1
            assert fast == slow and sum(fast.values()) > 0
            assert dict(bad_fast.counts) == dict(bad_slow.counts)
            assert bad_fast.examples == bad_slow.examples


# ---- batch names from some of the batch fields (issue 11, item 14) ----------------

# the default LOGLOOP_BATCH_FIELDS (dotted: the pyarrow fast path), and flat (msgspec)
THREE = RecordFormat(batch_fields=("cluster_id", "kubernetes.namespace_name", "deployment"))
THREE_FLAT = RecordFormat(batch_fields=("cluster_id", "namespace", "deployment"))

PARTIAL = [  # (cluster, namespace, deployment) -> batch name; None: absent
    (("a", "b", "c"), "a/b/c"),              # every field: the name is unchanged
    (("a", None, None), "a"),                # absent fields at the end are left out
    (("a", "b", None), "a/b"),
    (("a", None, "c"), "a/-/c"),             # an absent field before a present one is "-"
    (("a", None, "b"), "a/-/b"),             # ... so it never merges with ("a", "b", None)
    ((None, "b", None), "-/b"),
    ((None, "b", "c"), "-/b/c"),
    ((None, None, "c"), "-/-/c"),
    (("a", "", "c"), "a/-/c"),               # an empty value counts as absent
    (("", "", ""), "default"),
    ((None, None, None), "default"),
    (("default", None, None), "default/-"),  # never merged into the default batch
]


def _partial_doc(fmt, values, t, log, nulls):
    """A record with the given batch values; None is omitted, or written as null."""
    doc = {"time": t, "log": log}
    for field, value in zip(fmt.batch_fields, values):
        if value is None and not nulls:
            continue
        if "." in field:
            head, tail = field.split(".")
            doc.setdefault(head, {})[tail] = value
        else:
            doc[field] = value
    return jl(**doc)


@pytest.mark.parametrize("fmt", [THREE, THREE_FLAT], ids=["dotted-pyarrow", "flat-msgspec"])
def test_partial_batch_fields_give_names_without_empty_segments_or_collisions(tmp_path, fmt):
    from collections import Counter

    from ops.naming import validate_batch_name
    from ops.fetch.fast_json import FastJsonBlocks

    data = b"".join(
        _partial_doc(fmt, values, 1000 * (3 * i + j), f"line {i}", nulls=j == 1)
        for i, (values, _) in enumerate(PARTIAL) for j in range(3)
    )
    write(tmp_path / "logs" / "k8s.jsonl", data)
    want = Counter()
    for values, name in PARTIAL:
        want[name] += 3
    windows = Windows([(0, HOUR)])
    # the careful path
    bad, careful = BadRecords(), Counter()
    for chunk in local_files.read_window(tmp_path / "logs", fmt, 0, HOUR, bad):
        for batch, msgs in chunk.items():
            careful[batch] += len(msgs)
    assert bad.total == 0 and careful == want
    # the fast path takes the block and names the batches alike
    fast = FastJsonBlocks(fmt).count(data, windows)
    assert fast is not None
    assert Counter({b: sum(c.values()) for (_, b), c in fast.items()}) == want
    # the data stage (small blocks: fast and careful paths mixed)
    shards = [local_files.FileShard(s.path, s.source, s.fmt, s.text_batch, s.file_id, 256)
              for s in local_files.plan_shards(tmp_path / "logs", fmt, windows)]
    result = summarize_windows(shards, windows, masking_rules=[])
    assert {b: s.total for b, s in result.windows[0].summaries.items()} == want
    for name in want:
        validate_batch_name(name)
        assert "" not in name.split("/"), name
    # distinct sets of fields never share a name (an empty value is an absent one)
    by_name = {}
    for values, name in PARTIAL:
        by_name.setdefault(name, set()).add(tuple(v or None for v in values))
    assert all(len(v) == 1 for v in by_name.values()), by_name


def test_batch_values_invert_batch_names():
    """What a name stands for: the filter a source builds to count one batch's records."""
    for values, name in PARTIAL:
        assert THREE.batch_of({"cluster_id": values[0], "kubernetes": {"namespace_name": values[1]},
                               "deployment": values[2]}) == name
        assert THREE.batch_values(name) == [v or None for v in values]
    # names written before (empty segments) still read the same way
    assert THREE.batch_values("a//") == ["a", None, None]
    assert THREE.batch_values("a//c") == ["a", None, "c"]
    assert THREE.batch_values("a/b/c/d") is None  # not a name these fields give
    assert ONE.batch_values("a/b") == ["a/b"] and ONE.batch_values("default") == [None]


@pytest.mark.parametrize("key_limit", [1 << 62, 8], ids=["one-key", "re-densified"])
def test_fast_path_groups_rows_by_their_batch_values(monkeypatch, key_limit):
    """The pyarrow path names each distinct combination of values with `batch_name`."""
    import random

    import pyarrow as pa

    from ops.fetch import fast_json, records

    monkeypatch.setattr(fast_json, "_KEY_LIMIT", key_limit)
    rng = random.Random(3)
    rows = [[rng.choice([None, "", "a", "b", "-", "default"]) for _ in range(3)] for _ in range(500)]
    names, idx = fast_json.FastJsonBlocks(THREE)._batch_index([pa.array(col, pa.string()) for col in zip(*rows)])
    assert len(set(names)) == len(names)
    assert [names[i] for i in idx.tolist()] == [records.batch_name(r, "default") for r in rows]


# ---- compressed files (issue 12, part 2) ----------------------------------------

def _gz_members(data: bytes, parts: int = 3) -> bytes:
    """gzip members concatenated (what appending shippers write), with zero padding after."""
    import gzip

    step = -(-len(data) // parts)
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step)) + bytes(7)


def _zst_frames(data: bytes, parts: int = 3) -> bytes:
    """zstd frames concatenated, with and without checksums, a skippable frame between."""
    import zstandard

    step = -(-len(data) // parts)
    frames = [zstandard.ZstdCompressor(level=3, write_checksum=bool(i % 2)).compress(data[i * step : (i + 1) * step])
              for i in range(parts)]
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    return frames[0] + skippable + b"".join(frames[1:])


def _shard_results(root, fmt, windows, block_size):
    """(counts from read_counts, counts from read, bad records) over every shard of `root`."""
    from collections import Counter

    from ops.windows import TimeRange

    fast, slow, bad_fast, bad_slow = Counter(), Counter(), BadRecords(), BadRecords()
    for shard in local_files.plan_shards(root, fmt, windows, block_size=block_size):
        for chunk in shard.read_counts(windows, bad_fast, TimeRange()):
            for (w, batch), counts in chunk.items():
                for msg, n in counts.items():
                    fast[(w, batch, msg)] += n
        for chunk in shard.read(windows, bad_slow, TimeRange()):
            for (w, batch), msgs in chunk.items():
                for msg in msgs:
                    slow[(w, batch, msg)] += 1
    assert fast == slow and dict(bad_fast.counts) == dict(bad_slow.counts)
    assert sorted(bad_fast.examples) == sorted(bad_slow.examples)
    return fast, bad_fast


@pytest.mark.parametrize("block_size", [256, 4096, 1 << 20])
def test_gzip_and_zstd_files_read_like_plain_ones(tmp_path, block_size):
    import gzip

    import zstandard

    mixed = _mixed_file(600)
    text = b"".join(f"GET /item/{i % 7} took {i % 3}ms\n".encode() for i in range(3000)) + b"\xff bad\n\nlast"
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    write(plain / "mixed.jsonl", mixed)
    write(plain / "svc" / "app.log", text)
    write(packed / "mixed.jsonl.gz", _gz_members(mixed))
    write(packed / "svc" / "app.log.zst", _zst_frames(text))
    write(packed / "empty.jsonl.gz", b"")                       # an empty file: nothing, no error
    write(packed / "empty2.jsonl.zst", zstandard.ZstdCompressor().compress(b""))
    write(packed / "nothing.log.gz", gzip.compress(b""))
    for f in (plain / "svc" / "app.log", packed / "svc" / "app.log.zst", packed / "nothing.log.gz"):
        os.utime(f, (100, 100))
    windows = Windows([(0, 1000_000), (1000_000, 4 * 1000_000)])
    want, want_bad = _shard_results(plain, FMT, windows, block_size)
    got, got_bad = _shard_results(packed, FMT, windows, block_size)
    assert got == want and dict(got_bad.counts) == dict(want_bad.counts)
    unsuffixed = sorted(e.replace(".gz:", ":").replace(".zst:", ":") for e in got_bad.examples)
    assert unsuffixed == sorted(want_bad.examples)
    assert sum(n for (_, b, _), n in got.items() if b == "svc") == 3001  # the text file: its folder's batch
    assert "corrupt_compression" not in got_bad.counts and got_bad.counts["not_utf8"] >= 2


def test_json_or_text_is_decided_by_the_suffix_before_the_compression_one():
    shard = lambda p: local_files.FileShard(p, p, FMT, "default")  # noqa: E731
    assert shard("a/app.jsonl.gz").is_json and shard("s3://b/k/app.ndjson.ZST").is_json
    assert shard("app.json.zstd").compression == "zstd" and shard("app.jsonl.gzip").compression == "gzip"
    assert not shard("app.log.gz").is_json and not shard("app.gz").is_json and shard("app.jsonl").compression is None


def test_zstd_frame_follower_tells_a_whole_stream_from_a_cut_one():
    import zstandard

    data = b"".join(f"line {i}\n".encode() for i in range(50_000))
    whole = _zst_frames(data, 4) + zstandard.ZstdCompressor(level=1).compress(b"")
    frames = streams._ZstdFrames()
    for i in range(0, len(whole), 1000):
        frames.feed(whole[i : i + 1000])
    assert frames.complete
    for cut in (1, 3, 5, len(whole) // 3, len(whole) - 1):
        partial = streams._ZstdFrames()
        partial.feed(whole[:cut])
        assert not partial.complete, cut
    junk = streams._ZstdFrames()
    junk.feed(b"not zstd at all")
    assert junk.bad and not junk.complete


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_compressed_files_stream_in_bounded_memory(tmp_path, kind):
    """A 64 MB line that compresses to a few KB (a decompression bomb, or a crash's NUL run)
    is never held: memory stays near the block size, and the line counts as too long."""
    import gzip
    import tracemalloc

    import zstandard

    from ops.windows import TimeRange

    data = jl(time=1, log="before") + b"a" * (64 << 20) + b"\n" + jl(time=2, log="after")
    packed = gzip.compress(data, 6) if kind == "gz" else zstandard.ZstdCompressor(level=3).compress(data)
    assert len(packed) < 1 << 20
    write(tmp_path / "logs" / f"bomb.jsonl.{kind}", packed)
    del data
    windows = Windows([(0, HOUR)])
    (shard,) = local_files.plan_shards(tmp_path / "logs", FMT, windows)
    bad, lines = BadRecords(), 0
    tracemalloc.start()
    try:
        for chunk in shard.read_counts(windows, bad, TimeRange()):
            lines += sum(sum(c.values()) for c in chunk.values())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == 2 and dict(bad.counts) == {"too_long": 1}
    assert peak < 16 << 20, peak  # the line is 64 MB; blocks are 1 MB (first-use imports count too)


def test_a_batch_field_with_a_value_per_record_is_capped_per_window(tmp_path):
    """A UUID in the batch field: known batches pass, at most max_new new ones per window, the rest
    counted (none lost) under one overflow batch, with example names; in a worker and in the parent."""
    import uuid

    from ops.mask.data_stage import OVERFLOW_BATCH

    logs = tmp_path / "logs"
    for k in range(2):  # two shards, each with its own 300 UUIDs in each of two windows
        write(logs / f"{k}.jsonl", b"".join(
            jl(time=(i % 2) * HOUR + i, log=f"request {i} done", cluster_id=str(uuid.uuid4())) for i in range(600))
            + jl(time=1, log="known one", cluster_id="known"))
    windows = Windows([(0, HOUR), (HOUR, 2 * HOUR)])
    shards = local_files.plan_shards(logs, ONE, windows)
    result = summarize_windows(shards, windows, known_batches={"known"}, max_new_batches=50)
    first, second = result.windows
    assert "known" in first.summaries and first.summaries["known"].total == 2
    for w in (first, second):
        new = [b for b in w.summaries if b not in ("known", OVERFLOW_BATCH)]
        assert len(new) == 50
        assert sum(s.total for s in w.summaries.values()) == w.lines
    assert result.lines == 1202
    assert result.overflow.records == 1200 - 100
    assert first.summaries[OVERFLOW_BATCH].total + second.summaries[OVERFLOW_BATCH].total == 1100
    assert 0 < len(result.overflow.examples) <= 10 and all(len(b) == 36 for b in result.overflow.examples)
    # no cap: every UUID is its own batch
    uncapped = summarize_windows(shards, windows)
    assert len(uncapped.windows[0].summaries) == 601 and uncapped.overflow.records == 0


def test_a_worker_is_started_only_for_input_large_enough_to_pay_for_it():
    from ops.fetch.local_files import FileShard, SkippedFiles
    from ops.fetch.records import RecordFormat
    from ops.mask.data_stage import MIN_BYTES_PER_WORKER, workers_worth_starting

    def file(name, size):
        return FileShard(f"/logs/{name}", name, RecordFormat(), "default", f"{size}:1700000000")

    small = [file("a.jsonl", 1_000_000), file("b.jsonl", 2_000_000), SkippedFiles.of([])]
    assert workers_worth_starting(small, 4) == 1
    big = [file("a.jsonl", 3 * MIN_BYTES_PER_WORKER), file("b.jsonl", MIN_BYTES_PER_WORKER // 2)]
    assert workers_worth_starting(big, 2) == 2 and workers_worth_starting(big, 8) == 3
    # compressed files hold more than their size says
    assert workers_worth_starting([file("a.jsonl.gz", MIN_BYTES_PER_WORKER // 2)], 8) == 2
    # a size that is not known (another source's shard, a listing without sizes): as many as allowed
    assert workers_worth_starting([file("a.jsonl", 10), FileShard("/x", "x", RecordFormat(), "d", ":etag")], 4) == 4
    assert workers_worth_starting([object()], 3) == 3
