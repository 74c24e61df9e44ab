"""Where steps run: in-process or multiprocess on a laptop, one Kubernetes Job per step in a cluster.

LOGLOOP_EXECUTOR picks the executor (in_process | multiprocess | k8s; default
multiprocess), so `dagster asset materialize` keeps working on a laptop and the same
code location runs steps as pods in a cluster. Off Kubernetes, the train_model job runs its
steps in the run's own process whatever the setting (train_executor_def). The pod shapes are op tags
(`dagster-k8s/config`), so they apply on every launch path: the sensor, the UI, the CLI
and backfills.

- The train step (nulog_model) asks for a GPU: LOGLOOP_TRAIN_GPUS (default 1), plus
  LOGLOOP_TRAIN_CPU and LOGLOOP_TRAIN_MEMORY. A ModelTraining spec's resources, envs
  and image override these per run through the executor's per_step_k8s_config.
- Data-stage steps (partition_summaries) are CPU pods: LOGLOOP_DATA_CPU and
  LOGLOOP_DATA_MEMORY, never a GPU. A backfill over many windows is split into several
  runs of LOGLOOP_BACKFILL_WINDOWS_PER_RUN windows each (default: all in one run), which
  the run launcher starts as parallel pods.
"""

from __future__ import annotations

from typing import Optional

from orchestration.config import settings

EXECUTORS = ("in_process", "multiprocess", "k8s")
GPU_RESOURCE = "nvidia.com/gpu"


def current_executor() -> str:
    return settings().executor


def train_executor_def():
    """The train_model job's executor. Its steps (sample, train, gate, register) run one after
    another, so on one machine they share the run's own process: a step process each would pay a
    process start and the code location's import (torch, Dagster, ...) four times a run, the
    largest cost of a small batch's run (benchmarks/loop.py). On Kubernetes each step stays a pod,
    so that only the train step asks for a GPU."""
    from dagster import in_process_executor

    return executor_def() if current_executor() == "k8s" else in_process_executor


# What every step process needs before it runs its step: Dagster and this code location. The
# forkserver imports them once per run; each step process is a fork of it.
STEP_PRELOAD = ["orchestration.definitions"]


def executor_def():
    from dagster import in_process_executor

    name = current_executor()
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "in_process":
        return in_process_executor
    return forkserver_executor()


def multiprocess_config(given: dict) -> dict:
    """The multiprocess executor's config from the run config's `execution: config:`."""
    out = {k: v for k, v in given.items() if k != "start_method"}
    if given.get("start_method", "forkserver") == "spawn":
        return {**out, "start_method": {"spawn": {}}}
    return {**out, "start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}}}


def forkserver_executor():
    """The multiprocess executor, its step processes forked from a server that has imported the code
    location once. With spawn, Python's default, each step process imports Dagster and the code
    location again: about 1.5 s of CPU per step, a quarter of a small training run
    (benchmarks/step_start.py). Run config can still set max_concurrent, or `start_method: spawn`.
    Where forkserver does not exist (Windows), the executor is left as it is."""
    import multiprocessing

    from dagster import Enum, EnumValue, Field, multiprocess_executor

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocess_executor
    start_methods = Enum("StartMethod", [EnumValue("forkserver"), EnumValue("spawn")])
    return multiprocess_executor.configured(multiprocess_config, name="multiprocess", config_schema={
        "max_concurrent": Field(int, is_required=False, description="at most this many step processes at once"),
        "start_method": Field(start_methods, default_value="forkserver",
                              description="forkserver: steps fork from a process that has imported the code "
                                          "location; spawn: each step imports it again"),
    })


def _quantities(cpu: Optional[str], memory: Optional[str], gpus: Optional[str] = None) -> dict:
    out = {}
    if cpu:
        out["cpu"] = cpu
    if memory:
        out["memory"] = memory
    if gpus and gpus != "0":
        out[GPU_RESOURCE] = gpus
    return out


def train_step_k8s_config(resources: Optional[dict] = None, envs: Optional[list] = None,
                          image: Optional[str] = None) -> dict:
    """dagster-k8s config of the train step's pod: GPU limits, env vars, image."""
    resources = resources or {}
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    if not requests and not limits:
        s = settings()
        requests = {"cpu": s.train_cpu, "memory": s.train_memory}
        limits = {"memory": s.train_memory, "gpu": s.train_gpus}
    # Kubernetes schedules extended resources (GPUs) by their limit; a request must equal it.
    gpus = limits.get("gpu") or requests.get("gpu")
    container: dict = {"resources": {
        "requests": _quantities(requests.get("cpu"), requests.get("memory"), gpus),
        "limits": _quantities(limits.get("cpu"), limits.get("memory"), gpus),
    }}
    if envs:
        container["env"] = [{"name": e["name"], "value": e["value"]} for e in envs]
    if image:
        container["image"] = image
    config: dict = {"container_config": container}
    if gpus and gpus != "0":
        config["pod_spec_config"] = {"tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}
    return config


def data_step_k8s_config() -> dict:
    """dagster-k8s config of a data-stage pod: CPU and memory only."""
    cpu, memory = settings().data_cpu, settings().data_memory
    return {"container_config": {"resources": {"requests": _quantities(cpu, memory), "limits": _quantities(None, memory)}}}


def backfill_policy():
    from dagster import BackfillPolicy

    per_run = settings().backfill_windows_per_run
    if per_run:
        return BackfillPolicy.multi_run(max_partitions_per_run=per_run)
    return BackfillPolicy.single_run()
