"""`make demo`: generate demo logs, then materialize the whole chain with `dagster asset materialize`.

Runs against a persistent DAGSTER_HOME inside the data folder, so `make dev` afterwards
shows the runs, the assets and each batch's model in the Dagster UI.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops import demo_logs  # noqa: E402
from orchestration import settings  # noqa: E402

HOURS = int(os.environ.get("DEMO_HOURS", "3"))
LINES_PER_HOUR = int(os.environ.get("DEMO_LINES_PER_HOUR", "4000"))
BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def dagster(*args: str) -> None:
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", *args]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    home = settings.data_home()
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(ROOT / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")

    logs = settings.logs_dir()
    start_ms = demo_logs.default_start_ms(HOURS)
    step(f"generating {HOURS} h of demo logs into {logs}")
    summary = demo_logs.generate(logs, start_ms=start_ms, hours=HOURS, lines_per_hour=LINES_PER_HOUR, seed=0)
    print(json.dumps({k: summary[k] for k in ("lines", "anomalies", "batches")}))

    first = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
    last = first + dt.timedelta(hours=HOURS - 1)
    fmt = "%Y-%m-%d-%H:%M"
    step("data stage: fetch, mask and summarise each hourly window")
    dagster("--select", "partition_summaries", "--partition-range", f"{first:{fmt}}...{last:{fmt}}")

    from orchestration.resources import resource

    store = resource("store")
    for batch in sorted(summary["batches"]):
        step(f"batch {batch}: resample -> train -> validate -> register")
        dagster(
            "--select", "training_sample,nulog_model,registered_model",
            "--partition", batch, "-c", str(ROOT / "config" / "demo.yaml"),
        )
        model = store.get_model(batch)
        if model:
            print(f"model: {batch} v{model.version} -> {model.artifact_uri}")

    step("registered models (logloop models list)")
    subprocess.run([str(BIN / "logloop"), "models", "list"], check=True, cwd=ROOT)
    print(f"\nDAGSTER_HOME={dagster_home}; run `make dev` and open http://127.0.0.1:3000 to see the runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
