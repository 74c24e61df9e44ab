"""The OpenSearch connection a worker opens itself, its secrets, and what is worth retrying.

Passwords and API keys are wrapped in `Secret`, whose repr/str is redacted, and every error
message is scrubbed of their values, so they never reach logs, run metadata or exceptions.
Transient errors (connection errors and timeouts, HTTP 429 and 5xx) are retried with
exponential backoff and jitter (`call_with_retries`). No Dagster import here.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import orjson

from ops.secret import Secret


TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class OpenSearchReadError(RuntimeError):
    """Reading from OpenSearch failed for good (the message names index, windows, slice, reason)."""


class PitExpired(Exception):
    """The PIT is gone (keep-alive ran out, or a node lost it)."""


@dataclass(frozen=True)
class Connection:
    """How to reach the cluster. Picklable; secrets are `Secret`s (redacted in repr)."""

    hosts: tuple[str, ...]
    username: Optional[str] = None
    password: Secret = field(default_factory=lambda: Secret(None))
    api_key: Secret = field(default_factory=lambda: Secret(None))
    api_key_scheme: str = "ApiKey"          # "Authorization: <scheme> <key>" (e.g. Bearer)
    ca_path: Optional[str] = None
    verify_certs: bool = True
    timeout_s: float = 60.0
    retries: int = 5                       # retries per request after the first attempt
    backoff_s: float = 0.5                 # first backoff; doubles each retry
    max_backoff_s: float = 30.0
    deadline_s: float = 120.0              # one request, retries included (deadlines.opensearch_s)

    def client(self):
        from opensearchpy import OpenSearch
        from opensearchpy.serializer import JSONSerializer

        class _OrjsonSerializer(JSONSerializer):
            def loads(self, s):
                return orjson.loads(s)

            def dumps(self, data):
                if isinstance(data, (str, bytes)):
                    return data
                return orjson.dumps(data).decode()

        kwargs: dict[str, Any] = dict(
            hosts=list(self.hosts),
            timeout=self.timeout_s,
            max_retries=0,            # retries are ours: same page, backoff, PIT reopen
            retry_on_timeout=False,
            verify_certs=self.verify_certs,
            ssl_show_warn=self.verify_certs,
            serializer=_OrjsonSerializer(),
        )
        if self.ca_path:
            kwargs["ca_certs"] = self.ca_path
        if self.username and self.password:
            kwargs["http_auth"] = (self.username, self.password.get())
        if self.api_key:
            kwargs["headers"] = {"Authorization": f"{self.api_key_scheme} {self.api_key.get()}"}
        return OpenSearch(**kwargs)

    def scrub(self, text: str) -> str:
        """`text` with every secret value replaced by ***."""
        for s in (self.password.get(), self.api_key.get()):
            if s:
                text = text.replace(s, "***")
        return text


# ---- errors and retries ----------------------------------------------------------


def is_pit_missing(exc: Exception) -> bool:
    """Whether an opensearch-py error says the PIT (search context) is gone.

    OpenSearch answers a search on an expired PIT with HTTP 404,
    {"error": {"root_cause": [{"type": "search_context_missing_exception",
    "reason": "No search context found for id [...]"}], "type":
    "search_phase_execution_exception", ...}, "status": 404}.
    """
    from opensearchpy.exceptions import TransportError

    if not isinstance(exc, TransportError) or exc.status_code != 404:
        return False
    info = exc.info
    try:
        text = orjson.dumps(info).decode() if isinstance(info, (dict, list)) else str(info)
    except TypeError:
        text = str(info)
    return "search_context_missing_exception" in text or "No search context found" in text


def is_transient(exc: Exception) -> bool:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, OSConnectionError):  # includes ConnectionTimeout
        return True
    return isinstance(exc, TransportError) and exc.status_code in TRANSIENT_STATUS


def describe_error(exc: Exception) -> str:
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, TransportError):
        status = exc.status_code
        reason = ""
        info = exc.info
        if isinstance(info, dict) and isinstance(info.get("error"), dict):
            err = info["error"]
            causes = err.get("root_cause") or [err]
            reason = f"{causes[0].get('type', '')}: {causes[0].get('reason', '')}"
        elif isinstance(info, dict) and "error" in info:
            reason = str(info["error"])
        else:
            reason = str(exc.error) if exc.error else type(info).__name__
        return f"HTTP {status} {reason}".strip() if status != "N/A" else f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def call_with_retries(conn: Connection, fn, what: str, sleep=time.sleep):
    """fn() with retries of transient errors (exponential backoff, jitter), all within conn.deadline_s.

    Raises PitExpired for a missing PIT, OpenSearchReadError (scrubbed) otherwise.
    """
    from ops.deadline import DeadlineExceeded, with_deadline

    attempt = 0
    end = time.monotonic() + conn.deadline_s
    while True:
        try:
            return with_deadline(fn, max(0.0, end - time.monotonic()), "opensearch-request")
        except DeadlineExceeded:
            raise OpenSearchReadError(conn.scrub(f"{what}: no complete answer within {conn.deadline_s:g} s "
                                                 f"(deadlines.opensearch_s), {attempt + 1} attempt(s)")) from None
        except Exception as exc:  # noqa: BLE001 - classified below
            if is_pit_missing(exc):
                raise PitExpired(describe_error(exc)) from None
            if is_transient(exc) and attempt < conn.retries and time.monotonic() < end:
                delay = min(conn.max_backoff_s, conn.backoff_s * (2**attempt))
                sleep(delay * random.uniform(0.5, 1.0))
                attempt += 1
                continue
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise OpenSearchReadError(conn.scrub(f"{what}: {describe_error(exc)}{tries}")) from None
