"""`logloop score` and `logloop templates` read log files as the pipeline does, and `score --artifact URI`."""

from __future__ import annotations

import gzip
import io
import json
import sys

import orjson
import pytest
import zstandard

from orchestration.cli import app as cli
from scripts import demo_logs
from tests.orchestration.cli.test_feedback_cli import ENV_VARS, register_tiny_model
from tests.servers.s3_server import s3, s3_server  # noqa: F401  (fixtures)

BATCH = "demo/shop/web"        # what the records' batch fields (cluster_id/namespace/deployment) name
OTHER = "demo/shop/checkout"
START = 1_732_345_200_000


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ENV_VARS + ("LOGLOOP_TIME_FIELD", "LOGLOOP_MESSAGE_FIELD", "LOGLOOP_BATCH_FIELDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    register_tiny_model(tmp_path, BATCH)
    return tmp_path


@pytest.fixture
def records(tmp_path):
    """JSON Lines of two batches in Opni's shape, as the demo writes them."""
    out = demo_logs.generate(tmp_path / "gen", start_ms=START, hours=1, lines_per_hour=60, batches=[BATCH, OTHER],
                             anomaly_share=0.1, seed=3, file_name="app.jsonl")
    lines = (tmp_path / "gen" / "app.jsonl").read_bytes().splitlines()
    return [(n, orjson.loads(line)) for n, line in enumerate(lines, 1)]


def _batch(rec: dict) -> str:
    return f"{rec['cluster_id']}/{rec['kubernetes']['namespace_name']}/{rec['deployment']}"


def run(capsys, monkeypatch, *args, stdin: bytes | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def scored(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_lines_are_scored_by_their_message_field_like_the_plain_messages(home, tmp_path, records, capsys,
                                                                              monkeypatch):
    jsonl = tmp_path / "app.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for _, r in records))
    mine = [(n, r) for n, r in records if _batch(r) == BATCH]
    text = tmp_path / "messages.txt"
    text.write_text("".join(r["log"].replace("\n", " ") + "\n" for _, r in mine))
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(jsonl))
    assert code == 0, err
    got = scored(out)
    # only this batch's records, by their line numbers in the file; the other batch's are left out and said so
    assert [g["line"] for g in got] == [n for n, _ in mine] and len(mine) < len(records)
    assert f"{len(records) - len(mine)} line(s) of other batches left out" in err
    assert not any('"time"' in g["masked"] or g["masked"].startswith("{") for g in got)  # the message, not the JSON
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(text))
    assert code == 0, err
    plain = scored(out)
    assert [(g["score"], g["anomaly"], g["masked"]) for g in got] == [(p["score"], p["anomaly"], p["masked"])
                                                                      for p in plain]
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, str(jsonl))
    assert code == 0 and f"of {len(mine)} lines flagged" in err and "read as JSON Lines, message field 'log'" in err


@pytest.mark.parametrize("packing", ["gzip", "zstd"])
def test_compressed_files_and_streams_read_like_plain_ones(home, tmp_path, records, capsys, monkeypatch, packing):
    raw = b"".join(orjson.dumps(r) + b"\n" for _, r in records)
    pack = gzip.compress if packing == "gzip" else zstandard.ZstdCompressor().compress
    (tmp_path / "app.jsonl").write_bytes(raw)
    path = tmp_path / ("app.jsonl.gz" if packing == "gzip" else "app.jsonl.zst")
    path.write_bytes(pack(raw))
    _, want, _ = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(tmp_path / "app.jsonl"))
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(path))
    assert code == 0 and out == want, err
    # on standard input there is no name: the magic number says how it is packed, the first line what it holds
    code, out, err = run(capsys, monkeypatch, "templates", "--batch", BATCH, "--json", "-", stdin=pack(raw))
    assert code == 0, err
    assert sum(t["count"] for t in json.loads(out)) == sum(_batch(r) == BATCH for _, r in records)
    cut = pack(raw)[: len(pack(raw)) // 2]  # a file cut short: the lines before the damage, one bad record
    path.write_bytes(cut)
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(path))
    assert code == 1 and "corrupt_compression 1" in err and "Traceback" not in err


