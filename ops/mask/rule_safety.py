"""What the masking rules are checked for before any line is masked with them.

- Backtracking cost: a rule whose regex could take exponential (or long polynomial) time on
  a hostile line is refused when the rules are loaded (`backtracking_risk`).
- Piecewise safety: whether masking a line piece by piece (split at whitespace) gives
  exactly the whole-line result, which lets `Masker` remember pieces (`piecewise_safe`).

Pure computation on the parsed regex (`re._parser`): no dagster here.
"""

from __future__ import annotations

import functools
import re

# ---- backtracking cost -------------------------------------------------------------------
#
# Python's re backtracks, so a rule such as (a+)+$ takes time exponential in the length of a
# line that almost matches: one hostile rule in an artifact would hang scoring. Rules are
# therefore checked once, at load (validate_rules), on the parsed pattern tree: a repeat that
# allows many iterations (or a few, of a part that can be as long as the line) is refused when
# one text can be matched by it in more than one way, which is what makes the number of paths
# explode. That happens when
#   - its body is itself ambiguous (alternatives that can match the same text, (a|a)+;
#     adjacent parts that can trade characters, (\d+\.?\d*)+), or
#   - its iterations can divide the same text differently ((a+)+, (a*)*, (a|aa)+, (\w+\s?)+).
# The check looks at *where* an iteration can end: iterations of (?:\.[a-z]+)* or of
# the duration rule (?:\d+(?:\.\d+)?(?:ms|s|...))+ cannot divide a text two ways, since no
# character pair at an iteration boundary (last char of one, first of the next) can occur
# inside an iteration: if two divisions differed, the first boundary where they do would be
# such a pair; iterations of one fixed width cannot either. Characters are judged on a finite
# alphabet (Latin, digits, letters and spaces of a few other scripts, and every character the
# pattern names, with its neighbours and case variants), on which the character classes of
# ordinary rules overlap exactly when they do on all of Unicode. Possessive repeats and atomic
# groups never give characters back, so their iterations are not checked (their insides are).
# Accepted: backtracking that is not nested (\d+\d+x: polynomial, not exponential), and an
# iteration that matches "" (re ends the loop there).

REPEAT_LIMIT = 10  # repeats allowing more iterations than this (counting enclosing repeats) are checked

try:  # Python >= 3.11
    from re import _compiler as _sre_compile, _constants as _sre_c, _parser as _sre_parse
except ImportError:  # Python 3.10
    import sre_compile as _sre_compile  # type: ignore[no-redef]
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_ALPHABET_BASE = [chr(i) for i in range(0x250)] + list(
    "\u0660\u0966\uff10\u0391\u03b1\u0430\u05d0\u0627\u4e2d\u3042\uac00\u2028\u3000\u200b\u00a0\u2003"
    "\u20ac\u2014\u2019\ufeff\ufffd\U0001f600\U00010400\U0001d7ce\u0301\u1680"
)


class _Shape:
    """What a part of a pattern can match, as far as the backtracking check needs:
    nullable (can match ""), first/last (bitsets of characters that can start/end a non-empty
    match), pairs (bitset pairs (a, b): a character of a can be directly followed by one of b
    inside a match), ambiguous (why one text can be matched in two ways, or None), fixed (the
    exact strings it matches, when few and known) and atomic (never gives characters back)."""

    __slots__ = ("nullable", "first", "last", "pairs", "ambiguous", "fixed", "atomic")

    def __init__(self, nullable, first, last, pairs=frozenset(), ambiguous=None, fixed=None, atomic=False):
        self.nullable, self.first, self.last, self.pairs = nullable, first, last, pairs
        self.ambiguous, self.fixed, self.atomic = ambiguous, fixed, atomic


_EMPTY = _Shape(True, 0, 0, fixed=frozenset({""}))
_MAX_FIXED = 64  # largest set of exact strings kept for a part (beyond it: unknown)


def _overlaps(a: int, b: int, pairs) -> bool:
    """Whether some pair in `pairs` has a character of bitset a followed by one of bitset b."""
    return any(x & a and y & b for x, y in pairs)


