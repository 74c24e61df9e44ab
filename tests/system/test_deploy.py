"""Deployment files: they load, every key dagster or dagster-k8s can check is checked, and the
settings and secrets they carry reach the run pod and every step pod as dagster-k8s builds them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from dagster._config import validate_config

ROOT = Path(__file__).resolve().parents[2]


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
    # every pod imports the code location from the working directory: it is compiled in the image,
    # since PYTHONDONTWRITEBYTECODE would have each pod compile it again
    compiled = re.search(r"python -m compileall -q ([\w ]+?) &&", text)
    packages = {f for f in re.findall(r"^COPY (\w+) ", text, flags=re.M) if (ROOT / f / "__init__.py").exists()}
    assert compiled and packages and packages <= set(compiled.group(1).split()), (compiled, packages)


def test_dagster_definitions_validate_passes(tmp_path):
    """The check teams run in CI/CD before a deploy: lineage between differently partitioned
    assets must be declared (training_sample depends on every window of partition_summaries)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LOGLOOP_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    (tmp_path / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    proc = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-m",
                           "orchestration.definitions"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_dg_loads_the_same_definitions(tmp_path):
    """`dg` (dagster-dg-cli, [tool.dg] in pyproject.toml) finds the project and loads the one
    Definitions object: `dg check defs` passes and `dg list defs` shows the jobs and sensors."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "LOGLOOP_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    env.pop("LOGLOOP_NATS_URL", None)
    dg = str(Path(sys.executable).with_name("dg"))
    check = subprocess.run([dg, "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "All definitions loaded successfully" in check.stdout + check.stderr, \
        check.stdout[-3000:] + check.stderr[-3000:]
    listed = subprocess.run([dg, "list", "defs", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    defs = json.loads(listed.stdout)
    assert {"ingest_logs", "train_model"} <= {j["name"] for j in defs["jobs"]}
    assert "new_samples_sensor" in {s["name"] for s in defs["sensors"]}


# ---- what the pods get: the chart's rendering, then dagster-k8s's own launch code -------------
#
# No cluster and no `helm` here: the two chart templates that turn values into pod config are
# transcribed below (Dagster's chart, helm/dagster): the run launcher's part of the instance
# ConfigMap (templates/helpers/instance/_run-launcher.tpl) and the container context the chart
# gives the code server (charts/dagster-user-deployments/templates/helpers/_helpers.tpl,
# dagsterUserDeployments.k8sContainerContext). From there on everything is dagster-k8s's own
# code: K8sRunLauncher.launch_run builds the run pod's Job and K8sStepHandler.launch_step each
# step pod's Job (k8s_job_executor), handing them to a stand-in for the Kubernetes batch API.

RELEASE, NAMESPACE, IMAGE = "dagster", "logloop", "ghcr.io/example/logloop:0.1.0"
SETTINGS = ("LOGLOOP_EXECUTOR", "LOGLOOP_ARTIFACTS_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "LOGLOOP_STORE_URL")


def _names(refs) -> list:
    return [r["name"] for r in refs or [] if "name" in r]


def chart_run_launcher_config(values: dict) -> dict:
    """run_launcher.config as the chart writes it into the instance ConfigMap (release `dagster`)."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    cfg = {
        "load_incluster_config": k8s.get("loadInclusterConfig", True),
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s.get("imagePullPolicy", "Always"),
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": values["global"].get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"].get("postgresqlSecretName", "dagster-postgresql-secret"),
    }
    if k8s.get("envConfigMaps"):
        cfg["env_config_maps"] = _names(k8s["envConfigMaps"])
    if k8s.get("envSecrets"):
        cfg["env_secrets"] = _names(k8s["envSecrets"])
    for key in ("envVars", "volumeMounts", "volumes", "labels", "resources", "schedulerName", "securityContext"):
        if k8s.get(key):
            cfg[camel_to_snake(key)] = k8s[key]
    if k8s.get("runK8sConfig"):
        cfg["run_k8s_config"] = {camel_to_snake(k): v for k, v in k8s["runK8sConfig"].items()}
    return cfg


def chart_container_context(values: dict, deployment: dict) -> dict:
    """DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT on the code server: the container context of every
    run of the code location, while includeConfigInLaunchedRuns is on (the chart's default)."""
    assert deployment.get("includeConfigInLaunchedRuns", {"enabled": True})["enabled"] is True
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        # the chart's ConfigMap of a map-valued `env` ("dagster.fullname" in the subchart)
        "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env",
                            *_names(deployment.get("envConfigMaps"))],
        "namespace": NAMESPACE,
        "service_account_name": values["global"]["serviceAccountName"],
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = _names(deployment["envSecrets"])
    for key in ("volumeMounts", "volumes", "labels", "resources", "schedulerName"):
        if deployment.get(key):
            k8s[camel_to_snake(key)] = deployment[key]
    if isinstance(deployment.get("env"), list):
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


