"""Log masking: turn a raw log line into its masked, lower-cased, tokenized form.

The masked form is the line's template key (lines with the same masked form are the same
event) and NuLog's token input, so variable parts (numbers, addresses, ids, dates...) are
replaced by placeholders such as <num> or <ip> while constant words are kept.

The masking rules are data, in the style of Drain3's masking instructions: an ordered list
of {name, pattern, replacement} regex substitutions, by default read from
ops/mask/masking_rules.yaml (which documents every placeholder). The rules a model was trained
with are stored in its artifact, so `Masker.rules` stays JSON-serialisable.

`Masker.mask` does, in order: strip ANSI escape sequences, lower-case, apply the rules
top to bottom, tokenize (placeholders and runs of word characters are tokens, any other
non-space character is a token of its own), and join the tokens with single spaces.
When the rules allow it (`piecewise_safe`: true of the default rules), the same result
is computed piece by piece: the line is split at whitespace, and each piece is masked
once and remembered, so a new line costs only its new pieces (2.5x faster on Loghub).

Pure computation: no dagster here.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

from ops.mask.rule_safety import PIECES, backtracking_risk, piecewise_safe

RULES_PATH = Path(__file__).with_name("masking_rules.yaml")
_KEYS = ("name", "pattern", "replacement")
_OPTIONAL_KEYS = ("requires", "case_sensitive")

# CSI sequences (colours: ESC [ 31 m), OSC sequences (ESC ] ... BEL or ESC \), and the
# remaining two-character escapes (ESC followed by one character).
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
# Tokens: a placeholder, a run of word characters, or one other non-space character.
_TOKENS = re.compile(r"<[a-z][a-z0-9]*>|\w+|[^\w\s]")

PIECE_CACHE = 100_000  # masked whitespace-separated pieces a Masker remembers
PROBE_LINES = 2_000    # lines masked piecewise before judging whether it pays
WHOLE_LINES = 20_000   # lines then masked whole when more than half the pieces were new


def load_rules(path=None) -> list[dict]:
    """The rules in a YAML file (default: ops/mask/masking_rules.yaml), validated."""
    import yaml

    path = Path(path if path is not None else RULES_PATH)
    try:
        rules = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        validate_rules(rules)
    except (ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"masking rules {path}: {' '.join(str(e).split())}") from None
    return rules


def validate_rules(rules) -> None:
    """Raise ValueError naming the first bad rule (1-based): "masking rule #3 'ipv4': ..."."""
    if not isinstance(rules, list):
        raise ValueError(f"masking rules must be a list of rules, got {type(rules).__name__}")
    seen: set[str] = set()
    for i, rule in enumerate(rules, 1):
        name = rule.get("name") if isinstance(rule, dict) else None
        label = f"masking rule #{i} {name!r}" if isinstance(name, str) else f"masking rule #{i}"

        def bad(reason: str):
            raise ValueError(f"{label}: {reason}")

        if not isinstance(rule, dict):
            bad(f"must be a mapping with keys {', '.join(_KEYS)}, got {type(rule).__name__}")
        for key in _KEYS:
            if key not in rule:
                bad(f"missing key {key!r}")
            if not isinstance(rule[key], str):
                bad(f"{key!r} must be a string, got {type(rule[key]).__name__}")
        unknown = sorted(set(rule) - set(_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            bad(f"unknown key(s) {', '.join(map(repr, unknown))}")
        if "case_sensitive" in rule and not isinstance(rule["case_sensitive"], bool):
            bad(f"'case_sensitive' must be true or false, got {rule['case_sensitive']!r}")
        if not name:
            bad("'name' is empty")
        if name in seen:
            bad("duplicate name")
        seen.add(name)
        try:
            compiled = re.compile(rule["pattern"])
        except re.error as e:
            bad(f"bad regex {rule['pattern']!r}: {e}")
        if compiled.match("") is not None:
            bad("pattern matches the empty string")
        try:
            risk = backtracking_risk(rule["pattern"])
        except RecursionError:
            risk = "it is nested too deeply to check"
        if risk:
            bad(f"pattern {rule['pattern']!r} can backtrack catastrophically (time exponential in the "
                f"line's length, or a high power of it): {risk}. Rewrite it so that a text can be matched "
                f"one way only (disjoint alternatives, a possessive quantifier such as a++, or an atomic "
                f"group (?>...))")
        try:
            _check_template(compiled, rule["replacement"])
        except (re.error, IndexError) as e:
            bad(f"bad replacement {rule['replacement']!r}: {e}")
        if "requires" in rule:
            req = rule["requires"]
            if not (isinstance(req, list) and req and all(isinstance(s, str) and s for s in req)):
                bad("'requires' must be a non-empty list of non-empty strings")


def _check_template(compiled: re.Pattern, replacement: str) -> None:
    """Parse a replacement template against its pattern (bad escapes, unknown groups)."""
    if hasattr(re, "_compile_template"):  # Python >= 3.12
        re._compile_template(compiled, replacement)
    elif hasattr(re, "_compile_repl"):  # Python 3.10, 3.11
        re._compile_repl(replacement, compiled)


class Masker:
    """Masks log lines with an ordered list of regex rules (default: ops/mask/masking_rules.yaml)."""

    def __init__(self, rules: list[dict] | None = None):
        if rules is None:
            rules = load_rules()
        else:
            validate_rules(rules)
        self.rules: list[dict] = copy.deepcopy(rules)
        # case-sensitive rules see the line as written, before it is lower-cased (and before the others)
        self._raw_steps = [(re.compile(r["pattern"]).sub, r["replacement"]) for r in self.rules if r.get("case_sensitive")]
        lowered = [r for r in self.rules if not r.get("case_sensitive")]
        # (required substrings or None, bound re.sub, replacement), in rule order
        self._steps = [
            (tuple(r["requires"]) if "requires" in r else None, re.compile(r["pattern"]).sub, r["replacement"])
            for r in lowered
        ]
        self._piecewise = piecewise_safe(lowered, _default_rules())
        self._pieces: dict[str, str] = {}
        # When most pieces are new (high-cardinality text), masking piece by piece costs
        # more than the whole line: switch to whole lines for a while, then look again.
        self._probe = [0, 0, 0]   # lines, pieces, new pieces in this probe
        self._whole_for = 0       # lines left to mask whole

    def mask(self, line: str) -> str:
        if "\x1b" in line:
            line = _ANSI.sub("", line)
        s = self._case_sensitive(line).lower()
        if not self._piecewise:
            return self._mask_lowered(s)
        if self._whole_for:
            self._whole_for -= 1
            return self._mask_lowered(s)
        return self._mask_piecewise(s)

    def _case_sensitive(self, line: str) -> str:
        for sub, replacement in self._raw_steps:
            line = sub(replacement, line)
        return line

    def _mask_piecewise(self, s: str) -> str:
        """The rules act within whitespace-separated pieces (see piecewise_safe), so each
        piece is masked once and remembered: log lines share most of their pieces."""
        if ":\\" in s:  # a Windows path may hold spaces
            return self._mask_lowered(s)
        pieces = PIECES.findall(s)
        get = self._pieces.get
        masked = [get(piece) for piece in pieces]
        probe = self._probe
        if None in masked:
            probe[2] += masked.count(None)
            masked = [self._learn(p) if m is None else m for p, m in zip(pieces, masked)]
        probe[0] += 1
        probe[1] += len(pieces)
        if probe[0] >= PROBE_LINES:
            if probe[2] * 2 > probe[1]:
                self._whole_for = WHOLE_LINES
            probe[:] = [0, 0, 0]
        return " ".join(filter(None, masked))

    def _learn(self, piece: str) -> str:
        if len(self._pieces) >= PIECE_CACHE:
            self._pieces.clear()
        masked = self._pieces[piece] = self._mask_lowered(piece)
        return masked

    def _mask_lowered(self, s: str) -> str:
        for requires, sub, replacement in self._steps:
            if requires is None:
                s = sub(replacement, s)
            else:
                for r in requires:
                    if r in s:
                        s = sub(replacement, s)
                        break
        return " ".join(_TOKENS.findall(s))

    def __repr__(self) -> str:
        return f"Masker({len(self.rules)} rules: {', '.join(r['name'] for r in self.rules)})"


@functools.cache
def _default_rules() -> list[dict]:
    return load_rules()


def tokens(masked: str) -> list[str]:
    """The tokens of a masked line (as returned by Masker.mask)."""
    return masked.split(" ") if masked else []