class _BacktrackCheck:
    def __init__(self, pattern: str):
        parsed = _sre_parse.parse(pattern)
        self.state = parsed.state
        chars = set(_ALPHABET_BASE)
        for code in self._code_points(parsed.data):
            for c in (code - 1, code, code + 1):
                if 0 <= c <= 0x10FFFF:
                    ch = chr(c)
                    chars.update((ch, ch.lower(), ch.upper()))
        self.alphabet = "".join(sorted(ch for ch in chars if len(ch) == 1))
        self.everything = (1 << len(self.alphabet)) - 1
        self.bits_cache: dict = {}
        self.groups: dict[int, _Shape] = {}
        self.risk: str | None = None
        self.sequence(parsed.data, parsed.state.flags, 1)

    def _code_points(self, items):
        for op, av in items:
            if op in (_sre_c.LITERAL, _sre_c.NOT_LITERAL):
                yield av
            elif op is _sre_c.RANGE:
                yield from av
            elif isinstance(av, (tuple, list)):
                for x in av:
                    if isinstance(x, _sre_parse.SubPattern):
                        yield from self._code_points(x.data)
                    elif isinstance(x, list):  # IN's items, BRANCH's alternatives
                        for y in x:
                            if isinstance(y, _sre_parse.SubPattern):
                                yield from self._code_points(y.data)
                            elif isinstance(y, tuple) and len(y) == 2:
                                yield from self._code_points([y])
            elif isinstance(av, _sre_parse.SubPattern):
                yield from self._code_points(av.data)

    def bits(self, op, av, flags: int) -> int:
        """The characters of the alphabet that one single-character item matches."""
        key = (op, repr(av), flags)
        got = self.bits_cache.get(key)
        if got is None:
            state = _sre_parse.State()
            state.flags = flags
            rx = _sre_compile.compile(_sre_parse.SubPattern(state, [(op, av)]), flags)
            got = 0
            for m in rx.finditer(self.alphabet):
                got |= 1 << m.start()
            self.bits_cache[key] = got
        return got

    def sequence(self, items, flags: int, mult: int) -> _Shape:
        shape = _EMPTY
        for op, av in items:
            shape = self.then(shape, self.item(op, av, flags, mult))
        return shape

    @staticmethod
    def then(p: _Shape, q: _Shape) -> _Shape:
        """p followed by q."""
        if p is _EMPTY:
            return q
        if q is _EMPTY:
            return p
        pairs = p.pairs | q.pairs
        if p.last and q.first:
            pairs = pairs | {(p.last, q.first)}
        ambiguous = p.ambiguous or q.ambiguous
        if ambiguous is None:
            # Two divisions of one text between p and q: where p's shorter match ends, the
            # boundary pair lies inside p's longer match (or p matched "" and both start alike);
            # where p's longer one ends, it lies inside q's longer match (or q matched "").
            left = (p.nullable and p.first & q.first) or _overlaps(p.last, q.first, p.pairs)
            right = (q.nullable and p.last & q.last) or _overlaps(p.last, q.first, q.pairs)
            if left and right:
                ambiguous = "adjacent parts can trade characters"
        fixed = None
        if p.fixed is not None and q.fixed is not None and len(p.fixed) * len(q.fixed) <= _MAX_FIXED:
            fixed = frozenset(a + b for a in p.fixed for b in q.fixed)
        return _Shape(p.nullable and q.nullable, p.first | (q.first if p.nullable else 0),
                      q.last | (p.last if q.nullable else 0), pairs, ambiguous, fixed, p.atomic and q.atomic)

    def alternatives(self, shapes: list[_Shape], exclusive: bool = False) -> _Shape:
        ambiguous = next((s.ambiguous for s in shapes if s.ambiguous), None)
        if ambiguous is None and not exclusive:
            if all(s.fixed is not None for s in shapes):
                seen: set[str] = set()
                for s in shapes:
                    if seen & s.fixed:
                        ambiguous = "alternatives match the same text"
                        break
                    seen |= s.fixed
            else:
                for i, a in enumerate(shapes):
                    if any(a.first & b.first or (a.nullable and b.nullable) for b in shapes[i + 1:]):
                        ambiguous = "alternatives can match the same text"
                        break
        fixed = None
        if all(s.fixed is not None for s in shapes):
            fixed = frozenset().union(*(s.fixed for s in shapes))
            if len(fixed) > _MAX_FIXED:
                fixed = None
        first = last = 0
        pairs: frozenset = frozenset()
        for s in shapes:
            first, last, pairs = first | s.first, last | s.last, pairs | s.pairs
        return _Shape(any(s.nullable for s in shapes), first, last, pairs, ambiguous, fixed)

    def item(self, op, av, flags: int, mult: int) -> _Shape:
        c = _sre_c
        if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
            b = self.bits(op, av, flags)
            fixed = None
            if not flags & c.SRE_FLAG_IGNORECASE:
                if op is c.LITERAL:
                    fixed = frozenset({chr(av)})
                elif op is c.IN and all(o is c.LITERAL for o, _ in av) and len(av) <= _MAX_FIXED:
                    fixed = frozenset(chr(v) for _, v in av)
            return _Shape(False, b, b, fixed=fixed)
        if op is c.AT:
            return _EMPTY
        if op in (c.ASSERT, c.ASSERT_NOT):
            self.sequence(av[1], flags, mult)  # checked for its own repeats; consumes nothing
            return _EMPTY
        if op is c.SUBPATTERN:
            group, add, remove, body = av
            shape = self.sequence(body, (flags | add) & ~remove, mult)
            if group is not None:
                self.groups[group] = shape
            return shape
        if op is c.BRANCH:
            return self.alternatives([self.sequence(b, flags, mult) for b in av[1]])
        if op is c.GROUPREF:  # the group's own text again: no choice made here
            g = self.groups.get(av)
            if g is None:
                return _Shape(True, self.everything, self.everything, frozenset({(self.everything, self.everything)}))
            return _Shape(g.nullable, g.first, g.last, g.pairs)
        if op is c.GROUPREF_EXISTS:  # (?(1)yes|no): the group decides, not backtracking
            group, yes, no = av
            return self.alternatives([self.sequence(yes, flags, mult),
                                      self.sequence(no, flags, mult) if no is not None else _EMPTY], exclusive=True)
        if op.name == "ATOMIC_GROUP":
            shape = self.sequence(av, flags, mult)
            return _Shape(shape.nullable, shape.first, shape.last, shape.pairs, None, shape.fixed, True)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) or op.name == "POSSESSIVE_REPEAT":
            return self.repeat(op.name == "POSSESSIVE_REPEAT", *av, flags=flags, mult=mult)
        # anything unforeseen: assume the worst
        return _Shape(True, self.everything, self.everything, frozenset({(self.everything, self.everything)}),
                      f"it uses {op.name}, which this check does not know")

    def repeat(self, possessive: bool, low: int, high: int, body_items, flags: int, mult: int) -> _Shape:
        unbounded = high == _sre_c.MAXREPEAT
        inner = mult * high if not unbounded else _sre_c.MAXREPEAT
        body = self.sequence(body_items, flags, min(inner, _sre_c.MAXREPEAT))
        if high == 0:
            return _EMPTY
        why = body.ambiguous
        # (A body that can match "" adds no choices of its own: re ends a loop on an empty iteration.)
        # (Iterations of one fixed width divide a text one way only.)
        if high > 1 and not possessive and not body.atomic and why is None \
                and _overlaps(body.last, body.first, body.pairs) and not _fixed_width(body_items):
            why = "the iterations of a repeated part can divide the same text in many ways (nested quantifiers)"
        if possessive:
            why = None
        elif why and self.risk is None and high > 1 and (unbounded or inner > REPEAT_LIMIT
                                                          or _width(body_items)[1] > _LONG):
            # many iterations: exponential; a few of a body as long as the line: n ** iterations
            self.risk = why if why != body.ambiguous else f"inside a repeat, {why}"
        pairs = body.pairs
        if high > 1 and body.last and body.first:
            pairs = pairs | {(body.last, body.first)}
        fixed = None
        if body.fixed is not None and high <= 1:
            fixed = body.fixed | {""} if low == 0 else body.fixed
        return _Shape(low == 0 or body.nullable, body.first, body.last, pairs, why, fixed, possessive)


