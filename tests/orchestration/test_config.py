"""The one settings object: precedence (defaults < profile < loop.yaml < environment), where each
value came from, secrets, unknown variables, profiles, and the reference page generated from it."""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

from orchestration.config import (
    PROFILES,
    Settings,
    UnknownSettingWarning,
    describe,
    env_var,
    load,
    settings,
    unknown_variables,
)
from orchestration.loop_settings import LoopSettings, LoopSettingsError, Thresholds, load_loop_settings, loop_settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("ops", "orchestration", "resources", "scripts")
# the modules that may read LOGLOOP_* variables: the settings object, nothing else
READERS = {"orchestration/config.py"}


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No LOGLOOP_* variable but those a test sets, and a loop settings file of its own (empty)."""
    for var in [k for k in os.environ if k.upper().startswith("LOGLOOP_")]:
        monkeypatch.delenv(var)
    loop = tmp_path / "loop.yaml"
    loop.write_text("")
    monkeypatch.setenv("LOGLOOP_LOOP_CONFIG", str(loop))
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.loop = loop
    return monkeypatch


def test_without_file_or_environment_every_setting_is_its_declared_default(env):
    current = settings()
    defaults = LoopSettings()
    assert all(getattr(current, name) == getattr(defaults, name) for name in LoopSettings.model_fields)
    assert current.executor == "multiprocess" and current.store_url is None and current.batch_fields == [
        "cluster_id", "kubernetes.namespace_name", "deployment"]
    assert current.origin("max_oov_share") == current.origin("thresholds.min_start_count") == "default"
    assert current.origin("home") == "LOGLOOP_HOME"


def test_precedence_defaults_then_profile_then_file_then_environment(env):
    env.loop.write_text("executor: in_process\nmax_oov_share: 0.1\nthresholds: {min_start_count: 100}\n")
    env.setenv("LOGLOOP_PROFILE", "kubernetes")
    current = settings()
    assert (current.replay_share, current.origin("replay_share")) == (0.2, "default")
    assert (current.log_source, current.origin("log_source")) == ("opensearch", "profile kubernetes")  # over the default
    assert (current.executor, current.origin("executor")) == ("in_process", str(env.loop))  # the file over the profile
    assert (current.max_oov_share, current.origin("max_oov_share")) == (0.1, str(env.loop))

    env.setenv("LOGLOOP_EXECUTOR", "multiprocess")  # the environment over the file
    env.setenv("LOGLOOP_MAX_OOV_SHARE", "0.3")
    env.setenv("LOGLOOP_THRESHOLDS__MIN_UPDATE_COUNT", "7")  # one field of a nested setting: the file keeps the other
    env.setenv("LOGLOOP_LOG_SOURCE", "files")  # over the profile
    current = settings()
    assert (current.executor, current.origin("executor")) == ("multiprocess", "LOGLOOP_EXECUTOR")
    assert (current.max_oov_share, current.origin("max_oov_share")) == (0.3, "LOGLOOP_MAX_OOV_SHARE")
    assert current.thresholds == Thresholds(min_start_count=100, min_update_count=7)
    assert current.origin("thresholds.min_start_count") == str(env.loop)
    assert current.origin("thresholds.min_update_count") == "LOGLOOP_THRESHOLDS__MIN_UPDATE_COUNT"
    assert (current.log_source, current.origin("log_source")) == ("files", "LOGLOOP_LOG_SOURCE")
    env.setenv("LOGLOOP_THRESHOLDS", '{"min_start_count": 9}')  # a whole nested setting as JSON
    assert settings().thresholds.min_start_count == 9 and settings().origin("thresholds.min_start_count") == "LOGLOOP_THRESHOLDS"

    # what the rest of the code asks is this same object; a file named explicitly wins over LOGLOOP_LOOP_CONFIG
    assert loop_settings() is settings()
    other = env.loop.parent / "other.yaml"
    other.write_text("max_finetunes_in_a_row: 2\n")
    assert load_loop_settings(str(other)).max_finetunes_in_a_row == 2 and settings().max_finetunes_in_a_row == 5


def test_lists_read_comma_separated_or_as_json(env):
    env.setenv("LOGLOOP_OPENSEARCH_HOSTS", "https://a:9200, https://b:9200")
    env.setenv("LOGLOOP_SCORE_BATCHES", '["shop/web", "*"]')
    assert settings().opensearch_hosts == ["https://a:9200", "https://b:9200"]
    assert settings().score_batches == ["shop/web", "*"]
    env.setenv("LOGLOOP_SCORE_BATCHES", "shop/web")
    with pytest.raises(LoopSettingsError, match=r"LOGLOOP_SCORE_BATCHES='shop/web': not valid JSON"):
        settings()


@pytest.mark.parametrize("var, value, message", [
    ("LOGLOOP_EXECUTOR", "slurm", "LOGLOOP_EXECUTOR='slurm': must be one of in_process, multiprocess, k8s"),
    ("LOGLOOP_PROMOTE_NEW_VERSIONS", "maybe", "LOGLOOP_PROMOTE_NEW_VERSIONS='maybe': not a boolean"),
    ("LOGLOOP_THRESHOLDS__MIN_START_COUNT", "-1", "LOGLOOP_THRESHOLDS__MIN_START_COUNT='-1': Input should be greater than 0"),
    ("LOGLOOP_PROFILE", "prod", "LOGLOOP_PROFILE='prod': must be one of local, kubernetes"),
    ("LOGLOOP_PARTITION_START", "2026", "LOGLOOP_PARTITION_START='2026': partition_start '2026' is not YYYY-MM-DD-HH:MM"),
])
def test_a_bad_variable_is_one_error_naming_it_and_its_value(env, var, value, message):
    env.setenv(var, value)
    with pytest.raises(LoopSettingsError) as caught:
        settings()
    assert str(caught.value).startswith(message)


def test_the_file_must_be_valid_even_where_the_environment_overrides_it(env):
    env.loop.write_text("partition_start: '2026'\n")
    env.setenv("LOGLOOP_PARTITION_START", "2026-01-01-00:00")
    with pytest.raises(LoopSettingsError, match=rf"loop settings {env.loop}: partition_start: .* is not YYYY-MM-DD-HH:MM"):
        settings()
    env.loop.write_text("max_oov_shares: 0.1\n")  # a misspelled key
    with pytest.raises(LoopSettingsError, match="max_oov_shares: Extra inputs are not permitted"):
        settings()
    env.setenv("LOGLOOP_LOOP_CONFIG", str(env.loop.parent / "missing.yaml"))
    with pytest.raises(LoopSettingsError, match="missing.yaml: cannot read: no such file"):
        settings()


def test_secrets_are_masked_come_only_from_the_environment_and_reach_resources_as_env_vars(env):
    env.setenv("LOGLOOP_STORE_PASSWORD", "hunter2-pw")
    env.setenv("LOGLOOP_ALERT_WEBHOOK", "https://hooks.example/T0KEN-42")
    env.setenv("LOGLOOP_NATS_URL", "nats://ops:url-pw@nats:4222")
    current = settings()
    assert current.secret("store_password") == "hunter2-pw" and current.secret("alert_webhook").endswith("T0KEN-42")
    assert current.nats_url == "nats://ops:url-pw@nats:4222"  # the code gets the URL whole
    for shown in (repr(current), str(current), current.model_dump_json()):
        assert "hunter2-pw" not in shown and "T0KEN-42" not in shown and "url-pw" not in shown
        assert "nats://ops:***@nats:4222" in shown
    secret = env_var("store_password")
    assert secret == "LOGLOOP_STORE_PASSWORD" and type(secret).__name__ == "EnvVar"

    env.loop.write_text("store_password: hunter2-pw\n")
    with pytest.raises(LoopSettingsError, match="store_password are secrets: set them in the environment "
                                                r"\(LOGLOOP_STORE_PASSWORD\), never in a file"):
        settings()
    env.loop.write_text("store_url: postgresql://logloop:hunter2-pw@db/logloop\n")
    with pytest.raises(LoopSettingsError, match=r"store_url holds a password: set it in the environment \(LOGLOOP_STORE_URL\)"):
        settings()
    env.loop.write_text("store_url: postgresql://logloop@db/logloop\n")  # without one, the file may name the server
    assert settings().store_url == "postgresql://logloop@db/logloop"


def test_settings_are_read_again_only_when_a_variable_or_the_file_changes(env):
    first = settings()
    assert settings() is first
    env.setenv("LOGLOOP_TRAIN_GPUS", "2")
    second = settings()
    assert second is not first and second.train_gpus == "2"
    env.loop.write_text("replay_share: 0.5\n")
    assert settings() is not second and settings().replay_share == 0.5


def test_unknown_variables_name_the_closest_setting():
    found = unknown_variables({
        "LOGLOOP_STORE_URLL": "x", "LOGLOOP_NATS_PASWORD": "x", "LOGLOOP_ZZZZZZZZZZZZZZZZZZZZ": "x",
        "LOGLOOP_STORE_URL": "x", "LOGLOOP_THRESHOLDS__MIN_START_COUNT": "1", "logloop_home": "x", "PATH": "/bin"})
    assert found == [
        "LOGLOOP_NATS_PASWORD is not a logloop setting and is ignored; did you mean LOGLOOP_NATS_PASSWORD?",
        "LOGLOOP_STORE_URLL is not a logloop setting and is ignored; did you mean LOGLOOP_STORE_URL?",
        "LOGLOOP_ZZZZZZZZZZZZZZZZZZZZ is not a logloop setting and is ignored",
    ]


def test_an_unknown_variable_is_a_warning_when_the_code_location_loads(env, tmp_path):
    import orchestration.definitions

    env.setenv("LOGLOOP_EXECUTER", "k8s")
    with pytest.warns(UnknownSettingWarning, match="LOGLOOP_EXECUTER is not a logloop setting and is ignored; "
                                                   "did you mean LOGLOOP_EXECUTOR?"):
        importlib.reload(orchestration.definitions)


def test_profiles_choose_together_and_single_settings_still_win(env):
    from orchestration.k8s import executor_def
    from orchestration.resources import build_resources
    from resources.log_source import LocalLogSource

    assert set(PROFILES) == {"local", "kubernetes"}
    env.setenv("LOGLOOP_PROFILE", "kubernetes")
    assert executor_def().name == "k8s"
    with pytest.raises(ValueError, match=r"the log source is opensearch \(profile kubernetes\) but LOGLOOP_OPENSEARCH_HOSTS"):
        build_resources()
    env.setenv("LOGLOOP_LOG_SOURCE", "files")  # an archive in a bucket instead of OpenSearch
    with pytest.raises(ValueError, match="LOGLOOP_EXECUTOR=k8s runs every step in its own pod, but the store is SQLite"):
        build_resources()  # nothing may stay on a pod's disk
    env.setenv("LOGLOOP_SHARED_VOLUME", "true")
    assert isinstance(build_resources()["log_source"], LocalLogSource)

    env.setenv("LOGLOOP_PROFILE", "local")  # the laptop: files even where OpenSearch hosts are set
    env.delenv("LOGLOOP_LOG_SOURCE")
    env.setenv("LOGLOOP_OPENSEARCH_HOSTS", "https://os:9200")
    assert isinstance(build_resources()["log_source"], LocalLogSource) and executor_def().name == "multiprocess"


def test_the_nats_defaults_named_in_the_descriptions_are_the_resources():
    from orchestration.resources import NATS_SETTINGS
    from resources.nats_bus import NatsBus

    named = 0
    for field, name in NATS_SETTINGS.items():
        description = Settings.model_fields[name].description
        if "Unset: `" in description:
            assert f"Unset: `{NatsBus.model_fields[field].default}`" in description, name
            named += 1
    assert named == 11


def test_the_reference_page_is_generated_from_the_settings():
    from scripts.settings_reference import PAGE, render

    page = render()
    assert PAGE.read_text(encoding="utf-8") == page, "docs/reference/settings.md is out of date: run python scripts/settings_reference.py"
    rows = describe()
    assert {r["name"].split(".")[0] for r in rows} == set(Settings.model_fields)  # every setting, nested ones by field
    for row in rows:
        assert f"| `{row['name']}` | `{row['env']}` |" in page
    assert "`LOGLOOP_THRESHOLDS__MIN_START_COUNT` | integer | `5000` |" in page


def _env_reads(path: Path) -> list[str]:
    """Where a module reads a LOGLOOP_* variable: os.environ / getenv / EnvVar with a LOGLOOP_ name
    (or a module constant holding one), or a scan of os.environ in a module that names the prefix."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                 for t in n.targets if isinstance(t, ast.Name)}

    def names_one(expr) -> bool:
        return any(isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("LOGLOOP_")
                   or isinstance(n, ast.Name) and str(constants.get(n.id, "")).startswith("LOGLOOP_") for n in ast.walk(expr))

    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "os.environ.get", "environ.get", "os.getenv", "getenv", "EnvVar", "os.environ.setdefault", "os.environ.pop"):
            if any(names_one(a) for a in node.args):
                reads.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ") and names_one(node.slice):
            reads.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, (ast.For, ast.comprehension)) and "environ" in ast.unparse(node.iter) and names_one(tree):
            reads.append(f"line {getattr(node, 'lineno', node.iter.lineno)}: scans {ast.unparse(node.iter)}")
    return reads


def test_loglooop_variables_are_read_by_the_settings_module_only():
    readers = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            reads = _env_reads(path)
            if reads:
                readers[str(path.relative_to(ROOT))] = reads
    assert "orchestration/config.py" in readers  # the check finds reads where they are
    assert set(readers) <= READERS and len(READERS) <= 2, {k: v for k, v in readers.items() if k not in READERS}


def test_load_builds_the_settings_afresh(env):
    assert load() is not load() and load() == settings()
