"""A test-only executor built like dagster-k8s's `k8s_job_executor`: every step in its own "pod".

Dagster's step-delegating executor runs in the run worker and hands each step to a step
handler; `K8sStepHandler` starts a Kubernetes Job running `dagster api execute_step`. This
handler starts the very same command as a subprocess instead, with a private, empty local
disk: its own LOGLOOP_HOME, working directory, HOME and TMPDIR. So the run worker and the
step workers speak exactly the protocol they speak in a cluster (the step reads its
arguments, loads the code location, reports its events to the instance), and a step sees
nothing another step wrote unless it went through what pods share: the Dagster instance,
artifact storage and the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Iterator

from dagster import executor
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)

# Every sandbox lives under this folder (set by the test); nothing else is written locally.
ROOT_ENV = "LOGLOOP_SANDBOX_ROOT"


def sandbox_env(root: str, name: str) -> tuple[str, dict]:
    """A fresh, empty folder standing for a pod's disk, and the environment of a process in it."""
    folder = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    for sub in ("home", "tmp"):
        os.makedirs(os.path.join(folder, sub))
    env = {**os.environ, "LOGLOOP_HOME": os.path.join(folder, "home"), "HOME": folder,
           "TMPDIR": os.path.join(folder, "tmp"),
           # the image's PATH: `dagster` is what the step command starts, as in a pod
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    env.pop("LOGLOOP_LOGS_DIR", None)  # logs come from LOGLOOP_LOGS_URL, like a pod's
    return folder, env


class SandboxStepHandler(StepHandler):
    def __init__(self):
        self._procs: dict[tuple[str, str], tuple[subprocess.Popen, str]] = {}

    @property
    def name(self) -> str:
        return "SandboxStepHandler"

    @staticmethod
    def _key(ctx: StepHandlerContext) -> tuple[str, str]:
        [step_key] = ctx.execute_step_args.step_keys_to_execute
        return ctx.execute_step_args.run_id, step_key

    def launch_step(self, ctx: StepHandlerContext) -> Iterator[DagsterEvent]:
        run_id, step_key = self._key(ctx)
        folder, env = sandbox_env(os.environ[ROOT_ENV], f"pod-{step_key.replace('.', '-')}")
        for var in ctx.execute_step_args.get_command_env():  # the serialized step arguments
            env[var["name"]] = var["value"]
        log_path = os.path.join(folder, "step.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(list(ctx.execute_step_args.get_command_args(skip_serialized_namedtuple=True)),
                                    cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._procs[(run_id, step_key)] = (proc, log_path)
        yield DagsterEvent.step_worker_starting(
            ctx.get_step_context(step_key),
            message=f'Executing step "{step_key}" in sandbox {folder} (pid {proc.pid}).',
            metadata={"sandbox": folder},
        )

    def check_step_health(self, ctx: StepHandlerContext) -> CheckStepHealthResult:
        entry = self._procs.get(self._key(ctx))
        if entry is None:
            return CheckStepHealthResult.unhealthy("no process was started for this step")
        proc, log_path = entry
        if proc.poll() not in (None, 0):
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            return CheckStepHealthResult.unhealthy(f"step process exited {proc.returncode}:\n{tail}")
        return CheckStepHealthResult.healthy()

    def terminate_step(self, ctx: StepHandlerContext) -> Iterator[DagsterEvent]:
        run_id, step_key = self._key(ctx)
        entry = self._procs.get((run_id, step_key))
        if entry is not None and entry[0].poll() is None:
            entry[0].terminate()
        yield DagsterEvent.engine_event(ctx.get_step_context(step_key), message=f"terminated step {step_key}",
                                        event_specific_data=EngineEventData())


@executor(name="sandbox_step_executor")
def sandbox_step_executor(_init_context):
    return StepDelegatingExecutor(SandboxStepHandler(), retries=RetryMode.DISABLED, should_verify_step=True)
