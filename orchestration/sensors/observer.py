"""The observer: how many records the source holds per batch in the last closed windows, as
observations of raw_logs' partitions (OpenSearch's count API; off by default for a local folder,
which would be read in full)."""

from dagster import AssetObservation, DefaultSensorStatus, MetadataValue, SensorEvaluationContext, SensorResult, SkipReason, sensor

from orchestration.config import settings
from orchestration.loop_settings import loop_settings
from orchestration.partitions import batch_partitions, last_closed_keys
from resources.log_source import LogSource

SETTINGS = loop_settings()


def observe_source(context: SensorEvaluationContext, log_source: LogSource, windows_back: int, current_time=None):
    """Counts of the last closed windows per known batch, as observations of raw_logs' partitions."""
    from ops.windows import Windows
    from orchestration.partitions import window_ms

    batches = sorted(context.instance.get_dynamic_partitions(batch_partitions.name))
    keys = last_closed_keys(windows_back, current_time)
    if not batches or not keys:
        return SensorResult(skip_reason=SkipReason("no known batches or no closed windows to observe yet"))
    counts = log_source.count(Windows([window_ms(k) for k in keys]), batches)
    events = []
    for w, key in enumerate(keys):
        by_batch = {b: counts.get((w, b), 0) for b in batches}
        events.append(AssetObservation(
            asset_key="raw_logs", partition=key,
            metadata={"records": sum(by_batch.values()), "records_by_batch": MetadataValue.json(by_batch),
                      "source": log_source.describe()},
        ))
    return SensorResult(asset_events=events)


@sensor(
    minimum_interval_seconds=SETTINGS.observe_interval_s,
    # OpenSearch answers with one count request; the local folder would be read in full
    default_status=DefaultSensorStatus.RUNNING if settings().opensearch_hosts else DefaultSensorStatus.STOPPED,
    description="Observe the source: records per batch in the last closed windows (OpenSearch's count API).",
)
def raw_logs_observer(context: SensorEvaluationContext, log_source: LogSource):
    return observe_source(context, log_source, SETTINGS.observe_windows)
