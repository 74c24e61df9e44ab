"""`make demo`: generate demo logs, then materialize the whole chain with `dagster asset materialize`.

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

HOURS = int(os.environ.get("DEMO_HOURS", "4"))  # the last hour holds the incident: 3 before it to compare with
LINES_PER_HOUR = int(os.environ.get("DEMO_LINES_PER_HOUR", "4000"))
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
    step(f"generating {HOURS} h of demo logs into {logs}")
    # the incident: in the last hour one normal message repeats 50x as often (template_count_shift flags it)
    summary = demo_logs.generate(logs, start_ms=start_ms, hours=HOURS, lines_per_hour=LINES_PER_HOUR, seed=0,
                                 burst_hour=HOURS - 1)
    print(json.dumps({k: summary[k] for k in ("lines", "anomalies", "batches")}))

    first = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
    last = first + dt.timedelta(hours=HOURS - 1)
    fmt = "%Y-%m-%d-%H:%M"
    step("data stage: fetch, mask and summarise each hourly window")
    dagster("data-stage", "--select", "partition_summaries", "--partition-range", f"{first:{fmt}}...{last:{fmt}}")

    from orchestration.resources import resource

    store = resource("store")
    for batch in sorted(summary["batches"]):
        step(f"batch {batch}: resample -> train -> validate -> register")
        dagster(
            f"train-{batch}", "--select", "training_sample,nulog_model,registered_model",
            "--partition", batch, "-c", str(ROOT / "config" / "demo.yaml"),
        )
        model = store.get_model(batch)
        if model:
            gate = ", ".join(f"{label} {model.metrics[key]:.3f}" for key, label in
                             (("top_k_accuracy", "top-k accuracy"), ("anomaly_share", "flagged"))
                             if isinstance(model.metrics.get(key), (int, float)))
            print(f"model: {batch} v{model.version}" + (f" ({gate})" if gate else "") + f" -> {model.artifact_uri}")

    step("registered models (logloop models list)")
    subprocess.run([str(BIN / "logloop"), "models", "list"], check=True, cwd=ROOT)
    step("the incident of the last hour: template counts against the hours before (logloop anomalies --templates)")
    subprocess.run([str(BIN / "logloop"), "anomalies", "--templates", "--since", f"{first:%Y-%m-%dT%H:%MZ}"],
                   check=True, cwd=ROOT)
    print(f"\nDAGSTER_HOME={dagster_home}; run `make dev` and open http://127.0.0.1:3000 to see the runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
