"""Jobs: read windows of logs, and train one batch's model end to end."""

from dagster import AssetSelection, define_asset_job

from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.summaries import partition_summaries
from orchestration.assets.train import nulog_model
from orchestration.k8s import train_executor_def
from orchestration.partitions import batch_partitions, time_partitions
from orchestration.tasks import TRAIN_JOB

ingest_logs_job = define_asset_job(
    "ingest_logs",
    selection=AssetSelection.assets(partition_summaries) | AssetSelection.assets("anomaly_scores"),
    partitions_def=time_partitions,
    description="Fetch, mask and summarise time windows of logs, then score them with each batch's model.",
)

train_model_job = define_asset_job(
    TRAIN_JOB,
    selection=AssetSelection.assets(training_sample, nulog_model, registered_model),
    partitions_def=batch_partitions,
    description="Resample, train, validate and register one batch's model.",
    executor_def=train_executor_def(),
)