_LONG = 1_000  # a part that can match more characters than this counts as unbounded


def _width(items) -> tuple[int, int]:
    """The least and most characters a parsed part can match (re's own computation)."""
    try:
        return items.getwidth()
    except (AttributeError, TypeError, KeyError, IndexError):  # not a SubPattern, or re's internals moved
        return 0, _sre_c.MAXREPEAT


def _fixed_width(items) -> bool:
    low, high = _width(items)
    return low == high


@functools.lru_cache(maxsize=4096)
def backtracking_risk(pattern: str) -> str | None:
    """Why `pattern` could take time exponential in the length of a line (None: it cannot, as
    far as the structural check above sees). Costs about a millisecond; run once per rule at
    load, never per line."""
    return _BacktrackCheck(pattern).risk


# ---- piecewise masking -------------------------------------------------------------
#
# Masking a line piece by piece (split at whitespace) gives exactly the whole-line result
# when no rule can match across whitespace, every lookaround behaves at a piece's edge as
# it does next to whitespace, replacements hold no whitespace, and every `requires` hint
# is a true necessary condition. The default date, size and duration rules do match across spaces
# ("Jun 14 15:16:01", "2015-10-18 18:01:47"), so pieces are joined wherever such a date
# could continue across the gap (`PIECES`, a superset of every space those rules can
# match, judged on the lower-cased line: rule outputs are <placeholders>, whose '<' and
# '>' none of these rules match, so no earlier rule can create a new place to join), and
# a line holding a Windows path (C:\\...\\a b) is masked whole. tests/ops/mask/test_masking.py
# checks piecewise == whole-line on every Loghub line and on generated lines.

