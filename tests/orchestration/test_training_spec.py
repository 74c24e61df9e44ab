"""ModelTraining specs, Opni requests, the `logloop train` verbs, and the Kubernetes pod shapes."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestration.services.training_spec import SpecError, convert_template, from_opni_request, parse_spec, run_config, run_tags
from tests.instances import fresh_instance

ROOT = Path(__file__).resolve().parents[2]


def spec(**over):
    doc = {"kind": "ModelTraining", "id": "pay-1",
           "spec": {"data": {"batch": "shop/payments"}, "hyperParameters": {"epochs": "2", "lr": "0.001", "t": "500"}}}
    for k, v in over.items():
        doc["spec"][k] = v
    return doc


def test_example_spec_is_valid_and_string_values_are_typed():
    s = parse_spec(yaml.safe_load((ROOT / "examples" / "modeltraining.yaml").read_text()))
    assert s.id == "checkout-nightly" and s.batch == "demo/shop/checkout" and s.mode == "auto"
    assert s.hyper_parameters["epochs"] == 2 and s.hyper_parameters["lr"] == 0.001
    assert s.artifact_name_template == "{name}-{version}-{uuid}.zip"
    assert s.last_ms == 7 * 86_400_000


def test_every_error_is_reported_together():
    doc = {"kind": "Training", "id": "Bad_ID", "spec": {
        "data": {"batch": "", "time_intervals": [{"start": "2026-01-02", "end": "2026-01-01"}]},
        "mode": "sometimes", "hyperParameters": {"epochs": "-1", "lr": "fast", "colour": "red"},
        "resources": {"limits": {"gpu": "two", "disk": "1Gi"}}, "envs": [{"name": "1BAD", "value": "x"}],
        "model": {"artifactNameTemplate": "{{ .Name }}.zip"}}}
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    message = str(err.value)
    assert message.startswith("spec <no id> is invalid: ") or message.startswith("spec Bad_ID is invalid: ")
    for fragment in ["kind must be ModelTraining", "id 'Bad_ID'", "spec.data.batch", "time_intervals[0]: start must be before end",
                     "spec.mode 'sometimes'", "spec.hyperParameters: unknown key(s) colour",
                     "spec.hyperParameters.epochs", "spec.hyperParameters.lr", "gpu must be a whole number",
                     "disk: unknown resource", "spec.envs[0]", "must contain the uuid"]:
        assert fragment in message, fragment
    assert len(err.value.errors) >= 12


@pytest.mark.parametrize("template,expected", [
    ("{{ .Name }}-{{ .Version }}-{{ .RandomUUID }}.zip", "{name}-{version}-{uuid}.zip"),
    ("{{.Batch}}-{{.RandomUUID}}.zip", "{batch}-{uuid}.zip"),
    ("{name}-{uuid}.zip", "{name}-{uuid}.zip"),
])
def test_artifact_name_templates(template, expected):
    assert convert_template(template) == expected


@pytest.mark.parametrize("template,error", [("{{ .Owner }}-{{ .RandomUUID }}", "unknown template variable .Owner"),
                                            ("{name}-{version}.zip", "must contain the uuid"),
                                            ("../{uuid}.zip", "must name a file")])
def test_bad_artifact_name_templates(template, error):
    with pytest.raises(ValueError, match=error.replace(".", r"\.")):
        convert_template(template)


def test_run_config_maps_every_section():
    s = parse_spec(spec(mode="finetune", data={"batch": "shop/payments", "time_intervals": [
        {"start": "2026-11-20T00:00:00Z", "end": 1796000000000}]}, hyperParameters={"epochs": "3", "top_k": "9", "t": "100"}))
    cfg = run_config(s, executor="multiprocess")
    assert cfg["ops"]["training_sample"]["config"] == {
        "mode": "finetune", "t": 100,
        "time_intervals": [{"start_ms": int(dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc).timestamp() * 1000),
                            "end_ms": 1796000000000}]}
    assert cfg["ops"]["nulog_model"]["config"] == {"epochs": 3}
    assert cfg["ops"]["nulog_model_nulog_model_quality"]["config"] == {"top_k": 9}
    assert "execution" not in cfg  # only the k8s executor takes pod config
    assert run_tags(s)["logloop/task_id"] == "pay-1" and run_tags(s)["dagster/partition"] == "shop/payments"


def test_spread_is_a_checked_hyperparameter():
    s = parse_spec(spec(hyperParameters={"spread": "1.0"}))
    assert run_config(s, executor="multiprocess")["ops"]["nulog_model"]["config"] == {"spread": 1.0}
    with pytest.raises(SpecError, match="spec.hyperParameters.spread"):
        parse_spec(spec(hyperParameters={"spread": "1.5"}))


def test_relative_window_resolves_at_launch():
    s = parse_spec(spec(data={"batch": "b", "last": "2h"}))
    cfg = run_config(s, now_ms=10_000_000, executor="multiprocess")
    assert cfg["ops"]["training_sample"]["config"]["time_intervals"] == [{"start_ms": 10_000_000 - 7_200_000, "end_ms": 10_000_000}]


def test_opni_request_maps_to_the_same_spec():
    s = from_opni_request({"model_to_train": "nulog", "time_intervals": [
        {"start_ts": 1_700_000_000_000_000_000, "end_ts": 1_700_003_600_000_000_001}]}, batch="c/n", spec_id="opni-7")
    assert (s.id, s.batch, s.mode) == ("opni-7", "c/n", "auto")
    assert s.time_intervals == [(1_700_000_000_000, 1_700_003_600_001)]  # ns -> ms, end rounded up


@pytest.mark.parametrize("payload,error", [
    ({"model_to_train": "drain", "time_intervals": [{"start_ts": 1, "end_ts": 2}]}, "'drain' is not a model"),
    ({"model_to_train": "nulog", "time_intervals": []}, "non-empty list"),
    ({"model_to_train": "nulog", "time_intervals": [{"start_ts": 5, "end_ts": 5}]}, "must be before end_ts"),
    ({"model_to_train": "nulog", "time_intervals": [{"start_ts": "a", "end_ts": 5}]}, "non-negative integers"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_opni_requests(payload, error):
    with pytest.raises(SpecError, match=error):
        from_opni_request(payload, spec_id="x")


# ---- Kubernetes: build the real Job specs with dagster-k8s's own functions ---------------------


def k8s_job(user_config: dict):
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    job_config = DagsterK8sJobConfig(job_image="logloop:default", dagster_home="/opt/dagster/home",
                                     instance_config_map="dagster-instance")
    return construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], "dagster-step-x",
                                     user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(user_config))


def test_spec_resources_env_and_image_reach_the_train_pod():
    from dagster_k8s.job import get_user_defined_k8s_config

    s = parse_spec(spec(resources={"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi", "gpu": 2}},
                        envs=[{"name": "NCCL_DEBUG", "value": "INFO"}], image="registry.example.com/logloop:9"))
    per_step = run_config(s, executor="k8s")["execution"]["config"]["per_step_k8s_config"]
    job = k8s_job(per_step["nulog_model"])
    container = job.spec.template.spec.containers[0]
    assert container.resources.limits == {"memory": "16Gi", "nvidia.com/gpu": "2"}
    assert container.resources.requests == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert {"name": "NCCL_DEBUG", "value": "INFO"} in [{"name": e.name, "value": e.value} for e in container.env]
    assert container.image == "registry.example.com/logloop:9"
    assert job.spec.template.spec.tolerations[0].key == "nvidia.com/gpu"

    # with no spec, the op tags every launch path uses ask for one GPU
    from orchestration.assets.summaries import partition_summaries
    from orchestration.assets.train import nulog_model

    tags = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in nulog_model.op.tags.items()}
    default = k8s_job(get_user_defined_k8s_config(tags).to_dict())
    assert default.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    data_tags = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in partition_summaries.op.tags.items()}
    data_pod = k8s_job(get_user_defined_k8s_config(data_tags).to_dict()).spec.template.spec.containers[0]
    assert "nvidia.com/gpu" not in (data_pod.resources.limits or {}) and "nvidia.com/gpu" not in data_pod.resources.requests
    assert data_pod.resources.requests["cpu"]


def test_executor_is_chosen_by_environment(monkeypatch):
    from orchestration.k8s import executor_def

    monkeypatch.setenv("LOGLOOP_EXECUTOR", "k8s")
    assert executor_def().name == "k8s"
    monkeypatch.setenv("LOGLOOP_EXECUTOR", "in_process")
    assert executor_def().name == "in_process"
    monkeypatch.delenv("LOGLOOP_EXECUTOR")
    assert executor_def().name == "multiprocess"
    monkeypatch.setenv("LOGLOOP_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="must be one of"):
        executor_def()


def test_multiprocess_steps_fork_from_a_server_that_imported_the_code_location():
    from orchestration.k8s import STEP_PRELOAD, multiprocess_config

    forkserver = {"start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}}}
    assert multiprocess_config({"start_method": "forkserver"}) == forkserver
    assert multiprocess_config({}) == forkserver
    assert multiprocess_config({"start_method": "spawn", "max_concurrent": 2}) == \
        {"start_method": {"spawn": {}}, "max_concurrent": 2}
    for module in STEP_PRELOAD:  # what the server preloads exists (a typo would fail every run)
        assert importlib.util.find_spec(module) is not None, module


# ---- the CLI -----------------------------------------------------------------------------------


def logloop(*args, env=None, timeout=300):
    exe = Path(sys.executable).with_name("logloop")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def test_train_validate_exits_non_zero_with_all_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kind": "ModelTraining", "id": "x", "spec": {"data": {"batch": ""}, "mode": "no"}}))
    out = logloop("train", "validate", "-f", str(bad))
    assert out.returncode == 1 and out.stderr.startswith("error: spec x is invalid: ") and "spec.mode" in out.stderr
    ok = logloop("train", "validate", "-f", str(ROOT / "examples" / "modeltraining.yaml"))
    assert ok.returncode == 0 and "checkout-nightly is valid" in ok.stdout
    missing = logloop("train", "validate", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_train_create_reports_an_unreachable_webserver(tmp_path):
    out = logloop("train", "create", "-f", str(ROOT / "examples" / "modeltraining.yaml"),
                  env={"LOGLOOP_DAGSTER_URL": "http://127.0.0.1:9", "LOGLOOP_HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 1 and "cannot reach the Dagster webserver at http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_local_and_opni_request_register_versions(tmp_path):
    from dagster import materialize

    from scripts import demo_logs
    from orchestration.assets.summaries import partition_summaries
    from resources.artifacts import LocalArtifactStorage
    from resources.log_source import LocalLogSource
    from resources.store_resources import SQLiteStore

    home = tmp_path / "home"
    start = int(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp() * 1000)
    demo_logs.generate(home / "logs", start_ms=start, hours=1, lines_per_hour=800, batches=["demo/shop/payments"], seed=2)
    resources = {"log_source": LocalLogSource(path=str(home / "logs"), batch_fields=["cluster_id", "kubernetes.namespace_name", "deployment"]),
                 "store": SQLiteStore(path=str(home / "store.sqlite")),
                 "artifacts": LocalArtifactStorage(root=str(home / "artifacts"))}
    (tmp_path / "dh").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dh")) as instance:
        assert materialize([partition_summaries], partition_key="2026-11-01-10:00", instance=instance, resources=resources,
                           run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}}).success
    doc = yaml.safe_load((ROOT / "examples" / "modeltraining.yaml").read_text())
    [stored_batch] = {p.batch for p in _all_counts(home)}  # the generator names it cluster/namespace/deployment
    doc["spec"]["data"] = {"batch": stored_batch, "time_intervals": [{"start": start, "end": start + 3_600_000}]}
    doc["spec"]["hyperParameters"] = {"t": "400", "epochs": "1"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    env = {"LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dh")}
    out = logloop("train", "local", "-f", str(tmp_path / "spec.yaml"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training checkout-nightly: succeeded" in out.stdout and "version 1" in out.stdout
    got = json.loads(logloop("train", "get", "checkout-nightly", "--json", env=env).stdout)
    assert got[0]["state"] == "succeeded" and got[0]["artifacts"][0]["artifactName"].startswith("nulog-1-")
    payload = json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": start * 10**6, "end_ts": (start + 3_600_000) * 10**6}]})
    out = logloop("train", "request", payload, "--batch", stored_batch, "--id", "opni-1", "--local", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    models = SQLiteStore(path=str(home / "store.sqlite")).list_models(stored_batch)
    assert [(m.version, m.mode, m.parent_version) for m in models] == [(1, "scratch", None), (2, "finetune", 1)]
    bad = logloop("train", "request", '{"model_to_train": "x", "time_intervals": []}', env=env)
    assert bad.returncode == 1 and "is not a model this service trains" in bad.stderr and "non-empty list" in bad.stderr


def _all_counts(home):
    import sqlite3

    from resources.store_records import PartitionCount

    with sqlite3.connect(home / "store.sqlite") as conn:
        rows = conn.execute("SELECT partition_key, batch, window_start_ms, window_end_ms, count FROM sample_counts").fetchall()
    return [PartitionCount(*r) for r in rows]


def test_spec_run_config_is_valid_for_the_job_and_the_launchpad_flags_enums():
    from dagster._config import validate_config

    from orchestration.definitions import defs

    schema = defs.get_repository_def().get_job("train_model").run_config_schema.config_type
    s = parse_spec(yaml.safe_load((ROOT / "examples" / "modeltraining.yaml").read_text()))
    result = validate_config(schema, run_config(s, now_ms=1_800_000_000_000, executor="multiprocess"))
    assert result.success, [e.message for e in result.errors]
    bad = validate_config(schema, {"ops": {"training_sample": {"config": {"mode": "sometimes"}},
                                           "nulog_model": {"config": {"device": "tpu"}}}})
    messages = " ".join(e.message for e in bad.errors)
    assert not bad.success and "sometimes" in messages and "tpu" in messages


# -- artifactNameTemplate: only the documented variables, and a safe single file name -----------


@pytest.mark.parametrize("template,error", [
    ("{name.__class__}-{uuid}.zip", "unknown template variable {name.__class__}"),
    ("{name[0]}-{uuid}.zip", "unknown template variable {name[0]}"),
    ("{version!r}-{uuid}.zip", "conversions (!r) and format specs are not allowed: {version!r}"),
    ("{uuid:>99999999}.zip", "conversions (!r) and format specs are not allowed: {uuid:>99999999}"),
    ("{0}-{uuid}.zip", "unknown template variable {0}"),
    ("{}-{uuid}.zip", "unknown template variable {}"),
    ("{uuid}}.zip", "not a valid template: Single '}'"),
    ("{name}-{uuid}", "must end in .zip"),
    ("{uuid}/../x.zip", "must name a file, not a path"),
    ("..{uuid}.zip", "must name a file, not a path"),
    ("{uuid} copy.zip", "' ' is not allowed"),
    ("{uuid}" * 7 + ".zip", "can render names longer than 200 characters"),
])
def test_artifact_name_template_allows_only_the_documented_variables(template, error):
    with pytest.raises(SpecError) as err:
        parse_spec(spec(model={"artifactNameTemplate": template}))
    assert f"spec.model.artifactNameTemplate: {error}" in str(err.value)


def test_train_validate_rejects_a_template_with_an_attribute_in_one_line(tmp_path):
    doc = spec(model={"artifactNameTemplate": "{name.__class__}-{{ .RandomUUID }}.zip"})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    out = logloop("train", "validate", "-f", str(tmp_path / "spec.yaml"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "spec.model.artifactNameTemplate: unknown template variable {name.__class__}" in out.stderr


def test_load_spec_file_names_the_file_and_the_byte_of_invalid_utf8(tmp_path):
    from orchestration.services.training_spec import load_spec_file

    path = tmp_path / "spec.yaml"
    path.write_bytes(b"kind: ModelTraining\nid: caf\xe9\n")
    with pytest.raises(SpecError) as err:
        load_spec_file(str(path))
    assert str(err.value) == (f"spec <unknown> is invalid: {path} is not UTF-8 text: "
                              "invalid continuation byte 0xe9 at byte offset 27 (line 2)")
