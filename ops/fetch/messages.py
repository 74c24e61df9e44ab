"""The log messages of one file or stream, read as the data stage reads log files: what `logloop
score` and `logloop templates` score and parse.

- Where: a local path or any URL the log folder may be (`s3://archive/k8s/app.jsonl.gz`, through
  ops.fetch.locations), or a binary stream (standard input).
- Compression: `.gz` / `.zst` (`.gzip`, `.zstd`) by the name, else by the first bytes (gzip's and
  zstd's magic numbers), so a compressed stream on standard input is read too. It is undone as it
  streams (ops.fetch.streams); a file cut short keeps the lines before the damage and counts one
  `corrupt_compression` bad record.
- Format, decided per file: the one asked for; else JSON Lines when the name (before any compression
  suffix) ends in .jsonl, .ndjson or .json; else JSON Lines when the first non-blank line is a JSON
  object; else plain text.
- JSON Lines records are parsed as in a window (ops.fetch.records.parse_json_lines): the configured
  message field is the message, a record needs a valid time in the configured time field, and its
  batch fields name its batch. Plain text lines are messages (ops.fetch.records.decode_text_lines).

Blank lines are skipped. Every other line that is not a message (bad JSON, no time, no message, not
UTF-8, too long) is counted by reason, the first few named with their line number, as the data
stage counts them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import orjson

from ops.fetch.framing import OverlongLine, read_line_blocks
from ops.fetch.local_files import COMPRESSION_SUFFIXES, JSON_SUFFIXES
from ops.fetch.records import BadRecords, RecordFormat, decode_text_lines, parse_json_lines
from ops.fetch.streams import CorruptCompression, GzipStream, ZstdStream, open_stream
from ops.windows import MAX_TIME_MS, MIN_TIME_MS, Windows

FORMATS = ("text", "json")
MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_ALL_TIME = Windows([(MIN_TIME_MS, MAX_TIME_MS)])  # every valid time: a record is never outside it


@dataclass
class Messages:
    lines: list[tuple[int, str, str | None]]  # (1-based line number, message, batch), in input order; the
    # batch is the record's by the format's batch fields (ops.fetch.records.batch_name), None for plain text
    format: str                       # "json" or "text": how the lines were read
    compression: str | None           # "gzip", "zstd" or None
    bad: BadRecords = field(default_factory=BadRecords)


class _Prefixed:
    """A binary stream with its first bytes read already (to look at them) and put back in front."""

    def __init__(self, head: bytes, rest):
        self._head, self._rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data + self._rest.read(n - len(data)) if len(data) < n else data
        return self._rest.read(n)


def _head(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            break
        data += more
    return data


def compression_of(name: str | None, head: bytes) -> str | None:
    """"gzip", "zstd" or None: by the name's suffix, else by the stream's first bytes."""
    if name:
        by_name = COMPRESSION_SUFFIXES.get(PurePosixPath(name).suffix.lower())
        if by_name:
            return by_name
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def format_by_name(name: str | None) -> str | None:
    """"json" when the name says JSON Lines (app.jsonl, app.ndjson.gz), else None (look at the content)."""
    if not name:
        return None
    path = PurePosixPath(name)
    if path.suffix.lower() in COMPRESSION_SUFFIXES:
        path = path.with_suffix("")
    return "json" if path.suffix.lower() in JSON_SUFFIXES else None


def looks_like_json(line: bytes) -> bool:
    """Whether a line is a JSON object (the first non-blank line decides a file's format)."""
    if isinstance(line, OverlongLine) or not line.lstrip().startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


@contextlib.contextmanager
def _opened(source: str, stream):
    if stream is not None:
        yield stream
    else:
        with open_stream(source) as raw:  # raises SourceUnavailable naming the URL
            yield raw


def read_messages(source: str, fmt: RecordFormat, force_format: str | None = None, stream=None) -> Messages:
    """The messages of `source` (a path or URL), or of `stream` when given (then `source` only names
    it in bad-record examples). `force_format` ("json" or "text") skips the detection."""
    if force_format is not None and force_format not in FORMATS:
        raise ValueError(f"format {force_format!r}: expected one of {', '.join(FORMATS)}")
    name = None if stream is not None else source
    bad = BadRecords()
    lines: list[tuple[int, str, str | None]] = []
    with _opened(source, stream) as raw:
        head = _head(raw, 4)
        compression = compression_of(name, head)
        data = _Prefixed(head, raw)
        if compression == "gzip":
            data = GzipStream(data)
        elif compression == "zstd":
            data = ZstdStream(data)
        kind = force_format or format_by_name(name)
        line_no = 1
        try:
            for first, block in read_line_blocks(data):
                if kind is None:
                    first_line = next((ln for ln in block if isinstance(ln, OverlongLine) or ln.strip()), None)
                    if first_line is None:
                        continue
                    kind = "json" if looks_like_json(first_line) else "text"
                for offset, raw_line in enumerate(block):
                    n = first + offset
                    line_no = n + 1
                    if not isinstance(raw_line, OverlongLine) and not raw_line.strip():
                        continue
                    if kind == "json":
                        parsed = parse_json_lines([raw_line], fmt, _ALL_TIME, bad, source, n)
                        lines.extend((n, m, batch) for (_, batch), messages in parsed.items() for m in messages)
                    else:
                        lines.extend((n, m, None) for m in decode_text_lines([raw_line], bad, source, n))
        except CorruptCompression as exc:
            bad.add("corrupt_compression", f"{source}:{line_no}", str(exc))
    return Messages(lines, kind or force_format or "text", compression, bad)
