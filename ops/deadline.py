"""A total deadline for a blocking call whose client only has per-read timeouts.

Socket timeouts bound each read, not a whole request: an endpoint that accepts a connection and
then trickles a byte every few seconds keeps a per-read timeout from ever firing. `with_deadline`
runs the call in a worker thread and stops waiting after `seconds`, raising DeadlineExceeded. The
call itself cannot be interrupted: the thread ends on its own when its per-read timeouts or the
endpoint end it (it is a daemon thread, so it never holds a process open). Async clients get
their deadline from asyncio instead (fsspec's `timeout=`, NATS's `wait_for`).
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    def __init__(self, seconds: float):
        super().__init__(f"no complete answer within {seconds:g} s")
        self.seconds = seconds


def with_deadline(fn: Callable[[], T], seconds: float, name: str = "deadline-call") -> T:
    """fn()'s result or exception, or DeadlineExceeded once `seconds` have passed."""
    outcome: list = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(seconds):
        raise DeadlineExceeded(seconds)
    ok, value = outcome[0]
    if ok:
        return value
    raise value
