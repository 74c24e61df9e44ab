"""Log templates: which parts of a log line are its event and which are variables.

A template is a masked line (ops.mask.masking) with its variables replaced by `<*>`; lines with the
same template are the same event. Templates are decided over all the given lines together
(pass them in one call), in three steps:

1. Masking. A masking placeholder (<num>, <ip>, <path>...) or a token with a digit is a
   variable; empty brackets `( )` hold an empty one. A run of variables joined by punctuation
   other than brackets, or wrapped in brackets ("<*> . <*>", "<*> # # <*>", "<*> ( <*> )"), is
   one variable: how many tokens a value masks into depends on the value (collapse). Brackets
   stay whole, so that a bracketed value is one column ("<*> ( <*> . example . de )").
2. Units. A host, class or file name is one word of the raw line that masking split at its
   punctuation ("ns . example . com"). Tokens joined by `. $ / @`, or by `-` between two words,
   are one unit, and a unit that holds a variable is a variable ("<*> . example . com").
3. Statistics, after Brain (Yu et al. 2023). Templates with the same number of units are
   compared column by column, in two kinds of groups:
   * lines equal but for one column;
   * lines with the same pattern. A unit's frequency is the number of distinct masked lines
     that have it in its column, and a line's pattern is its units of the frequency most
     common among them (its longest common pattern; ties to the higher frequency), leaving
     out units of one line alone, which no other line shares.
   When a group shares at least `min_context` constant units (so that it names an event), a
   column whose neighbours are constant there is a variable if, over the group,
   * some line has a variable there: masking found one, so the other values are values too;
   * or it takes at least `min_values` distinct values;
   * or it takes two or more and follows "=": the value of a key=value pair;
   * or it takes two or more, and its slot (the units around it, one of them a word, as in
     "by _ $" or "user _ from") takes at least `min_values` distinct words over all the lines:
     a user name in a rare event is judged by the user names of the others.
   Otherwise its values are constants and split the group: "failed password for <*>" and
   "accepted password for <*>" (2 values) stay two events, while a user name column (root,
   uucp, ftp, git...) becomes `<*>`. Two varying neighbours are different wording ("bad header",
   "no route"), not values. Steps 2-3 repeat until nothing changes, since a new variable can
   collapse with its neighbours and make lines of different lengths comparable.

`min_values` and `min_context` (TemplateConfig) are the only settings chosen on data. They are
chosen from CONFIG_GRID (2 to 8 values, 1 to 3 context units) by benchmarks/quality.py's
choose_config: the best mean grouping accuracy over the Loghub systems given, ties to the better
worst system, then to the setting nearest the prior (4 values, the median of Brain's published
per-system thresholds; 2 units, the fewest that make a context more than one shared word such as
"to"). DEFAULT_CONFIG is its choice on all seven systems of tests/data/loghub2k; `quality.py
--loso` scores each system with the choice made on the other six. The rest (what masking
masks, units, collapse, the "=" rule) is structure written from log formats in general, with
no system's words in it. Evidence is counted in distinct masked lines, not in
lines: masked_templates (given distinct forms) and line_templates (given lines) agree, and one
chatty line weighs what a rare one does.

NuLog's own parser (token_template: a token is a variable when the model does not rank it within
its top k) is not used. With k = 50 over vocabularies of 35 to 400 words the model predicts a
frequent user name, which then stays, and misses the plain words of rare lines, which become
variables and merge events. Used as a first pass under the statistics, it lowered grouping
accuracy on loghub2k by up to 0.31 on OpenSSH, 0.03 on Hadoop and 0.02 on BGL (3 and 10 epochs,
seeds 0 and 1). So templates depend on the masking rules and the lines, not on the weights, and
retraining does not move them; top_k is accepted below for the callers and changes nothing.

Pure computation: no dagster, no model (an artifact gives its masking rules).
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

from ops.mask.masking import Masker, tokens
from ops.validate.defaults import DEFAULT_TOP_K

VARIABLE = "<*>"


@dataclass(frozen=True)
class TemplateConfig:
    """The two numbers step 3 depends on, the only settings of template mining chosen on data."""

    min_values: int   # distinct values that make a column a variable
    min_context: int  # constant units a group must share for any of its columns to be judged


# The settings tried when they are chosen on data: Brain's published per-system thresholds
# (2 to 6) and two past them; a context of 1 to 3 shared units.
CONFIG_GRID = tuple(TemplateConfig(v, c) for v in range(2, 9) for c in (1, 2, 3))
# What benchmarks/quality.py's choose_config picks on all seven Loghub systems of tests/data/loghub2k
# (tests/ops/validate/test_template_selection.py checks that it still does).
DEFAULT_CONFIG = TemplateConfig(min_values=6, min_context=2)
MAX_FORMS = 200_000  # distinct masked lines judged together; past it, a line keeps its step-2 template
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9]*>")
_PUNCT = re.compile(r"[^\w\s]")
_WORD = re.compile(r"\w+")
_GLUE = frozenset(".$/@")  # joins the parts of one name ("-" too, between two words)
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_BRACKETS = frozenset("()[]{}")


def default_top_k(artifact) -> int:
    """The artifact's scoring k (metrics["top_k"], else DEFAULT_TOP_K), for callers that show it."""
    k = (getattr(artifact, "metrics", None) or {}).get("top_k")
    return int(k) if isinstance(k, (int, float)) and k >= 1 else DEFAULT_TOP_K


