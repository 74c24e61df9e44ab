"""Opni's training controller, as a sensor: training requests published on NATS become train_model
runs. Defined only when LOGLOOP_NATS_URL is set (orchestration/definitions.py).

Each tick, on one connection:
1. makes sure the JetStream stream that captures the request subject, and logloop's durable
   pull consumer on it, exist (so plain core-NATS publishers are heard even while logloop is down);
2. acknowledges the messages of the previous tick whose runs now exist. The cursor carries
   their ack subjects, and Dagster stores a tick's cursor only with its run requests, so a
   message is acknowledged only after its run was recorded;
3. publishes what the model-event outbox holds (orchestration/model_events.py);
4. fetches up to `max_per_tick` requests: a valid one becomes a RunRequest whose run key
   derives from the message (its Nats-Msg-Id, else its stream sequence), so a redelivery starts
   no second run and is simply acknowledged; an invalid one is published to the error subject
   with its reason and the original, then terminated (never redelivered).

When NATS fails midway, the tick logs a warning and still returns the runs of the requests it
already holds; unacknowledged messages come back after the consumer's ack wait.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from orchestration.jobs import train_model_job
from orchestration.loop_settings import loop_settings, merge_run_config
from orchestration.model_events import flush_outbox
from orchestration.nats_requests import Accepted, Rejected, parse, rejection_message
from orchestration.partitions import batch_partitions
from resources.artifacts import ArtifactStorage
from resources.nats_bus import ModelEvents, NatsBus, NatsError
from ops.windows import now_ms

SENSOR_NAME = "nats_training_requests"
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass
class Tick:
    run_requests: list = field(default_factory=list)
    new_batches: list = field(default_factory=list)
    pending: list = field(default_factory=list)   # [run key, ack subject] of requests whose runs are not yet seen
    warnings: list = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {"received": 0, "runs": 0, "rejected": 0, "acknowledged": 0,
                                                  "outbox_sent": 0, "outbox_waiting": 0})

    def cursor(self) -> str:
        return json.dumps({"pending": self.pending})

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counts.items() if v) or "nothing to do"


def run_exists(instance, key: str) -> bool:
    return bool(instance.get_run_ids(RunsFilter(tags={RUN_KEY_TAG: key, SENSOR_NAME_TAG: SENSOR_NAME}), limit=1))


def parse_cursor(cursor: str | None) -> list:
    try:
        pending = json.loads(cursor or "{}").get("pending", [])
        return [p for p in pending if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)]
    except (ValueError, AttributeError):
        return []


def drain(bus: NatsBus, instance, artifacts: ArtifactStorage, pending: list, log) -> Tick:
    """One tick's work (see the module docstring); never raises for NATS faults."""
    tick = Tick()
    try:
        session = bus.session().__enter__()
    except NatsError as exc:
        tick.pending = pending  # not acknowledged yet: try again next tick
        tick.warnings.append(str(exc))
        return tick
    try:
        alive = True

        def failed(what: str, exc: Exception) -> None:
            nonlocal alive
            alive = False
            tick.warnings.append(f"{what}: {exc}")

        try:
            session.ensure_stream()
        except NatsError as exc:
            failed("the request stream", exc)
        if alive:
            try:
                for key, reply in pending:
                    if run_exists(instance, key):
                        session.ack(reply)
                        tick.counts["acknowledged"] += 1
                session.flush()
            except NatsError as exc:
                failed("acknowledging the last tick's requests", exc)
        if alive:
            try:
                tick.counts["outbox_sent"], tick.counts["outbox_waiting"] = flush_outbox(bus, artifacts, log, session=session)
            except NatsError as exc:
                failed("publishing the outbox", exc)
        messages = []
        if alive:
            try:
                messages = session.fetch(bus.max_per_tick)
            except NatsError as exc:
                failed("fetching requests", exc)
        tick.counts["received"] = len(messages)
        requested: set[str] = set()
        known_batches: set[str] = set()
        for incoming in messages:
            result = parse(incoming, bus)
            if isinstance(result, Accepted) and result.run_key not in requested and run_exists(instance, result.run_key):
                if alive:  # a redelivery of a request whose run was recorded: done with it
                    try:
                        session.ack(incoming.reply)
                        tick.counts["acknowledged"] += 1
                    except NatsError as exc:
                        failed("acknowledging a redelivered request", exc)
                continue
            if isinstance(result, Accepted) and incoming.num_delivered > bus.max_deliveries:
                result = Rejected(incoming, f"delivered {incoming.num_delivered} times and still no run was recorded for it")
            if isinstance(result, Rejected):
                tick.counts["rejected"] += 1
                log.warning(f"NATS request {incoming.subject} #{incoming.stream_seq} rejected: {result.reason}")
                if alive:
                    try:
                        session.publish(rejection_message(result, bus, now_ms()))
                        session.flush()
                        session.terminate(incoming.reply)
                    except NatsError as exc:
                        failed(f"publishing the rejection of request #{incoming.stream_seq}", exc)
                continue
            tick.pending.append([result.run_key, incoming.reply])
            if result.run_key in requested:
                continue  # two copies in one tick: one run
            requested.add(result.run_key)
            batch = result.spec.batch
            if batch not in known_batches and not instance.has_dynamic_partition(batch_partitions.name, batch):
                tick.new_batches.append(batch)
            known_batches.add(batch)
            # the loop's training settings, as for sensor-started runs; the request's own fields win
            config = merge_run_config(loop_settings().training_run_config, result.run_config())
            tick.run_requests.append(RunRequest(run_key=result.run_key, partition_key=batch, run_config=config,
                                                tags=result.tags()))
            tick.counts["runs"] += 1
        if alive:
            try:
                session.flush()
            except NatsError as exc:
                failed("flushing acknowledgements", exc)
    finally:
        session.__exit__(None, None, None)
    return tick


def build_nats_sensor():
    @sensor(name=SENSOR_NAME, job=train_model_job, minimum_interval_seconds=loop_settings().sensor_interval_s,
            default_status=DefaultSensorStatus.RUNNING,
            description="Opni's training requests from NATS (LOGLOOP_NATS_URL) become train_model runs; "
                        "publishes the model-event outbox.")
    def nats_training_requests(context: SensorEvaluationContext, model_events: ModelEvents,
                               artifacts: ArtifactStorage) -> SensorResult:
        if not isinstance(model_events, NatsBus):
            return SensorResult(skip_reason="LOGLOOP_NATS_URL is not set")
        tick = drain(model_events, context.instance, artifacts, parse_cursor(context.cursor), context.log)
        for warning in tick.warnings:
            context.log.warning(f"NATS: {warning}")
        partitions = [batch_partitions.build_add_request(tick.new_batches)] if tick.new_batches else []
        return SensorResult(
            run_requests=tick.run_requests, dynamic_partitions_requests=partitions, cursor=tick.cursor(),
            skip_reason=None if tick.run_requests else tick.summary(),
        )

    return nats_training_requests
