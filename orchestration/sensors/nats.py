"""Opni's training controller, as a sensor: training requests published on NATS become train_model
runs. Defined only when LOGLOOP_NATS_URL is set (orchestration/definitions.py).

Each tick, on one connection:
1. makes sure the JetStream stream that captures the request subject, and logloop's durable
   pull consumer on it, exist (so plain core-NATS publishers are heard even while logloop is down);
2. acknowledges the messages of the previous tick whose runs now exist. The cursor carries
   their ack subjects, and Dagster stores a tick's cursor only with its run requests, so a
   message is acknowledged only after its run was recorded;
3. publishes what the model-event outbox holds (orchestration/services/model_events.py);
4. fetches up to `max_per_tick` requests: a valid one becomes a RunRequest whose run key
   derives from the message (its Nats-Msg-Id, else its stream sequence), so a redelivery starts
   no second run and is simply acknowledged; an invalid one is published to the error subject
   with its reason and the original, then terminated (never redelivered).
5. coalesces identical requests (same batch, intervals and settings: training_spec.request_key)
   into one run: into a run of this tick's (acknowledged once that run is recorded, as the run's
   own message is), or into a queued or running run of an earlier tick (acknowledged at once).
   The tick logs how many it coalesced; Opni publishing one request 500 times trains once.

When NATS fails midway, the tick logs a warning and still returns the runs of the requests it
already holds; unacknowledged messages come back after the consumer's ack wait.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from orchestration.contract import REQUEST_KEY_TAG
from orchestration.jobs import train_model_job
from orchestration.loop_settings import loop_settings, merge_run_config
from orchestration.services.model_events import flush_outbox
from orchestration.services.nats_requests import Accepted, Rejected, parse, rejection_message
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
    counts: dict = field(default_factory=lambda: {"received": 0, "runs": 0, "coalesced": 0, "rejected": 0,
                                                  "acknowledged": 0, "outbox_sent": 0, "outbox_waiting": 0})
    coalesced: dict = field(default_factory=dict)  # run key -> identical requests folded into that run

    def cursor(self) -> str:
        return json.dumps({"pending": self.pending})

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counts.items() if v) or "nothing to do"


def run_exists(instance, key: str) -> bool:
    return bool(instance.get_run_ids(RunsFilter(tags={RUN_KEY_TAG: key, SENSOR_NAME_TAG: SENSOR_NAME}), limit=1))


ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def active_run_key(instance, request_key: str) -> str | None:
    """The run key of a queued or running run started for an identical request, if there is one."""
    runs = instance.get_runs(RunsFilter(tags={REQUEST_KEY_TAG: request_key, SENSOR_NAME_TAG: SENSOR_NAME},
                                        statuses=ACTIVE), limit=1)
    return runs[0].tags.get(RUN_KEY_TAG, runs[0].run_id) if runs else None


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

        def acknowledge(reply, what: str) -> None:
            """Ack one request whose run exists (a redelivery, or a copy coalesced into another run)."""
            if not alive:
                return
            try:
                session.ack(reply)
                tick.counts["acknowledged"] += 1
            except NatsError as exc:
                failed(what, exc)

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
                flushed = flush_outbox(bus, artifacts, log, session=session)
                tick.counts["outbox_sent"], tick.counts["outbox_waiting"] = flushed.sent, flushed.waiting
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
        by_request: dict[str, str] = {}  # request key -> run key of this tick's run for it
        active: dict[str, str | None] = {}  # request key -> run key of an earlier tick's queued or running run
        known_batches: set[str] = set()
        for incoming in messages:
            result = parse(incoming, bus)
            if isinstance(result, Accepted) and result.run_key not in requested and run_exists(instance, result.run_key):
                # a redelivery of a request whose run was recorded: done with it
                acknowledge(incoming.reply, "acknowledging a redelivered request")
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
            if result.run_key not in requested and result.request_key in by_request:
                # identical to a request of this tick: acknowledged with it, once its run is recorded
                into = by_request[result.request_key]
                tick.pending.append([into, incoming.reply])
                tick.counts["coalesced"] += 1
                tick.coalesced[into] = tick.coalesced.get(into, 0) + 1
                continue
            if result.run_key not in requested:
                if result.request_key not in active:
                    active[result.request_key] = active_run_key(instance, result.request_key)
                into = active[result.request_key]
                if into is not None and into != result.run_key:
                    # identical to a queued or running training: that run answers this request too
                    tick.counts["coalesced"] += 1
                    tick.coalesced[into] = tick.coalesced.get(into, 0) + 1
                    acknowledge(incoming.reply, "acknowledging a coalesced request")
                    continue
            tick.pending.append([result.run_key, incoming.reply])
            if result.run_key in requested:
                continue  # two copies in one tick: one run
            requested.add(result.run_key)
            by_request[result.request_key] = result.run_key
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
        for into, n in tick.coalesced.items():
            context.log.info(f"NATS: {n} request(s) identical to run {into}'s coalesced into it (acknowledged, no new run)")
        if tick.counts["received"]:
            context.log.info(f"NATS: {tick.summary()}")
        partitions = [batch_partitions.build_add_request(tick.new_batches)] if tick.new_batches else []
        return SensorResult(
            run_requests=tick.run_requests, dynamic_partitions_requests=partitions, cursor=tick.cursor(),
            skip_reason=None if tick.run_requests else tick.summary(),
        )

    return nats_training_requests
