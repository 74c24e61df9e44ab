"""Pushed samples (CML's front door): read lines, count the bad ones, stamp and split the rest.

An application hands log lines to logloop directly (`logloop push`, `resources.samples.push`,
`logloop serve-ingest`) instead of shipping them to a log store first. Each line becomes a
*sample* of one batch, stored in the store's database (resources/sample_table.py). This module is
the store-independent part, plain Python without Dagster:

- **Reading.** Plain text (one message per line) or JSON Lines whose message is in the
  configured `message_field` (the time and batch fields are not used: a pushed sample's time
  is when logloop received it, and its batch is the one it was pushed to). Lines stream in
  blocks (`ops.fetch.framing.read_raw_blocks`), so memory stays flat however long the input.
- **Bad lines** are counted by reason in a `BadRecords`, as the data stage counts bad
  records, with the first few as examples naming the line: `blank`, `not_utf8`,
  `too_long` (over MAX_SAMPLE_BYTES in UTF-8, the same limit on every store; TDengine's
  VARCHAR column is that wide), and for JSON Lines `bad_json`, `not_object`, `no_message`.
  Nothing is dropped without being counted: registered + bad + joined == lines read.
- **Events that span lines.** With a multiline `Joiner` (ops.fetch.multiline), a Java exception
  and its stack, a Python traceback or a Go panic pushed in one call become one sample each; the
  continuation lines they took in are counted in `joined`. An event keeps at most MAX_SAMPLE_BYTES
  (`sample_joiner`); lines past that are counted as `event_cut` bad records. Lines of one event
  pushed in separate calls are joined when the samples are read back (resources/samples_source.py).
- **Control characters** other than tab, newline and CR (TDengine's SQL cannot carry them,
  PostgreSQL's text refuses NUL) become U+FFFD; the sample is kept and the replacements are
  counted (`sanitised`).
- **Unique timestamps.** `SampleClock.block(n)` hands out n consecutive nanoseconds starting
  at max(now, last + 1), under a lock: no two samples stamped by one process ever share a
  timestamp, however many arrive at once (CML's "add 1 ns"). Across processes the stores
  keep them apart (resources/sql_samples.py: a transaction on the SQL stores;
  resources/tdengine_samples.py: a child table per writer process on TDengine).
- **Retries register only what is missing.** A push given a key (`logloop push --key K`, the
  `Idempotency-Key` header of `serve-ingest`) gives each chunk a key of its own,
  `chunk_key(K, index, messages)`; a store registers a chunk's samples and its key together, and
  skips a chunk whose key it holds. Rerun with the same key, input and chunk size after a crash,
  a push registers the chunks the first run did not finish.
- **The split flag.** Each sample is drawn validation with probability `validation_share`
  (0.2: CML's 80/20), train otherwise, by a uniform draw; a seed makes the draw repeatable.

The data stage carries the flag through to the training sample: a validation sample is
counted under `validation_key(batch)` (the batch name plus a control character, which no batch
name can hold), so the window summary keeps the two pools apart (see orchestration/assets.py
and ops.sample.flagged).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator, Optional

import orjson

from ops.fetch.framing import MAX_LINE_BYTES, read_raw_blocks
from ops.fetch.records import BadRecords

MAX_SAMPLE_BYTES = 16_384          # a sample's message, in UTF-8 bytes, on every store
DEFAULT_VALIDATION_SHARE = 0.2     # CML: is_train = rng.gen::<f32>() >= 0.2
DEFAULT_CHUNK = 20_000             # samples registered per store write
VALIDATION_SUFFIX = "\x1fvalidation"

MAX_PUSH_KEY_CHARS = 200

REASONS = {"too_long": f"line longer than {MAX_SAMPLE_BYTES} bytes (the most a sample holds)"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def validation_key(batch: str) -> str:
    """The data-stage key of a batch's validation-flagged samples."""
    return batch + VALIDATION_SUFFIX


def split_key(key: str) -> tuple[str, bool]:
    """(batch, is the key the batch's validation pool)."""
    if key.endswith(VALIDATION_SUFFIX):
        return key[: -len(VALIDATION_SUFFIX)], True
    return key, False


def real_batches(keys: Iterable[str]) -> list[str]:
    """The batches behind data-stage keys (validation pools folded into their batch)."""
    return sorted({split_key(k)[0] for k in keys})


def fold_counts(counts: dict[str, int]) -> dict[str, int]:
    """Per-key line counts -> per-batch line counts (a batch's validation pool counts in it)."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        b = split_key(key)[0]
        out[b] = out.get(b, 0) + n
    return out


def check_push_key(key: str) -> str:
    """A push's key as a client gives it: 1 to 200 printable characters."""
    if not isinstance(key, str) or not key or len(key) > MAX_PUSH_KEY_CHARS or not key.isprintable():
        raise ValueError(f"push key {str(key)[:40]!r}: use 1 to {MAX_PUSH_KEY_CHARS} printable characters")
    return key


