"""News of models for other services: `model_ready` when a version is registered, `model_rejected`
when a candidate fails the gate (NATS subjects; see resources/nats_bus.py).

Publishing never undoes what happened: the message goes to an outbox in artifact storage
first (outbox/nats/), is published with retries, and leaves the outbox once the server has
it. What could not be published stays there, and the NATS request sensor sends it on a later
tick (`flush_outbox`). While the step is still trying, its entry is held (`held_until_ms`): the
sensor leaves it alone, or a subscriber would get the message from both. A step that gives up
releases the hold at once; a step that was killed leaves it to run out. Every message carries a
Nats-Msg-Id, so a consumer that sees one twice (a retry after a lost answer) can drop the copy.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import NamedTuple, Optional

from orchestration.contract import CORRUPT_OUTBOX as CORRUPT, NATS_MSG_ID_TAG, NATS_SEQ_TAG, OUTBOX, TASK_TAG
from resources.artifact_core import ArtifactStorageCore
from resources.nats_bus import ModelEvents, NatsError, Outgoing
from ops.windows import now_ms
from resources.store_records import ModelRecord

RETRY_PAUSES_S = (0.5, 2.0)  # between the three tries a registration makes before leaving it to the sensor
HOLD_MARGIN_S = 30.0  # beyond the tries' own deadlines: a busy or paused step still gets to delete its entry


def started_by(tags: dict) -> str:
    if tags.get(NATS_SEQ_TAG):
        return "nats"
    if tags.get("dagster/sensor_name"):
        return f"sensor:{tags['dagster/sensor_name']}"
    if tags.get("dagster/schedule_name"):
        return f"schedule:{tags['dagster/schedule_name']}"
    return "manual"


def _request(tags: dict) -> dict:
    return {"task_id": tags.get(TASK_TAG), "nats_seq": _int(tags.get(NATS_SEQ_TAG)),
            "nats_msg_id": tags.get(NATS_MSG_ID_TAG), "started_by": started_by(tags)}


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _ns(ms: Optional[int]) -> Optional[int]:
    return None if ms is None else ms * 1_000_000


def model_ready(record: ModelRecord, model_name: str, tags: dict) -> tuple[dict, str]:
    """The payload and its message id."""
    payload = {
        "event": "model_ready", "model": model_name, "batch": record.batch, "version": record.version,
        "mode": record.mode, "parent_version": record.parent_version, "artifact_uri": record.artifact_uri,
        "artifact": record.artifact, "metrics": record.metrics, "run_id": record.run_id,
        "window": {"start_ms": record.window_start_ms, "end_ms": record.window_end_ms,
                   "start_ts": _ns(record.window_start_ms), "end_ts": _ns(record.window_end_ms)},
        "registered_ms": record.created_ms or now_ms(), "request": _request(tags),
    }
    return payload, f"logloop:model_ready:{record.batch}:v{record.version}:{record.run_id}"


def model_rejected(batch: str, run_id: str, candidate_key: str, failures: list[str], metrics: dict,
                   tags: dict) -> tuple[dict, str]:
    payload = {
        "event": "model_rejected", "batch": batch, "run_id": run_id, "candidate": candidate_key,
        "reason": "; ".join(failures), "failures": failures, "metrics": metrics, "rejected_ms": now_ms(),
        "request": _request(tags),
    }
    return payload, f"logloop:model_rejected:{batch}:{run_id}"


def outbox_key(msg_id: str) -> str:
    return f"{OUTBOX}/{hashlib.sha256(msg_id.encode()).hexdigest()[:32]}.json"


def announce(events: ModelEvents, artifacts: ArtifactStorageCore, kind: str, payload: dict, msg_id: str, log,
             pauses_s=RETRY_PAUSES_S) -> bool:
    """Publish one event; True once the server has it. Never raises: a failure leaves the message
    in the outbox and a warning in the log."""
    if not events.enabled:
        return False
    message = Outgoing(events.subject_for(kind), json.dumps(payload, allow_nan=False, default=str).encode(), msg_id)
    key = outbox_key(msg_id)
    entry = {"subject": message.subject, "msg_id": msg_id, "kind": kind, "created_ms": now_ms(), "payload": payload}
    tries_s = (len(pauses_s) + 1) * events.publish_deadline_s + sum(pauses_s) + HOLD_MARGIN_S
    try:
        _write(artifacts, key, {**entry, "held_until_ms": entry["created_ms"] + int(tries_s * 1000)})
        kept = True
    except Exception as exc:  # the publish may still work; if it does not, the log is all that is left
        log.error(f"{kind} {msg_id}: could not write the outbox entry {key}: {exc}")
        kept = False
    last: Optional[Exception] = None
    for pause in (*pauses_s, None):
        try:
            events.publish([message])
        except NatsError as exc:
            last = exc
            if pause is not None:
                time.sleep(pause)
            continue
        if kept:
            _delete(artifacts, key, log)
        return True
    if kept:
        try:
            if artifacts.exists(key):  # not already sent by the sensor, after a hold that ran out while this step stalled
                _write(artifacts, key, entry)  # no longer held: the sensor's next tick sends it
        except Exception as exc:  # the hold runs out by itself
            log.warning(f"{kind} {msg_id}: could not release outbox entry {key} for the sensor before its hold ends: {exc}")
    where = f"it waits in the outbox ({key}) for the next tick of the NATS sensor" if kept else \
        f"it is LOST (no outbox entry either); payload: {message.payload.decode()[:2000]}"
    log.warning(f"{kind} {msg_id} was not published to {message.subject} after {len(pauses_s) + 1} tries ({last}); {where}")
    return False


def pending(artifacts: ArtifactStorageCore) -> list[str]:
    return [k for k in artifacts.list(OUTBOX) if k.endswith(".json")]


class Flushed(NamedTuple):
    sent: int
    waiting: int  # still in the outbox, held ones included
    held: int    # left alone: their step is still trying to publish them


def flush_outbox(events: ModelEvents, artifacts: ArtifactStorageCore, log, limit: int = 100, session=None) -> Flushed:
    """Publish what the outbox holds, oldest first, through `session` (a NatsSession) if given, except
    entries a step is still trying to publish itself. Raises NatsError when the server fails midway (what
    was sent is gone from the outbox, the rest stays)."""
    entries, held, now = [], 0, now_ms()
    for key in pending(artifacts):
        try:
            with artifacts.reading(key) as path, open(path) as f:
                entry = json.load(f)
            if not (isinstance(entry["subject"], str) and isinstance(entry["msg_id"], str)):
                raise TypeError("subject and msg_id must be strings")
            message = Outgoing(entry["subject"], json.dumps(entry["payload"]).encode(), entry["msg_id"])
            created, held_until = _ms(entry, "created_ms"), _ms(entry, "held_until_ms")
        except FileNotFoundError:
            continue  # sent by another process meanwhile
        except (ValueError, KeyError, TypeError) as exc:
            _set_aside(artifacts, key, exc, log)
            continue
        if held_until > now:
            held += 1
            continue
        entries.append((created, key, message))
    entries.sort(key=lambda e: (e[0], e[1]))
    sent = 0
    for _, key, message in entries[:limit]:
        if session is not None:
            session.publish(message)
            session.flush()
        else:
            events.publish([message])
        _delete(artifacts, key, log)
        sent += 1
    return Flushed(sent, len(entries) - sent + held, held)


def _ms(entry: dict, field: str) -> int:
    value = entry.get(field, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field} is not a time in ms: {value!r}"[:200])
    return value


def _write(artifacts: ArtifactStorageCore, key: str, entry: dict) -> None:
    with artifacts.writing(key) as tmp, open(tmp, "w") as f:
        json.dump(entry, f, allow_nan=False, default=str)


def _delete(artifacts: ArtifactStorageCore, key: str, log) -> None:
    try:
        artifacts.delete(key)
    except Exception as exc:  # it is published; a copy sent again later carries the same Nats-Msg-Id
        log.warning(f"published, but could not remove outbox entry {key}: {exc}")


def _set_aside(artifacts: ArtifactStorageCore, key: str, exc: Exception, log) -> None:
    target = f"{CORRUPT}/{key.rsplit('/', 1)[-1]}"
    try:
        with artifacts.reading(key) as src, artifacts.writing(target) as tmp:
            with open(src, "rb") as a, open(tmp, "wb") as b:
                b.write(a.read())
        artifacts.delete(key)
        log.error(f"outbox entry {key} is unreadable ({exc}); moved to {target}")
    except Exception as move_exc:
        log.error(f"outbox entry {key} is unreadable ({exc}) and could not be moved aside: {move_exc}")