def test_the_format_is_detected_per_file_and_can_be_forced(home, tmp_path, capsys, monkeypatch):
    doc = {"time": START, "log": "user alice logged in", "cluster_id": "demo", "deployment": "web",
           "kubernetes": {"namespace_name": "shop"}}
    named_like_text = tmp_path / "app.log"  # JSON Lines by content, whatever the name says
    named_like_text.write_bytes(b"\n" + orjson.dumps(doc) + b"\n")
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(named_like_text))
    assert code == 0 and [g["masked"] for g in scored(out)] == ["user <user> logged in"], err
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", "--format", "text",
                         str(named_like_text))
    assert code == 0 and scored(out)[0]["masked"].startswith("{"), err  # forced: the JSON text is the message
    plain = tmp_path / "plain.jsonl"  # a JSON name, forced back to text
    plain.write_text("user bob logged in\n")
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", "--format", "text", str(plain))
    assert code == 0 and [g["masked"] for g in scored(out)] == ["user <user> logged in"]
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--format", "json", str(plain))
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: no log lines in {plain}: 1 bad line(s) not read as JSON Lines with time field "
                          f"'time' and message field 'log' (bad_json 1), the first {plain}:1: malformed JSON"), err


def test_the_configured_time_and_message_fields_are_read(home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOGLOOP_TIME_FIELD", "ts")
    monkeypatch.setenv("LOGLOOP_MESSAGE_FIELD", "event.text")
    path = tmp_path / "app.ndjson"
    path.write_text(json.dumps({"ts": "2026-01-01T00:00:00Z", "event": {"text": "user carol logged in"}}) + "\n"
                    + json.dumps({"event": {"text": "user alice logged in"}}) + "\n")
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(path))
    assert [(g["line"], g["masked"]) for g in scored(out)] == [(1, "user <user> logged in")]
    # the record without a time is not a message, as in a window: named, counted, exit 1
    assert code == 1 and f"  {path}:2: time field missing" in err
    assert err.splitlines()[-1] == ("error: 1 bad line(s) not read as JSON Lines with time field 'ts' and message "
                                    "field 'event.text' (no_time 1)")


def test_bad_lines_are_named_and_counted_and_the_rest_is_scored(home, tmp_path, capsys, monkeypatch):
    good = json.dumps({"time": START, "log": "user alice logged in"})
    path = tmp_path / "app.jsonl"
    path.write_bytes(f"{good}\n{{not json\n\n{json.dumps({'time': START, 'log': 7})}\n[1]\n{good}\n".encode())
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(path))
    assert code == 1 and [g["line"] for g in scored(out)] == [1, 6]  # the blank line 3 is no record, not bad
    assert f"{path}:2: malformed JSON" in err and f"{path}:4: message field missing" in err
    assert f"{path}:5: JSON value is not an object" in err
    assert err.splitlines()[-1].endswith("(bad_json 1, no_message 1, not_object 1)")


def test_only_other_batches_in_a_file_is_one_line_naming_them(home, tmp_path, records, capsys, monkeypatch):
    path = tmp_path / "other.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for _, r in records if _batch(r) == OTHER))
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, str(path))
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert f"no log lines of batch {BATCH!r} in {path}" in err and repr(OTHER) in err


def test_log_files_in_a_bucket_are_read_by_url(home, tmp_path, records, capsys, monkeypatch, s3):
    raw = b"".join(orjson.dumps(r) + b"\n" for _, r in records)
    (tmp_path / "app.jsonl").write_bytes(raw)
    s3.client().create_bucket(Bucket="archive")
    s3.client().put_object(Bucket="archive", Key="k8s/app.jsonl.gz", Body=gzip.compress(raw))
    _, want, _ = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(tmp_path / "app.jsonl"))
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", "s3://archive/k8s/app.jsonl.gz")
    assert code == 0 and out == want, err
    code, out, err = run(capsys, monkeypatch, "score", "--batch", BATCH, "s3://archive/k8s/missing.jsonl")
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: cannot read s3://archive/k8s/missing.jsonl")
    assert "Traceback" not in err


def test_templates_refuses_top_k_with_its_reason(home, tmp_path, capsys, monkeypatch):
    path = tmp_path / "app.log"
    path.write_text("user alice logged in\n")
    with pytest.raises(SystemExit) as exit_:
        run(capsys, monkeypatch, "templates", "--batch", BATCH, "--top-k", "5", str(path))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: logloop templates")
    assert "--top-k does not apply to templates: they are decided from the masking rules and the lines" in err


