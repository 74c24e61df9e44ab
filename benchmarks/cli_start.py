"""How fast the `logloop` command answers, and what importing the code location costs.

    python benchmarks/cli_start.py            # JSON on stdout
    python benchmarks/cli_start.py --repeat 5

Each figure is the median wall time of --repeat runs of a fresh process:

- `bare_python_s`: `python -c "import argparse, json"`, the yardstick;
- `help_s`: `logloop --help` (target: at most 12x the yardstick);
- `models_list_s`: `logloop models list` on a small embedded store (3 batches, 3 versions each;
  target: at most 30x the yardstick);
- `definitions_import_s`: `python -c "import orchestration.definitions"`, which every step process
  and every run pays before it does any work.

`heavy_modules` names the heavy libraries each command loaded (none is the aim for the two CLI
commands; tests/orchestration/cli/test_cli_imports.py guards it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELP_TARGET = 12
MODELS_LIST_TARGET = 30
HEAVY = ("torch", "dagster", "matplotlib", "pandas", "numpy", "sqlalchemy", "pydantic", "boto3", "botocore",
         "s3fs", "gcsfs", "adlfs", "azure", "opensearchpy", "nats", "kubernetes", "yaml", "rich")


def populate(home: Path) -> None:
    from resources.store_resources import SQLiteStore
    from resources.store_records import ModelRecord

    store = SQLiteStore(path=str(home / "store.sqlite"))
    for b in range(3):
        batch = f"cluster-{b}/ns/deploy"
        for v in range(1, 4):
            store.register_model(ModelRecord(
                batch=batch, version=v, run_id=f"run-{b}-{v}", artifact=f"models/{b}/nulog-{v}.zip",
                artifact_uri=f"/m/{b}/nulog-{v}.zip", window_start_ms=0, window_end_ms=v * 3_600_000,
                parent_version=v - 1 or None, mode="scratch" if v == 1 else "finetune",
                metrics={"top_k_accuracy": 0.9, "anomaly_share": 0.01}))


def timed(cmd: list[str], env: dict, repeat: int) -> float:
    """Median wall seconds of `repeat` runs of `cmd` (after one untimed run that warms the disk cache)."""
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_loaded(cli_args: list[str], env: dict) -> list[str]:
    """The heavy libraries a `logloop` command imports (run once more, in-process, under runpy)."""
    probe = ("import runpy, sys, json, io, contextlib\n"
             f"sys.argv = ['logloop', *{cli_args!r}]\n"
             "out = io.StringIO()\n"
             "with contextlib.redirect_stdout(out):\n"
             "    try:\n"
             "        from orchestration.cli.app import main; main(sys.argv[1:])\n"
             "    except SystemExit:\n"
             "        pass\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n")
    done = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (the median is reported)")
    args = ap.parse_args()

    logloop = Path(sys.executable).with_name("logloop")
    cli = [str(logloop)] if logloop.exists() else [sys.executable, "-m", "orchestration.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        populate(home)
        env = {**os.environ, "LOGLOOP_HOME": str(home), "PYTHONPATH": str(ROOT)}
        for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL", "LOGLOOP_NATS_URL"):
            env.pop(var, None)  # the small embedded store, whatever the caller's environment says
        bare = timed([sys.executable, "-c", "import argparse, json"], env, args.repeat)
        help_s = timed([*cli, "--help"], env, args.repeat)
        list_s = timed([*cli, "models", "list"], env, args.repeat)
        definitions_s = timed([sys.executable, "-c", "import orchestration.definitions"], env, args.repeat)
        result = {
            "repeat": args.repeat,
            "bare_python_s": round(bare, 4),
            "help_s": round(help_s, 4),
            "help_ratio": round(help_s / bare, 1),
            "help_target": HELP_TARGET,
            "models_list_s": round(list_s, 4),
            "models_list_ratio": round(list_s / bare, 1),
            "models_list_target": MODELS_LIST_TARGET,
            "definitions_import_s": round(definitions_s, 3),
            "heavy_modules": {"help": heavy_loaded(["--help"], env), "models list": heavy_loaded(["models", "list"], env)},
        }
    result["targets_met"] = result["help_ratio"] <= HELP_TARGET and result["models_list_ratio"] <= MODELS_LIST_TARGET
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
