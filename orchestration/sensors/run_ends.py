"""A training task is settled as failed as soon as its run fails or is canceled (the transition is
orchestration.tasks.settle_run)."""

from __future__ import annotations

from dagster import DagsterRunStatus, DefaultSensorStatus, RunStatusSensorContext, run_status_sensor

from orchestration.tasks import settle_run
from resources.store_records import TaskState
from resources.store_resources import Store


@run_status_sensor(run_status=DagsterRunStatus.FAILURE, default_status=DefaultSensorStatus.RUNNING,
                   name="training_run_failed", description="Mark a training task failed as soon as its run fails.")
def training_run_failed(context: RunStatusSensorContext, store: Store):
    settle_run(store, context, TaskState.FAILED)


@run_status_sensor(run_status=DagsterRunStatus.CANCELED, default_status=DefaultSensorStatus.RUNNING,
                   name="training_run_canceled", description="Mark a training task failed when its run is canceled.")
def training_run_canceled(context: RunStatusSensorContext, store: Store):
    settle_run(store, context, TaskState.FAILED)