def chunk_key(push_key: str, index: int, messages: list[str]) -> str:
    """The key of a push's chunk: its push's key, its place and its content, hashed (a retry that
    reads other lines at that place registers them)."""
    h = hashlib.sha256(f"{push_key}\x1f{index}\x1f{len(messages)}\x1f".encode("utf-8", "surrogatepass"))
    for m in messages:
        h.update(m.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:40]


# ---- timestamps ---------------------------------------------------------------------------


class SampleClock:
    """Consecutive, never repeated nanosecond timestamps for this process (fork-safe)."""

    def __init__(self, now=time.time_ns):
        self._lock = threading.Lock()
        self._last = 0
        self.now = now  # the receive time (tests replay pushes made earlier)

    def block(self, n: int, after: int = 0) -> int:
        """The first of n consecutive timestamps, all later than anything handed out before
        and than `after` (e.g. the newest timestamp already stored for the batch)."""
        if n <= 0:
            raise ValueError("n must be positive")
        with self._lock:
            first = max(self.now(), self._last + 1, after + 1)
            self._last = first + n - 1
            return first

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._last = 0


CLOCK = SampleClock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=CLOCK._reset)


# ---- the split flag -------------------------------------------------------------------------


class SplitDraw:
    """Train/validation flags by a uniform draw: validation with probability `share`."""

    def __init__(self, share: float = DEFAULT_VALIDATION_SHARE, seed: Optional[int] = None):
        if not (isinstance(share, (int, float)) and 0.0 <= share < 1.0):
            raise ValueError(f"validation share must be in [0, 1), got {share!r}")
        import numpy as np  # only where samples are pushed: `logloop samples count` starts without it

        self.share = float(share)
        self._rng = np.random.default_rng(seed)

    def flags(self, n: int) -> list[int]:
        """n flags, 1 = validation, 0 = train."""
        if not self.share:
            return [0] * n
        return (self._rng.random(n) < self.share).astype("int8").tolist()


# ---- reading lines --------------------------------------------------------------------------


@dataclass
class PushStats:
    lines: int = 0           # lines read (registered + bad)
    registered: int = 0
    already: int = 0         # samples of chunks a previous push with the same key registered (not stored again)
    validation: int = 0      # of the registered, flagged validation
    sanitised: int = 0       # registered samples whose control characters became U+FFFD
    joined: int = 0          # continuation lines taken into a multiline event (not samples of their own)
    bad: BadRecords = field(default_factory=BadRecords)
    first_ns: Optional[int] = None
    last_ns: Optional[int] = None
    seconds: float = 0.0

    def to_dict(self, batch: str) -> dict:
        return {
            "batch": batch,
            "registered": self.registered,
            "already_registered": self.already,
            "bad": self.bad.total,
            "lines": self.lines,
            "train": self.registered - self.validation,
            "validation": self.validation,
            "sanitised": self.sanitised,
            "joined": self.joined,
            "bad_by_reason": dict(self.bad.counts),
            "bad_examples": list(self.bad.examples),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "seconds": round(self.seconds, 3),
        }


def _bad(bad: BadRecords, reason: str, where: str, detail: str = "") -> None:
    bad.add(reason, where, detail)
    if reason in REASONS and bad.examples and bad.examples[-1].startswith(where + ":"):
        # the data stage's text for too_long names its own (larger) limit
        bad.examples[-1] = f"{where}: {REASONS[reason]}{': ' + detail if detail else ''}"


def _check_text(text: str, where: str, bad: BadRecords, stats: PushStats) -> Optional[str]:
    if not text.strip():
        _bad(bad, "blank", where)
        return None
    if len(text) * 4 > MAX_SAMPLE_BYTES or not text.isascii():
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_SAMPLE_BYTES:
            _bad(bad, "too_long", where, f"{size} bytes")
            return None
    if _CONTROL.search(text):
        stats.sanitised += 1
        text = _CONTROL.sub("\ufffd", text)
    return text


def _json_message(raw: bytes, message_field: str, where: str, bad: BadRecords, stats: PushStats,
                  events: Optional["_Events"] = None) -> Optional[str]:
    from ops.fetch.records import get_field

    if not raw.strip():
        _bad(bad, "blank", where)
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "not_utf8" if "utf-8" in str(exc).lower() else "bad_json"
        _bad(bad, reason, where, str(exc)[:80])
        return None
    if not isinstance(doc, dict):
        _bad(bad, "not_object", where)
        return None
    message = doc.get(message_field)
    if message is None:
        message = get_field(doc, message_field)
    if not isinstance(message, str):
        _bad(bad, "no_message", where)
        return None
    if events is not None and events.blank_continues(message):
        return message
    return _check_text(message, where, bad, stats)


