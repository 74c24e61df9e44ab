"""Anomaly trends: the jump rule, the `anomaly_rate_jump` check on anomaly_scores, and `logloop anomalies`."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import xml.etree.ElementTree as ET

import pytest
from dagster import AssetCheckSeverity, AssetKey, MaterializeResult, asset, materialize

from orchestration.checks.anomaly_rate import anomaly_rate_jump, judge_series
from orchestration.loop_settings import AnomalyJump, LoopSettings
from orchestration.partitions import PARTITION_FMT, time_partitions
from resources.store_resources import SQLiteStore
from resources.store_records import AnomalyCount
from tests.instances import fresh_instance

HOUR = 3_600_000
T0 = int(dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc).timestamp() * 1000)
RULE = AnomalyJump()  # factor 3, min_rate 0.02, 24 previous windows, at least 6, windows of >= 100 lines


def series(rates_and_lines, batch="shop/web", start=T0):
    return [AnomalyCount(batch, start + i * HOUR, start + (i + 1) * HOUR, lines, round(rate * lines), 1)
            for i, (rate, lines) in enumerate(rates_and_lines)]


def test_a_window_well_above_the_median_of_the_previous_ones_jumps():
    judged = judge_series(series([(0.01, 1000)] * 8 + [(0.05, 1000)]), RULE)
    last = judged[-1]
    assert last.jump is True and last.baseline_rate == pytest.approx(0.01) and last.threshold == pytest.approx(0.03)
    assert last.baseline_windows == 8
    assert judge_series(series([(0.01, 1000)] * 8 + [(0.025, 1000)]), RULE)[-1].jump is False  # under 3 x 1%


def test_the_floor_keeps_a_quiet_batch_from_firing_on_a_few_lines():
    assert judge_series(series([(0.0, 1000)] * 8 + [(0.015, 1000)]), RULE)[-1].jump is False  # 1.5% < 2% floor
    assert judge_series(series([(0.0, 1000)] * 8 + [(0.021, 1000)]), RULE)[-1].jump is True


def test_not_judged_without_enough_history_or_lines():
    short = judge_series(series([(0.01, 1000)] * 5 + [(0.5, 1000)]), RULE)[-1]
    assert short.jump is None and "5 previous window(s)" in short.why
    few = judge_series(series([(0.01, 1000)] * 8 + [(0.5, 99)]), RULE)[-1]
    assert few.jump is None and "99 line(s)" in few.why
    # windows with few lines are not part of a baseline either
    thin = judge_series(series([(0.5, 50)] * 10 + [(0.01, 1000)] * 6 + [(0.05, 1000)]), RULE)[-1]
    assert thin.jump is True and thin.baseline_windows == 6 and thin.baseline_rate == pytest.approx(0.01)


def test_the_median_ignores_one_earlier_spike_and_the_baseline_is_the_last_n_windows():
    spike = judge_series(series([(0.01, 1000)] * 7 + [(0.5, 1000)] + [(0.05, 1000)]), RULE)
    assert spike[-2].jump is True and spike[-1].jump is True and spike[-1].baseline_rate == pytest.approx(0.01)
    rule = AnomalyJump(baseline_windows=6, min_baseline_windows=6)
    shifted = judge_series(series([(0.2, 1000)] * 10 + [(0.01, 1000)] * 6 + [(0.04, 1000)]), rule)[-1]
    assert shifted.baseline_windows == 6 and shifted.jump is True
    # windows far back (more than 4 x N window lengths) are no baseline
    gap = series([(0.01, 1000)] * 8) + series([(0.05, 1000)], start=T0 + 200 * HOUR)
    assert judge_series(gap, rule)[-1].jump is None


def test_the_rule_is_configurable_in_the_loop_settings(tmp_path):
    from orchestration.loop_settings import LoopSettingsError, load_loop_settings

    loop = tmp_path / "loop.yaml"
    loop.write_text("anomaly_jump: {factor: 5, min_rate: 0.1, baseline_windows: 12, min_baseline_windows: 3, min_lines: 10}\n")
    rule = load_loop_settings(str(loop)).anomaly_jump
    assert (rule.factor, rule.min_rate, rule.baseline_windows, rule.min_baseline_windows, rule.min_lines) == (5, 0.1, 12, 3, 10)
    assert judge_series(series([(0.01, 100)] * 3 + [(0.09, 100)]), rule)[-1].jump is False  # under the 10% floor
    loop.write_text("anomaly_jump: {min_baseline_windows: 30}\n")
    with pytest.raises(LoopSettingsError, match="min_baseline_windows"):
        load_loop_settings(str(loop))
    assert LoopSettings().anomaly_jump == RULE


# ---- the check --------------------------------------------------------------------------------


@asset(key="anomaly_scores", partitions_def=time_partitions)
def scored_window(context):
    """Stands in for anomaly_scores: the counts are already in the store."""
    return MaterializeResult(metadata={"lines": 0})


def hour_key(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(PARTITION_FMT)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    s.record_sample_counts(hour_key(T0), T0, T0 + HOUR, {"shop/web": 100, "shop/db": 100, "shop/new": 100})
    s.record_anomaly_counts(
        series([(0.01, 1000)] * 10 + [(0.08, 2000)], "shop/web")      # jumps in its last window
        + series([(0.02, 500)] * 10 + [(0.03, 500)], "shop/db")       # steady
        + series([(0.5, 500)], "shop/new", start=T0 + 10 * HOUR))     # no history yet
    return s


def run_check(tmp_path, store, key):
    (tmp_path / "dh").mkdir(exist_ok=True)
    with fresh_instance(temp_dir=str(tmp_path / "dh")) as instance:
        result = materialize([scored_window, anomaly_rate_jump], partition_key=key, instance=instance,
                             resources={"store": store})
        assert result.success
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation


def test_the_check_warns_on_a_jump_and_plots_the_rate_per_window(tmp_path, store):
    key = hour_key(T0 + 10 * HOUR)
    ev = run_check(tmp_path, store, key)
    assert ev.passed is False and ev.severity == AssetCheckSeverity.WARN
    assert ev.asset_key == AssetKey("anomaly_scores") and ev.check_name == "anomaly_rate_jump"
    assert ev.description.startswith(f"anomaly rate jump in 1 batch-window(s) of {key}: shop/web at {key} "
                                     "(8.00% of 2,000 lines vs baseline 1.00%, threshold 3.00%)")
    md = ev.metadata
    [jump] = md["jumps"].data
    assert jump["batch"] == "shop/web" and jump["rate"] == 0.08 and jump["baseline_rate"] == pytest.approx(0.01)
    assert jump["threshold"] == pytest.approx(0.03) and jump["window_start_ms"] == T0 + 10 * HOUR
    assert md["batch_windows"].text == "2 judged, 1 not judged, 1 jump(s)"
    assert not any(isinstance(v, (int, float)) or hasattr(v, "value") and isinstance(v.value, (int, float))
                   for k, v in md.items() if k != "window_start")  # no automatic plots of counts over evaluations
    assert md["window_start"].value == (T0 + 10 * HOUR) / 1000
    assert "rate > max(3 x median rate of the previous 24 windows, 0.02)" in md["rule"].text
    table = md["judged"].md_str
    assert "| shop/web | 2026-11-20-10:00 | 2,000 | 160 | 8.00% | 1.00% | 3.00% | **jump** |" in table
    assert "| shop/new |" in table and "not judged: 0 previous window(s)" in table
    plots = re.findall(r"!\[anomaly rate per window of ([^\]]+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)",
                       md["anomaly_rate_plot"].md_str)
    assert [b for b, _ in plots][0] == "shop/web" and {b for b, _ in plots} == {"shop/web", "shop/db", "shop/new"}
    svg = ET.fromstring(base64.b64decode(plots[0][1]))  # well-formed SVG
    assert svg.tag.endswith("svg") and any(c.get("fill") == "#d02020" for c in svg.iter() if c.tag.endswith("circle"))


def test_the_check_passes_without_a_jump(tmp_path, store):
    ev = run_check(tmp_path, store, hour_key(T0 + 8 * HOUR))
    assert ev.passed is True and ev.description == f"no anomaly rate jump in {hour_key(T0 + 8 * HOUR)}: 2 batch-window(s) judged"
    assert ev.metadata["jumps"].data == []
    empty = run_check(tmp_path, store, hour_key(T0 + 30 * HOUR))
    assert empty.passed is True and "no anomaly counts" in empty.description


def test_the_check_runs_in_the_ingest_job_right_after_scoring():
    from orchestration.definitions import defs

    job = defs.resolve_job_def("ingest_logs")
    assert {"partition_summaries", "anomaly_scores", "anomaly_scores_anomaly_rate_jump"} <= {n.name for n in job.nodes}


# ---- logloop anomalies ----------------------------------------------------------------------


def logloop(*argv):
    """`logloop anomalies ...` as orchestration.cli runs it (its parser, StoreError -> exit 2)."""
    from orchestration.cli import anomalies as cli_anomalies
    from resources.store import StoreError

    parser = argparse.ArgumentParser(prog="logloop")
    cli_anomalies.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["anomalies", *argv])
    try:
        return args.func(args)
    except StoreError as exc:
        print(f"error: {exc}")
        return 2


@pytest.fixture
def home(tmp_path, monkeypatch, store):
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL", "LOGLOOP_LOOP_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))  # the store fixture's file is $LOGLOOP_HOME/store.sqlite
    return tmp_path


def test_the_table_shows_human_times_rates_and_jumps(home, capsys):
    assert logloop("--batch", "shop/web", "--since", "2026-11-20T07:00Z") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["BATCH", "WINDOW", "LINES", "ANOMALIES", "RATE", "BASELINE", "JUMP", "MODEL"]
    rows = [line.split() for line in out[1:5]]
    assert rows[0] == ["shop/web", "2026-11-20", "07:00Z", "1,000", "10", "1.00%", "1.00%", "no", "v1"]
    assert rows[3] == ["shop/web", "2026-11-20", "10:00Z", "2,000", "160", "8.00%", "1.00%", "JUMP", "v1"]
    assert out[-2] == "4 window(s) of 1 batch(es) since 2026-11-20 07:00Z: 5,000 lines, 190 anomalies (3.80%), 1 jump(s)"
    assert out[-1] == ("jump: rate > max(3 x median rate of the previous 24 windows, 0.02), with >= 6 previous windows; "
                       "windows of >= 100 lines")
    assert max(len(line) for line in out) <= 120


def test_json_has_the_exact_values(home, capsys):
    assert logloop("--since", "2026-11-20T10:00Z", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["batch"], r["jump"]) for r in rows] == [("shop/db", False), ("shop/new", None), ("shop/web", True)]
    web = rows[-1]
    assert web["window_start_ms"] == T0 + 10 * HOUR and web["window_end_ms"] == T0 + 11 * HOUR
    assert web["rate"] == 0.08 and web["baseline_rate"] == 0.01 and web["lines"] == 2000 and web["anomalies"] == 160
    assert rows[1]["not_judged_because"].startswith("0 previous window(s)")


def test_errors_are_one_line_and_exit_1(home, capsys):
    assert logloop("--batch", "nope/none") == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown batch 'nope/none'; known batches: shop/db, shop/new, shop/web"
    for bad in ("24x", "yesterday", "-1h", "0h", "2999-01-01"):
        assert logloop(f"--since={bad}") == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --since {bad!r}") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:  # a name no batch can have is a usage error
        logloop("--batch", "a\nb")
    assert exit_.value.code == 2 and "--batch: batch name 'a\\nb' contains control characters" in capsys.readouterr().err


def test_nothing_recent_says_so(home, capsys):
    assert logloop() == 0  # the counts are from 2026-11-20, more than 24 h ago
    assert capsys.readouterr().out.startswith("no anomaly counts for any batch in windows since ")
    assert logloop("--since", "30d") == 0 and "shop/web" in capsys.readouterr().out


# ---- template-count anomalies ----------------------------------------------------------------------

from ops.validate.template_counts import TemplateRule, judge_window  # noqa: E402

TRULE = TemplateRule()  # 24 previous windows, at least 3; min_count 20, jump/drop factor 10, drop baseline 20


def test_templates_new_jumping_and_dropping_against_the_mean_of_the_previous_windows():
    history = [{"a": 40, "b": 100, "c": 3}, {"a": 60, "b": 100}, {"a": 50, "b": 100, "d": 30}]
    now = {"a": 500, "b": 9, "c": 40, "e": 25, "f": 19, "d": 5}
    shifts = judge_window("shop/web", (T0, T0 + HOUR), now, history, TRULE)
    got = {s.template: (s.kind, s.count, round(s.baseline, 2)) for s in shifts}
    assert got == {"a": ("jump", 500, 50.0),      # 10 x its mean
                   "c": ("jump", 40, 1.0),        # a rare one, now 40 times as often
                   "e": ("new", 25, 0.0),         # never seen, and enough of it
                   "b": ("drop", 9, 100.0)}       # "f": new but under min_count; "d": mean 10, too rare to drop
    assert [s.kind for s in shifts] == ["jump", "jump", "new", "drop"] and shifts[0].template == "c"  # 40x first
    stopped = judge_window("shop/web", (T0, T0 + HOUR), {}, history, TRULE)
    assert [(s.template, s.kind, s.count) for s in stopped] == [("a", "drop", 0), ("b", "drop", 0)]
    assert judge_window("shop/web", (T0, T0 + HOUR), now, history[:2], TRULE) is None  # too little history
    assert judge_window("shop/web", (T0, T0 + HOUR), {"a": 499, "b": 100}, history, TRULE) == []  # under 10 x 50


def test_the_template_rule_is_configurable_in_the_loop_settings(tmp_path):
    from orchestration.loop_settings import LoopSettingsError, load_loop_settings

    path = tmp_path / "loop.yaml"
    path.write_text("template_counts: {history_windows: 6, min_history_windows: 2, jump_factor: 5}\n")
    rule = load_loop_settings(str(path)).template_counts.rule()
    assert (rule.history_windows, rule.min_history_windows, rule.jump_factor, rule.min_count) == (6, 2, 5.0, 20)
    path.write_text("template_counts: {history_windows: 2, min_history_windows: 3}\n")
    with pytest.raises(LoopSettingsError, match="min_history_windows \\(3\\) is more than history_windows \\(2\\)"):
        load_loop_settings(str(path))


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """The demo's incident: 4 hours of demo logs, and in the last one a normal message of the first batch
    repeated 50x as often; the real partition_summaries asset (with its checks) materialized for each hour."""
    from orchestration.assets.summaries import partition_summaries
    from orchestration.checks.template_counts import template_count_shift
    from resources.artifacts import LocalArtifactStorage
    from resources.log_source import LocalLogSource
    from scripts import demo_logs

    home = tmp_path_factory.mktemp("incident")
    demo_logs.generate(home / "logs", start_ms=T0, hours=4, lines_per_hour=2000, seed=0, burst_hour=3)
    store = SQLiteStore(path=str(home / "store.sqlite"))
    resources = {"store": store, "artifacts": LocalArtifactStorage(root=str(home / "artifacts")),
                 "log_source": LocalLogSource(path=str(home / "logs"),
                                              batch_fields=["cluster_id", "kubernetes.namespace_name", "deployment"])}
    evaluations = []
    (home / "dh").mkdir()
    with fresh_instance(temp_dir=str(home / "dh")) as instance:
        for h in range(4):
            result = materialize([partition_summaries, template_count_shift], partition_key=hour_key(T0 + h * HOUR),
                                 instance=instance, resources=resources)
            assert result.success
            evaluations.extend(result.get_asset_check_evaluations())
    from ops.mask.masking import Masker

    masker, key = Masker(), demo_logs.burst_template()
    burst_forms = {masker.mask(rec["log"]) for h, rec, k in demo_logs.iter_records(
        start_ms=T0, hours=4, lines_per_hour=2000, seed=0, burst_hour=3) if h == 3 and k == key}
    return home, evaluations, burst_forms


def test_the_check_flags_the_message_that_repeats_50x_and_plots_it(incident):
    from scripts import demo_logs

    _, evaluations, _ = incident
    assert [e.passed for e in evaluations] == [True, True, True, False]  # the first three: too little history
    ev = evaluations[-1]
    assert ev.asset_key == AssetKey("partition_summaries") and ev.check_name == "template_count_shift"
    assert ev.severity == AssetCheckSeverity.WARN
    shifts = ev.metadata["shifts"].data
    batch = demo_logs.DEFAULT_BATCHES[0]
    assert shifts and {s["batch"] for s in shifts} == {batch}
    assert all(s["kind"] in ("jump", "new") and s["window"] == hour_key(T0 + 3 * HOUR) for s in shifts)
    jumps = [s for s in shifts if s["kind"] == "jump"]
    assert jumps and all(s["ratio"] >= 10 for s in jumps)
    assert ev.description.startswith(f"template counts shifted in {hour_key(T0 + 3 * HOUR)}: ")
    svgs = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", ev.metadata["template_count_plot"].md_str)
    svg = ET.fromstring(base64.b64decode(svgs[0]))
    assert svg.tag.endswith("svg") and sum(1 for c in svg.iter() if c.get("fill") == "#d02020") == 1  # the burst bar


def test_logloop_anomalies_templates_reports_the_incident(incident, monkeypatch, capsys):
    home, _, burst = incident
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL", "LOGLOOP_LOOP_CONFIG", "LOGLOOP_ARTIFACTS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(home))
    assert logloop("--templates", "--json", "--since", "2026-11-20") == 0
    shifts = json.loads(capsys.readouterr().out)
    assert shifts and all(s["window_start_ms"] == T0 + 3 * HOUR for s in shifts)
    top = shifts[0]
    assert top["kind"] == "jump" and top["ratio"] >= 10 and top["count"] >= 10 * top["baseline"]
    assert top["template"] in burst
    assert all(s["template"] in burst for s in shifts)  # nothing else of any batch shifted
    assert logloop("--templates", "--since", "2026-11-20") == 0
    out = capsys.readouterr().out
    assert "jump:" in out and "rule: new:" in out
    assert re.search(rf"\n{len(shifts)} template shift\(s\) in 3 judged batch-window\(s\) of 3 batch\(es\)", out)
    assert logloop("--templates", "--since", "2026-11-20T03:00Z", "--batch", "demo/shop/payments") == 0
    assert capsys.readouterr().out.startswith("no template count shift for batch 'demo/shop/payments'")
    assert logloop("--templates", "--batch", "no/such", "--since", "2026-11-20") == 1
    assert "unknown batch 'no/such'" in capsys.readouterr().err


def test_the_template_check_runs_in_the_ingest_job_and_alerts_through_the_webhook():
    from orchestration.sensors.alerts import CHECKS, TEMPLATE_CHECK, Failure, payload
    from orchestration.definitions import defs

    job = defs.resolve_job_def("ingest_logs")
    assert "partition_summaries_template_count_shift" in {n.name for n in job.nodes}
    assert TEMPLATE_CHECK in CHECKS
    shift = {"batch": "shop/web", "template": "published event", "kind": "jump", "count": 500}
    body = payload(Failure(7, TEMPLATE_CHECK, "run-1", "2026-11-20-03:00", "template counts shifted in ...", "WARN",
                           {"shifts": [shift]}, 0.0))
    assert body["kind"] == "template_shift" and body["shifts"] == [shift]
    assert body["text"].startswith("logloop: template counts shifted: ")
