"""Compact, exactly mergeable summaries of masked log lines.

A summary keeps a count per distinct masked line. Counts add, so merging the
summaries of many partitions gives the same counts as summarising the whole window
at once, which is what makes the global sampling weights exact.

Where cardinality explodes (every line distinct), the table is bounded: forms with
the smallest counts are compacted out into a *tail*, whose size is kept exactly and
whose lines are kept as a bottom-k sample (each line gets a uniform random key; the
k smallest keys are kept). Bottom-k samples merge exactly too: the union's k
smallest keys are a uniform sample of the union.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_CAP = 100_000        # distinct forms kept per partition before compacting
DEFAULT_TAIL_SAMPLE = 20_000  # lines kept from the tail


@dataclass
class Summary:
    counts: dict[str, int] = field(default_factory=dict)
    tail_count: int = 0
    tail_keys: list[float] = field(default_factory=list)   # sorted ascending
    tail_lines: list[str] = field(default_factory=list)    # aligned with tail_keys
    compactions: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.tail_count

    @property
    def exact(self) -> bool:
        """True when no form was ever compacted out: counts are the true counts."""
        return self.tail_count == 0

    def compact(self, cap: int, tail_size: int, rng: np.random.Generator) -> None:
        """Shrink the table to at most cap/2 forms, moving the rarest into the tail."""
        if len(self.counts) <= cap:
            return
        keep = max(1, cap // 2)
        # the `keep` largest counts stay; ties at the cut go to the tail
        threshold = heapq.nlargest(keep, self.counts.values())[-1]
        moved = [(form, c) for form, c in self.counts.items() if c <= threshold]
        if len(self.counts) - len(moved) > keep or not moved:
            moved = [(form, c) for form, c in self.counts.items() if c < threshold] or moved
        for form, _ in moved:
            del self.counts[form]
        self._add_tail(moved, tail_size, rng)
        self.compactions += 1

    def _add_tail(self, items: list[tuple[str, int]], tail_size: int, rng: np.random.Generator) -> None:
        n_lines = sum(c for _, c in items)
        self.tail_count += n_lines
        if not n_lines:
            return
        # one key per line; a form with c lines draws c keys and keeps its smallest
        # (the only one that can survive, since they share the same text)
        counts = np.fromiter((c for _, c in items), dtype=np.int64, count=len(items))
        u = rng.random(len(items))
        keys = 1.0 - u ** (1.0 / counts)  # min of c uniforms, by inverse CDF
        # a form with c lines may appear up to c times in the sample; approximate by
        # its minimum key only when c > 1 (those are few: compaction moves the rarest)
        order = np.argsort(keys)[:tail_size]
        new_keys = keys[order].tolist()
        new_lines = [items[i][0] for i in order.tolist()]
        merged = sorted(zip(self.tail_keys + new_keys, self.tail_lines + new_lines))[:tail_size]
        self.tail_keys = [k for k, _ in merged]
        self.tail_lines = [line for _, line in merged]

    @classmethod
    def merge(
        cls,
        summaries: Iterable["Summary"],
        cap: int | None = None,
        tail_size: int = DEFAULT_TAIL_SAMPLE,
        seed: int = 0,
    ) -> "Summary":
        """Sum counts; union the tails. With `cap`, the result is compacted as it grows."""
        rng = np.random.default_rng(seed)
        out = cls()
        for s in summaries:
            counts = out.counts
            for form, c in s.counts.items():
                counts[form] = counts.get(form, 0) + c
            out.tail_count += s.tail_count
            if s.tail_keys:
                merged = heapq.nsmallest(
                    tail_size, heapq.merge(zip(out.tail_keys, out.tail_lines), zip(s.tail_keys, s.tail_lines))
                )
                out.tail_keys = [k for k, _ in merged]
                out.tail_lines = [line for _, line in merged]
            out.compactions += s.compactions
            if cap is not None:
                out.compact(cap, tail_size, rng)
        return out


# ---- Parquet: one file per partition, all batches in it --------------------------

_SCHEMA = pa.schema(
    [
        ("batch", pa.string()),
        ("masked", pa.string()),
        ("count", pa.int64()),
        ("tail_key", pa.float64()),  # null for counted forms; the bottom-k key for tail lines
    ]
)


def write_summaries(path: str | Path, summaries: dict[str, Summary], extra_meta: dict | None = None) -> None:
    """Write all batches' summaries of one partition to a Parquet file at `path`."""
    batches, masked, counts, keys = [], [], [], []
    for batch, s in summaries.items():
        for form, c in s.counts.items():
            batches.append(batch)
            masked.append(form)
            counts.append(c)
            keys.append(None)
        for k, line in zip(s.tail_keys, s.tail_lines):
            batches.append(batch)
            masked.append(line)
            counts.append(1)
            keys.append(k)
    meta = {
        "tail_count": {b: s.tail_count for b, s in summaries.items()},
        "compactions": {b: s.compactions for b, s in summaries.items()},
        **(extra_meta or {}),
    }
    table = pa.table([batches, masked, counts, keys], schema=_SCHEMA)
    table = table.replace_schema_metadata({"logloop": json.dumps(meta)})
    pq.write_table(table, path, compression="zstd")


def read_summary(path: str | Path, batch: str) -> Summary:
    """One batch's summary from a partition file (other batches are filtered at read)."""
    pf = pq.ParquetFile(path)
    meta = json.loads(pf.schema_arrow.metadata[b"logloop"])
    table = pq.read_table(path, filters=[("batch", "=", batch)], columns=["masked", "count", "tail_key"])
    masked = table.column("masked").to_pylist()
    counts = table.column("count").to_pylist()
    keys = table.column("tail_key").to_pylist()
    s = Summary(
        tail_count=int(meta["tail_count"].get(batch, 0)),
        compactions=int(meta.get("compactions", {}).get(batch, 0)),
    )
    tail = []
    for form, c, k in zip(masked, counts, keys):
        if k is None:
            s.counts[form] = c
        else:
            tail.append((k, form))
    tail.sort()
    s.tail_keys = [k for k, _ in tail]
    s.tail_lines = [form for _, form in tail]
    return s


def read_summary_meta(path: str | Path) -> dict:
    return json.loads(pq.ParquetFile(path).schema_arrow.metadata[b"logloop"])


def summary_totals(path: str | Path) -> dict[str, int]:
    """Lines per batch in a partition file (what the store records for it), without building Summaries."""
    import pyarrow.compute as pc

    meta = read_summary_meta(path)
    table = pq.read_table(path, columns=["batch", "count", "tail_key"])
    exact = table.filter(pc.is_null(table.column("tail_key"))).group_by("batch").aggregate([("count", "sum")])
    totals = {b: int(n) for b, n in zip(exact.column("batch").to_pylist(), exact.column("count_sum").to_pylist())}
    for b, tail in meta.get("tail_count", {}).items():
        totals[b] = totals.get(b, 0) + int(tail)
    return totals