def sample_joiner(multiline: Optional[dict], stats: PushStats):
    """A Joiner for pushed lines (None when `multiline` rules are off): its events fit a sample."""
    from ops.fetch.multiline import Joiner, compiled

    if not multiline or not multiline.get("parsers"):
        return None
    ml = compiled(dict(multiline, max_bytes=min(multiline["max_bytes"], MAX_SAMPLE_BYTES)))
    return Joiner(ml, stats.bad)


class _Events:
    """Messages through an optional joiner, counting the lines it takes in."""

    def __init__(self, joiner, stats: PushStats):
        self.joiner, self.stats = joiner, stats

    def add(self, out: list, message: str, where: str) -> None:
        if self.joiner is None:
            out.append(message)
            return
        before = self.joiner.joined_lines
        out.extend(text for _, text in self.joiner.push(None, message, None, lambda: where))
        self.stats.joined += self.joiner.joined_lines - before

    def blank_continues(self, text: str) -> bool:
        return self.joiner is not None and self.joiner.continues(None, text)

    def flush(self) -> list[str]:
        return [text for _, text in self.joiner.flush()] if self.joiner is not None else []


def read_messages(
    stream: IO[bytes],
    stats: PushStats,
    fmt: str = "text",
    message_field: str = "log",
    source: str = "input",
    block_size: int = 1 << 20,
    joiner=None,
) -> Iterator[list[str]]:
    """Yield lists of messages from a binary stream, a block at a time; bad lines go to stats.bad.

    fmt: 'text' (one message per line; a trailing CR is dropped) or 'json' (JSON Lines, the
    message in `message_field`, dotted for a nested field). With a `joiner` (`sample_joiner`) the
    messages are events, the lines of a stack trace joined.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"input format must be 'text' or 'json', not {fmt!r}")
    bad = stats.bad
    events = _Events(joiner, stats)
    for line_no, payload in read_raw_blocks(stream, block_size, MAX_LINE_BYTES):
        if isinstance(payload, list):  # one line too long to keep (an OverlongLine)
            stats.lines += 1
            _bad(bad, "too_long", f"{source}:{line_no}", f"{len(payload[0])} bytes")
            continue
        raws = payload.split(b"\n")
        raws.pop()
        stats.lines += len(raws)
        out: list[str] = []
        if fmt == "json":
            for i, raw in enumerate(raws):
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if len(raw) > MAX_LINE_BYTES:
                    _bad(bad, "too_long", f"{source}:{line_no + i}", f"{len(raw)} bytes")
                    continue
                m = _json_message(raw, message_field, f"{source}:{line_no + i}", bad, stats, events)
                if m is not None:
                    events.add(out, m, f"{source}:{line_no + i}")
            yield out
            continue
        try:
            texts = payload.decode("utf-8").split("\n")
            texts.pop()
        except UnicodeDecodeError:
            texts = None
        for i in range(len(raws)):
            if texts is not None:
                text = texts[i]
            else:
                try:
                    text = raws[i].decode("utf-8")
                except UnicodeDecodeError as exc:
                    _bad(bad, "not_utf8", f"{source}:{line_no + i}", f"byte offset {exc.start}")
                    continue
            if text.endswith("\r"):
                text = text[:-1]
            m = text if events.blank_continues(text) else _check_text(text, f"{source}:{line_no + i}", bad, stats)
            if m is not None:
                events.add(out, m, f"{source}:{line_no + i}")
        yield out
    tail = events.flush()
    if tail:
        yield tail


def clean_messages(messages: Iterable[str], stats: PushStats, source: str = "call", joiner=None) -> list[str]:
    """Messages handed over as strings (the Python API, the HTTP endpoint): the same checks. With a
    `joiner`, events still open at the end stay in it (its `flush()` gives them)."""
    out = []
    events = _Events(joiner, stats)
    for i, m in enumerate(messages, 1):
        stats.lines += 1
        if not isinstance(m, str):
            _bad(stats.bad, "no_message", f"{source}:{i}", f"a {type(m).__name__}, not a string")
            continue
        try:
            m.encode("utf-8")
        except UnicodeEncodeError as exc:
            _bad(stats.bad, "not_utf8", f"{source}:{i}", f"unpaired surrogate at {exc.start}")
            continue
        m = m.removesuffix("\n").removesuffix("\r")
        checked = m if events.blank_continues(m) else _check_text(m, f"{source}:{i}", stats.bad, stats)
        if checked is not None:
            events.add(out, checked, f"{source}:{i}")
    return out


def rebatch(chunks: Iterable[list[str]], size: int = DEFAULT_CHUNK) -> Iterator[list[str]]:
    """Regroup message lists into lists of about `size` (a write each)."""
    buf: list[str] = []
    for chunk in chunks:
        buf.extend(chunk)
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if buf:
        yield buf
