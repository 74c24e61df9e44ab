"""`logloop nats ...`: the NATS side of Opni compatibility (LOGLOOP_NATS_URL).

    logloop nats setup            # create the request stream and the durable consumer (a deploy step)
    logloop nats status [--json]  # stream, consumer backlog, and the model-event outbox
    logloop nats flush            # publish what the outbox holds now, instead of on the sensor's next tick
"""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    nats = sub.add_parser("nats", help="training requests and model events over NATS (LOGLOOP_NATS_URL)")
    verbs = nats.add_subparsers(dest="nats_command", required=True)
    p = verbs.add_parser("setup", help="create the JetStream stream and durable consumer for training requests, "
                         "so that requests published while logloop is down are kept")
    p.set_defaults(func=cmd_setup)
    p = verbs.add_parser("status", help="the request stream, the consumer's backlog and the outbox")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = verbs.add_parser("flush", help="publish the model events waiting in the outbox")
    p.set_defaults(func=cmd_flush)


def _bus():
    """The configured NatsBus, or None after printing why there is none."""
    from orchestration.resources import resource
    from resources.nats_bus import NatsBus

    try:
        bus = resource("model_events")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if not isinstance(bus, NatsBus):
        print("error: LOGLOOP_NATS_URL is not set: NATS is off", file=sys.stderr)
        return None
    return bus


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def cmd_setup(args) -> int:
    from resources.nats_bus import NatsError

    bus = _bus()
    if bus is None:
        return 1
    try:
        with bus.session() as s:
            created = s.ensure_stream()
    except NatsError as exc:
        return _fail(exc)
    verb = "created" if created else "already there"
    print(f"stream {bus.stream} (subject {bus.request_subject!r}) and consumer {bus.consumer}: {verb}, at {bus.where}")
    return 0


def cmd_status(args) -> int:
    from orchestration.services.model_events import pending
    from orchestration.cli.common import open_artifacts
    from resources.nats_bus import NatsError

    bus = _bus()
    if bus is None:
        return 1
    status: dict = {"server": bus.where}
    try:
        with bus.session() as s:
            status.update(s.consumer_state())
    except NatsError as exc:
        status["error"] = str(exc)
    status["outbox"] = len(pending(open_artifacts()))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for k, v in status.items():
            print(f"{k:12} {v}")
    return 2 if "error" in status else 0


class _PrintLog:
    def warning(self, msg):
        print(f"warning: {msg}", file=sys.stderr)

    error = warning


def cmd_flush(args) -> int:
    from orchestration.services.model_events import flush_outbox
    from orchestration.cli.common import open_artifacts
    from resources.nats_bus import NatsError

    bus = _bus()
    if bus is None:
        return 1
    try:
        with bus.session() as s:
            flushed = flush_outbox(bus, open_artifacts(), _PrintLog(), limit=10_000, session=s)
    except NatsError as exc:
        return _fail(exc)
    held = f" ({flushed.held} of them still being published by their step; what it gives up on is sent " \
           "by the next flush or sensor tick)" if flushed.held else ""
    print(f"published {flushed.sent} model event(s); {flushed.waiting} still waiting{held}")
    return 0
