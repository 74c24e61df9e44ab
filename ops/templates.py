"""NuLog's log parser: the template of each log line, from a trained model.

NuLog (Nedelkoski et al. 2020) reads templates off the masked-token model: a token of a line
stays in the template when the model, shown the line with that token masked, ranks the true
token within its top k; otherwise the token is a variable and becomes `<*>`. This module applies
that rule to the artifact's own masked lines (its masking rules and vocabulary), in three steps:

1. Token rule. A token becomes `<*>` when
   * it is a masking placeholder (<num>, <ip>, <path>, <token>...): the masking already decided
     it is a variable, and keeping the placeholder would split "user <num>" from "user bob";
   * it contains a digit (masking turns those into <token>/<num>; kept as a rule of its own so
     that other masking rules do not change it);
   * it is unknown to the vocabulary (it can never be predicted);
   * or the model's rank of the true token at its masked position is >= k (top-k miss).
   The default k is the artifact's scoring k (metrics["top_k"], else 50, Opni's default), so a
   token is constant in a template exactly when the anomaly score counts it as a hit.
2. Collapse. A run of `<*>` joined directly or by single punctuation tokens ("<*> . <*> - <*>")
   is one variable: a host name or a path tokenizes into several tokens, and how many depends on
   its value, so "<*> . <*>" and "<*>" must not make two templates.
3. One-slot generalisation. The top-k rule is decided line by line, so the frequent value of a
   variable (the user "root", the unit "kb") is predicted and kept while its rare values miss and
   become `<*>`. When the same-length template with that one token replaced by `<*>` exists among
   the templates of the input, the line belongs to that more general template (followed to a
   fixed point). Nothing is generalised that the model did not itself mark as variable in some
   line, so constants that never miss stay constant.

Pure computation: no dagster, no pickle (models come from ops.artifact).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from ops.masking import Masker, tokens

VARIABLE = "<*>"
DEFAULT_TOP_K = 50
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9]*>")
_PUNCT = re.compile(r"[^\w\s]")


def default_top_k(artifact) -> int:
    k = (getattr(artifact, "metrics", None) or {}).get("top_k")
    return int(k) if isinstance(k, (int, float)) and k >= 1 else DEFAULT_TOP_K


def token_template(toks: list[str], ranks: list[int], top_k: int) -> list[str]:
    """Step 1: each token kept or `<*>` (tokens past the model's max_len have no rank: `<*>`)."""
    out = []
    for i, t in enumerate(toks):
        variable = (i >= len(ranks) or ranks[i] >= top_k or _PLACEHOLDER.fullmatch(t) is not None
                    or any(c.isdigit() for c in t))
        out.append(VARIABLE if variable else t)
    return out


def collapse(toks: list[str]) -> list[str]:
    """Step 2: every run `<*> (punct? <*>)*` becomes a single `<*>`."""
    out: list[str] = []
    i, n = 0, len(toks)
    while i < n:
        if toks[i] != VARIABLE:
            out.append(toks[i])
            i += 1
            continue
        j = i + 1
        while True:
            if j < n and toks[j] == VARIABLE:
                j += 1
            elif j + 1 < n and _PUNCT.fullmatch(toks[j]) and toks[j + 1] == VARIABLE:
                j += 2
            else:
                break
        out.append(VARIABLE)
        i = j
    return out


def generalize(template_counts: Counter | dict) -> dict[str, str]:
    """Step 3: template -> the most general template of the input it belongs to.

    A template maps to an existing same-length template that differs from it in exactly one
    position, where the other has `<*>` (the one with the most lines wins, then the leftmost
    position); mappings are followed until nothing more general exists.
    """
    counts = dict(template_counts)
    parent: dict[str, str] = {}
    for t in counts:
        toks = t.split(" ")
        best, best_key = t, None
        for i, tok in enumerate(toks):
            if tok == VARIABLE:
                continue
            g = " ".join(toks[:i] + [VARIABLE] + toks[i + 1:])
            if g in counts:
                key = (counts[g], -i)
                if best_key is None or key > best_key:
                    best, best_key = g, key
        parent[t] = best
    out = {}
    for t in counts:
        r = t
        while parent[r] != r:  # each step adds a <*>, so this ends
            r = parent[r]
        out[t] = r
    return out


def masked_templates(ranks_by_line: dict[str, list[int]], top_k: int) -> dict[str, str]:
    """Masked line -> template, given each distinct masked line's token ranks."""
    first = {m: " ".join(collapse(token_template(tokens(m), r, top_k))) for m, r in ranks_by_line.items()}
    general = generalize(Counter(first.values()))
    return {m: general[t] for m, t in first.items()}


def line_templates(artifact, lines: Iterable[str], top_k: int | None = None, batch_size: int = 4096) -> list[str]:
    """The template of every input line (raw lines, masked here with the artifact's rules).

    The one-slot generalisation is decided over all the given lines together, so pass them in
    one call.
    """
    from ops.evaluate import token_ranks

    k = default_top_k(artifact) if top_k is None else int(top_k)
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    masker = Masker(artifact.masking_rules)
    masked = [masker.mask(line) for line in lines]
    distinct = list(dict.fromkeys(masked))
    ranks = token_ranks(artifact.model, artifact.vocab, distinct, batch_size) if distinct else []
    by_masked = masked_templates(dict(zip(distinct, ranks)), k)
    return [by_masked[m] for m in masked]


def templates(artifact, lines: Iterable[str], top_k: int | None = None) -> Counter:
    """Counter of template -> number of lines, over the given raw lines."""
    return Counter(line_templates(artifact, lines, top_k))