def collapse(toks: list[str]) -> list[str]:
    """Every run `<*> (punct* <*> | ( <*> ))*` becomes a single `<*>` (punct: any punctuation but
    brackets, which a bracketed unit handles whole: see units)."""
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
            elif j + 2 < n and toks[j + 1] == VARIABLE and _PAIRS.get(toks[j]) == toks[j + 2]:
                j += 3
            else:
                k = j
                while k < n and toks[k] not in _BRACKETS and _PUNCT.fullmatch(toks[k]):
                    k += 1
                if k == j or k == n or toks[k] != VARIABLE:
                    break
                j = k + 1
        out.append(VARIABLE)
        i = j
    return out


def masked_variables(toks: list[str]) -> list[str]:
    """Step 1 before collapsing: placeholders and tokens with a digit are `<*>`, and so is the
    inside of empty brackets."""
    out: list[str] = []
    for t in toks:
        if out and _PAIRS.get(out[-1]) == t:
            out.append(VARIABLE)
        out.append(VARIABLE if _masked(t) else t)
    return out


@functools.lru_cache(maxsize=1 << 16)
def _masked(token: str) -> bool:
    return _PLACEHOLDER.fullmatch(token) is not None or any(c.isdigit() for c in token)


def units(toks: list[str]) -> list[str]:
    """Step 2: names joined back into one unit ("a . b . c"); a unit holding `<*>` is `<*>`."""
    out: list[str] = []
    i, n = 0, len(toks)
    while i < n:
        if toks[i] != VARIABLE and not _WORD.fullmatch(toks[i]):
            out.append(toks[i])
            i += 1
            continue
        j = i + 1
        while j + 1 < n:
            glue, nxt = toks[j], toks[j + 1]
            # a "-" next to a variable is most likely a spaced separator ("<date> - <msg>")
            if (glue in _GLUE and (nxt == VARIABLE or _WORD.fullmatch(nxt))) or \
                    (glue == "-" and _WORD.fullmatch(toks[j - 1]) and _WORD.fullmatch(nxt)):
                j += 2
            else:
                break
        out.append(VARIABLE if VARIABLE in toks[i:j] else " ".join(toks[i:j]))
        i = j
    return out


def shape(toks: list[str]) -> list[str]:
    """Steps 1-2 on tokens whose variables are `<*>`: collapse and units, again until nothing
    changes (a unit that became `<*>` can collapse with its neighbours)."""
    while True:
        joined = units(collapse(toks))
        flat = " ".join(joined).split(" ")
        if flat == toks:
            return joined
        toks = flat


def _is_word(unit: str) -> bool:
    return unit != VARIABLE and _WORD.match(unit) is not None


def _slot(t: tuple, i: int) -> tuple[str, str]:
    """The units around column i ("^" and "$" at the ends of the line)."""
    return t[i - 1] if i else "^", t[i + 1] if i + 1 < len(t) else "$"


def _variable_columns(rows: list[tuple], slots: dict, config: TemplateConfig) -> set[int]:
    """Step 3 within one group of same-length templates: the columns that are variables."""
    cols = [set(col) for col in zip(*rows)]
    constants = sum(len(c) == 1 and VARIABLE not in c for c in cols)
    if constants < config.min_context:
        return set()
    min_values = config.min_values
    out = set()
    for i, c in enumerate(cols):
        if len(c) == 1 or (i and len(cols[i - 1]) > 1) or (i + 1 < len(cols) and len(cols[i + 1]) > 1):
            continue
        slot = _slot(rows[0], i)
        # the value of a key=value pair is a value however few it takes (user=root, user=guest)
        if VARIABLE in c or len(c) >= min_values or slot[0] == "=" or \
                (len(slots[slot]) >= min_values and any(map(_is_word, slot))):
            out.add(i)
    return out


