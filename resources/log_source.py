"""Log sources: stream one time window of logs in chunks, grouped by batch.

A window is never held whole in memory and raw logs are never copied to disk: the
source yields chunks ({batch: [message, ...]}) that the data stage consumes. A
source hands out a picklable `reader`, so windows can be read in worker processes.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Callable, Iterator

from dagster import ConfigurableResource
from pydantic import Field

from ops import local_files
from ops.records import BadRecords, RecordFormat

WindowReader = Callable[[int, int, BadRecords], Iterator[dict[str, list[str]]]]


class LogSourceError(RuntimeError):
    """The source cannot be read (missing folder, unreachable server)."""


class LogSource(ConfigurableResource, ABC):
    time_field: str = Field(default="time", description="Field holding the time (epoch ms or ISO-8601).")
    message_field: str = Field(default="log", description="Field holding the log message.")
    batch_fields: list[str] = Field(
        default_factory=list,
        description="Fields whose values, joined by '/', name a record's batch; none means 'default'.",
    )
    default_batch: str = "default"

    @property
    def record_format(self) -> RecordFormat:
        return RecordFormat(self.time_field, self.message_field, tuple(self.batch_fields), self.default_batch)

    @abstractmethod
    def reader(self) -> WindowReader:
        """A picklable function (start_ms, end_ms, bad) -> chunks {batch: [message, ...]}.

        Bad records are counted into `bad`, never raised; an unreadable source raises.
        """

    def read_window(self, start_ms: int, end_ms: int, bad: BadRecords) -> Iterator[dict[str, list[str]]]:
        return self.reader()(start_ms, end_ms, bad)

    @abstractmethod
    def describe(self) -> str: ...


class LocalLogSource(LogSource):
    """A folder of log files: JSON Lines in Opni's shape, or plain text (see ops.local_files)."""

    path: str
    block_size_bytes: int = 1 << 20

    def describe(self) -> str:
        return f"local folder {self.path}"

    def reader(self) -> WindowReader:
        return functools.partial(_read_local, self.path, self.record_format, self.block_size_bytes)


def _read_local(path, fmt, block_size, start_ms, end_ms, bad):
    try:
        yield from local_files.read_window(path, fmt, start_ms, end_ms, bad, block_size)
    except FileNotFoundError as exc:
        raise LogSourceError(str(exc)) from exc
