"""Deployment files: they load, and every key dagster or dagster-k8s can check is checked."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from dagster._config import validate_config

ROOT = Path(__file__).resolve().parents[1]


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def load(rel: str):
    return yaml.safe_load((ROOT / rel).read_text())


def test_instance_yamls_follow_dagsters_instance_schema():
    from dagster._core.instance.config import dagster_instance_config_schema

    for rel in ("deploy/dagster.local.yaml", "deploy/dagster.k8s.yaml"):
        result = validate_config(dagster_instance_config_schema(), load(rel))
        assert result.success, (rel, [e.message for e in result.errors])


def test_k8s_run_launcher_and_coordinator_config_are_valid():
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher

    cfg = load("deploy/dagster.k8s.yaml")
    assert cfg["run_launcher"]["class"] == "K8sRunLauncher" and cfg["run_monitoring"]["enabled"] is True
    result = validate_config(K8sRunLauncher.config_type(), cfg["run_launcher"]["config"])
    assert result.success, [e.message for e in result.errors]
    result = validate_config(QueuedRunCoordinator.config_type(), cfg["run_coordinator"]["config"])
    assert result.success, [e.message for e in result.errors]


def test_helm_values_use_keys_dagster_k8s_knows():
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    values = load("deploy/helm/values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "orchestration.definitions"]
    assert {"name": "LOGLOOP_EXECUTOR", "value": "k8s"} in deployment["env"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    known = set(K8sRunLauncher.config_type())
    for key in launcher:
        assert camel_to_snake(key) in known, key
    run_k8s = {camel_to_snake(k): v for k, v in launcher["runK8sConfig"].items()}
    parsed = UserDefinedDagsterK8sConfig.from_dict(run_k8s)
    assert parsed.container_config["resources"]["requests"]["memory"] == "2Gi"
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True
    assert values["postgresql"]["enabled"] is True


def test_dockerfile_installs_a_cuda_torch_and_the_code_location():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install torch==2\.13\.0 --index-url \$\{TORCH_INDEX\}", text)
    assert "download.pytorch.org/whl/cu" in text
    for folder in re.findall(r"^COPY (\w+) ", text, flags=re.M):
        assert (ROOT / folder).exists(), folder
    assert '"-m", "orchestration.definitions"' in text
