"""Events that span lines: a Java exception with its stack, a Python traceback, a Go panic with its
goroutine dump are one event each, not one rare line per frame.

The rules are data (ops/mask/multiline_rules.yaml, in the shape of Fluent Bit's multiline parsers:
(state, regex, next state) per parser, see that file). `load_multiline(parsers, max_lines,
max_bytes)` picks the parsers that are on and the caps, as one JSON-serialisable mapping: what the
data stage reads with and what a model's artifact stores (`multiline_rules.json`), so scoring
joins lines as training did. `Multiline` compiles such a mapping, once per process.

A `Joiner` applies it while logs are fetched. Lines are joined per *stream* (a batch: records of
one batch in the order the source gives them) into events whose text is the lines joined with
"\\n", routed by their first line (its time, its window, its batch). An event ends at the first
line of its stream that does not continue it, or where the stream ends (`flush`). Two ways in:

- `push(stream, message, payload)`: one line at a time (the careful readers);
- `join_block(messages, ...)`: a block of records at once (the vectorised JSON reader). Only the
  lines that can begin an event (those holding a parser's hint, then matching a start rule) and
  the lines after them run the state machine; every other line is left as it is.

Memory is bounded: an event keeps at most `max_lines` lines and `max_bytes` bytes (UTF-8, the
"\\n" between lines included). A continuation line past either cap still belongs to the event (it
does not become a line of its own) but is left out of its text and counted as a bad record of
reason `event_cut`, with the first few named, like any bad line.

Pure computation: no Dagster.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Optional, Sequence

RULES_PATH = Path(__file__).resolve().parents[1] / "mask" / "multiline_rules.yaml"
START = "start_state"
DEFAULT_PARSERS = ("java", "python", "go")
DEFAULT_MAX_LINES = 200
DEFAULT_MAX_BYTES = 16_384   # what a pushed sample holds (ops.fetch.push.MAX_SAMPLE_BYTES)
CUT_REASON = "event_cut"
_RULE_KEYS = {"state", "regex", "next"}
_HINT_OK = re.compile(r"[\x20-\x7e]+")
_RE_SPECIAL = set(".^$*+?()[]{}|-")


class MultilineRulesError(ValueError):
    pass


def read_rules_file(path=None) -> dict:
    """Every parser of a rules YAML (default: ops/mask/multiline_rules.yaml), validated."""
    import yaml

    path = Path(path if path is not None else RULES_PATH)
    try:
        parsers = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        validate_parsers(parsers)
    except (ValueError, yaml.YAMLError) as e:
        raise MultilineRulesError(f"multiline rules {path}: {' '.join(str(e).split())}") from None
    return parsers


def load_multiline(parsers: Sequence[str] = DEFAULT_PARSERS, max_lines: int = DEFAULT_MAX_LINES,
                   max_bytes: int = DEFAULT_MAX_BYTES, path=None) -> dict:
    """The rules the data stage joins with and a model stores: {"parsers": {name: parser}, "max_lines",
    "max_bytes"}, with the named parsers of the rules file, in the order named. No parser: joining is off."""
    available = read_rules_file(path)
    unknown = [p for p in parsers if p not in available]
    if unknown:
        raise MultilineRulesError(f"unknown multiline parser(s) {', '.join(map(repr, unknown))}; "
                                  f"the rules file has {', '.join(map(repr, available))}")
    rules = {"parsers": {p: available[p] for p in dict.fromkeys(parsers)}, "max_lines": max_lines,
             "max_bytes": max_bytes}
    validate(rules)
    return rules


def _states(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def validate_parsers(parsers: Any) -> None:
    """Raise ValueError naming the first bad parser or rule ("parser 'java' rule #2: ...")."""
    if not isinstance(parsers, dict):
        raise ValueError(f"must be a mapping of parser names to parsers, got {type(parsers).__name__}")
    for name, parser in parsers.items():
        where = f"parser {name!r}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{where}: a parser name is lower-case letters, digits and _")
        if not isinstance(parser, dict) or not isinstance(parser.get("rules"), list) or not parser["rules"]:
            raise ValueError(f"{where}: must be a mapping with a non-empty list `rules`")
        unknown = sorted(set(parser) - {"rules", "hints"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
        hints = parser.get("hints", [])
        if not isinstance(hints, list) or not all(isinstance(h, str) and _HINT_OK.fullmatch(h) and '"' not in h
                                                  and "\\" not in h for h in hints):
            raise ValueError(f"{where}: `hints` must be a list of printable ASCII strings without quotes or backslashes")
        reachable, sources = {START}, set()
        for i, rule in enumerate(parser["rules"], 1):
            label = f"{where} rule #{i}"
            if not isinstance(rule, dict) or set(rule) != _RULE_KEYS:
                raise ValueError(f"{label}: must be a mapping with exactly the keys state, regex, next")
            if not all(isinstance(rule[k], str) and rule[k].strip() for k in _RULE_KEYS):
                raise ValueError(f"{label}: state, regex and next must be non-empty strings")
            try:
                re.compile(rule["regex"])
            except re.error as e:
                raise ValueError(f"{label}: regex does not compile: {e}") from None
            from ops.mask.rule_safety import backtracking_risk

            risk = backtracking_risk(rule["regex"])
            if risk:
                raise ValueError(f"{label}: regex {risk}")
            sources.update(_states(rule["state"]))
            reachable.add(rule["next"].strip())
        if START not in sources:
            raise ValueError(f"{where}: no rule of state {START}, so no event could begin")
        dead = sorted(sources - reachable)
        if dead:
            raise ValueError(f"{where}: state(s) {', '.join(map(repr, dead))} are never the `next` of a rule")


def validate(rules: Any) -> None:
    """Raise ValueError naming what is wrong with a {"parsers", "max_lines", "max_bytes"} mapping."""
    if not isinstance(rules, dict) or set(rules) != {"parsers", "max_lines", "max_bytes"}:
        raise ValueError("must be a mapping with exactly the keys parsers, max_lines, max_bytes")
    for key, low in (("max_lines", 1), ("max_bytes", 64)):
        value = rules[key]
        if type(value) is not int or not low <= value <= 1 << 24:
            raise ValueError(f"{key} must be an integer from {low} to {1 << 24}, got {value!r}")
    validate_parsers(rules["parsers"])


# ---- the compiled machine ----------------------------------------------------------------------


@dataclass
class _Parser:
    name: str
    start: list            # [(compiled regex, next state)]
    by_state: dict         # state -> [(compiled regex, next state)]
    hints: tuple = ()      # () when the parser has none


class Multiline:
    """Compiled rules (see `load_multiline`); `None` or no parser means joining is off."""

    def __init__(self, rules: dict):
        validate(rules)
        self.rules = rules
        self.max_lines, self.max_bytes = rules["max_lines"], rules["max_bytes"]
        self.parsers: list[_Parser] = []
        hints: list[str] = []
        unhinted = False
        for name, parser in rules["parsers"].items():
            p = _Parser(name, [], {}, tuple(parser.get("hints") or ()))
            for rule in parser["rules"]:
                compiled = (re.compile(rule["regex"]), rule["next"].strip())
                for state in _states(rule["state"]):
                    if state == START:
                        p.start.append(compiled)
                    else:
                        p.by_state.setdefault(state, []).append(compiled)
            self.parsers.append(p)
            if parser.get("hints"):
                hints.extend(parser["hints"])
            else:
                unhinted = True
        # None: some parser has no hints, so any line may begin an event
        self.hints: Optional[tuple[bytes, ...]] = None if unhinted else tuple(dict.fromkeys(h.encode() for h in hints))
        self._hint_pattern = None if self.hints is None else "|".join(
            "".join("\\" + c if c in _RE_SPECIAL else c for c in h.decode()) for h in self.hints)

    @property
    def enabled(self) -> bool:
        return bool(self.parsers)

    def candidate_lines(self, data: bytes, ends):
        """Indices of the lines of `data` (whose newlines are at offsets `ends`, a numpy array) that
        hold a hint, so may begin an event; every line when a parser has no hints. One pass of RE2
        (pyarrow) over the block viewed as an array of lines, without copying it: a third of the
        time of one bytes.find per hint."""
        import numpy as np

        if self.hints is None:
            return np.arange(len(ends))
        import pyarrow as pa
        import pyarrow.compute as pc

        offsets = np.empty(len(ends) + 1, dtype=np.int64)
        offsets[0] = 0
        offsets[1:] = ends
        offsets[1:] += 1
        lines = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ends),
                                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        hit = pc.match_substring_regex(lines, self._hint_pattern)
        return np.flatnonzero(hit.to_numpy(zero_copy_only=False))

    def may_start(self, data: bytes) -> bool:
        """Whether a block's bytes may hold a line that begins an event (False: certainly not)."""
        if self.hints is None:
            return self.enabled
        return any(h in data for h in self.hints)

    def start(self, message: str) -> Optional[tuple[int, str]]:
        """(parser index, next state) when `message` begins an event, else None. A parser's regexes
        run only on a line holding one of its hints (each regex alone: a union of them would run
        several times slower, as Python's re then cannot skip ahead to a pattern's first letters)."""
        for i, p in enumerate(self.parsers):
            if p.hints and not any(h in message for h in p.hints):
                continue
            for regex, nxt in p.start:
                if regex.search(message):
                    return i, nxt
        return None

    def step(self, parser: int, state: str, message: str) -> Optional[str]:
        """The next state when `message` continues an event of `parser` in `state`, else None."""
        for regex, nxt in self.parsers[parser].by_state.get(state, ()):
            if regex.search(message):
                return nxt
        return None