# -- score --artifact URI: a model_ready artifact_uri, read without the store -----------------------------------


def _artifact_of(home) -> str:
    from resources.store_resources import SQLiteStore

    return SQLiteStore(path=str(home / "store.sqlite")).get_model(BATCH).artifact_uri


def test_score_artifact_reads_a_local_path_or_file_url_without_the_store(home, tmp_path, capsys, monkeypatch):
    path = tmp_path / "app.log"
    path.write_text("user alice logged in\nuser bob logged out\n")
    _, want, _ = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(path))
    artifact = _artifact_of(home)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path / "elsewhere"))  # no store, no artifact storage here
    for uri in (artifact, "file://" + artifact):
        code, out, err = run(capsys, monkeypatch, "score", "--artifact", uri, "--json", str(path))
        assert code == 0 and out == want, err
    assert not (tmp_path / "elsewhere" / "store.sqlite").exists()
    code, _, err = run(capsys, monkeypatch, "score", "--artifact", artifact, str(path))
    assert code == 0 and f"from {artifact}" in err


def test_score_artifact_refuses_what_it_cannot_use_in_one_line(home, tmp_path, capsys, monkeypatch):
    path = tmp_path / "app.log"
    path.write_text("user alice logged in\n")
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    for args, message in [
        (["--artifact", str(not_zip)], f"model artifact {not_zip}: not a zip file"),
        (["--artifact", str(tmp_path / "none.zip")], "file not found"),
        (["--artifact", "https://example.com/m.zip"], "scheme 'https':// is not supported"),
        (["--artifact", _artifact_of(home), "--batch", BATCH], "give either --artifact URI or --batch B"),
        (["--artifact", _artifact_of(home), "--record"], "--record stores results under a batch"),
        ([], "which model? give --batch B (its registered model) or --artifact URI"),
    ]:
        code, out, err = run(capsys, monkeypatch, "score", *args, str(path))
        assert code == 1 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), (args, err)
        assert message in err, (args, err)


def test_score_artifact_reads_an_object_store_uri_and_checks_its_size_first(home, tmp_path, capsys, monkeypatch, s3):
    import tempfile

    import ops.register.artifact as artifact_module

    path = tmp_path / "app.log"
    path.write_text("user alice logged in\n")
    _, want, _ = run(capsys, monkeypatch, "score", "--batch", BATCH, "--json", str(path))
    data = open(_artifact_of(home), "rb").read()
    s3.client().create_bucket(Bucket="models")
    s3.client().put_object(Bucket="models", Key="models/web/nulog-1.zip", Body=data)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the object store's read cache is
    code, out, err = run(capsys, monkeypatch, "score", "--artifact", "s3://models/models/web/nulog-1.zip", "--json",
                         str(path))
    assert code == 0 and out == want, err
    code, out, err = run(capsys, monkeypatch, "score", "--artifact", "s3://models/models/web/none.zip", str(path))
    assert code == 1 and err == "error: model artifact s3://models/models/web/none.zip: not found\n"
    # larger than an artifact may be: refused by its declared size, before a byte is downloaded
    s3.client().put_object(Bucket="models", Key="models/web/big.zip", Body=data + b"\0" * 1000)
    monkeypatch.setattr(artifact_module, "MAX_TOTAL_BYTES", len(data) + 10)
    before = sorted(p.name for p in (tmp_path / "tmp").rglob("*") if p.is_file())
    code, out, err = run(capsys, monkeypatch, "score", "--artifact", "s3://models/models/web/big.zip", str(path))
    assert code == 1 and len(err.splitlines()) == 1 and "is too large" in err and f"at most {len(data) + 10:,}" in err
    assert sorted(p.name for p in (tmp_path / "tmp").rglob("*") if p.is_file()) == before  # nothing downloaded


def test_a_local_artifact_larger_than_an_artifact_may_be_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import ops.register.artifact as artifact_module
    from ops.register.artifact import ArtifactError, read_artifact

    big = tmp_path / "big.zip"
    big.write_bytes(b"\0" * 5000)
    monkeypatch.setattr(artifact_module, "MAX_TOTAL_BYTES", 4096)
    with pytest.raises(ArtifactError, match=r"is too large \(5,000 bytes, at most 4,096\)"):
        read_artifact(big)
