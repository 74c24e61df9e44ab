"""Log masking: turn a raw log line into its masked, lower-cased, tokenized form.

The masked form is the line's template key (lines with the same masked form are the same
event) and NuLog's token input, so variable parts (numbers, addresses, ids, dates...) are
replaced by placeholders such as <num> or <ip> while constant words are kept.

The masking rules are data, in the style of Drain3's masking instructions: an ordered list
of {name, pattern, replacement} regex substitutions, by default read from
ops/masking_rules.yaml (which documents every placeholder). The rules a model was trained
with are stored in its artifact, so `Masker.rules` stays JSON-serialisable.

`Masker.mask` does, in order: strip ANSI escape sequences, lower-case, apply the rules
top to bottom, tokenize (placeholders and runs of word characters are tokens, any other
non-space character is a token of its own), and join the tokens with single spaces.

Pure computation: no dagster here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

RULES_PATH = Path(__file__).with_name("masking_rules.yaml")
_KEYS = ("name", "pattern", "replacement")
_OPTIONAL_KEYS = ("requires",)

# CSI sequences (colours: ESC [ 31 m), OSC sequences (ESC ] ... BEL or ESC \), and the
# remaining two-character escapes (ESC followed by one character).
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
# Tokens: a placeholder, a run of word characters, or one other non-space character.
_TOKENS = re.compile(r"<[a-z][a-z0-9]*>|\w+|[^\w\s]")


def load_rules(path=None) -> list[dict]:
    """The rules in a YAML file (default: ops/masking_rules.yaml), validated."""
    import yaml

    text = Path(path if path is not None else RULES_PATH).read_text(encoding="utf-8")
    rules = yaml.safe_load(text)
    validate_rules(rules)
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
    """Masks log lines with an ordered list of regex rules (default: ops/masking_rules.yaml)."""

    def __init__(self, rules: list[dict] | None = None):
        if rules is None:
            rules = load_rules()
        else:
            validate_rules(rules)
        self.rules: list[dict] = copy.deepcopy(rules)
        # (required substrings or None, bound re.sub, replacement), in rule order
        self._steps = [
            (tuple(r["requires"]) if "requires" in r else None, re.compile(r["pattern"]).sub, r["replacement"])
            for r in self.rules
        ]

    def mask(self, line: str) -> str:
        if "\x1b" in line:
            line = _ANSI.sub("", line)
        s = line.lower()
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


def tokens(masked: str) -> list[str]:
    """The tokens of a masked line (as returned by Masker.mask)."""
    return masked.split(" ") if masked else []