_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DAYS = "mon|tue|wed|thu|fri|sat|sun"
# the default rules that match across spaces; PIECES keeps together what they can match
_SPANNING_DEFAULTS = ("datetime_iso", "datetime_klog", "datetime_syslog", "datetime_rfc2822", "datetime_clf", "path",
                      "size", "duration")
# A piece: runs of non-space joined across every gap of plain spaces where a date, a size
# or a duration could go on: after a digit or comma, before a digit, sign, month, g/u/z or
# the first letter of a size or time unit (14 jun, 2015 18:01, 14, 15:16, 2005 +0000,
# 2022 gmt, 5.2 kb, 1 sec, 2 hours, 3 days), and
# after a month or day name, before a digit or a month (jun 14, sun dec). \d as in the
# rules: Unicode decimal digits.
PIECES = re.compile(
    rf"\S+(?:(?:(?<=[\d,]) +(?=[\d+\-guzbkmtpeshd]|{_MONTHS})|(?<={_MONTHS}|{_DAYS}) +(?=\d|{_MONTHS}))\S+)*"
)
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9]*>")


def _matches_whitespace(node_items, flags) -> bool:
    """Whether any part of a parsed pattern can consume a whitespace character, or
    depends on where the string starts or ends (^, $, \\A, \\Z)."""
    from re import _constants as c, _parser

    for op, av in node_items:
        if op is c.LITERAL:
            if chr(av).isspace():
                return True
        elif op in (c.NOT_LITERAL, c.ANY):
            return True
        elif op is c.IN:
            state = _parser.State()
            state.flags = flags
            one_class = re._compiler.compile(_parser.SubPattern(state, [(op, av)]), flags)
            if any(one_class.match(ch) for ch in _all_whitespace()):
                return True
        elif op is c.AT:
            if av not in (c.AT_BOUNDARY, c.AT_NON_BOUNDARY):
                return True
        elif op is c.BRANCH:
            if any(_matches_whitespace(b, flags) for b in av[1]):
                return True
        elif op is c.SUBPATTERN:
            if _matches_whitespace(av[-1], flags):
                return True
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) or op.name == "POSSESSIVE_REPEAT":
            if _matches_whitespace(av[2], flags):
                return True
        elif op.name == "ATOMIC_GROUP":
            if _matches_whitespace(av, flags):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _matches_whitespace(av[1], flags):
                return True
        elif op is c.GROUPREF_EXISTS:
            if _matches_whitespace(av[1], flags) or (av[2] is not None and _matches_whitespace(av[2], flags)):
                return True
        elif op is c.GROUPREF:
            continue  # repeats a group's text, which is checked where the group is
        else:
            return True  # anything unforeseen: assume the worst
    return False


@functools.cache
def _all_whitespace() -> tuple[str, ...]:
    return tuple(chr(i) for i in range(0x3001) if chr(i).isspace())  # U+3000 is the last


def piecewise_safe(rules: list[dict], default_rules: list[dict]) -> bool:
    """Whether masking piece by piece gives exactly the whole-line result for `rules`.

    True when every rule's replacement is a <placeholder>, and every rule either is
    one of the default date/path rules that `PIECES` keeps whole (same pattern) or
    provably cannot match whitespace nor depends on string boundaries; and every
    `requires` hint is one of the default rules' (checked to be necessary), since a
    wrong hint would act per piece instead of per line.
    """
    from re import _parser

    defaults = {r["name"]: r for r in default_rules}
    for rule in rules:
        if not _PLACEHOLDER.fullmatch(rule["replacement"]):
            return False
        same = defaults.get(rule["name"])
        is_default = same is not None and same["pattern"] == rule["pattern"]
        if "requires" in rule and not (is_default and same.get("requires") == rule["requires"]):
            return False
        if is_default and rule["name"] in _SPANNING_DEFAULTS:
            continue
        parsed = _parser.parse(rule["pattern"])
        if _matches_whitespace(parsed.data, parsed.state.flags):
            return False
    return True
