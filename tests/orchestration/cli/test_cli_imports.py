"""The `logloop` command loads only what a command needs: no torch, plotting or data-frame library for
`--help` or `models list`, and not even Dagster, pydantic or SQLAlchemy for `--help`. Commands that only
read the store use its plain class (orchestration/store_choice.py), so they load no Dagster either.
(How fast it answers is benchmarks/cli_start.py's to measure; this guards what makes it fast.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord

# Runs the console script's entry point, then reports the top-level packages it imported.
PROBE = """
import json, sys
from orchestration.cli.app import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "packages": sorted({name.split(".")[0] for name in sys.modules})}), file=sys.stderr)
"""
NEVER = {"torch", "matplotlib", "pandas", "numpy"}


@pytest.fixture
def env(tmp_path):
    SQLiteStore(path=str(tmp_path / "store.sqlite")).register_model(ModelRecord(
        batch="a/b", version=1, run_id="run-1", artifact="models/x/nulog-1-u.zip", artifact_uri="/m/nulog-1-u.zip",
        metrics={"top_k_accuracy": 0.9}, window_start_ms=0, window_end_ms=3_600_000, mode="scratch"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLOOP_")}
    return {**env, "LOGLOOP_HOME": str(tmp_path)}


def run(env, *args) -> tuple[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return done.stdout, set(report["packages"])


def test_help_loads_no_heavy_library(env):
    out, packages = run(env, "--help")
    assert "models" in out and "train" in out
    assert packages.isdisjoint(NEVER | {"dagster", "pydantic", "sqlalchemy", "yaml", "rich"}), packages


def test_models_list_loads_no_dagster_nor_torch_nor_plotting_nor_data_frames(env):
    out, packages = run(env, "models", "list")
    assert "a/b" in out and "nulog-1-u.zip" in out
    assert packages.isdisjoint(NEVER | {"dagster"}), packages


@pytest.mark.parametrize("args, shown", [
    (("models", "show", "a/b"), "run-1"),
    (("models", "history", "a/b"), "follows the latest version"),
    (("tasks", "list"), "no tasks"),
    (("feedback", "list"), "no labels"),
    (("samples", "count", "--batch", "a/b"), "a/b"),
])
def test_commands_that_only_read_the_store_load_no_dagster(env, args, shown):
    out, packages = run(env, *args)
    assert shown in out
    assert packages.isdisjoint(NEVER | {"dagster"}), packages


def test_a_store_command_reads_the_store_the_settings_name(env, tmp_path):
    """The plain store is chosen as the code location's resource is: LOGLOOP_STORE_URL moves it."""
    other = tmp_path / "elsewhere" / "other.sqlite"
    SQLiteStore(path=str(other)).register_model(ModelRecord(
        batch="c/d", version=1, run_id="run-9", artifact="models/y/nulog-1-v.zip", artifact_uri="/m/nulog-1-v.zip",
        metrics={}, window_start_ms=0, window_end_ms=3_600_000, mode="scratch"))
    out, packages = run({**env, "LOGLOOP_STORE_URL": f"sqlite:///{other}"}, "models", "list")
    assert "c/d" in out and "a/b" not in out
    assert "dagster" not in packages


def test_score_loads_torch_for_the_model_but_no_dagster(env, tmp_path):
    """Scoring needs the model (torch) and the artifact storage's plain class, not the code location."""
    import torch

    from ops.register.artifact import write_artifact
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab
    from ops.mask.masking import Masker

    vocab = Vocab.build([("user <*> logged in from <ip>", 5)])
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=32, n_heads=4, d_ff=32)).eval()
    key = "models/a/b/nulog-2-u.zip"
    (tmp_path / "artifacts" / "models" / "a" / "b").mkdir(parents=True)
    write_artifact(tmp_path / "artifacts" / key, model, vocab, Masker().rules, model.cfg, {}, {"batch": "a/b"})
    SQLiteStore(path=str(tmp_path / "store.sqlite")).register_model(ModelRecord(
        batch="a/b", version=2, run_id="run-2", artifact=key, artifact_uri=str(tmp_path / "artifacts" / key),
        metrics={}, window_start_ms=0, window_end_ms=3_600_000, mode="scratch"))
    lines = tmp_path / "lines.txt"
    lines.write_text("user alice logged in from 10.0.0.1\n")
    out, packages = run(env, "score", "--batch", "a/b", str(lines))
    assert out.rstrip("\n").split("\t")[-1] == "user alice logged in from <ip>", out
    assert "torch" in packages and "dagster" not in packages, packages


# Registered before anything else, so that it runs last of the exit handlers, after the package's own.
FROZEN_AT_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("frozen", gc.get_freeze_count(), file=sys.stderr))
"""


@pytest.mark.parametrize("body", [
    "import orchestration.definitions",
    "from orchestration.cli.app import main\ntry:\n    main(['models', 'list'])\nexcept SystemExit:\n    pass",
], ids=["code location", "models list"])
def test_a_process_that_loaded_the_package_leaves_its_objects_out_of_the_exit_collections(env, body):
    """Python's collections at exit would otherwise walk every object the process holds: 0.4 to 0.8 s of
    CPU for each step, run and command (benchmarks/process_exit.py measures it)."""
    done = subprocess.run([sys.executable, "-c", FROZEN_AT_EXIT + body], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    word, count = done.stderr.strip().splitlines()[-1].split()
    assert word == "frozen" and int(count) > 50_000, done.stderr


@pytest.mark.parametrize("body", [
    "import dagster._cli.api\nimport orchestration.definitions",
    "from orchestration.cli.app import main\ntry:\n    main(['models', 'list'])\nexcept SystemExit:\n    pass",
], ids=["step", "models list"])
def test_a_process_that_loaded_the_package_collects_garbage_at_the_packages_thresholds(env, body):
    """Python's default thresholds walk the long-lived objects of Dagster and torch again and again
    while they are created (benchmarks/process_start.py measures it). A step imports Dagster's command
    line first, and the package's thresholds hold from the package's import on."""
    from orchestration import GC_THRESHOLDS

    report = "\nimport gc, sys\nprint('thresholds', *gc.get_threshold(), file=sys.stderr)"
    done = subprocess.run([sys.executable, "-c", body + report], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    word, *thresholds = done.stderr.strip().splitlines()[-1].split()
    assert word == "thresholds" and tuple(map(int, thresholds)) == GC_THRESHOLDS != (700, 10, 10), done.stderr