_COMPILED: dict[str, Multiline] = {}


def compiled(rules: Optional[dict]) -> Optional[Multiline]:
    """This process's compiled `rules` (None when joining is off), built once per distinct rules."""
    if not rules or not rules.get("parsers"):
        return None
    key = json.dumps(rules, sort_keys=True)
    ml = _COMPILED.get(key)
    if ml is None:
        ml = _COMPILED[key] = Multiline(rules)
    return ml


# ---- joining -----------------------------------------------------------------------------------


@dataclass
class _Event:
    parser: int
    state: str
    payload: Any
    lines: list = field(default_factory=list)
    size: int = 0          # UTF-8 bytes of the text so far
    cut: bool = False      # a line was left out: so are all after it (the text stays a prefix)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class Joiner:
    """Joins lines into events per stream (see the module docstring). Completed events come back as
    (payload of the first line, text); lines past a cap are counted in `bad` as `event_cut`."""

    def __init__(self, ml: Multiline, bad=None):
        self.ml, self.bad = ml, bad
        self._open: dict[Hashable, _Event] = {}
        self.events = 0          # events of more than one line completed
        self.joined_lines = 0    # continuation lines those events took in

    @property
    def has_open(self) -> bool:
        return bool(self._open)

    def open_payloads(self) -> list:
        return [ev.payload for ev in self._open.values()]

    def _begin(self, stream, started: tuple[int, str], message: str, payload) -> Optional[tuple]:
        parser, nxt = started
        ev = _Event(parser, nxt, payload, [message], _utf8_len(message))
        if nxt == START:  # a one-line event by its rule
            return payload, message
        self._open[stream] = ev
        return None

    def _close(self, stream) -> tuple:
        ev = self._open.pop(stream)
        if len(ev.lines) > 1:
            self.events += 1
            return ev.payload, "\n".join(ev.lines)
        return ev.payload, ev.lines[0]

    def _take(self, stream, ev: _Event, message: str, nxt: str, where: Callable[[], str]) -> Optional[tuple]:
        """`message` continues `ev`: keep it within the caps, move on; the event when it ends here."""
        self.joined_lines += 1
        size = _utf8_len(message) + 1
        if not ev.cut and len(ev.lines) < self.ml.max_lines and ev.size + size <= self.ml.max_bytes:
            ev.lines.append(message)
            ev.size += size
        else:
            ev.cut = True
        if ev.cut and self.bad is not None:
            self.bad.add(CUT_REASON, where(), f"over {self.ml.max_lines} lines or {self.ml.max_bytes} bytes")
        ev.state = nxt
        return self._close(stream) if nxt == START else None

    def continues(self, stream, message: str) -> bool:
        ev = self._open.get(stream)
        return ev is not None and self.ml.step(ev.parser, ev.state, message) is not None

    def push(self, stream, message: str, payload, where: Callable[[], str] = lambda: "") -> list[tuple]:
        """Feed one line of `stream`; the events it completes (at most two: the one it ends, its own)."""
        out = []
        ev = self._open.get(stream)
        if ev is not None:
            nxt = self.ml.step(ev.parser, ev.state, message)
            if nxt is not None:
                done = self._take(stream, ev, message, nxt, where)
                return [done] if done else out
            out.append(self._close(stream))
        started = self.ml.start(message)
        if started is None:
            out.append((payload, message))
        else:
            done = self._begin(stream, started, message, payload)
            if done:
                out.append(done)
        return out

    def flush(self, stream=None) -> list[tuple]:
        """End the open events (of one stream, or all): their streams ended."""
        streams = list(self._open) if stream is None else ([stream] if stream in self._open else [])
        return [self._close(s) for s in streams]

    def join_block(self, messages: list, streams: Optional[list], stream0, candidates: Iterable[int],
                   payload: Callable[[int], Any], where: Callable[[int], str] = lambda i: "") -> tuple[list, set]:
        """Join a block of records in order: messages[i] of stream streams[i] (or stream0 for all when
        `streams` is None); `candidates`: indices of the records that may begin an event (a superset:
        each is checked). Returns (events completed, indices of the records the events took in): every
        record not taken in is a one-line event the caller counts as it is."""
        ml = self.ml
        starts = {}  # the records that begin an event: the start rule each matched, computed once
        for i in candidates:
            started = ml.start(messages[i])
            if started is not None:
                starts[i] = started
        if not starts and not self._open:
            return [], set()
        heads = sorted(starts)
        if streams is None:
            groups = {stream0: (None, heads)}
        else:
            wanted = set(self._open) | {streams[i] for i in heads}
            positions: dict = {s: [] for s in wanted}
            for i, s in enumerate(streams):
                got = positions.get(s)
                if got is not None:
                    got.append(i)
            groups = {s: (idx, [k for k, i in enumerate(idx) if i in starts]) for s, idx in positions.items()}
        events: list = []
        taken: set = set()
        n = len(messages)
        for s, (idx, head_pos) in groups.items():
            count = n if idx is None else len(idx)
            at = (lambda k: k) if idx is None else idx.__getitem__
            k = 0
            while k < count:
                i = at(k)
                ev = self._open.get(s)
                if ev is not None:
                    nxt = ml.step(ev.parser, ev.state, messages[i])
                    if nxt is not None:
                        taken.add(i)
                        done = self._take(s, ev, messages[i], nxt, lambda: where(i))
                        if done:
                            events.append(done)
                        k += 1
                        continue
                    events.append(self._close(s))
                started = starts.get(i)
                if started is not None:
                    taken.add(i)
                    done = self._begin(s, started, messages[i], payload(i))
                    if done:
                        events.append(done)
                    k += 1
                    continue
                # a line of its own: skip to the stream's next line that may begin an event
                nxt_head = bisect.bisect_right(head_pos, k)
                k = head_pos[nxt_head] if nxt_head < len(head_pos) else count
        return events, taken


def join_lines(numbered: Iterable[tuple[int, str]], rules: Optional[dict], bad=None) -> list[tuple[int, str]]:
    """(first line number, event text) for numbered lines of one stream (a file given to
    `logloop score`): blank lines are dropped unless they continue an event. `rules` None or
    without parsers: every non-blank line is its own event."""
    ml = compiled(rules)
    if ml is None:
        return [(n, text) for n, text in numbered if text.strip()]
    joiner, out = Joiner(ml, bad), []
    for n, text in numbered:
        if not text.strip() and not joiner.continues(None, text):
            continue
        out.extend(joiner.push(None, text, n, lambda: f"line {n}"))
    out.extend(joiner.flush())
    return out
