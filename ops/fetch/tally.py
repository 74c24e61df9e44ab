"""Counting (key, raw message) rows of many parsed blocks in C, for the fast JSON path."""

from __future__ import annotations

from collections import Counter


class Tally:
    """Counts (key, raw message) rows of many parsed blocks with numpy.

    Raw messages are interned to ids (pyarrow `index_in` against the messages seen so
    far, so Python handles each distinct message once, not each line); counts are kept
    per key as arrays indexed by id. `flush` gives {key: {raw message: count}}.
    """

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.raws: list[str] = []
        self._known = None          # pyarrow array of self.raws
        self.counts: dict = {}      # key -> numpy int64 counts by id
        self.counters: dict = {}    # key -> Counter, for blocks counted in Python (msgspec)
        self._counted = 0           # distinct entries in self.counters

    def __len__(self) -> int:
        return len(self.raws) + self._counted

    def add_counts(self, key, counts) -> None:
        """Add a Counter (or a list of messages, counted in C) under `key`."""
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = Counter()
        before = len(counter)
        counter.update(counts)
        self._counted += len(counter) - before

    def add(self, keys, k_idx, dictionary, m_idx) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._known is not None and len(self._known):
            found = pc.index_in(dictionary, value_set=self._known)
            new = np.flatnonzero(np.asarray(found.is_null()))
            mapping = np.asarray(found.fill_null(-1), dtype=np.int64)
        else:
            new = np.arange(len(dictionary))
            mapping = np.full(len(dictionary), -1, dtype=np.int64)
        if len(new):
            fresh = dictionary.take(pa.array(new))
            base = len(self.raws)
            mapping[new] = np.arange(base, base + len(new))
            self.raws.extend(fresh.to_pylist())
            self._known = fresh if self._known is None else pa.concat_arrays([self._known, fresh])
        ids = mapping[m_idx]
        n = len(self.raws)
        for i, key in enumerate(keys):
            sel = ids if len(keys) == 1 else ids[k_idx == i]
            bc = np.bincount(sel, minlength=n)
            prev = self.counts.get(key)
            if prev is None:
                self.counts[key] = bc
            else:
                if len(prev) < n:
                    prev = np.concatenate([prev, np.zeros(n - len(prev), dtype=prev.dtype)])
                prev += bc
                self.counts[key] = prev

    def flush(self) -> dict:
        import numpy as np

        raws = self.raws
        out = {}
        for key, counts in self.counts.items():
            nz = np.flatnonzero(counts)
            out[key] = dict(zip([raws[i] for i in nz.tolist()], counts[nz].tolist()))
        for key, counter in self.counters.items():
            prev = out.get(key)
            if prev is None:
                out[key] = counter
            else:
                for raw, c in counter.items():
                    prev[raw] = prev.get(raw, 0) + c
        self.raws, self._known, self.counts = [], None, {}
        self.counters, self._counted = {}, 0
        return out
