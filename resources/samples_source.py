"""The samples log source: pushed samples read back as a LogSource (`SamplesLogSource`).

One shard per window, time-range queries
paged by (timestamp, tiebreak) keyset, each page one chunk of the data stage; counts are one
grouped query per window (`counts_cheaply`), so the sensor's catch-up and observations use it.
A validation-flagged sample is summarised under `ops.fetch.push.validation_key(batch)` and counted
with its batch.

Secrets: passwords travel inside shards as `Secret` (redacted repr) and never reach messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import Field

from ops.naming import InvalidName, validate_batch_name
from ops.secret import Secret
from ops.fetch.push import fold_counts, real_batches, validation_key
from ops.fetch.records import BadRecords
from ops.windows import TimeRange, Windows
from resources.log_source import LogSource, LogSourceError
from resources.sample_table import SampleTable
from resources.sql_samples import SQLSamples
from resources.store import StoreError
from resources.tdengine_samples import TDengineSamples
from ops.urls import url_without_password

NS_PER_MS = 1_000_000


@dataclass
class SamplesShard:
    """One window's samples, read in pages (runs in a data-stage worker)."""

    table: SampleTable
    window: int
    page_size: int = 10_000
    path: str = ""

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None):
        """Chunks {(window, key): {message: count}}, a page at a time. With a multiline `joiner`,
        a batch's consecutive samples that continue an event (lines of a stack trace pushed one per
        call) are joined into it; the event keeps its first sample's split flag."""
        a, b = windows.bounds[self.window]
        valid: set[str] = set()
        after, lo = None, None
        while True:
            try:
                rows, after = self.table.page(a * NS_PER_MS, b * NS_PER_MS, after, self.page_size)
            except StoreError as exc:
                raise LogSourceError(str(exc)) from None
            if not rows:
                break
            chunk: dict = {}
            for batch, ts, message, flag in rows:
                if batch not in valid:
                    try:
                        nfc = validate_batch_name(batch)
                    except InvalidName as exc:
                        bad.add("bad_batch", f"sample {batch!r}@{ts}", str(exc))
                        continue
                    if nfc == batch:
                        valid.add(batch)
                    batch = nfc
                if joiner is not None:
                    self._count(chunk, joiner.push(batch, message, (batch, flag), lambda: f"sample {batch!r}@{ts}"))
                    continue
                key = (self.window, validation_key(batch) if flag else batch)
                counter = chunk.get(key)
                if counter is None:
                    counter = chunk[key] = Counter()
                counter[message] += 1
            lo = rows[0][1] // NS_PER_MS if lo is None else lo
            seen.add(lo, rows[-1][1] // NS_PER_MS)
            yield {k: dict(c) for k, c in chunk.items()}
            if len(rows) < self.page_size:
                break
        if joiner is not None:
            chunk = {}
            self._count(chunk, joiner.flush())
            if chunk:
                yield {k: dict(c) for k, c in chunk.items()}

    def _count(self, chunk: dict, events) -> None:
        for (batch, flag), text in events:
            key = (self.window, validation_key(batch) if flag else batch)
            counter = chunk.get(key)
            if counter is None:
                counter = chunk[key] = Counter()
            counter[text] += 1

    def read(self, windows, bad, seen, joiner=None):
        for chunk in self.read_counts(windows, bad, seen, joiner):
            yield {k: [m for m, c in counts.items() for _ in range(c)] for k, counts in chunk.items()}


class SamplesLogSource(LogSource):
    """Samples pushed to logloop (`logloop push`), read from the store's database."""

    backend: Literal["sql", "tdengine"] = Field(description="sql: SQLite or PostgreSQL; tdengine: TDengine REST.")
    url: str = Field(description="The store's URL: sqlite:///path, postgresql://user@host/db, or taosAdapter's http URL.")
    password: Optional[str] = Field(default=None, repr=False, description="The database password (use EnvVar).")
    database: str = Field(default="logloop", description="TDengine database.")
    user: str = Field(default="root", description="TDengine user.")
    page_size: int = Field(default=10_000, gt=0, le=1_000_000, description="Samples per page (one data-stage chunk).")
    timeout_s: float = Field(default=30.0, gt=0)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (url_without_password(value) if name == "url" else value)

    def table(self) -> SampleTable:
        if self.backend == "tdengine":
            return TDengineSamples(self.url, self.database, self.user, Secret(self.password), self.timeout_s)
        return SQLSamples(self.url, Secret(self.password), self.timeout_s)

    def describe(self) -> str:
        return f"pushed {self.table().describe()}"

    def shards(self, windows: Windows) -> list[SamplesShard]:
        table = self.table()
        return [SamplesShard(table, w, self.page_size, f"samples:{a}") for w, (a, _) in enumerate(windows.bounds)]

    @property
    def counts_cheaply(self) -> bool:
        return True  # one grouped query per window

    def batches_within(self, windows: Windows) -> Optional[list[str]]:
        table, found = self.table(), set()
        try:
            for a, b in windows.bounds:
                found.update(real_batches(table.window_counts(a * NS_PER_MS, b * NS_PER_MS)))
        except StoreError as exc:
            raise LogSourceError(str(exc)) from None
        return sorted(found)

    def count(self, windows: Windows, batches: list[str]) -> dict[tuple[int, str], int]:
        table = self.table()
        out = {}
        try:
            for w, (a, b) in enumerate(windows.bounds):
                got = fold_counts(table.window_counts(a * NS_PER_MS, b * NS_PER_MS))  # validation pools count too
                for batch in batches:
                    out[(w, batch)] = got.get(batch, 0)
        except StoreError as exc:
            raise LogSourceError(str(exc)) from None
        return out
