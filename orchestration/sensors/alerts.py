"""Alerts: failed anomaly checks and failed gates, posted to a webhook.

Only with LOGLOOP_ALERT_WEBHOOK set (read at each tick, so the URL is never part of the code
location's definitions, run config or UI). The sensor `logloop_alerts` reads the executions of three
checks from Dagster's instance:

- `anomaly_rate_jump` on `anomaly_scores` (orchestration/checks/anomaly_rate.py, severity WARN);
- `template_count_shift` on `partition_summaries` (orchestration/checks/template_counts.py, severity WARN):
  templates new in a window, or whose count jumped or dropped;
- `nulog_model_quality` on `nulog_model`, the blocking gate (a candidate was not registered).

Each failed execution is posted once, as one JSON object (a Slack-compatible `text` plus the
details), in the order the executions were recorded. The cursor keeps the highest execution id
below which everything is settled, plus the ids above it already posted: an execution still in
progress holds the cursor back until it ends. A webhook that is down, slow (TIMEOUT_S) or answers
other than 2xx is a warning in the tick's log; that alert and the ones after it are retried on the
next tick (at least once: an answer lost after the webhook took the post gives a repeat). On its
first tick the sensor posts the failures of the last FIRST_TICK_LOOKBACK_S and nothing older.

The URL may hold a token (Slack's hooks do): logs, skip reasons, errors and the cursor show it as
`scheme://host/…` only (`redact`, `scrub`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit

from dagster import (
    AssetCheckKey,
    AssetKey,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from orchestration.config import env_name, settings

WEBHOOK_ENV = env_name("alert_webhook")
SENSOR_NAME = "logloop_alerts"
ANOMALY_CHECK = AssetCheckKey(AssetKey("anomaly_scores"), "anomaly_rate_jump")
GATE_CHECK = AssetCheckKey(AssetKey("nulog_model"), "nulog_model_quality")
TEMPLATE_CHECK = AssetCheckKey(AssetKey("partition_summaries"), "template_count_shift")
CHECKS = (ANOMALY_CHECK, GATE_CHECK, TEMPLATE_CHECK)
TIMEOUT_S = 5.0
MAX_POSTS_PER_TICK = 20
PAGE = 100
MAX_SCAN = 1000                     # executions read per check and tick, newest first
FIRST_TICK_LOOKBACK_S = 3600
STALE_PLANNED_S = 24 * 3600         # a planned execution older than this no longer holds the cursor back


# ---- the URL, never shown ---------------------------------------------------------------------


def redact(url: str) -> str:
    """The webhook as logs may show it: scheme and host, nothing of its path, query or user info."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return f"{parts.scheme}://{host}/…" if parts.scheme and host else "<the webhook URL>"
    except ValueError:
        return "<the webhook URL>"


def scrub(text: str, url: str) -> str:
    """`text` without the URL or any secret-looking piece of it (path, query, user info)."""
    shown = redact(url)
    pieces = {url, url.strip()}
    try:
        parts = urlsplit(url.strip())
        pieces |= {parts.path, parts.query, parts.fragment, parts.netloc.rpartition("@")[0], parts.password or "",
                   parts.username or ""}
        pieces |= {p for p in parts.path.split("/") if len(p) >= 6}
        pieces |= {p.partition("=")[2] for p in parts.query.split("&") if len(p.partition("=")[2]) >= 6}
    except ValueError:
        pass
    for piece in sorted((p for p in pieces if p and len(p) >= 2 and p != "/"), key=len, reverse=True):
        text = text.replace(piece, shown if piece.strip() == url.strip() else "***")
    return text


class WebhookError(Exception):
    """The post failed; the message is scrubbed of the URL."""