def _statistics(weights: Counter, config: TemplateConfig) -> dict[tuple, tuple]:
    """One round of step 3 (then 2 again): each template so far -> its generalisation. A template
    weighs as many distinct masked lines as it holds."""
    slots: dict[tuple, set] = defaultdict(set)
    by_len: dict[int, list[tuple]] = defaultdict(list)
    for t in weights:
        by_len[len(t)].append(t)
        around = ("^", *t, "$")
        for i, u in enumerate(t):
            if u != VARIABLE:
                slots[around[i], around[i + 2]].add(u)
    out = {}
    for same_len in by_len.values():
        freq: Counter = Counter()
        for t in same_len:
            for column in enumerate(t):
                freq[column] += weights[t]
        groups: dict[tuple, list[tuple]] = defaultdict(list)
        for t in same_len:
            fs = [freq[column] for column in enumerate(t)]
            seen = Counter(f for f in fs if f > 1)  # a unit of one line alone is no pattern
            mode = max(seen, key=lambda f: (seen[f], f)) if seen else None
            groups[tuple(column for column, f in zip(enumerate(t), fs) if f == mode) if seen else t].append(t)
        var: dict[tuple, set] = {}
        for members in groups.values():
            found = _variable_columns(members, slots, config)
            for t in members:
                var[t] = found
        # lines equal but for column i, among those the patterns left alone (the others come
        # back next round)
        alone = [t for t in same_len if not var[t]]
        values = Counter(i for i, _ in freq)
        for i in sorted(i for i, n in values.items() if n > 1):
            rest: dict[tuple, list[tuple]] = defaultdict(list)
            for t in alone:
                rest[t[:i] + t[i + 1:]].append(t)
            for members in rest.values():
                if len(members) > 1 and i in _variable_columns(members, slots, config):
                    for t in members:
                        var[t] = var[t] | {i}
        for t in same_len:
            # units hold spaces ("a . b"): back to tokens, so that new variables collapse
            toks = " ".join(VARIABLE if i in var[t] else u for i, u in enumerate(t)).split(" ")
            out[t] = tuple(shape(toks)) if var[t] else t
    return out


def parse(masked_lines: Iterable[str], config: TemplateConfig = DEFAULT_CONFIG) -> dict[str, str]:
    """Masked line -> its template, decided over all the given masked lines together. The first
    MAX_FORMS distinct masked lines are judged together (memory and time grow with them); a
    further one gets the judged template of its steps 1-2 form when a judged line had that form,
    else keeps its steps 1-2 template."""
    first: dict[str, tuple] = {}
    late: dict[str, tuple] = {}
    for m in masked_lines:
        if m not in first and m not in late:
            # collapsed once only: a unit that holds a variable stays in its column for step 3,
            # where the same event's other values (words) are judged beside it
            (first if len(first) < MAX_FORMS else late)[m] = tuple(units(collapse(masked_variables(tokens(m)))))
    weights = Counter(first.values())
    now = {t: t for t in weights}
    while True:  # each round that changes something adds a variable, so this ends
        step = _statistics(weights, config)
        if all(t == g for t, g in step.items()):
            out = {m: " ".join(now[t]) for m, t in first.items()}
            out.update((m, " ".join(now.get(t, t))) for m, t in late.items())
            return out
        now = {t: step[g] for t, g in now.items()}
        merged: Counter = Counter()
        for t, w in weights.items():
            merged[step[t]] += w
        weights = merged


def masked_templates(ranks_by_line: dict[str, list[int]], top_k: int | None = None,
                     config: TemplateConfig = DEFAULT_CONFIG) -> dict[str, str]:
    """Masked line -> template, for the distinct masked lines that key `ranks_by_line` (the ranks
    and top_k are not used: see the module docstring)."""
    return parse(ranks_by_line, config)


def line_templates(artifact, lines: Iterable[str], top_k: int | None = None, batch_size: int = 4096,
                   config: TemplateConfig = DEFAULT_CONFIG) -> list[str]:
    """The template of every input line (raw lines, masked here with the artifact's rules),
    decided over all the given lines together, so pass them in one call (top_k and batch_size
    are accepted for the callers and not used: see the module docstring)."""
    if top_k is not None and int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    masker = Masker(artifact.masking_rules)
    masked = [masker.mask(line) for line in lines]
    by_masked = parse(masked, config)
    return [by_masked[m] for m in masked]


def templates(artifact, lines: Iterable[str], top_k: int | None = None) -> Counter:
    """Counter of template -> number of lines, over the given raw lines."""
    return Counter(line_templates(artifact, lines, top_k))


# ---- NuLog's per-line rule, for callers of the old API (not used above) ----------------------


def token_template(toks: list[str], ranks: list[int], top_k: int) -> list[str]:
    """NuLog's rule: a token is `<*>` when it is a placeholder, has a digit, or the model ranks
    it at or past top_k at its masked position (tokens past the model's max_len: no rank)."""
    return [VARIABLE if i >= len(ranks) or ranks[i] >= top_k or _PLACEHOLDER.fullmatch(t) or
            any(c.isdigit() for c in t) else t for i, t in enumerate(toks)]


def generalize(template_counts: Counter | dict) -> dict[str, str]:
    """Template -> the most general same-length template of the input that differs from it in one
    position, where it has `<*>` (most lines, then leftmost position), followed to a fixed point."""
    counts = dict(template_counts)
    parent = {}
    for t in counts:
        toks = t.split(" ")
        best, best_key = t, None
        for i, tok in enumerate(toks):
            g = " ".join(toks[:i] + [VARIABLE] + toks[i + 1:])
            if tok != VARIABLE and g in counts and (best_key is None or (counts[g], -i) > best_key):
                best, best_key = g, (counts[g], -i)
        parent[t] = best
    out = {}
    for t in counts:
        r = t
        while parent[r] != r:  # each step adds a <*>, so this ends
            r = parent[r]
        out[t] = r
    return out
