"""Pushing samples: `push()` registers log lines as samples of a batch.

`push()` is the one entry point (the CLI, applications, the HTTP endpoint): it reads or takes
lines, counts the bad ones, draws each sample's split flag and registers chunks of
`chunk` samples per write, as CML recommends.

`samples_for_store()` picks the sample table next to the configured store
(resources/sample_table.py lists the backends).
"""

from __future__ import annotations

import time
from typing import IO, Callable, Iterable, Optional

from ops.naming import validate_batch_name
from ops.secret import Secret
from ops.fetch.push import (
    DEFAULT_CHUNK,
    DEFAULT_VALIDATION_SHARE,
    PushStats,
    SplitDraw,
    check_push_key,
    chunk_key,
    clean_messages,
    read_messages,
    rebatch,
    sample_joiner,
)
from resources.sample_table import SampleTable
from resources.sql_samples import SQLSamples
from resources.store import StoreError
from resources.tdengine_samples import TDengineSamples


# ---- from a store -------------------------------------------------------------------------------


def samples_for_store(store) -> SampleTable:
    """The sample table next to a store (a plain one, or an initialised store resource)."""
    from resources.sql_store import SQLStoreCore
    from resources.sqlite_store import SQLiteStoreCore
    from resources.tdengine_store import TDengineStoreCore

    if isinstance(store, TDengineStoreCore):
        return TDengineSamples(store.url, store.database, store.user, Secret(store.password), store.timeout_s,
                               store.deadline_s)
    if isinstance(store, SQLiteStoreCore):
        return SQLSamples(f"sqlite:///{store.path}", timeout_s=store.timeout_s)
    if isinstance(store, SQLStoreCore):
        return SQLSamples(store.url, Secret(store.password), store.timeout_s)
    raise StoreError(f"pushed samples need a SQLite, PostgreSQL or TDengine store, not {type(store).__name__}")


# ---- push -----------------------------------------------------------------------------------------


def push(
    batch: str,
    lines: "IO[bytes] | Iterable[str]",
    table: SampleTable,
    *,
    fmt: str = "text",
    message_field: str = "log",
    validation_share: float = DEFAULT_VALIDATION_SHARE,
    seed: Optional[int] = None,
    chunk: int = DEFAULT_CHUNK,
    source: str = "input",
    multiline: Optional[dict] = None,
    key: Optional[str] = None,
    on_chunk: Optional[Callable[[PushStats], None]] = None,
    stats: Optional[PushStats] = None,
) -> PushStats:
    """Register log lines as samples of `batch`; returns what happened (PushStats).

    `lines`: a binary stream (text or JSON Lines, per `fmt`), or an iterable of messages
    (str). `table`: where (`samples_for_store(store)`; `orchestration.resources.push_samples`
    uses the configured store's). InvalidName for a batch name that
    cannot be one; StoreError when the store fails (the chunks before it stay registered, and
    `stats`, when given, says how many that is).
    `multiline`: rules joining the lines of a stack trace into one sample
    (ops.fetch.multiline.load_multiline; None: a sample per line).

    `key`: the push's key (ops.fetch.push.chunk_key): a chunk registered by an earlier push with
    the same key, input and `chunk` is not registered again but counted in `stats.already`.
    `on_chunk(stats)` is called after each chunk (progress reports).
    """
    batch = validate_batch_name(batch)
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    if key is not None:
        check_push_key(key)
    draw = SplitDraw(validation_share, seed)
    stats = stats if stats is not None else PushStats()
    t0 = time.perf_counter()
    joiner = sample_joiner(multiline, stats)
    if hasattr(lines, "read"):
        messages = read_messages(lines, stats, fmt, message_field, source, joiner=joiner)
    else:
        messages = _then_flush((clean_messages(part, stats, source, joiner) for part in _parts(lines, chunk)), joiner)
    for index, part in enumerate(rebatch(messages, chunk)):
        flags = draw.flags(len(part))
        if key is None:
            span = table.register(batch, part, flags)
        else:
            span = table.register_chunk(batch, part, flags, chunk_key(key, index, part))
        if span is None:
            stats.already += len(part)
        else:
            first, last = span
            stats.registered += len(part)
            stats.validation += sum(flags)
            stats.first_ns = first if stats.first_ns is None else stats.first_ns
            stats.last_ns = last
        stats.seconds = time.perf_counter() - t0
        if on_chunk is not None:
            on_chunk(stats)
    stats.seconds = time.perf_counter() - t0
    return stats


def _then_flush(parts, joiner):
    yield from parts
    if joiner is not None:
        yield [text for _, text in joiner.flush()]


def _parts(items: Iterable, size: int):
    buf = []
    for x in items:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf
