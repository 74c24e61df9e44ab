"""Score raw log lines with a model artifact: NuLog's anomaly score, with a cache.

`Scorer(artifact)` masks lines with the artifact's own masking rules, encodes them with its own
vocabulary and scores each line as NuLog does: the share of its tokens whose true value the model
ranks within its top k when that token is masked (ops/validate/evaluate.py; unknown tokens miss).

Whether a line is an anomaly, and why, is `ops.validate.verdict.judge`: labels (own, near, the
classifier's), then severity, then the score against the model's threshold.

Logs repeat heavily once masked, so the work is done once per DISTINCT masked line: a bounded LRU
cache maps masked line -> score across calls, and the distinct lines a call has not seen before
go through the model together, batched by length (`NuLog.masked_rows`, all positions of a line
in one pass). The defaults for k and the threshold come from the artifact's metrics (the values
its quality gate used: the threshold calibrated on its validation split, ops.validate.verdict.
calibrate_threshold), else Opni's (ops/validate/defaults.py).

Models are read with ops.register.artifact only (safetensors + json, never pickle); a missing or corrupt
artifact raises ops.register.artifact.ArtifactError naming the path.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Iterable

from ops.register.artifact import Artifact, ArtifactError, read_artifact
from ops.validate.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from ops.validate.feedback import LabelIndex
from ops.mask.masking import Masker
from ops.validate.verdict import judge

@dataclass(frozen=True)
class ScoredLine:
    score: float     # share of the line's tokens predicted within top k (1.0 for a line without tokens)
    anomaly: bool    # the verdict (see the module docstring)
    masked: str      # the masked form the score belongs to (the line's event key)
    reason: str      # why flagged or not: one of ops.validate.verdict.REASONS


def _metric(artifact: Artifact, key: str):
    value = (artifact.metrics or {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def model_threshold(artifact: Artifact) -> float:
    """The threshold the model's gate set (calibrated, or the gate's configured one), else Opni's 0.7
    (artifacts from before calibration, or built outside the pipeline)."""
    value = _metric(artifact, "threshold")
    return float(value) if value is not None else DEFAULT_THRESHOLD


class Scorer:
    def __init__(self, artifact: Artifact, top_k: int | None = None, threshold: float | None = None,
                 cache_size: int = 100_000, batch_size: int = 4096, labels: dict[str, str] | None = None):
        if not isinstance(artifact, Artifact):
            raise TypeError(f"Scorer needs an ops.register.artifact.Artifact, got {type(artifact).__name__}")
        where = artifact.meta.get("path", "in memory") if isinstance(artifact.meta, dict) else "in memory"
        n_out = artifact.model.cfg.vocab_size
        if len(artifact.vocab) != n_out or artifact.model.tok.num_embeddings != n_out:
            raise ValueError(f"vocabulary mismatch ({where}): the vocabulary has {len(artifact.vocab)} tokens, "
                             f"the model {artifact.model.tok.num_embeddings} embeddings and {n_out} outputs")
        try:
            self.masker = Masker(artifact.masking_rules)
        except (ValueError, AttributeError, TypeError) as e:
            raise ValueError(f"the artifact's masking rules are unusable ({where}): {e}") from None
        self.artifact = artifact
        self.top_k = int(top_k if top_k is not None else (_metric(artifact, "top_k") or DEFAULT_TOP_K))
        self.threshold = float(threshold if threshold is not None else model_threshold(artifact))
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        # 0 is a calibrated threshold at which the score flags nothing (ops.validate.verdict.calibrate_threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.cache_size, self.batch_size = int(cache_size), int(batch_size)
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.hits = self.misses = 0  # cache statistics, per distinct masked line of each call
        # feedback: the labels the model was trained with (its meta), then the given ones (newer) over them;
        # a form takes its own label or its nearest labelled form's (ops.validate.feedback), over every other rule
        meta = artifact.meta if isinstance(artifact.meta, dict) else {}
        try:
            self.feedback = LabelIndex({**dict(meta.get("feedback") or {}), **dict(labels or {})},
                                       classifier=meta.get("feedback_model"))
        except (ValueError, TypeError) as e:
            raise ValueError(f"the feedback labels are unusable ({where}): {e}") from None

    @classmethod
    def from_path(cls, path, **kwargs) -> "Scorer":
        """Read an artifact .zip (ArtifactError with the path when missing or corrupt)."""
        return cls(read_artifact(os.fspath(path)), **kwargs)

    def score_masked(self, masked_lines: list[str]) -> list[float]:
        """Scores of already-masked lines, through the cache."""
        from ops.validate.evaluate import score_lines

        distinct = list(dict.fromkeys(masked_lines))
        cache = self._cache
        found: dict[str, float] = {}
        todo = []
        for m in distinct:
            s = cache.get(m)
            if s is None:
                todo.append(m)
            else:
                found[m] = s
                cache.move_to_end(m)
        self.hits += len(found)
        self.misses += len(todo)
        if todo:
            fresh = score_lines(self.artifact.model, self.artifact.vocab, todo, self.top_k, self.batch_size)
            for m, s in zip(todo, fresh):
                found[m] = s
                if self.cache_size:
                    cache[m] = s
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        return [found[m] for m in masked_lines]

    def score(self, lines: Iterable[str]) -> list[ScoredLine]:
        """One ScoredLine per input line, in order. ValueError on empty input."""
        if isinstance(lines, (str, bytes)):
            raise TypeError("score() takes an iterable of lines, not a single string")
        lines = list(lines)
        if not lines:
            raise ValueError("no log lines to score (empty input)")
        mask = self.masker.mask
        masked_by_raw: dict[str, str] = {}
        masked = []
        for line in lines:
            m = masked_by_raw.get(line)
            if m is None:
                m = masked_by_raw[line] = mask(line)
            masked.append(m)
        counts = Counter(masked)
        forms = list(counts)
        scores = dict(zip(forms, self.score_masked(forms)))
        verdicts = dict(zip(forms, judge(forms, [scores[f] for f in forms], [counts[f] for f in forms],
                                         self.threshold, self.sourced_labels_for(forms))))
        return [ScoredLine(scores[m], verdicts[m][0], m, verdicts[m][1]) for m in masked]

    def labels_for(self, forms) -> dict[str, str]:
        return self.feedback.labels_for(forms) if len(self.feedback) else {}

    def sourced_labels_for(self, forms) -> dict[str, tuple[str, str]]:
        """{form: (label, source)} of the forms feedback decides, source the verdict's reason
        ("label", "near_label" or "classifier"; ops.validate.feedback.LabelIndex)."""
        return self.feedback.sourced_labels_for(forms) if len(self.feedback) else {}

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)


@dataclass(frozen=True)
class ScoredForm:
    masked: str      # a distinct masked form of the window
    lines: int       # how many of the window's lines it stands for (see score_summary_forms)
    score: float
    anomaly: bool
    reason: str      # one of ops.validate.verdict.REASONS


def score_summary_forms(scorer: "Scorer", summary) -> list[ScoredForm]:
    """One ScoredForm per distinct masked form of a window summary (ops.mask.summary.Summary), each
    scored once: the counted forms first, then the tail sample's forms, in the sample's order.

    Counted forms carry their exact line counts and are judged by them against the whole window.
    A compacted tail keeps only a uniform sample of its `tail_count` lines, so a sampled form's
    `lines` is its share of the tail, an estimate: each sampled line stands for
    tail_count // len(sample) lines, and the remainder goes one line each to the first sampled
    lines in sample order (random, by the sample's keys). The lines of all forms therefore add up
    to the window's `summary.total`. Tail forms were seen once each, so they are judged as single
    lines (never established); a sampled form that is also counted (after summaries were merged)
    adds its share to the counted form, which keeps its verdict. A tail without a sample (never
    with a sample size above 0) is in no form.
    """
    forms = list(summary.counts)
    total = summary.total
    counts = [summary.counts[f] for f in forms]
    scores = scorer.score_masked(forms) if forms else []
    # established against the whole window (the tail's forms were seen once each: never established)
    verdicts = judge(forms, scores, counts, scorer.threshold, scorer.sourced_labels_for(forms), total=total)
    out = {f: [c, s, flag, why] for f, c, s, (flag, why) in zip(forms, counts, scores, verdicts)}
    sample = list(summary.tail_lines)
    if summary.tail_count and sample:
        each, extra = divmod(summary.tail_count, len(sample))
        tail = [f for f in dict.fromkeys(sample) if f not in out]
        for f in score_single_lines(scorer, tail, total):
            out[f.masked] = [0, f.score, f.anomaly, f.reason]
        for i, f in enumerate(sample):
            out[f][0] += each + (i < extra)
    return [ScoredForm(f, n, s, flag, why) for f, (n, s, flag, why) in out.items()]


def score_single_lines(scorer: "Scorer", forms: list[str], total: int) -> list[ScoredForm]:
    """Forms seen once each among a window's `total` lines (a compacted tail's sampled forms, or a
    form the window's summary does not hold), scored and judged as single lines: never established."""
    if not forms:
        return []
    scores = scorer.score_masked(forms)
    verdicts = judge(forms, scores, [1] * len(forms), scorer.threshold, scorer.sourced_labels_for(forms),
                     total=total)
    return [ScoredForm(f, 1, s, flag, why) for f, s, (flag, why) in zip(forms, scores, verdicts)]


def summary_tally(summary, forms: list[ScoredForm]) -> tuple[int, int]:
    """(lines, anomalies) of a window summary from its scored forms: its lines, and the lines of its
    flagged forms (exact for the counted forms, the flagged forms' estimated share of a compacted tail)."""
    return summary.total, sum(f.lines for f in forms if f.anomaly)


def score_summary(scorer: "Scorer", summary) -> tuple[int, int]:
    """(lines, anomalies) of one window summary (score_summary_forms, then summary_tally)."""
    return summary_tally(summary, score_summary_forms(scorer, summary))


def forms_by_reason(forms: list[ScoredForm]) -> dict:
    """Lines per verdict reason of a window's scored forms: {"flagged_by": {...}, "normal_by": {...}}."""
    from ops.validate.verdict import reason_counts

    return reason_counts([(f.anomaly, f.reason) for f in forms], [f.lines for f in forms])


__all__ = ["ArtifactError", "ScoredForm", "ScoredLine", "Scorer", "forms_by_reason", "model_threshold", "score_summary",
           "score_summary_forms", "summary_tally", "DEFAULT_THRESHOLD", "DEFAULT_TOP_K"]
