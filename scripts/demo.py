"""`make demo`: generate demo logs, then materialize the whole chain with `dagster asset materialize`.

The story: DEMO_HOURS hours of logs of three workloads, the last hour an incident: a quarter of its
lines are errors, and one normal message repeats 50x as often. Each batch's model trains on the
hours before the incident; then every window is scored (anomaly_scores), so `logloop anomalies`
shows the counts per window, and the anomaly_rate_jump check, which needs six earlier windows as a
baseline, flags the incident hour (the template_count_shift check flags the repeated message).
The demo ends with the next commands to run, spelled so that they work as printed.

Runs against a persistent DAGSTER_HOME inside the data folder, so `make dev` afterwards
shows the runs, the assets and each batch's model in the Dagster UI.

Each stage prints a few lines: what the assets logged (INFO and above; the train step's
progress at each epoch's end, or every 30 s), warnings and errors, and how long it took.
Dagster's DEBUG event stream goes to `<data>/demo-logs/<stage>.log`; a stage that fails
prints its whole output. `-v` (or DEMO_VERBOSE=1, e.g. `make demo DEMO_VERBOSE=1`) prints
everything as it comes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import demo_logs  # noqa: E402
from orchestration import settings  # noqa: E402

# Seven hours: six windows of baseline (the anomaly_rate_jump check's min_baseline_windows) and
# the incident; about as many lines in all as three hours of 4,000, so training costs the same.
HOURS = int(os.environ.get("DEMO_HOURS", "7"))
LINES_PER_HOUR = int(os.environ.get("DEMO_LINES_PER_HOUR", "1500"))
INCIDENT_SHARE = float(os.environ.get("DEMO_INCIDENT_SHARE", "0.25"))
PORT = 3000  # `make dev`'s default
BIN = Path(sys.executable).parent
VERBOSE = False
LOG_DIR: Path | None = None
STAGES = 0

# Dagster's console lines: "<time> - dagster - LEVEL - JOB - RUN_ID - [PID - ][STEP - ]message"
EVENT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - dagster - (?P<level>[A-Z]+) - \S+ - "
                   r"[0-9a-f-]{36} - (?:\d+ - )?(?:(?P<step>[a-z_][a-z0-9_]*) - )?(?P<message>.*)$")
PROGRESS = re.compile(r"^(?:epoch \d+(?:/\d+)?, step (?P<a>\d+)/(?P<b>\d+)|shard (?P<c>\d+)/(?P<d>\d+) done)")
SHOWN = ("INFO", "WARNING", "ERROR", "CRITICAL")
PROGRESS_EVERY_S = 30


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def shown(level: str, message: str, last_progress: dict, step_key: str) -> bool:
    """Whether a quiet run prints this line: INFO and above, but progress lines (epoch/step,
    shard i/n) only when a loop ends or every PROGRESS_EVERY_S seconds."""
    if level not in SHOWN:
        return False
    m = PROGRESS.match(message)
    if not m or level != "INFO":
        return True
    a, b = (m.group("a"), m.group("b")) if m.group("a") else (m.group("c"), m.group("d"))
    now = time.monotonic()
    if a == b or now - last_progress.get(step_key, 0.0) >= PROGRESS_EVERY_S:
        last_progress[step_key] = now
        return True
    return False


def dagster(name: str, *args: str) -> None:
    """`dagster asset materialize ARGS`: in full with -v; else a few lines, and all of it on failure."""
    global STAGES
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", *args]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    if VERBOSE:
        subprocess.run(cmd, check=True, cwd=ROOT)
        return
    STAGES += 1
    log_path = LOG_DIR / f"{STAGES:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}.log"
    captured: list[str] = []
    last_progress: dict[str, float] = {}
    level, printing, errors_shown = None, False, False  # the event a continuation line belongs to
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            log.write(line)
            captured.append(line)
            m = EVENT.match(line.rstrip("\n"))
            if m:
                level, step_key = m.group("level"), m.group("step") or "run"
                printing = shown(level, m.group("message"), last_progress, step_key)
                if printing:
                    errors_shown |= level in ("ERROR", "CRITICAL")
                    tag = "" if level == "INFO" else f"{level}: "
                    print(f"   {step_key}: {tag}{m.group('message')}", flush=True)
            elif printing and level in SHOWN:  # the rest of a multi-line message (e.g. an error's stack)
                print("   " + line.rstrip("\n"), flush=True)
        rc = proc.wait()
    if rc != 0:
        if not errors_shown:  # it failed outside a run's events (e.g. bad config): show all it said
            print("".join(captured), end="", flush=True)
        print(f"error: `{' '.join(cmd[1:3])}` failed (exit {rc}); Dagster's whole output is in {log_path}",
              file=sys.stderr, flush=True)
        raise SystemExit(rc)
    print(f"   done in {time.monotonic() - t0:.0f} s (Dagster's full output: {log_path})", flush=True)


def main(argv: list[str] | None = None) -> int:
    global VERBOSE, LOG_DIR
    parser = argparse.ArgumentParser(description="generate demo logs and materialize the whole chain")
    parser.add_argument("-v", "--verbose", action="store_true", help="print Dagster's whole output (DEBUG events)")
    args = parser.parse_args(argv)
    VERBOSE = args.verbose or os.environ.get("DEMO_VERBOSE", "") not in ("", "0")
    home = settings.data_home()
    LOG_DIR = home / "demo-logs"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(ROOT / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")

    logs = settings.logs_dir()
    start_ms = demo_logs.default_start_ms(HOURS)
    step(f"generating {HOURS} h of demo logs into {logs}, the last hour an incident")
    # the incident, in the last hour: a quarter of the lines are errors (anomaly_rate_jump flags the window),
    # and one normal message repeats 50x as often (template_count_shift flags it)
    summary = demo_logs.generate(logs, start_ms=start_ms, hours=HOURS, lines_per_hour=LINES_PER_HOUR, seed=0,
                                 incident_share=INCIDENT_SHARE if HOURS > 1 else None,
                                 burst_hour=HOURS - 1 if HOURS > 1 else None)
    print(json.dumps({k: summary[k] for k in ("lines", "anomalies", "batches")}))

    first = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
    last = first + dt.timedelta(hours=HOURS - 1)
    fmt = "%Y-%m-%d-%H:%M"
    windows = f"{first:{fmt}}...{last:{fmt}}"
    step("data stage: fetch, mask and summarise each hourly window")
    dagster("data-stage", "--select", "partition_summaries", "--partition-range", windows)

    from orchestration.resources import resource

    store = resource("store")
    run_config = training_config(LOG_DIR, f"{last:{fmt}}" if HOURS > 1 else None)
    for batch in sorted(summary["batches"]):
        step(f"batch {batch}: resample -> train -> validate -> register"
             + (" (on the hours before the incident)" if HOURS > 1 else ""))
        dagster(
            f"train-{batch}", "--select", "training_sample,nulog_model,registered_model",
            "--partition", batch, "-c", str(run_config),
        )
        model = store.get_model(batch)
        if model:
            gate = ", ".join(f"{label} {model.metrics[key]:.3f}" for key, label in
                             (("top_k_accuracy", "top-k accuracy"), ("anomaly_share", "flagged"))
                             if isinstance(model.metrics.get(key), (int, float)))
            print(f"model: {batch} v{model.version}" + (f" ({gate})" if gate else "") + f" -> {model.artifact_uri}")

    step("registered models (logloop models list)")
    subprocess.run([str(BIN / "logloop"), "models", "list"], check=True, cwd=ROOT)

    step("score every window with its batch's model (anomaly_scores, and the anomaly_rate_jump check)")
    dagster("score", "--select", "anomaly_scores", "--partition-range", windows)
    step("anomalies per window (logloop anomalies)")
    subprocess.run([str(BIN / "logloop"), "anomalies", "--since", f"{HOURS + 1}h"], check=True, cwd=ROOT)
    step("the incident's template counts against the hours before (logloop anomalies --templates)")
    subprocess.run([str(BIN / "logloop"), "anomalies", "--templates", "--since", f"{first:%Y-%m-%dT%H:%MZ}"],
                   check=True, cwd=ROOT)

    incident = Path(summary["files"][-1])
    print("\nNext:")
    for command, why in next_commands(Path.cwd(), home, incident, sorted(summary["batches"])[-1], HOURS + 1,
                                      dagster_home):
        print(f"  {command}\n      {why}")
    return 0


def training_config(folder: Path, window_end: str | None) -> Path:
    """config/demo.yaml (demo-sized training), with training data up to `window_end` (exclusive)."""
    import yaml

    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    if window_end is not None:
        config["ops"].setdefault("training_sample", {}).setdefault("config", {})["window_end"] = window_end
    path = folder / "demo-training.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _shell_path(path: Path, cwd: Path | None = None) -> str:
    """`path` as a shell command line names it from `cwd`: relative below it, else (or without a `cwd`)
    absolute; quoted."""
    import shlex

    path = Path(os.path.abspath(path))
    shown = str(path)
    if cwd is not None and path.is_relative_to(cwd):
        shown = str(path.relative_to(cwd))
    return shlex.quote(shown)


def next_commands(cwd: Path, home: Path, incident_file: Path, batch: str, hours: int,
                  dagster_home: Path | None = None) -> list[tuple[str, str]]:
    """The three commands to run next, each as typed into a shell in `cwd` (the CLI by its path in the
    virtual environment, which needs no activation; LOGLOOP_HOME, and DAGSTER_HOME for the UI, given
    when they are not where the Makefile puts them), with what it shows."""
    import shlex

    cwd, home = Path(os.path.abspath(cwd)), Path(os.path.abspath(home))
    cli = ("" if home == cwd / "data" else f"LOGLOOP_HOME={_shell_path(home, cwd)} ")  # the CLI's default: ./data
    cli += _shell_path(BIN / "logloop", cwd)
    # the Makefile's default: data/ beside it; `make -C` reads relative paths from there, so absolute ones
    make = "" if home == ROOT / "data" else f"LOGLOOP_HOME={_shell_path(home)} "
    if dagster_home is not None and Path(os.path.abspath(dagster_home)) != home / "dagster_home":
        make += f"DAGSTER_HOME={_shell_path(dagster_home)} "
    make += "make" if cwd == ROOT else f"make -C {_shell_path(ROOT, cwd)}"
    return [
        (f"{cli} anomalies --since {hours}h", "lines, anomalies and the rate per window; JUMP marks the incident hour"),
        (f"{cli} score --batch {shlex.quote(batch)} {_shell_path(incident_file, cwd)}",
         "score the incident hour's log file line by line with that batch's model"),
        (f"{make} dev PORT={PORT}", f"the Dagster UI at http://127.0.0.1:{PORT}: runs, assets, checks, each batch's model"),
    ]


if __name__ == "__main__":
    sys.exit(main())
