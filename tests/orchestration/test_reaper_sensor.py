"""The reaper is a sensor: it reaps in its tick, starts no run, and says what it did in the tick."""

from __future__ import annotations

import json
import time

import pytest
from dagster import DagsterRunStatus, build_sensor_context
from dagster._core.test_utils import create_run_for_test

from orchestration.loop_settings import LoopSettings, LoopSettingsError, load_loop_settings
from orchestration.sensors.reaper import dead_task_reaper, describe_reap, evaluate_reaper


def tick(instance, store):
    """A tick of the real sensor definition, with its resource."""
    return dead_task_reaper.evaluate_tick(build_sensor_context(instance=instance, resources={"store": store}))


def test_a_dead_task_is_reaped_in_the_tick_and_no_run_is_started(instance, store):
    now = int(time.time() * 1000)
    hung = create_run_for_test(instance, job_name="train_model", status=DagsterRunStatus.STARTED)
    store.record_task_event("hung", "shop/web", "running", run_id=hung.run_id, deadline_ms=now - 1_000)
    done = create_run_for_test(instance, job_name="train_model", status=DagsterRunStatus.FAILURE)
    store.record_task_event("silent", "shop/db", "running", run_id=done.run_id, deadline_ms=now + 3_600_000)
    alive = create_run_for_test(instance, job_name="train_model", status=DagsterRunStatus.STARTED)
    store.record_task_event("busy", "shop/api", "running", run_id=alive.run_id, deadline_ms=now + 3_600_000)
    runs_before = len(instance.get_runs())

    data = tick(instance, store)

    assert data.run_requests == [] and len(instance.get_runs()) == runs_before  # no run, no reaper job
    assert store.get_task("hung").state == "dead" and store.get_task("silent").state == "failed"
    assert store.get_task("busy").state == "running"
    assert instance.get_run_by_id(hung.run_id).status == DagsterRunStatus.CANCELED
    reason = data.skip_message
    assert reason.startswith("reaped 2 task(s) of 3 active (1 dead, 1 settled): ")
    assert "hung (shop/web) dead: past its deadline" in reason and "run force-canceled" in reason
    assert "silent (shop/db) settled: run ended FAILURE" in reason
    assert json.loads(data.cursor)["dead"] == 1

    again = tick(instance, store)  # dead stays dead; the live one is left alone
    assert again.run_requests == [] and store.get_task("hung").state == "dead"
    assert again.skip_message == "nothing to reap: 1 active task(s), all alive and within their deadlines"


def test_nothing_to_do_is_a_skip_reason(instance, store):
    data = tick(instance, store)
    assert data.run_requests == [] and data.skip_message == "nothing to reap: no active tasks"


def test_the_tick_log_holds_the_decisions(instance, store):
    store.record_task_event("late", "b", "scheduling", deadline_ms=1_000)  # past its deadline, no run yet
    context = build_sensor_context(instance=instance, resources={"store": store})
    lines = []
    context.log.info = lambda m, *a, **k: lines.append(("info", m))  # the tick's log
    context.log.warning = lambda m, *a, **k: lines.append(("warning", m))
    result = evaluate_reaper(context, store)
    assert result.run_requests == [] and store.get_task("late").state == "dead"
    assert "late (b) dead: past its deadline 1970-01-01T00:00:01+00:00, it had no run" in result.skip_reason.skip_message
    assert ("warning", "task late of batch 'b' is dead (run no run)") in lines
    assert lines[-1] == ("info", result.skip_reason.skip_message)


def test_describe_reap_caps_long_reports():
    events = [f"t{i} (b) dead: past its deadline" for i in range(15)]
    text = describe_reap({"dead": [f"t{i}" for i in range(15)], "settled": [], "checked": 20, "events": events})
    assert text.startswith("reaped 15 task(s) of 20 active (15 dead, 0 settled)") and text.endswith("; and 5 more")


def test_the_reaper_is_a_sensor_at_the_configured_interval():
    from orchestration.definitions import defs

    repo = defs.get_repository_def()
    assert "dead_task_reaper" in {s.name for s in repo.sensor_defs}
    # the old schedule and its job are gone; the sensor has a name of its own, since Dagster keeps a
    # schedule's state under its name (a sensor called reap_dead_tasks would read the old schedule's)
    assert not {"reap_dead_tasks"} & {s.name for s in [*repo.schedule_defs, *repo.sensor_defs]}
    assert "reap_dead_tasks_job" not in {j.name for j in repo.get_all_jobs()}
    assert dead_task_reaper.minimum_interval_seconds == LoopSettings().reaper_interval_s == 300


def test_reaper_cron_in_an_old_loop_yaml_still_loads(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("reaper_cron: '*/5 * * * *'\n")
    assert load_loop_settings(str(old)).reaper_interval_s == 300
    old.write_text("reaper_cron: '* * * * *'\n")
    assert load_loop_settings(str(old)).reaper_interval_s == 60
    old.write_text("reaper_cron: '0 * * * *'\nreaper_interval_s: 60\n")
    with pytest.raises(LoopSettingsError, match="reaper_cron is replaced by reaper_interval_s"):
        load_loop_settings(str(old))
    old.write_text("reaper_cron: 'every five minutes'\n")
    with pytest.raises(LoopSettingsError, match="not a valid cron string"):
        load_loop_settings(str(old))
    old.write_text("reaper_interval_s: 1\n")
    with pytest.raises(LoopSettingsError, match="reaper_interval_s"):
        load_loop_settings(str(old))
