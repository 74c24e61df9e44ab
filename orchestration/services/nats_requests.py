"""Opni's training requests, as they arrive over NATS: each delivery is either a train_model run
(with a run key that a redelivery reproduces) or a rejection (with the reason and the original).

    {"model_to_train": "nulog", "time_intervals": [{"start_ts": <ns>, "end_ts": <ns>}, ...], "batch": "optional"}
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Optional, Union

from orchestration.contract import NATS_MSG_ID_TAG, NATS_SEQ_TAG, PARTITION_TAG, REQUEST_KEY_TAG
from orchestration.services.training_spec import SpecError, TrainingSpec, from_opni_request, request_key, run_config, run_tags
from resources.nats_bus import MSG_ID_HEADER, Incoming, NatsBus, Outgoing

MAX_TAG_CHARS = 200  # a longer Nats-Msg-Id is kept as its hash
MAX_ATTACHED_BYTES = 64 * 1024  # of the original, on the error subject (NATS caps a message at 1 MB by default)


@dataclass(frozen=True)
class Accepted:
    incoming: Incoming
    spec: TrainingSpec
    run_key: str

    def run_config(self) -> dict:
        return run_config(self.spec)

    @property
    def request_key(self) -> str:
        """Identical requests (same batch, intervals and settings; any message) share it."""
        return request_key(self.spec)

    def tags(self) -> dict:
        tags = {**run_tags(self.spec), NATS_SEQ_TAG: str(self.incoming.stream_seq), REQUEST_KEY_TAG: self.request_key}
        msg_id = message_id(self.incoming)
        if msg_id:
            tags[NATS_MSG_ID_TAG] = _bounded(msg_id)
        return {k: v for k, v in tags.items() if k != PARTITION_TAG}  # the RunRequest sets the partition


@dataclass(frozen=True)
class Rejected:
    incoming: Incoming
    reason: str


def message_id(incoming: Incoming) -> Optional[str]:
    value = incoming.headers.get(MSG_ID_HEADER)
    return value.strip() or None if isinstance(value, str) else None


def run_key(incoming: Incoming) -> str:
    """The same for every delivery of one message, and for copies published with one Nats-Msg-Id;
    different for messages of a re-created stream (its sequence starts again, its clock does not)."""
    msg_id = message_id(incoming)
    if msg_id:
        return f"nats-msg-id:{_bounded(msg_id)}"
    return f"nats:{incoming.stream}:{incoming.stream_seq}:{incoming.stored_s}"


def task_id(key: str, incoming: Incoming) -> str:
    """A spec id ([a-z0-9-], at most 63 characters) that names the message and is stable across deliveries."""
    return f"nats-{incoming.stream_seq}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def parse(incoming: Incoming, bus: NatsBus) -> Union[Accepted, Rejected]:
    if len(incoming.data) > bus.max_request_bytes:
        return Rejected(incoming, f"the request is {len(incoming.data)} bytes; at most {bus.max_request_bytes} are accepted")
    try:
        text = incoming.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(incoming, f"the request is not UTF-8 text (byte {exc.start})")
    try:
        payload = json.loads(text)
    except RecursionError:
        return Rejected(incoming, "the request is nested too deeply")
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        reason = " ".join(str(exc).split("; use sys.set_int_max_str_digits")[0].split())
        return Rejected(incoming, f"the request is not valid JSON: {reason}")
    key = run_key(incoming)
    try:
        spec = from_opni_request(payload, batch=bus.default_batch, spec_id=task_id(key, incoming),
                                 max_intervals=bus.max_intervals)
    except SpecError as exc:
        return Rejected(incoming, "; ".join(exc.errors))
    return Accepted(incoming, spec, key)


def rejection_message(rejected: Rejected, bus: NatsBus, at_ms: int) -> Outgoing:
    """What goes to the error subject: the reason, where the message came from, and the message itself
    (as text when it is UTF-8, always as base64)."""
    inc = rejected.incoming
    attached = inc.data[:MAX_ATTACHED_BYTES]
    try:
        text: Optional[str] = attached.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body = {
        "reason": rejected.reason, "rejected_ms": at_ms, "subject": inc.subject, "stream": inc.stream,
        "stream_seq": inc.stream_seq, "num_delivered": inc.num_delivered, "headers": inc.headers,
        "original": text, "original_base64": base64.b64encode(attached).decode("ascii"),
        "original_bytes": len(inc.data), "original_truncated": len(attached) < len(inc.data),
    }
    return Outgoing(bus.request_rejected_subject, json.dumps(body).encode(),
                    msg_id=f"logloop-rejected:{inc.stream}:{inc.stream_seq}:{inc.stored_s}")


def _bounded(value: str) -> str:
    printable = value.isprintable() and len(value) <= MAX_TAG_CHARS
    return value if printable else "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
