"""The file source on object storage: logs in a bucket (moto's S3 server, a real S3 API on
loopback), gzip and zstd JSON Lines streamed, faults named in one line without secrets,
and the source index kept at a URL."""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import multiprocessing
import pickle
import re

import pytest
import zstandard

from ops.fetch import local_files, locations
from ops.mask.data_stage import summarize_windows
from ops.fetch.records import BadRecords, RecordFormat
from ops.windows import TimeRange, Windows
from resources.log_source import LocalLogSource, LogSourceError, file_source_location
from tests.servers.s3_server import ACCESS_KEY, SECRET_KEY, s3, s3_server  # noqa: F401  (fixtures)
from tests.ops.mask.test_data_stage import _mixed_file, jl

FIELDS = ["cluster_id", "kubernetes.namespace_name"]
HOUR = 3_600_000
WINDOWS = Windows([(0, 1000_000), (1000_000, 4 * 1000_000)])


def _clean(k: int, n: int = 3000) -> bytes:
    return b"".join(jl(time=(i * 997 + k) % 3_900_000, log=f"GET /api/{i % 9} 200 {i % 13}ms from pod-{k}",
                       cluster_id=f"c{k % 2}", kubernetes={"namespace_name": f"ns{i % 3}"}) for i in range(n))


# name (uncompressed) -> bytes; in the bucket each is compressed as COMPRESS says
FILES = {
    "mixed.jsonl": _mixed_file(),
    "web/access.jsonl": _clean(1),
    "web/api.ndjson": _clean(2, 5000),
    "db/slow.jsonl": _clean(3, 200) + b"{broken\n" + _clean(4, 200),
}
COMPRESS = {"mixed.jsonl": "gz", "web/access.jsonl": "zst", "web/api.ndjson": "gz", "db/slow.jsonl": "zst"}


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def _results(source: LocalLogSource, pool=None):
    shards = source.shards(WINDOWS)
    r = summarize_windows(shards, WINDOWS, masking_rules=None, pool=pool)
    summaries = [{b: s.counts for b, s in w.summaries.items()} for w in r.windows]
    examples = sorted(re.sub(r"\.(gz|zst)(?=:)", "", e) for e in r.bad.examples)  # a.jsonl.gz:3 -> a.jsonl:3
    return summaries, [w.lines for w in r.windows], dict(r.bad.counts), examples, r


def test_gzip_and_zstd_in_s3_read_like_plain_local_files(s3, tmp_path):
    """The same logs, plain in a local folder and compressed in a bucket: identical
    summaries, line counts and bad records, with the shards read in spawn workers that open
    the URL themselves (credentials and endpoint from the environment: AWS_ENDPOINT_URL)."""
    plain = tmp_path / "logs"
    client = s3.client()
    client.create_bucket(Bucket="archive")
    for name, data in FILES.items():
        (plain / name).parent.mkdir(parents=True, exist_ok=True)
        (plain / name).write_bytes(data)
        packed = gz(data) if COMPRESS[name] == "gz" else zst(data)
        client.put_object(Bucket="archive", Key=f"k8s/{name}.{COMPRESS[name]}", Body=packed)
    client.put_object(Bucket="archive", Key="k8s/.hidden/skip.jsonl", Body=b"{not read\n")
    client.put_object(Bucket="archive", Key="elsewhere/x.jsonl", Body=jl(time=1, log="not under the prefix"))

    local = LocalLogSource(path=str(plain), batch_fields=FIELDS, block_size_bytes=4096)
    remote = LocalLogSource(path="s3://archive/k8s/", batch_fields=FIELDS, block_size_bytes=4096)
    assert remote.describe() == "log files at s3://archive/k8s/"
    want = _results(local)
    assert sorted(s.source for s in remote.shards(WINDOWS)) == sorted(f"{n}.{c}" for n, c in COMPRESS.items())
    assert all(s.path.startswith("s3://archive/k8s/") for s in remote.shards(WINDOWS))
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = _results(remote, pool)
    assert got[:4] == want[:4]
    assert sum(want[1]) > 10_000 and want[2]["bad_json"] >= 6 and want[2]["too_long"] == 1
    assert "corrupt_compression" not in got[2]
    # serially in this process, and with the default 1 MB blocks, too
    assert _results(LocalLogSource(path="s3://archive/k8s/", batch_fields=FIELDS))[:4] == want[:4]
    # the file-time index keys remote files by URL and ETag
    assert all(p.startswith("s3://archive/k8s/") and fid.count(":") >= 1 for p, (fid, _, _) in got[4].time_ranges.items())