def post_json(url: str, payload: dict, timeout_s: float = TIMEOUT_S, deadline_s: float | None = None) -> int:
    """POST `payload` as JSON; the status on 2xx, else WebhookError (scrubbed). `timeout_s` bounds each
    read; `deadline_s` (default: the `deadlines.webhook_s` setting) the whole post, answer included."""
    from ops.deadline import DeadlineExceeded, with_deadline

    if deadline_s is None:
        from orchestration.loop_settings import loop_settings

        deadline_s = loop_settings().deadlines.webhook_s
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url.strip(), data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "logloop-alerts"})

    def post() -> int:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the operator's URL
            response.read()
            return response.status

    try:
        status = with_deadline(post, deadline_s, "webhook-post")
    except DeadlineExceeded as exc:
        raise WebhookError(f"failed: {exc} (deadlines.webhook_s)") from None
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"answered HTTP {exc.code} {scrub(str(exc.reason), url)}") from None
    except urllib.error.URLError as exc:
        raise WebhookError(f"unreachable: {scrub(str(exc.reason), url)}") from None
    except Exception as exc:  # noqa: BLE001 - timeouts, bad URLs, broken connections: never crash the tick
        raise WebhookError(f"failed: {type(exc).__name__}: {scrub(str(exc), url)}") from None
    if not 200 <= status < 300:
        raise WebhookError(f"answered HTTP {status}")
    return status


# ---- what to post -------------------------------------------------------------------------------


@dataclass
class Failure:
    execution_id: int
    check: AssetCheckKey
    run_id: str
    partition: Optional[str]
    description: str
    severity: str
    metadata: dict
    timestamp: float

    @property
    def kind(self) -> str:
        return {ANOMALY_CHECK: "anomaly_jump", TEMPLATE_CHECK: "template_shift"}.get(self.check, "gate_failed")


def _plain(value):
    """A metadata value as plain JSON (its raw value)."""
    for attr in ("data", "value", "text", "md_str"):
        if hasattr(value, attr):
            value = getattr(value, attr)
            break
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def payload(failure: Failure) -> dict:
    when = dt.datetime.fromtimestamp(failure.timestamp, dt.timezone.utc).isoformat()
    if failure.kind == "anomaly_jump":
        jumps = failure.metadata.get("jumps") or []
        text = f"logloop: anomaly rate jump: {failure.description}"
        details = {"jumps": jumps}
    elif failure.kind == "template_shift":
        text = f"logloop: template counts shifted: {failure.description}"
        details = {"shifts": failure.metadata.get("shifts") or []}
    else:
        batch = failure.partition or "?"
        text = f"logloop: model gate failed for batch {batch}, no version registered: {failure.description}"
        details = {"batch": failure.partition,
                   "metrics": {k: v for k, v in failure.metadata.items() if isinstance(v, (int, float, type(None)))}}
    base = (settings().dagster_url or "").rstrip("/")
    run_url = f"{base}/runs/{failure.run_id}" if base and failure.run_id else None
    if run_url:
        text += f" (run {run_url})"
    return {"text": text[:3000], "source": "logloop", "kind": failure.kind,
            "asset": failure.check.asset_key.to_user_string(), "check": failure.check.name,
            "severity": failure.severity, "partition": failure.partition, "description": failure.description,
            "run_id": failure.run_id, "run_url": run_url, "execution_id": failure.execution_id, "time": when,
            **details}


def _failure(record) -> Optional[Failure]:
    event = record.event.dagster_event if record.event is not None else None
    evaluation = getattr(event, "event_specific_data", None)
    if evaluation is None or getattr(evaluation, "passed", True):
        return None
    severity = getattr(evaluation.severity, "value", str(evaluation.severity))
    return Failure(record.id, record.key, record.run_id, getattr(evaluation, "partition", None) or record.partition,
                   evaluation.description or "", severity,
                   {k: _plain(v) for k, v in (evaluation.metadata or {}).items()}, record.create_timestamp)


# ---- the tick -----------------------------------------------------------------------------------


def _cursor(raw: Optional[str]) -> Optional[dict]:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("after"), int):
        return None
    return {"after": value["after"], "done": [i for i in value.get("done", []) if isinstance(i, int)]}


def _executions_after(instance, check: AssetCheckKey, after: int) -> list:
    """The check's executions with id > after, oldest first (at most MAX_SCAN)."""
    storage = instance.event_log_storage
    out, cursor = [], None
    while len(out) < MAX_SCAN:
        page = storage.get_asset_check_execution_history(check, limit=PAGE, cursor=cursor)
        out.extend(r for r in page if r.id > after)
        if len(page) < PAGE or page[-1].id <= after:
            break
        cursor = page[-1].id
    return sorted(out, key=lambda r: r.id)


