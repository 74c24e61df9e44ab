"""Checks every ArtifactStorage implementation must pass, shared by the S3 and Azure tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable


def replace_under_readers(st, other_storage: Callable[[], object], key: str, size: int) -> set:
    """Replace `key` (holding b"a" * size) six times, alternating b"b" and b"a", while two readers,
    each with its own client (`other_storage()`), read it in a loop. Asserts that no reader ever
    saw a torn object or failed; returns the first bytes the readers saw."""
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        other = other_storage()
        while not stop.is_set():
            try:
                with other.reading(key) as path:
                    data = Path(path).read_bytes()
                assert len(data) == size and len(set(data)) == 1, "a torn object"
                seen.add(data[:1])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(6):
        with st.writing(key) as tmp:
            Path(tmp).write_bytes((b"b" if i % 2 == 0 else b"a") * size)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert seen <= {b"a", b"b"} and seen
    return seen
