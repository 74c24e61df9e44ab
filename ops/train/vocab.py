"""Token vocabulary of masked log lines.

Lines arrive already masked (numbers, IPs... replaced by placeholders), so the vocabulary
is small and stable; it is built from token counts weighted by how often each distinct
line occurred, which is what the un-deduplicated data would have given.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from ops.mask.masking import tokens

PAD, CLS, MASK, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<cls>", "<mask>", "<unk>")


class Vocab:
    def __init__(self, itos: list[str], counts: dict[str, int] | None = None):
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {itos[:4]}")
        if len(set(itos)) != len(itos):
            raise ValueError("vocabulary has duplicate tokens")
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.counts = dict(counts or {})

    @classmethod
    def build(cls, lines_with_counts: Iterable[tuple[str, int]], min_count: int = 1,
              max_size: int | None = None) -> "Vocab":
        """Most frequent tokens first; ties broken alphabetically so the ids are reproducible."""
        counts: Counter[str] = Counter()
        for line, n in lines_with_counts:
            for t in tokens(line):
                counts[t] += n
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + kept, {t: counts[t] for t in kept})

    def encode(self, masked_line: str, max_len: int) -> list[int]:
        """Token ids without <cls>; at most max_len-1 of them so that <cls> + ids fits the model."""
        get = self.stoi.get
        return [get(t, UNK) for t in tokens(masked_line)[: max_len - 1]]

    def oov_share(self, lines_with_counts: Iterable[tuple[str, int]]) -> float:
        """Weighted share of token occurrences the vocabulary does not know (drift signal)."""
        total = oov = 0
        for line, n in lines_with_counts:
            toks = tokens(line)
            total += n * len(toks)
            oov += n * sum(t not in self.stoi for t in toks)
        return oov / total if total else 0.0

    def to_json(self) -> dict:
        return {"itos": self.itos, "counts": self.counts}

    @classmethod
    def from_json(cls, d: dict) -> "Vocab":
        return cls(d["itos"], d.get("counts"))

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos
