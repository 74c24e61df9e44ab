"""Events that span lines: the rules, the joiner, and every reader that joins (files on the careful and
the vectorised path, text files, pushed samples at push and at read time, OpenSearch hits)."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest

from ops.fetch.fast_json import FastJsonBlocks
from ops.fetch.local_files import FileShard, plan_shards
from ops.fetch.multiline import Joiner, Multiline, compiled, join_lines, load_multiline
from ops.fetch.opensearch import hits_to_chunk, time_spans
from ops.fetch.push import PushStats, read_messages, sample_joiner
from ops.fetch.records import BadRecords, RecordFormat
from ops.fetch.tally import Tally
from ops.mask.data_stage import summarize_windows
from ops.windows import TimeRange, Windows

RULES = load_multiline()
HOUR = 3_600_000
ALL = Windows([(0, 10 * HOUR)])

JAVA = ["java.lang.IllegalStateException: boom",
        "\tat com.example.Foo.bar(Foo.java:42)",
        "\tat com.example.Main.main(Main.java:7)",
        "Caused by: java.io.IOException: disk full",
        "\tat com.example.Disk.write(Disk.java:3)",
        "\t... 2 more"]
PYTHON = ["Traceback (most recent call last):",
          '  File "app.py", line 3, in <module>',
          "    main()",
          "    ^^^^^^",
          "ValueError: bad value"]
GO = ["panic: runtime error: index out of range [3] with length 3",
      "",
      "goroutine 1 [running]:",
      "main.main()",
      "\t/app/main.go:12 +0x1d"]
LINES = ["INFO starting", *JAVA, "INFO next request", *PYTHON, "INFO after python", *GO, "exit status 2"]
EVENTS = ["INFO starting", "\n".join(JAVA), "INFO next request", "\n".join(PYTHON), "INFO after python", "\n".join(GO),
          "exit status 2"]


def _jsonl(messages, batch_of=lambda i: "c1", t0=1000):
    return b"".join(json.dumps({"time": t0 + i, "log": m, "cluster_id": batch_of(i)}).encode() + b"\n"
                    for i, m in enumerate(messages))


def _counts(chunks) -> Counter:
    out = Counter()
    for chunk in chunks:
        for key, counts in chunk.items():
            for m, c in (counts.items() if isinstance(counts, dict) else Counter(counts).items()):
                out[(key[1], m)] += c
    return out


def _shard(path, fmt, block_size=1 << 20):
    return FileShard(str(path), path.name, fmt, "default", block_size=block_size, mtime_ms=HOUR)


# ---- the rules ----------------------------------------------------------------------------------------


def test_java_python_and_go_stacks_are_one_event_each_and_other_lines_stay_alone():
    assert [text for _, text in join_lines(enumerate(LINES, 1), RULES)] == EVENTS
    assert [n for n, _ in join_lines(enumerate(LINES, 1), RULES)] == [1, 2, 8, 9, 14, 15, 20]
    # off: every non-blank line is its own event
    assert [text for _, text in join_lines(enumerate(LINES, 1), None)] == [ln for ln in LINES if ln]
    assert [text for _, text in join_lines(enumerate(LINES, 1), load_multiline(["python"]))].count("\n".join(PYTHON)) == 1


def test_a_line_that_merely_names_an_error_is_an_event_of_its_own():
    lines = ["WARN Connection Error: retrying", "INFO retried", "java.lang.Exception", "INFO ok"]
    assert [t for _, t in join_lines(enumerate(lines), RULES)] == lines


def test_unknown_parsers_and_broken_rules_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="unknown multiline parser.*'ruby'"):
        load_multiline(["java", "ruby"])
    bad = {
        "unclosed (": "regex does not compile",
        "(a+)+$": "regex",
    }
    for regex, message in bad.items():
        path = tmp_path / "rules.yaml"
        path.write_text(json.dumps({"x": {"rules": [{"state": "start_state", "regex": regex, "next": "s"}]}}))
        with pytest.raises(ValueError, match=f"parser 'x' rule #1: {message}"):
            load_multiline(["x"], path=path)
    path.write_text(json.dumps({"x": {"rules": [{"state": "s", "regex": "a", "next": "s"}]}}))
    with pytest.raises(ValueError, match="no rule of state start_state"):
        load_multiline(["x"], path=path)
    path.write_text(json.dumps({"x": {"rules": [{"state": "start_state", "regex": "a", "next": "s"},
                                                {"state": "t", "regex": "b", "next": "s"}]}}))
    with pytest.raises(ValueError, match="state\\(s\\) 't' are never the `next`"):
        load_multiline(["x"], path=path)
    path.write_text(json.dumps({"x": {"hints": ['say "hi"'], "rules": [{"state": "start_state", "regex": "a",
                                                                        "next": "s"}]}}))
    with pytest.raises(ValueError, match="hints"):
        load_multiline(["x"], path=path)
    with pytest.raises(ValueError, match="max_lines"):
        Multiline(dict(RULES, max_lines=0))


def test_hints_are_true_necessary_conditions_of_every_start_rule():
    """A hint missing from a line that a start rule matches would silently stop that event."""
    ml = Multiline(RULES)
    for p in ml.parsers:
        for line in (*JAVA, *PYTHON, *GO, "Exception in thread \"main\" java.lang.Error",
                     "2024/01/01 http: panic serving 10.0.0.1:1234: boom"):
            if any(regex.search(line) for regex, _ in p.start):
                assert any(h.decode() in line for h in ml.hints), line


# ---- caps ---------------------------------------------------------------------------------------------


def test_an_event_keeps_at_most_its_caps_and_the_rest_is_counted():
    frames = [f"\tat com.example.F{i}.f(F.java:{i})" for i in range(50)]
    bad = BadRecords()
    rules = load_multiline(max_lines=10, max_bytes=100_000)
    joiner = Joiner(compiled(rules), bad)
    out = []
    for n, line in enumerate(["java.lang.RuntimeException: x", *frames, "INFO after"], 1):
        out += joiner.push(None, line, n, lambda n=n: f"f.log:{n}")
    out += joiner.flush()
    assert [t.count("\n") + 1 for _, t in out] == [10, 1]  # the frames past the cap did not become events
    assert out[0][1].splitlines()[1:] == frames[:9]
    assert bad.counts == Counter({"event_cut": 41})
    assert bad.examples[0].startswith("f.log:11: line of a multiline event past the event's cap")
    # bytes: the text stays a prefix of whole lines, within the cap
    bad = BadRecords()
    joiner = Joiner(compiled(load_multiline(max_bytes=200)), bad)
    out = [e for n, line in enumerate(["java.lang.RuntimeException: x", *frames], 1)
           for e in joiner.push(None, line, n)] + joiner.flush()
    assert len(out) == 1 and len(out[0][1].encode()) <= 200
    assert out[0][1].splitlines()[1:] == frames[:len(out[0][1].splitlines()) - 1]
    assert bad.counts["event_cut"] == 50 - (len(out[0][1].splitlines()) - 1)


# ---- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1 << 20, 64, 700])
def test_json_files_join_alike_on_the_fast_and_the_careful_path(tmp_path, block_size):
    fmt = RecordFormat(batch_fields=("cluster_id",))
    path = tmp_path / "app.jsonl"
    path.write_bytes(_jsonl(LINES * 3))
    ml = compiled(RULES)
    shard = _shard(path, fmt, block_size)
    bad_fast, bad_careful = BadRecords(), BadRecords()
    fast = _counts(shard.read_counts(ALL, bad_fast, TimeRange(), Joiner(ml, bad_fast)))
    careful = _counts(shard.read(ALL, bad_careful, TimeRange(), Joiner(ml, bad_careful)))
    assert fast == careful == Counter({("c1", e): 3 for e in EVENTS})
    assert bad_fast.total == bad_careful.total == 0


def test_the_vectorised_path_joins_without_falling_back_to_the_careful_one():
    fast = FastJsonBlocks(RecordFormat(batch_fields=("cluster_id",)))
    joiner = Joiner(compiled(RULES), BadRecords())
    tally = Tally()
    data = _jsonl([*LINES, JAVA[0]])
    assert fast.tally(data, ALL, TimeRange(), tally, joiner, 1, "app.jsonl") == len(LINES) + 1
    assert Counter({m: c for counts in tally.flush().values() for m, c in counts.items()}) == Counter(EVENTS)
    # the block's last line began an event that the next block may continue: it waits in the joiner
    assert joiner.has_open
    assert fast.tally(_jsonl(JAVA[1:3]), ALL, TimeRange(), tally, joiner, 100, "app.jsonl") == 2
    assert not len(tally) and [t for _, t in joiner.flush()] == ["\n".join(JAVA[:3])]
    # a block without any hint and no open event takes the plain path
    plain = _jsonl(["INFO a", "INFO b"])
    assert not joiner.has_open and not joiner.ml.may_start(plain)


def test_interleaved_streams_join_per_batch(tmp_path):
    """Two pods writing into one file: each stream's lines join, whatever lies between them."""
    fmt = RecordFormat(batch_fields=("cluster_id",))
    a = ["java.lang.IllegalStateException: a", "\tat A.a(A.java:1)", "\tat A.b(A.java:2)", "INFO a done"]
    b = ["INFO b1", "INFO b2", "INFO b3", "INFO b4"]
    mixed = [x for pair in zip(a, b) for x in pair]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_jsonl(mixed, batch_of=lambda i: "a" if i % 2 == 0 else "b"))
    for block_size in (1 << 20, 90):
        bad = BadRecords()
        got = _counts(_shard(path, fmt, block_size).read_counts(ALL, bad, TimeRange(), Joiner(compiled(RULES), bad)))
        assert got == Counter({("a", "\n".join(a[:3])): 1, ("a", "INFO a done"): 1, **{("b", m): 1 for m in b}})


