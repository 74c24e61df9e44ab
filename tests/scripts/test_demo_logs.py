"""Tests for scripts.demo_logs, the synthetic Kubernetes log generator."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from scripts import demo_logs
from scripts.demo_logs import DEFAULT_BATCHES, HOUR_MS, default_start_ms, generate, iter_records, parse_batch


START = 1_732_345_200_000  # 2024-11-23T07:00:00Z


def _read(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _batch_of(rec: dict) -> str:
    return f"{rec['cluster_id']}/{rec['kubernetes']['namespace_name']}/{rec['deployment']}"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[list[dict]]]:
    out = tmp_path_factory.mktemp("logs")
    summary = generate(out, start_ms=START, hours=3, lines_per_hour=3000, anomaly_share=0.02, seed=7)
    return summary, [_read(f) for f in summary["files"]]


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    kw = dict(start_ms=START, hours=2, lines_per_hour=500, seed=42)
    a = generate(tmp_path / "a", **kw)
    b = generate(tmp_path / "b", **kw)
    c = generate(tmp_path / "c", **{**kw, "seed": 43})
    assert [Path(f).name for f in a["files"]] == [Path(f).name for f in b["files"]]
    assert {k: v for k, v in a.items() if k != "files"} == {k: v for k, v in b.items() if k != "files"}
    for fa, fb, fc in zip(a["files"], b["files"], c["files"]):
        assert Path(fa).read_bytes() == Path(fb).read_bytes()
        assert Path(fa).read_bytes() != Path(fc).read_bytes()


def test_one_file_gives_the_same_records_as_hourly_files(tmp_path: Path) -> None:
    kw = dict(start_ms=START, hours=2, lines_per_hour=300, seed=5)
    hourly = generate(tmp_path / "h", **kw)
    single = generate(tmp_path / "s", file_name="all.jsonl", **kw)
    assert single["files"] == [str(tmp_path / "s" / "all.jsonl")]
    joined = b"".join(Path(f).read_bytes() for f in hourly["files"])
    assert Path(single["files"][0]).read_bytes() == joined


def test_records_have_opni_shape(sample: tuple[dict, list[list[dict]]]) -> None:
    summary, files = sample
    n = 0
    for recs in files:
        for rec in recs:
            n += 1
            assert set(rec) == {"time", "log", "cluster_id", "kubernetes", "deployment", "anomaly"}
            assert isinstance(rec["time"], int)
            assert isinstance(rec["log"], str) and rec["log"]
            assert isinstance(rec["anomaly"], bool)
            assert set(rec["kubernetes"]) == {"namespace_name", "pod_name"}
            assert rec["kubernetes"]["pod_name"].startswith(rec["deployment"] + "-")
            assert _batch_of(rec) in DEFAULT_BATCHES
    assert n == summary["lines"] == 3 * 3000


def test_times_in_range_and_sorted_per_file(sample: tuple[dict, list[list[dict]]]) -> None:
    summary, files = sample
    assert len(summary["files"]) == 3
    assert [Path(f).name for f in summary["files"]] == [
        "logs-20241123T070000Z.jsonl", "logs-20241123T080000Z.jsonl", "logs-20241123T090000Z.jsonl"]
    for h, recs in enumerate(files):
        times = [r["time"] for r in recs]
        assert times == sorted(times)
        assert START + h * HOUR_MS <= times[0] and times[-1] < START + (h + 1) * HOUR_MS
        # roughly uniform: each quarter of the hour holds about a quarter of the lines
        quarters = Counter((t - START - h * HOUR_MS) * 4 // HOUR_MS for t in times)
        assert all(abs(quarters[q] / len(times) - 0.25) < 0.05 for q in range(4))


def test_anomaly_share_close_to_requested(sample: tuple[dict, list[list[dict]]]) -> None:
    summary, files = sample
    recs = [r for f in files for r in f]
    k = sum(r["anomaly"] for r in recs)
    assert k == summary["anomalies"]
    assert abs(k / len(recs) - 0.02) < 0.006
    anomalous = [r["log"] for r in recs if r["anomaly"]]
    normal = {r["log"] for r in recs if not r["anomaly"]}
    assert len(set(anomalous)) > 0.8 * len(anomalous)
    assert not normal & set(anomalous)


def test_anomaly_share_zero_and_one(tmp_path: Path) -> None:
    none = generate(tmp_path / "z", start_ms=START, hours=1, lines_per_hour=400, anomaly_share=0.0)
    assert none["anomalies"] == 0
    allx = generate(tmp_path / "o", start_ms=START, hours=1, lines_per_hour=400, anomaly_share=1.0)
    assert allx["anomalies"] == 400


def test_several_batches_present(sample: tuple[dict, list[list[dict]]]) -> None:
    summary, files = sample
    counts = Counter(_batch_of(r) for f in files for r in f)
    assert set(counts) == set(DEFAULT_BATCHES)
    assert dict(counts) == summary["batches"]
    assert all(c > 0.15 * summary["lines"] for c in counts.values())
    # each batch speaks its own dialect
    first = {b: next(r["log"] for f in files for r in f if _batch_of(r) == b and not r["anomaly"]) for b in counts}
    assert len(set(first.values())) == len(first)


def test_templates_skewed_per_batch() -> None:
    per_batch: dict[str, Counter] = {}
    for _h, rec, key in iter_records(start_ms=START, hours=2, lines_per_hour=4000, anomaly_share=0.0, seed=3):
        per_batch.setdefault(_batch_of(rec), Counter())[key] += 1
    assert set(per_batch) == set(DEFAULT_BATCHES)
    for batch, counts in per_batch.items():
        assert 15 <= len(counts) <= 40, (batch, len(counts))
        freqs = sorted(counts.values(), reverse=True)
        assert freqs[0] >= 8 * statistics.median(freqs), (batch, freqs)
        assert freqs[0] / sum(freqs) > 0.15


def test_anomalies_come_from_their_own_templates() -> None:
    for _h, rec, key in iter_records(start_ms=START, hours=1, lines_per_hour=3000, anomaly_share=0.05, seed=9):
        assert rec["anomaly"] == key.startswith("anomaly:")


def test_realistic_fields_appear(sample: tuple[dict, list[list[dict]]]) -> None:
    import re

    logs = [r["log"] for f in sample[1] for r in f]
    text = "\n".join(logs)
    assert re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", text)  # UUID
    assert re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", text)  # IPv4
    assert re.search(r"\b[0-9a-f]{1,4}(:[0-9a-f]{0,4}){3,7}\b", text)  # IPv6
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \w+\.go:\d+\] ", text, re.M)  # klog
    assert re.search(r'"(GET|POST|PUT|DELETE|PATCH|OPTIONS) /\S* HTTP/[12]\.[01]" \d{3} \d+', text)  # nginx access
    assert re.search(r"duration=\d+(\.\d+)?(ms|s|µs)", text)
    assert re.search(r" 1 --- \[.{15}\] ", text)  # Spring Boot
    assert re.search(r"-[bcdfghjklmnpqrstvwxz2456789]{9,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$",
                     sample[1][0][0]["kubernetes"]["pod_name"])


def test_custom_batches_and_all_profiles(tmp_path: Path) -> None:
    batches = ["prod/data/postgres", "prod/ops/cert-operator", "prod/web/frontend", "prod/pay/ledger",
               "prod/edge/envoy-gateway", "prod/misc/zzz"]
    s = generate(tmp_path, start_ms=START, hours=1, lines_per_hour=3000, batches=batches, anomaly_share=0.05, seed=1)
    assert set(s["batches"]) == set(batches) and all(v > 0 for v in s["batches"].values())
    recs = _read(s["files"][0])
    assert {_batch_of(r) for r in recs} == set(batches)
    pg = [r["log"] for r in recs if r["deployment"] == "postgres"]
    assert any(" UTC [" in line and "LOG:  " in line for line in pg)
    op = [r["log"] for r in recs if r["deployment"] == "cert-operator"]
    assert any(line[:1] in "IWE" and ".go:" in line for line in op)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_batch("only/two")
    with pytest.raises(ValueError):
        generate(tmp_path, start_ms=START, batches=["a//c"])
    with pytest.raises(ValueError):
        generate(tmp_path, start_ms=START, anomaly_share=1.5)
    with pytest.raises(ValueError):
        generate(tmp_path, start_ms=START, hours=-1)
    with pytest.raises(ValueError):
        generate(tmp_path, start_ms=START, batches=[])


def test_default_start_is_last_full_hours() -> None:
    now = START + 25 * 60_000 + 123  # 07:25:00.123
    assert default_start_ms(3, now_ms=now) == START - 3 * HOUR_MS
    assert default_start_ms(1, now_ms=START) == START - HOUR_MS


def test_cli_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = int(time.time() * 1000)
    assert demo_logs.main(["--out", str(tmp_path), "--hours", "2", "--lines-per-hour", "200", "--seed", "3"]) == 0
    after = int(time.time() * 1000)
    summary = json.loads(capsys.readouterr().out)
    assert summary["lines"] == 400 and len(summary["files"]) == 2
    assert summary["start_ms"] in {default_start_ms(2, now_ms=before), default_start_ms(2, now_ms=after)}
    recs = _read(summary["files"][-1])
    assert recs[-1]["time"] < summary["start_ms"] + 2 * HOUR_MS <= after

    demo_logs.main(["--out", str(tmp_path / "x"), "--hours", "1", "--lines-per-hour", "50", "--start-ms", str(START),
                    "--batch", "c/n/api", "--batch", "c/n/db", "--file-name", "one.jsonl"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["start_ms"] == START
    assert summary["files"] == [str(tmp_path / "x" / "one.jsonl")]
    assert set(summary["batches"]) == {"c/n/api", "c/n/db"}


def test_an_incident_makes_the_last_hour_anomalous_and_leaves_the_others_alone(tmp_path: Path) -> None:
    kw = dict(start_ms=START, hours=4, lines_per_hour=2000, seed=11)
    calm = generate(tmp_path / "calm", **kw)
    incident = generate(tmp_path / "incident", incident_share=0.25, **kw)
    for a, b in zip(calm["files"][:-1], incident["files"][:-1]):
        assert Path(a).read_bytes() == Path(b).read_bytes()  # the hours before are the same
    last = _read(incident["files"][-1])
    assert len(last) == 2000 and 0.2 < sum(r["anomaly"] for r in last) / len(last) < 0.3
    assert sum(r["anomaly"] for r in _read(calm["files"][-1])) < 60
    with pytest.raises(ValueError, match="incident_share"):
        generate(tmp_path / "bad", incident_share=1.5, **kw)
