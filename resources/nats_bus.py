"""NATS, as Opni's services speak it: training requests come in on a subject that a JetStream
stream captures, and news of models goes out on plain subjects.

`ModelEvents` is what assets see: `publish` one or more messages, or raise `NatsError`.
`NoModelEvents` (the default, when LOGLOOP_NATS_URL is unset) publishes nothing; `NatsBus`
publishes over NATS and also gives the request sensor its JetStream consumer. nats-py is
imported on first connection only, so nothing about NATS loads without a URL.

nats-py is asyncio; a `NatsSession` runs it on a private event loop so that sensors and
assets (plain functions) call it synchronously, each call bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field, field_validator


# A subject logloop publishes to or captures: dot-separated tokens, no wildcards, no spaces.
SUBJECT_RE = re.compile(r"^[A-Za-z0-9_\-$]+(\.[A-Za-z0-9_\-$]+)*$")
# Stream and consumer names: JetStream forbids dots, wildcards, spaces and path separators.
NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MSG_ID_HEADER = "Nats-Msg-Id"


class NatsError(RuntimeError):
    """NATS could not be reached, or refused an operation (the message names the server, never a secret)."""


@dataclass(frozen=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str  # the Nats-Msg-Id header: consumers (and JetStream) drop a second copy


@dataclass(frozen=True)
class Incoming:
    """One delivery of a training request from the JetStream consumer."""

    data: bytes
    headers: dict = field(default_factory=dict)
    subject: str = ""
    stream: str = ""
    stream_seq: int = 0
    stored_s: int = 0        # when the stream stored the message (with stream_seq, unique across stream re-creations)
    num_delivered: int = 1
    reply: str = ""          # the ack subject: an ack is a publish to it, from any connection


class ModelEvents(ConfigurableResource, ABC):
    """Where news of models goes: model_ready after a registration, model_rejected after a failed gate."""

    @property
    def enabled(self) -> bool:
        return True

    def subject_for(self, kind: str) -> str:
        raise NotImplementedError

    @property
    def publish_deadline_s(self) -> float:
        """The longest one publish() of one message may take before it returns or raises."""
        return 0.0

    @abstractmethod
    def publish(self, messages: list[Outgoing]) -> None:
        """Send every message, or raise NatsError."""


class NoModelEvents(ModelEvents):
    """No NATS configured: nothing is announced."""

    @property
    def enabled(self) -> bool:
        return False

    def publish(self, messages: list[Outgoing]) -> None:
        return None


def _check_subject(value: str) -> str:
    if not SUBJECT_RE.match(value or ""):
        raise ValueError(f"{value!r} is not a NATS subject logloop can use (dot-separated tokens of letters, "
                         "digits, '-' and '_'; no wildcards or spaces)")
    return value


class NatsBus(ModelEvents):
    """A NATS server (LOGLOOP_NATS_URL). Secrets (password, token, a URL carrying a password) are
    EnvVars, so that only their names reach the config the Dagster UI shows."""

    url: str = Field(description="nats://host:4222 (several: comma-separated)")
    user: Optional[str] = None
    password: Optional[str] = Field(default=None, repr=False, description="use EnvVar")
    token: Optional[str] = Field(default=None, repr=False, description="use EnvVar")
    creds_file: Optional[str] = Field(default=None, description="a .creds file (JWT and NKey seed)")
    request_subject: str = "train"
    request_rejected_subject: str = "train.rejected"
    ready_subject: str = "model_ready"
    model_rejected_subject: str = "model_rejected"
    stream: str = "LOGLOOP_TRAIN"
    consumer: str = "logloop"
    default_batch: str = "default"
    max_intervals: int = Field(default=64, gt=0, le=10_000)
    max_per_tick: int = Field(default=100, gt=0, le=10_000)
    ack_wait_s: float = Field(default=600.0, gt=0, description="unacknowledged deliveries come back after this")
    max_deliveries: int = Field(default=10, gt=1, description="a message still not acted on after this many deliveries is rejected")
    max_request_bytes: int = Field(default=1_000_000, gt=0)
    stream_max_age_s: float = Field(default=14 * 86_400, gt=0, description="how long the stream keeps requests")
    timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("request_subject", "request_rejected_subject", "ready_subject", "model_rejected_subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _check_subject(value)

    @field_validator("stream", "consumer")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value or ""):
            raise ValueError(f"{value!r} is not a JetStream stream or consumer name (1-64 letters, digits, '-', '_')")
        return value

    def __repr_args__(self):
        """What repr() and str() show: servers without their user info (a NATS URL may hold a password or token)."""
        for name, value in super().__repr_args__():
            yield name, (self.where if name == "url" and isinstance(value, str) else value)

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def where(self) -> str:
        """The servers, as errors and logs may show them (no password)."""
        return ", ".join(_without_userinfo(u) for u in self.servers)

    def subject_for(self, kind: str) -> str:
        return {"model_ready": self.ready_subject, "model_rejected": self.model_rejected_subject,
                "request_rejected": self.request_rejected_subject}[kind]

    def session(self, timeout_s: Optional[float] = None) -> "NatsSession":
        return NatsSession(self, timeout_s or self.timeout_s)

    @property
    def publish_deadline_s(self) -> float:
        # a session's deadlines: connecting (2t + 1), the publish, the flush and the close (t each)
        return 5 * self.timeout_s + 1

    def publish(self, messages: list[Outgoing]) -> None:
        if not messages:
            return
        with self.session() as s:
            for m in messages:
                s.publish(m)
            s.flush()

    def connect_options(self, timeout_s: float) -> dict:
        # nats-py reads max_reconnect_attempts=0 as "forever" while connecting; 1 gives each server two tries
        options = dict(servers=self.servers, name="logloop", connect_timeout=max(1, int(timeout_s)),
                       allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2)
        if self.user:
            options["user"] = self.user
        if self.password:
            options["password"] = self.password
        if self.token:
            options["token"] = self.token
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        return options


class NatsSession:
    """One connection, used synchronously: `with bus.session() as s: s.fetch(10)`."""

    def __init__(self, bus: NatsBus, timeout_s: float):
        self.bus, self.timeout_s = bus, timeout_s
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._nc = None
        self._js = None
        self._sub = None

    # -- plumbing ------------------------------------------------------------------------

    def _run(self, coro, timeout_s: Optional[float] = None):
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout_s or self.timeout_s))
        except NatsError:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise NatsError(f"NATS at {self.bus.where} did not answer within {timeout_s or self.timeout_s:g}s") from exc
        except Exception as exc:
            raise NatsError(f"NATS at {self.bus.where}: {type(exc).__name__}: {_clean(exc)}") from exc

    def __enter__(self) -> "NatsSession":
        import nats

        errors: list[Exception] = []

        async def remember(exc):  # instead of nats-py's logging of each failed attempt: the caller reports
            errors.append(exc)

        self._loop = asyncio.new_event_loop()
        try:
            self._nc = self._loop.run_until_complete(asyncio.wait_for(
                nats.connect(**self.bus.connect_options(self.timeout_s), error_cb=remember), self.timeout_s * 2 + 1))
        except Exception as exc:
            self._loop.close()
            cause = errors[-1] if errors else exc
            why = "no answer in time" if isinstance(cause, (asyncio.TimeoutError, TimeoutError)) else \
                f"{type(cause).__name__}: {_clean(cause)}"
            raise NatsError(f"cannot reach NATS at {self.bus.where}: {why}") from exc
        self._js = self._nc.jetstream(timeout=self.timeout_s)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._nc is not None and not self._nc.is_closed:
                self._loop.run_until_complete(asyncio.wait_for(self._nc.close(), self.timeout_s))
        except Exception:
            pass  # a dead server: nothing left to close politely
        finally:
            self._loop.close()

    # -- core NATS -----------------------------------------------------------------------

    def publish(self, message: Outgoing) -> None:
        self._run(self._nc.publish(message.subject, message.payload, headers={MSG_ID_HEADER: message.msg_id}))

    def flush(self) -> None:
        """Return once the server has everything published so far (raise NatsError otherwise)."""
        self._run(self._nc.flush(timeout=max(1, int(self.timeout_s))))

    def ack(self, reply: str) -> None:
        self._run(self._nc.publish(reply, b"+ACK"))

    def terminate(self, reply: str) -> None:
        """Never deliver this message again."""
        self._run(self._nc.publish(reply, b"+TERM"))

    # -- JetStream -----------------------------------------------------------------------

    def ensure_stream(self) -> bool:
        """Create the request stream and its durable consumer unless they exist; True when created."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        bus, created = self.bus, False
        try:
            self._run(self._js.stream_info(bus.stream))
        except NatsError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise
            try:
                self._run(self._js.add_stream(name=bus.stream, subjects=[bus.request_subject],
                                              storage=api.StorageType.FILE, max_age=bus.stream_max_age_s))
            except NatsError as add_exc:
                raise NatsError(f"cannot create JetStream stream {bus.stream!r} for subject {bus.request_subject!r} "
                                f"({add_exc}); if another stream already captures the subject, set "
                                "LOGLOOP_NATS_STREAM to its name") from add_exc
            created = True
        try:
            self._run(self._js.consumer_info(bus.stream, bus.consumer))
        except NatsError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise
            self._run(self._js.add_consumer(bus.stream, api.ConsumerConfig(
                durable_name=bus.consumer, name=bus.consumer, ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL, ack_wait=bus.ack_wait_s, max_deliver=-1,
                filter_subject=bus.request_subject, description="logloop's training requests",
            )))
            created = True
        return created

    def fetch(self, n: int, wait_s: float = 1.0) -> list[Incoming]:
        """Up to n deliveries, waiting at most wait_s for the first; [] when none is pending."""
        import nats.errors

        if self._sub is None:
            self._sub = self._run(self._js.pull_subscribe_bind(durable=self.bus.consumer, stream=self.bus.stream))
        try:
            msgs = self._run(self._sub.fetch(batch=n, timeout=wait_s), wait_s + self.timeout_s)
        except NatsError as exc:
            if isinstance(exc.__cause__, nats.errors.TimeoutError):
                return []
            raise
        out = []
        for m in msgs:
            meta = m.metadata
            out.append(Incoming(
                data=m.data or b"", headers=dict(m.headers or {}), subject=m.subject, stream=meta.stream,
                stream_seq=meta.sequence.stream, stored_s=int(meta.timestamp.timestamp()),
                num_delivered=meta.num_delivered, reply=m.reply,
            ))
        return out

    def consumer_state(self) -> dict:
        from nats.js.errors import NotFoundError

        try:
            info = self._run(self._js.consumer_info(self.bus.stream, self.bus.consumer))
            stream = self._run(self._js.stream_info(self.bus.stream))
        except NatsError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                raise NatsError(f"NATS at {self.bus.where} has no stream {self.bus.stream} with consumer {self.bus.consumer} "
                                "yet: `logloop nats setup` creates them, as does the NATS sensor's first tick") from exc
            raise
        return {"stream": self.bus.stream, "subject": self.bus.request_subject, "messages": stream.state.messages,
                "consumer": self.bus.consumer, "pending": info.num_pending, "ack_pending": info.num_ack_pending,
                "redelivered": info.num_redelivered}


def _without_userinfo(url: str) -> str:
    """nats://user:pass@host or nats://TOKEN@host -> nats://***@host: in a NATS URL even a lone user
    part may be a token, so all of it goes."""
    scheme, sep, rest = url.rpartition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def _clean(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"(nats|tls|ws|wss)://[^@\s/]*@", r"\1://***@", text)