def test_an_event_belongs_to_the_window_of_its_first_line(tmp_path):
    fmt = RecordFormat()
    lines = ["java.lang.IllegalStateException: late", "\tat A.a(A.java:1)", "\tat A.b(A.java:2)", "INFO in window"]
    path = tmp_path / "edge.jsonl"
    path.write_bytes(_jsonl(lines, t0=HOUR - 2))  # the first two lines before the window, the rest in it
    windows = Windows([(HOUR, 2 * HOUR)])
    for read in ("read", "read_counts"):
        bad = BadRecords()
        got = _counts(getattr(_shard(path, fmt), read)(windows, bad, TimeRange(), Joiner(compiled(RULES), bad)))
        assert got == Counter({("default", "INFO in window"): 1})  # no orphan frame in the window


def test_text_files_join_blank_lines_of_a_go_panic_and_count_other_blank_lines(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("\n".join([*LINES, "", "INFO end"]) + "\n")
    for block_size in (1 << 20, 50):
        shard = _shard(path, RecordFormat(), block_size)
        for read in ("read", "read_counts"):
            bad = BadRecords()
            got = _counts(getattr(shard, read)(ALL, bad, TimeRange(), Joiner(compiled(RULES), bad)))
            assert got == Counter({("default", e): 1 for e in [*EVENTS, "INFO end"]}), (block_size, read)
            assert bad.counts == Counter({"blank": 1})


def test_the_data_stage_counts_events_not_lines(tmp_path):
    fmt = RecordFormat(batch_fields=("cluster_id",))
    (tmp_path / "a.jsonl").write_bytes(_jsonl(LINES * 10))
    shards = plan_shards(tmp_path, fmt, ALL)
    joined = summarize_windows(shards, ALL, multiline=RULES)
    plain = summarize_windows(shards, ALL)
    assert plain.lines == 10 * len(LINES)
    assert joined.lines == 10 * len(EVENTS)
    summary = joined.windows[0].summaries["c1"]
    assert summary.total == 10 * len(EVENTS) and len(summary.counts) == len(EVENTS)
    assert len(plain.windows[0].summaries["c1"].counts) > len(summary.counts) + 10


# ---- pushed samples -----------------------------------------------------------------------------------


def test_a_stack_pushed_at_once_is_one_sample():
    stats = PushStats()
    data = ("\n".join(LINES) + "\n").encode()
    out = [m for chunk in read_messages(io.BytesIO(data), stats, block_size=64, joiner=sample_joiner(RULES, stats))
           for m in chunk]
    assert out == EVENTS
    assert stats.lines == len(LINES) and stats.joined == len(LINES) - len(EVENTS) and stats.bad.total == 0
    # JSON Lines too; and without rules, a sample per line as before
    stats = PushStats()
    out = [m for chunk in read_messages(io.BytesIO(_jsonl(LINES)), stats, "json", joiner=sample_joiner(RULES, stats))
           for m in chunk]
    assert out == EVENTS
    assert sample_joiner({**RULES, "parsers": {}}, PushStats()) is None


def test_samples_pushed_one_line_per_call_are_joined_when_read(tmp_path):
    from resources.samples import push
    from resources.samples_source import SamplesLogSource
    from resources.sql_samples import SQLSamples

    table = SQLSamples(f"sqlite:///{tmp_path / 'store.sqlite'}")
    for i, line in enumerate(LINES):
        push("app", [line], table, validation_share=0.0)
        push("other", [f"INFO other {i % 3}"], table, validation_share=0.0)  # interleaved with another batch
    source = SamplesLogSource(backend="sql", url=f"sqlite:///{tmp_path / 'store.sqlite'}", page_size=4)
    windows = Windows([(0, 2**62 // 1_000_000)])
    result = summarize_windows(source.ordered_shards(windows), windows, multiline=RULES)
    app = result.windows[0].summaries["app"]
    assert app.total == len(EVENTS)
    plain = summarize_windows(source.shards(windows), windows)
    assert plain.windows[0].summaries["app"].total == len(LINES) - 1  # the blank line masks to nothing
    # pushed at once: joined when pushed, and read back as the same events
    stats = push("batch2", LINES, table, validation_share=0.0, multiline=RULES)
    assert stats.registered == len(EVENTS) and stats.joined == len(LINES) - len(EVENTS)


# ---- OpenSearch ---------------------------------------------------------------------------------------


def test_opensearch_documents_a_shipper_split_are_joined_per_stream():
    fmt = RecordFormat(batch_fields=("pod",))
    hits = [{"_id": str(i), "sort": [1000 + i], "_source": {"log": m, "pod": "p1" if i % 3 else "p2"}}
            for i, m in enumerate(LINES)]
    streams = {"p1": [m for i, m in enumerate(LINES) if i % 3], "p2": [m for i, m in enumerate(LINES) if not i % 3]}
    expected = Counter((pod, text) for pod, lines in streams.items()
                       for _, text in join_lines(enumerate(lines), RULES))
    bad = BadRecords()
    joiner = Joiner(compiled(RULES), bad)
    got = Counter()
    for page in (hits[:7], hits[7:15], hits[15:]):  # events run across pages
        chunk = hits_to_chunk(page, fmt, ALL, bad, TimeRange(), "logs#0", False, set(), joiner)
        got += Counter((b, m) for (_, b), msgs in chunk.items() for m in msgs)
    from ops.fetch.opensearch import route_joined

    tail: dict = {}
    route_joined(tail, set(), bad, joiner.flush())
    got += Counter((b, m) for (_, b), msgs in tail.items() for m in msgs)
    assert got == expected and bad.total == 0


def test_ordered_opensearch_shards_read_contiguous_time_spans():
    windows = Windows([(0, HOUR), (HOUR, 2 * HOUR), (5 * HOUR, 6 * HOUR)])
    assert time_spans(windows, 2) == [(0, 2 * HOUR), (5 * HOUR, 6 * HOUR)]
    assert time_spans(windows, 3) == [(0, HOUR), (HOUR, 2 * HOUR), (5 * HOUR, 6 * HOUR)]
    spans = time_spans(Windows([(0, HOUR)]), 4)
    assert spans == [(0, HOUR // 4), (HOUR // 4, HOUR // 2), (HOUR // 2, 3 * HOUR // 4), (3 * HOUR // 4, HOUR)]


def test_opensearch_source_joins_a_split_stack_in_the_data_stage():
    from resources.opensearch_source import OpenSearchLogSource
    from tests.servers.opensearch_server import FakeOpenSearch, ListCorpus

    docs = [{"time": HOUR + 1000 * i, "log": m, "pod": "p1"} for i, m in enumerate(LINES * 4)]
    windows = Windows([(HOUR, 2 * HOUR)])
    with FakeOpenSearch({"logs": ListCorpus(docs)}) as srv:
        src = OpenSearchLogSource(hosts=[srv.url], batch_fields=["pod"], slices=3, page_size=7,
                                  backoff_s=0.001, max_backoff_s=0.01)
        shards = src.ordered_shards(windows)
        assert len(shards) == 3 and all(s.span for s in shards)
        result = summarize_windows(src.ordered_shards(Windows([(HOUR, HOUR + 1000 * len(docs))])),
                                   Windows([(HOUR, HOUR + 1000 * len(docs))]), multiline=RULES)
        summary = result.windows[0].summaries["p1"]
    # three spans cut the stream twice: at most two events are split, every other one is whole
    assert sum(summary.counts.values()) == result.lines
    assert 4 * len(EVENTS) <= result.lines <= 4 * len(EVENTS) + 2 * max(len(JAVA), len(PYTHON), len(GO))
    whole = sum(c for form, c in summary.counts.items() if "caused by" in form)
    assert whole >= 3
