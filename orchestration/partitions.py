"""Partitions: log data by time window, models by batch (one model per batch)."""

from __future__ import annotations

import os

from dagster import DynamicPartitionsDefinition, TimeWindowPartitionsDefinition

PARTITION_FMT = "%Y-%m-%d-%H:%M"

# Hourly by default; LOGLOOP_PARTITION_CRON="0 0 * * *" makes windows daily.
time_partitions = TimeWindowPartitionsDefinition(
    cron_schedule=os.environ.get("LOGLOOP_PARTITION_CRON", "0 * * * *"),
    start=os.environ.get("LOGLOOP_PARTITION_START", "2025-01-01-00:00"),
    fmt=PARTITION_FMT,
    timezone="UTC",
)

batch_partitions = DynamicPartitionsDefinition(name="batches")
