"""Log folders as they really are: rotated names, JSON Lines not named .jsonl, symbolic links (Kubernetes'
/var/log/containers), and things that are not log files (FIFOs, sockets, folders named app.log, links out of
the folder, files that vanish). What cannot be read is counted by reason and never blocks the read."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
from collections import Counter

from ops.fetch import local_files
from ops.fetch.records import REASONS, BadRecords, RecordFormat
from ops.mask.data_stage import summarize_windows
from ops.windows import TimeRange, Windows

START = 1_795_600_800_000  # 2026-11-26T07:00:00Z
HOUR = 3_600_000
WINDOWS = Windows([(START, START + HOUR)])
FMT = RecordFormat(batch_fields=("app",))


def _jsonl(app: str, n: int = 20) -> bytes:
    return b"".join(json.dumps({"time": START + i * 1000, "log": f"GET /{i % 3}", "app": app}).encode() + b"\n"
                    for i in range(n))


def _run(root, timeout_s: float = 60):
    """The data stage over the folder, as partition_summaries runs it; fails (rather than hangs) if it blocks."""
    box = {}

    def go():
        box["result"] = summarize_windows(local_files.plan_shards(str(root), FMT, WINDOWS), WINDOWS)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "reading the folder blocked"
    result = box["result"]
    lines = Counter()
    for batch, summary in result.windows[0].summaries.items():
        lines[batch] += summary.total
    return lines, result.bad


def test_rotated_names_keep_their_format_and_compression():
    from ops.fetch.local_files import file_format

    assert file_format("app.jsonl.1") == (True, None)
    assert file_format("logs/app.jsonl.2.gz") == (True, "gzip")
    assert file_format("app.ndjson-20261201") == (True, None)
    assert file_format("app.json-2026120110.zst") == (True, "zstd")
    assert file_format("app.jsonl.2026-12-01.gz") == (True, "gzip")
    assert file_format("app.jsonl.2026-12-01_10-00-00") == (True, None)
    assert file_format("app.log.1") == (False, None) and file_format("app.log-20261201.gz") == (False, "gzip")
    assert file_format("0.log") == (False, None) and file_format("app.jsonl") == (True, None)


def test_json_is_told_from_the_first_line_holding_the_time_field():
    from ops.fetch.local_files import sniff_json

    assert sniff_json(b'\n{"time": 1, "log": "x"}\nplain\n', "time")
    assert sniff_json(b'{"kubernetes": {"ts": "2026-01-01T00:00:00Z"}}\n', "kubernetes.ts")
    assert not sniff_json(b'{"level": "info", "msg": "no time field"}\n', "time")  # JSON, but not records
    assert not sniff_json(b"2026-11-26 07:00:00 INFO started\n", "time")
    assert not sniff_json(b'{"time": 1, "log": "cut', "time")  # the line is not whole within the bytes read
    assert not sniff_json(b"", "time")


def test_rotated_and_unsuffixed_json_lines_are_read_as_records(tmp_path):
    """As reported: `app.jsonl.1` full of JSON records was read as text, all of it batch `default`."""
    (tmp_path / "app.jsonl.1").write_bytes(_jsonl("rotated"))
    (tmp_path / "app.jsonl.2.gz").write_bytes(gzip.compress(_jsonl("rotated-gz")))
    (tmp_path / "app.log-20261201").write_bytes(_jsonl("dateext"))
    (tmp_path / "app.log.2026-12-01.gz").write_bytes(gzip.compress(_jsonl("python-dated")))
    (tmp_path / "abc-json.log").write_bytes(_jsonl("docker"))  # Docker's json-file driver: JSON named .log
    plain = tmp_path / "svc" / "app.log.1"
    plain.parent.mkdir()
    plain.write_text('{"level": "info", "msg": "structured, no time field"}\nplain line\n')
    os.utime(plain, (START / 1000 + 60,) * 2)
    lines, bad = _run(tmp_path)
    assert lines == {"rotated": 20, "rotated-gz": 20, "dateext": 20, "python-dated": 20, "docker": 20, "svc": 2}
    assert not bad.counts


def test_sniffing_reads_the_file_once_and_loses_no_line(tmp_path):
    """The bytes read to decide the format are read again from memory, not lost: a file larger than
    what is sniffed, read in small blocks, gives every line on both readers."""
    data = _jsonl("big", 3000)
    assert len(data) > 64 << 10  # more than is sniffed
    (tmp_path / "big.log").write_bytes(data)
    shard, = local_files.plan_shards(str(tmp_path), FMT, WINDOWS, block_size=4096)
    assert not shard.is_json  # the name does not say; the content does
    bad = BadRecords()
    careful = sum(len(m) for c in shard.read(WINDOWS, bad, TimeRange()) for m in c.values())
    counted = sum(sum(m.values()) for c in shard.read_counts(WINDOWS, bad, TimeRange()) for m in c.values())
    assert careful == counted == 3000 and not bad.counts


def test_links_are_followed_within_the_root_and_refused_outside_it(tmp_path):
    """Kubernetes' layout: /var/log/containers/<pod>_<ns>_<container>-<id>.log links into /var/log/pods;
    with the root /var/log each file is read once."""
    root = tmp_path / "var-log"
    pod = root / "pods" / "ns_web-1_uid" / "web"
    pod.mkdir(parents=True)
    (pod / "0.log").write_bytes(_jsonl("web"))
    (root / "containers").mkdir()
    (root / "containers" / "web-1_ns_web-abc.log").symlink_to(pod / "0.log")
    (root / "linked-folder").symlink_to(root / "pods" / "ns_web-1_uid")  # a folder link inside the root
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.log").write_bytes(_jsonl("secret"))
    (root / "escape.log").symlink_to(outside / "secret.log")
    (root / "escape-dir").symlink_to(outside)
    (root / "gone.log").symlink_to(root / "rotated-away.log")
    (root / "loop").symlink_to(root)
    lines, bad = _run(root)
    assert lines == {"web": 20}  # read once, though three names reach it; nothing from outside the root
    assert bad.counts == {"link_outside_root": 2, "broken_link": 1, "link_loop": 1}
    assert f"escape.log: {REASONS['link_outside_root']}: it points to {outside / 'secret.log'}" in bad.examples
    from ops.fetch.locations import list_files

    assert [f.rel for f in list_files(str(root))] == ["containers/web-1_ns_web-abc.log"]


def test_fifos_sockets_and_folders_named_like_logs_are_counted_never_opened(tmp_path):
    """As reported: these were skipped and counted nowhere. A FIFO must never be opened (that blocks
    until a writer comes)."""
    (tmp_path / "app.jsonl").write_bytes(_jsonl("app"))
    os.mkfifo(tmp_path / "pipe.log")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "syslog.sock"))
    (tmp_path / "mounted.log").mkdir()  # what `docker run -v /host/missing.log:/logs/mounted.log` leaves
    (tmp_path / "link-to-pipe.log").symlink_to(tmp_path / "pipe.log")
    try:
        lines, bad = _run(tmp_path)
    finally:
        sock.close()
    assert lines == {"app": 20}
    assert bad.counts == {"not_regular_file": 3, "log_named_folder": 1}
    assert sorted(bad.examples) == sorted([
        f"link-to-pipe.log: {REASONS['not_regular_file']}: a FIFO",
        f"mounted.log: {REASONS['log_named_folder']}",
        f"pipe.log: {REASONS['not_regular_file']}: a FIFO",
        f"syslog.sock: {REASONS['not_regular_file']}: a socket",
    ])


def test_a_file_that_vanishes_or_becomes_a_fifo_after_the_listing_is_counted_not_fatal(tmp_path):
    """logrotate removes `app.log.5.gz` between the listing and the read; a FIFO appears where a file was.
    Neither fails the window nor blocks it."""
    (tmp_path / "app.jsonl").write_bytes(_jsonl("app"))
    (tmp_path / "app.jsonl.5.gz").write_bytes(gzip.compress(_jsonl("old")))
    (tmp_path / "swapped.log").write_bytes(_jsonl("swapped"))
    shards = local_files.plan_shards(str(tmp_path), FMT, WINDOWS)
    (tmp_path / "app.jsonl.5.gz").unlink()
    (tmp_path / "swapped.log").unlink()
    os.mkfifo(tmp_path / "swapped.log")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", summarize_windows(shards, WINDOWS)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "opening a FIFO blocked"
    result = box["r"]
    assert {b: s.total for b, s in result.windows[0].summaries.items()} == {"app": 20}
    assert result.bad.counts == {"unreadable_file": 1, "not_regular_file": 1}


def test_many_skipped_entries_cost_a_bounded_count(tmp_path):
    """Counts by reason and a few examples travel, not one entry per FIFO."""
    for i in range(40):
        os.mkfifo(tmp_path / f"p{i:02d}.log")
    shards = local_files.plan_shards(str(tmp_path), FMT, WINDOWS)
    skipped, = shards
    assert len(skipped.examples) <= 10 and dict(skipped.counts) == {"not_regular_file": 40}
    bad = BadRecords()
    list(skipped.read_counts(WINDOWS, bad, TimeRange()))
    assert bad.counts == {"not_regular_file": 40} and len(bad.examples) == 10


def test_a_log_folder_path_that_is_a_link_is_read_through_it(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "app.jsonl").write_bytes(_jsonl("app"))
    (tmp_path / "current").symlink_to(tmp_path / "real")
    lines, bad = _run(tmp_path / "current")
    assert lines == {"app": 20} and not bad.counts
