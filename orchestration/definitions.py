"""The code location: one Definitions object."""

from dagster import Definitions

from orchestration.config import settings, warn_unknown_variables

# first, so that a misspelled LOGLOOP_* variable is named even when it makes the load fail below
warn_unknown_variables()

from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.summaries import partition_summaries, raw_logs
from orchestration.assets.train import nulog_model
from orchestration.sensors.alerts import alert_sensors
from orchestration.checks.anomaly_rate import anomaly_rate_jump
from orchestration.checks.quality import nulog_model_quality
from orchestration.jobs import ingest_logs_job, train_model_job
from orchestration.k8s import executor_def
from orchestration.resources import build_resources
from orchestration.sensors.retention import retention_sensor
from orchestration.assets.scoring import anomaly_scores
from orchestration.checks.template_counts import template_count_shift
from orchestration.sensors.observer import raw_logs_observer
from orchestration.sensors.reaper import dead_task_reaper
from orchestration.sensors.run_ends import training_run_canceled, training_run_failed
from orchestration.sensors.new_samples import ingest_logs_schedule, new_samples_sensor

# Opni's training controller: only with a NATS server (nothing about NATS loads without one)
nats_sensors = []
if settings().nats_url:
    from orchestration.sensors.nats import build_nats_sensor

    nats_sensors.append(build_nats_sensor())

defs = Definitions(
    assets=[raw_logs, partition_summaries, training_sample, nulog_model, registered_model, anomaly_scores],
    asset_checks=[nulog_model_quality, anomaly_rate_jump, template_count_shift],
    jobs=[ingest_logs_job, train_model_job],
    schedules=[ingest_logs_schedule],
    sensors=[new_samples_sensor, training_run_failed, training_run_canceled, raw_logs_observer, dead_task_reaper, retention_sensor,
             *nats_sensors, *alert_sensors()],
    resources=build_resources(),
    executor=executor_def(),
)