def evaluate_alerts(context: SensorEvaluationContext, url: str,
                    post: Callable[[str, dict], int] = post_json, now: Optional[float] = None) -> SensorResult:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

    now = time.time() if now is None else now
    instance = context.instance
    state = _cursor(context.cursor)
    first_tick = state is None
    after = state["after"] if state else 0
    done = set(state["done"]) if state else set()

    records = [r for check in CHECKS for r in _executions_after(instance, check, after)]
    records.sort(key=lambda r: r.id)
    pending: list[int] = []       # executions not settled: in progress, or failures not posted yet
    to_post: list[Failure] = []
    for record in records:
        if record.id in done:
            continue
        if record.status == Status.PLANNED:
            run = instance.get_run_by_id(record.run_id)
            if run is not None and not run.is_finished and now - record.create_timestamp < STALE_PLANNED_S:
                pending.append(record.id)
            else:
                done.add(record.id)  # its step never reported (a failed run): nothing to post
            continue
        failure = _failure(record) if record.status == Status.FAILED else None
        if failure is None or (first_tick and now - record.create_timestamp > FIRST_TICK_LOOKBACK_S):
            done.add(record.id)
        else:
            to_post.append(failure)

    posted, problem = [], None
    for failure in to_post:
        if len(posted) >= MAX_POSTS_PER_TICK or problem:
            pending.append(failure.execution_id)
            continue
        try:
            post(url, payload(failure))
        except WebhookError as exc:
            problem = str(exc)
            pending.append(failure.execution_id)
            continue
        except Exception as exc:  # noqa: BLE001 - a poster that is not post_json: still never crash, never leak
            problem = scrub(f"{type(exc).__name__}: {exc}", url)
            pending.append(failure.execution_id)
            continue
        done.add(failure.execution_id)
        posted.append(failure)
        context.log.info(f"alert posted to {redact(url)}: {payload(failure)['text'][:300]}")

    # everything below the oldest unsettled execution is settled; remember what was done above it
    highest = max([after] + [r.id for r in records])
    new_after = min(pending) - 1 if pending else highest
    cursor = json.dumps({"after": new_after, "done": sorted(i for i in done if i > new_after)})
    waiting = [i for i in pending if i not in done]
    if problem:
        context.log.warning(f"alert webhook {redact(url)} {problem}; {len(to_post) - len(posted)} alert(s) "
                            "will be retried next tick")
    summary = (f"posted {len(posted)} alert(s) to {redact(url)}" if posted else "no alert posted")
    if posted:
        summary += ": " + "; ".join(f"{f.kind} {f.partition or ''}".strip() for f in posted[:10])
    if problem:
        summary += f"; webhook {problem}, {len(to_post) - len(posted)} to retry"
    elif waiting:
        summary += f"; {len(waiting)} check execution(s) still in progress or queued"
    if not posted and not problem and not waiting:
        summary = "no new failed anomaly checks or gates"
    return SensorResult(skip_reason=SkipReason(scrub(summary, url)), cursor=cursor)


def build_alert_sensor(interval_s: int = 60):
    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Post failed anomaly checks (anomaly_rate_jump, template_count_shift) and failed gates "
        f"(nulog_model_quality) to the webhook in {WEBHOOK_ENV}, each once. Starts no run.",
    )
    def logloop_alerts(context: SensorEvaluationContext):
        url = settings().secret("alert_webhook")
        if not url:
            return SkipReason(f"{WEBHOOK_ENV} is not set in the code location's environment")
        return evaluate_alerts(context, url)

    return logloop_alerts


def alert_sensors() -> list:
    """The alert sensor, only when LOGLOOP_ALERT_WEBHOOK is set."""
    if not settings().secret("alert_webhook"):
        return []
    from orchestration.loop_settings import loop_settings

    return [build_alert_sensor(loop_settings().sensor_interval_s)]