@pytest.fixture
def k8s_api(monkeypatch):
    """A stand-in for the Kubernetes API: no cluster config is loaded; created Jobs are kept."""
    import kubernetes

    created = []

    class BatchApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_namespaced_job(self, body, namespace, **kwargs):
            created.append((namespace, body))
            return body

    monkeypatch.setattr("dagster_k8s.launcher.load_kubernetes_config", lambda **kwargs: None)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *args, **kwargs: None)
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", BatchApi)
    return created


def _op_tags(asset) -> dict:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in asset.op.tags.items()}


def launch_run_and_steps(tmp_path, launcher_config: dict, container_context, k8s_api, monkeypatch,
                         per_step_k8s_config=None) -> dict:
    """{"run": run pod's container, "partition_summaries": ..., "nulog_model": ...}, plus the
    pod specs under "<name>/spec", built and "created" by dagster-k8s's launcher and step handler."""
    import dagster_k8s.executor
    from dagster import instance_for_test
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.executor import K8sStepHandler

    from orchestration.assets.summaries import partition_summaries
    from orchestration.assets.train import nulog_model

    result = validate_config(K8sRunLauncher.config_type(), launcher_config)
    assert result.success, [e.message for e in result.errors]
    origin = JobPythonOrigin("training_job", RepositoryPythonOrigin(
        executable_path="/usr/local/bin/python", code_pointer=ModuleCodePointer("orchestration.definitions", "defs", "/"),
        container_image=IMAGE, container_context=container_context))
    monkeypatch.setattr(dagster_k8s.executor.DagsterEvent, "step_worker_starting", lambda *a, **k: "starting")
    pods = {}
    with instance_for_test(temp_dir=str(tmp_path), overrides={
            "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config}}) as instance:
        run = create_run_for_test(instance, job_name="training_job", job_code_origin=origin)
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        handler = K8sStepHandler(image=None, container_context=K8sContainerContext(), load_incluster_config=True,
                                 kubeconfig_file=None, per_step_k8s_config=per_step_k8s_config or {})
        for asset in (partition_summaries, nulog_model):
            step_key, op_name = asset.op.name, asset.op.name
            context = SimpleNamespace(
                execute_step_args=ExecuteStepArgs(job_origin=origin, run_id=run.run_id, step_keys_to_execute=[step_key]),
                dagster_run=run, instance=instance, step_tags={step_key: _op_tags(asset)},
                get_step_context=lambda key, op_name=op_name: SimpleNamespace(step=SimpleNamespace(op_name=op_name)))
            assert list(handler.launch_step(context)) == ["starting"]
    assert len(k8s_api) == 3
    for (namespace, job), name in zip(k8s_api, ("run", "partition_summaries", "nulog_model")):
        assert namespace == NAMESPACE
        pods[name], pods[f"{name}/spec"] = job.spec.template.spec.containers[0], job.spec.template.spec
    return pods


def env_of(container) -> dict:
    """name -> value, or ("secret", secret name, key) for a secretKeyRef; duplicates are an error."""
    env = {}
    for e in container.env or []:
        assert e.name not in env, f"{e.name} set twice in {container.name}"
        ref = e.value_from.secret_key_ref if e.value_from else None
        env[e.name] = ("secret", ref.name, ref.key) if ref else e.value
    return env


def secrets_from(container) -> list:
    return [s.secret_ref.name for s in container.env_from or [] if s.secret_ref]


def test_helm_values_reach_the_run_pod_and_every_step_pod(tmp_path, k8s_api, monkeypatch):
    values = load("deploy/helm/values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    settings = {e["name"]: e["value"] for e in deployment["env"] if "value" in e}
    assert settings["LOGLOOP_ARTIFACTS_URL"].startswith("s3://") and settings["LOGLOOP_STORE_URL"].startswith("postgresql://")
    assert "@" in settings["LOGLOOP_STORE_URL"] and ":" not in settings["LOGLOOP_STORE_URL"].split("//")[1].split("@")[0]

    pods = launch_run_and_steps(tmp_path, chart_run_launcher_config(values), chart_container_context(values, deployment),
                                k8s_api, monkeypatch)
    for name in ("run", "partition_summaries", "nulog_model"):
        container, env = pods[name], env_of(pods[name])
        assert container.image == IMAGE, name
        for var in SETTINGS:
            assert env[var] == settings[var], (name, var)
        assert env["LOGLOOP_STORE_PASSWORD"] == ("secret", "dagster-postgresql-secret", "postgresql-password"), name
        assert env["DAGSTER_PG_PASSWORD"] == ("secret", "dagster-postgresql-secret", "postgresql-password"), name
        assert secrets_from(container) == ["logloop-secrets"], name  # the launcher's and the code location's, once
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), name  # only through the Secret
        assert pods[f"{name}/spec"].service_account_name == "dagster"
    assert pods["run"].resources.requests == {"cpu": "1", "memory": "2Gi"}  # the code location's, passed on
    # the steps keep their own shapes on top: a GPU for training, none for the data stage
    assert pods["nulog_model"].resources.limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in (pods["partition_summaries"].resources.limits or {})


def test_a_training_specs_envs_add_to_the_train_pods_env_not_replace_it(tmp_path, k8s_api, monkeypatch):
    from orchestration.k8s import train_step_k8s_config

    values = load("deploy/helm/values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    per_step = {"nulog_model": train_step_k8s_config(envs=[{"name": "NCCL_DEBUG", "value": "INFO"}])}
    pods = launch_run_and_steps(tmp_path, chart_run_launcher_config(values), chart_container_context(values, deployment),
                                k8s_api, monkeypatch, per_step_k8s_config=per_step)
    env = env_of(pods["nulog_model"])
    assert env["NCCL_DEBUG"] == "INFO" and env["LOGLOOP_ARTIFACTS_URL"].startswith("s3://")
    assert secrets_from(pods["nulog_model"]) == ["logloop-secrets"]


def test_dagster_k8s_yaml_hands_the_same_settings_to_run_and_step_pods(tmp_path, k8s_api, monkeypatch):
    """By hand (no chart, so no container context): the run launcher's own env_vars and env_secrets."""
    for var, value in (("DAGSTER_PG_HOST", "dagster-postgresql"), ("DAGSTER_PG_USER", "dagster"), ("DAGSTER_PG_DB", "dagster")):
        monkeypatch.setenv(var, value)
    launcher = load("deploy/dagster.k8s.yaml")["run_launcher"]["config"]
    pods = launch_run_and_steps(tmp_path, launcher, None, k8s_api, monkeypatch)
    helm_env = {e["name"]: e["value"] for e in load("deploy/helm/values.yaml")["dagster-user-deployments"]
                ["deployments"][0]["env"] if "value" in e}
    for name in ("run", "partition_summaries", "nulog_model"):
        env = env_of(pods[name])
        for var in SETTINGS:
            assert env[var] == helm_env[var], (name, var)  # one deployment, whichever way it is installed
        assert env["DAGSTER_PG_HOST"] == "dagster-postgresql" and env["DAGSTER_PG_DB"] == "dagster"
        assert env["DAGSTER_PG_PASSWORD"] == ("secret", "dagster-postgresql-secret", "postgresql-password")
        assert secrets_from(pods[name]) == ["logloop-secrets"]


def test_the_pods_env_makes_the_code_location_load_under_k8s(monkeypatch):
    """With the settings the pods get (and stand-in secrets), the resources build and the k8s
    shared-state check passes: the store is PostgreSQL, not SQLite on the pod's disk."""
    from orchestration.resources import build_resources

    [deployment] = load("deploy/helm/values.yaml")["dagster-user-deployments"]["deployments"]
    for e in deployment["env"]:
        monkeypatch.setenv(e["name"], e.get("value", "stand-in-secret"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "stand-in")
    for var in ("LOGLOOP_SHARED_VOLUME", "LOGLOOP_TDENGINE_URL", "LOGLOOP_LOGS_URL"):
        monkeypatch.delenv(var, raising=False)
    resources = build_resources()  # raises under LOGLOOP_EXECUTOR=k8s if state were on the pod's disk
    assert type(resources["store"]).__name__ == "SQLStore"
    nats = resources["model_events"]  # Opni compatibility is configured: requests in, model_ready out
    assert type(nats).__name__ == "NatsBus" and nats.request_subject == "train" and nats.user == "nats_client"
    monkeypatch.setenv("LOGLOOP_STORE_URL", "sqlite:////opt/logloop/data/store.sqlite")
    with pytest.raises(ValueError, match="LOGLOOP_STORE_URL"):
        build_resources()


def test_the_minio_example_matches_the_settings():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((ROOT / "deploy" / "minio-example.yaml").read_text())}
    [deployment] = load("deploy/helm/values.yaml")["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in deployment["env"] if "value" in e}
    secret = docs[("Secret", "logloop-secrets")]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    assert len(secret["stringData"]["AWS_ACCESS_KEY_ID"]) >= 3 and len(secret["stringData"]["AWS_SECRET_ACCESS_KEY"]) >= 8
    service = docs[("Service", "minio")]
    [s3_port] = [p["port"] for p in service["spec"]["ports"] if p["name"] == "s3"]
    assert env["AWS_ENDPOINT_URL"] == f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{s3_port}"
    minio = docs[("Deployment", "minio")]["spec"]["template"]["spec"]["containers"][0]
    root = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in minio["env"]}
    assert root["MINIO_ROOT_USER"] == {"name": "logloop-secrets", "key": "AWS_ACCESS_KEY_ID"}
    assert root["MINIO_ROOT_PASSWORD"] == {"name": "logloop-secrets", "key": "AWS_SECRET_ACCESS_KEY"}
    assert service["spec"]["selector"].items() <= docs[("Deployment", "minio")]["spec"]["template"]["metadata"]["labels"].items()
    job = docs[("Job", "minio-make-bucket")]["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e["value"] for e in job["env"]}
    bucket = env["LOGLOOP_ARTIFACTS_URL"].removeprefix("s3://").split("/")[0]
    assert job_env["BUCKET"] == bucket and job_env["S3_ENDPOINT"] == env["AWS_ENDPOINT_URL"]
    assert job["envFrom"] == [{"secretRef": {"name": "logloop-secrets"}}]
    # the chart's values name the Secret this example makes, for the code server and the run launcher
    assert {"name": "logloop-secrets"} in deployment["envSecrets"]
    assert {"name": "logloop-secrets"} in load("deploy/helm/values.yaml")["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]


def chart_postgres_db(values: dict) -> dict:
    """storage's postgres_db as the chart writes it (templates/helpers/instance/_postgresql.tpl)."""
    pg = values["postgresql"]
    config = {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
              "hostname": pg.get("postgresqlHost") or f"{RELEASE}-postgresql", "db_name": pg["postgresqlDatabase"],
              "port": pg.get("service", {}).get("port", 5432), "params": pg.get("postgresqlParams", {})}
    if pg.get("postgresqlScheme"):
        config["scheme"] = pg["postgresqlScheme"]
    return config


def test_the_instances_postgresql_url_uses_the_driver_the_image_ships(monkeypatch):
    """Run and step pods open Dagster's PostgreSQL with this image's SQLAlchemy (2.1), whose default
    driver for postgresql:// is psycopg 3, which the image does not ship: both the chart's instance
    and deploy/dagster.k8s.yaml name psycopg2. (The daemon test connects to a real server.)"""
    import sqlalchemy
    from dagster._config import process_config
    from dagster_postgres.utils import pg_url_from_config
    from dagster_postgres.run_storage import PostgresRunStorage

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "stand-in")
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_DB"):
        monkeypatch.setenv(var, "dagster")
    for name, postgres_db in (("dagster.k8s.yaml", load("deploy/dagster.k8s.yaml")["storage"]["postgres"]["postgres_db"]),
                              ("helm values", chart_postgres_db(load("deploy/helm/values.yaml")))):
        processed = process_config(PostgresRunStorage.config_type(), {"postgres_db": postgres_db})
        assert processed.success, (name, [e.message for e in processed.errors])
        url = sqlalchemy.make_url(pg_url_from_config(processed.value))
        assert url.drivername == "postgresql+psycopg2", name
        sqlalchemy.create_engine(url).dispose()  # loads the driver; connects to nothing


def test_helm_values_use_keys_the_chart_knows():
    """Keys of the chart's values schema (helm/dagster/schema: UserDeployment, PostgreSQL, Global),
    transcribed: a misspelt key would be dropped silently by `helm` and its setting lost."""
    user_deployment = {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port",
                       "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
                       "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
                       "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName", "deploymentStrategy",
                       "initContainers", "sidecarContainers", "serviceAccount"}
    postgresql = {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
                  "postgresqlParams", "postgresqlScheme", "service"}
    values = load("deploy/helm/values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert set(deployment) <= user_deployment, set(deployment) - user_deployment
    assert set(values["postgresql"]) <= postgresql, set(values["postgresql"]) - postgresql
    assert set(values["global"]) <= {"serviceAccountName", "postgresqlSecretName", "dagsterHome", "celeryConfigSecretName"}
    for e in deployment["env"]:  # Kubernetes EnvVar: a value or a valueFrom, nothing else
        assert set(e) in ({"name", "value"}, {"name", "valueFrom"}), e
        assert isinstance(e.get("value", ""), str), e  # numbers and booleans must be quoted