def _decodable_lines(kind: str, cut: bytes) -> int:
    """Complete lines a decompressor gets out of a cut-short file (computed independently)."""
    if kind == "gz":
        import zlib

        out = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)
    else:
        out = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    return out.count(b"\n")


@pytest.mark.parametrize("kind", ["gz", "zst"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_truncated_file_keeps_its_good_lines_and_counts_one_bad_record(s3, tmp_path, kind, where):
    data = _clean(5, 20_000)
    packed = gz(data) if kind == "gz" else zst(data)
    cut = packed[: len(packed) * 3 // 5]
    good = _decodable_lines(kind, cut)
    assert 0 < good < 20_000
    name = f"app.jsonl.{kind}"
    if where == "local":
        (tmp_path / "logs").mkdir()
        (tmp_path / "logs" / name).write_bytes(cut)
        root = str(tmp_path / "logs")
    else:
        s3.client().create_bucket(Bucket="archive")
        s3.client().put_object(Bucket="archive", Key=f"cut/{name}", Body=cut)
        root = "s3://archive/cut/"
    windows = Windows([(0, 4_000_000)])
    for block_size in (4096, 1 << 20):
        for shard in local_files.plan_shards(root, RecordFormat(batch_fields=("cluster_id",)), windows,
                                             block_size=block_size):
            for method in ("read_counts", "read"):
                bad = BadRecords()
                lines = 0
                for chunk in getattr(shard, method)(windows, bad, TimeRange()):
                    lines += sum(sum(c.values()) if isinstance(c, dict) else len(c) for c in chunk.values())
                assert lines == good, (method, block_size)
                assert dict(bad.counts) == {"corrupt_compression": 1}
                assert bad.examples == [
                    f"{name}:{good + 1}: compressed file is truncated or corrupt; lines before this one were read, "
                    f"the rest of the file was not: the {'gzip' if kind == 'gz' else 'zstd'} stream ends early "
                    f"(the file is truncated)"]


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_corrupt_compressed_file_does_not_fail_the_window(tmp_path, kind):
    data = _clean(6, 20_000)
    packed = bytearray(gz(data) if kind == "gz" else zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
    middle = len(packed) // 2
    packed[middle : middle + 64] = bytes(64)  # a damaged stretch
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / f"app.jsonl.{kind}").write_bytes(bytes(packed))
    (tmp_path / "logs" / "next.jsonl").write_bytes(_clean(7, 100))
    windows = Windows([(0, 4_000_000)])
    source = LocalLogSource(path=str(tmp_path / "logs"), batch_fields=["cluster_id"])
    result = summarize_windows(source.shards(windows), windows)
    # damage may first come out as garbage lines (bad records of their own); then the
    # decompressor refuses the rest, once
    assert result.bad.counts["corrupt_compression"] == 1
    assert any(e.startswith(f"app.jsonl.{kind}:") and "truncated or corrupt" in e
               for e in result.bad.examples) or len(result.bad.examples) == 10
    assert 100 < result.lines < 20_100  # the lines before the damage and the next file


def test_text_files_in_a_bucket_take_the_objects_time_and_folder(s3):
    import time

    s3.client().create_bucket(Bucket="archive")
    s3.client().put_object(Bucket="archive", Key="k8s/team-a/app.log.gz", Body=gz(b"started\nstarted\n\n" + b"done\n"))
    now = int(time.time() * 1000)
    windows = Windows([(now - HOUR, now + HOUR)])
    bad = BadRecords()
    source = LocalLogSource(path="s3://archive/k8s")
    chunks = [c for s in source.shards(windows) for c in s.read(windows, bad, TimeRange())]
    assert chunks == [{(0, "team-a"): ["started", "started", "done"]}]
    assert dict(bad.counts) == {"blank": 1} and bad.examples == ["team-a/app.log.gz:3: blank line"]
    assert [c for s in source.shards(Windows([(0, HOUR)])) for c in s.read(Windows([(0, HOUR)]), bad, TimeRange())] == []


def _one_line_naming(exc: BaseException, url: str) -> str:
    text = str(exc)
    assert "\n" not in text and url in text, text
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    return text


def test_missing_bucket_fails_with_one_line_naming_the_url(s3):
    with pytest.raises(LogSourceError) as err:
        LocalLogSource(path="s3://no-such-bucket/k8s/").shards(WINDOWS)
    assert "bucket does not exist" in _one_line_naming(err.value, "s3://no-such-bucket/k8s/")
    # a bucket that goes away between planning and reading fails the shard, in one line
    client = s3.client()
    client.create_bucket(Bucket="going")
    client.put_object(Bucket="going", Key="k8s/a.jsonl.gz", Body=gz(_clean(1, 10)))
    shards = LocalLogSource(path="s3://going/k8s/").shards(WINDOWS)
    client.delete_object(Bucket="going", Key="k8s/a.jsonl.gz")
    client.delete_bucket(Bucket="going")
    with pytest.raises(locations.SourceUnavailable) as err:
        summarize_windows(shards, WINDOWS)
    _one_line_naming(err.value, "s3://going/k8s/a.jsonl.gz")


def test_unreachable_endpoint_fails_with_one_line_naming_the_url(s3, monkeypatch):
    client = s3.client()
    client.create_bucket(Bucket="archive")
    client.put_object(Bucket="archive", Key="k8s/a.jsonl.zst", Body=zst(_clean(1, 10)))
    shards = LocalLogSource(path="s3://archive/k8s/").shards(WINDOWS)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    s3.stop()  # the server goes away mid-run
    with pytest.raises(locations.SourceUnavailable) as err:
        summarize_windows(shards, WINDOWS)
    assert "Could not connect" in _one_line_naming(err.value, "s3://archive/k8s/a.jsonl.zst")
    with pytest.raises(LogSourceError) as err:
        LocalLogSource(path="s3://archive/k8s/").shards(WINDOWS)
    _one_line_naming(err.value, "s3://archive/k8s/")


def test_shards_and_descriptions_carry_no_credentials(s3):
    s3.client().create_bucket(Bucket="archive")
    s3.client().put_object(Bucket="archive", Key="k8s/a.jsonl.gz", Body=gz(_clean(1, 10)))
    source = LocalLogSource(path="s3://archive/k8s/", index_path="s3://archive/index/source-index.json")
    shards = source.shards(WINDOWS)
    blob = pickle.dumps(shards) + repr(shards).encode() + repr(source).encode() + source.describe().encode()
    assert SECRET_KEY.encode() not in blob and ACCESS_KEY.encode() not in blob
    assert LocalLogSource(path="s3://user:pw@archive/k8s/").describe() == "log files at s3://user:***@archive/k8s/"


def test_source_index_at_a_url_is_written_whole_and_skips_files(s3):
    client = s3.client()
    client.create_bucket(Bucket="archive")
    client.create_bucket(Bucket="artifacts")
    client.put_object(Bucket="archive", Key="k8s/early.jsonl.gz", Body=gz(jl(time=10, log="a") + jl(time=20, log="b")))
    client.put_object(Bucket="archive", Key="k8s/late.jsonl.zst", Body=zst(jl(time=2_000_000, log="c")))
    index_url = "s3://artifacts/logloop/source-index.json"
    source = LocalLogSource(path="s3://archive/k8s/", index_path=index_url)
    windows = Windows([(0, 4_000_000)])
    result = summarize_windows(source.shards(windows), windows)
    assert result.lines == 3
    source.remember(result.time_ranges)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="artifacts")["Contents"]]
    assert keys == ["logloop/source-index.json"]  # one object, no temporary left behind
    index = local_files.load_index(index_url)
    assert index["s3://archive/k8s/early.jsonl.gz"]["lo"] == 10 and index["s3://archive/k8s/late.jsonl.zst"]["hi"] == 2_000_000
    # a later run for the first window alone skips the late file
    assert [s.source for s in source.shards(Windows([(0, 1000)]))] == ["early.jsonl.gz"]
    # a changed object (new ETag) is read again
    client.put_object(Bucket="archive", Key="k8s/late.jsonl.zst", Body=zst(jl(time=30, log="moved")))
    assert len(source.shards(Windows([(0, 1000)]))) == 2


def test_local_index_is_replaced_atomically_and_default_locations(tmp_path):
    index = tmp_path / "home" / "source-index.json"
    local_files.save_index(index, {"a": {"id": "1:2", "lo": 1, "hi": 2}})
    local_files.save_index(f"file://{index}", {"b": {"id": "1:2", "lo": 1, "hi": 2}})
    assert local_files.load_index(index) == {"b": {"id": "1:2", "lo": 1, "hi": 2}}
    assert [p.name for p in index.parent.iterdir()] == ["source-index.json"]  # no temporary left
    assert local_files.load_index(tmp_path / "none.json") == {}
    assert file_source_location("/d/logs", "/d/source-index.json") == {"path": "/d/logs", "index_path": "/d/source-index.json"}
    assert file_source_location("/d/logs", "/d/source-index.json", "s3://archive/k8s/", "s3://artifacts/logloop/") == {
        "path": "s3://archive/k8s/", "index_path": "s3://artifacts/logloop/source-index.json"}
