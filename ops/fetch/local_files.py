"""Reading windows of logs from a folder of files (the embedded log source).

The folder is a local path or any fsspec URL (`s3://archive/k8s/`, `file:///var/log/k8s`,
`gs://...`, `az://...`): listing, sizes, modification times and reading all go through
fsspec (`filesystem`). Credentials and endpoints come from the environment only (the
providers' usual variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL,
which botocore honours, for s3://), never from configuration, and never appear in
errors: a location that cannot be listed or read raises `SourceUnavailable`, one line
naming the URL.

JSON Lines files hold documents in Opni's shape; the rest is plain text: its lines carry no
time, so they take the file's modification time, and their batch is the file's folder
relative to the root ('default' at the root). Which is which (`file_format`, `sniff_json`):

- Files ending in .gz or .zst (.gzip, .zstd) are decompressed as they stream, in bounded
  memory; rotation suffixes before that are set aside (`.1`, `.2.gz`, logrotate's
  `-20261201`, `.2026-12-01`, `.2026-12-01_10-00-00`), so `app.jsonl.1` and
  `app.jsonl.2.gz` are named like `app.jsonl`;
- a name then ending in .jsonl, .ndjson or .json is JSON Lines;
- any other file is JSON Lines when its first line (within its first SNIFF_BYTES bytes) is a
  JSON object holding the time field (Docker's `<id>-json.log`, an app's JSON log named
  `app.log`), else plain text. Only those first bytes are read to decide, from the stream the
  file is then read from.

A compressed file that is cut short or corrupt keeps the lines read before the damage
and counts one `corrupt_compression` bad record naming the file and line; the window
goes on. What the folder holds besides files (FIFOs, sockets, links out of the root,
unreadable files; see ops.fetch.locations.scan_files) is never opened and is counted as
bad records by reason (`SkippedFiles`); a file that vanishes or cannot be opened when its
shard runs is counted the same way, `unreadable_file`.

Each file is a *shard*: read once per run, its records routed to the requested
windows. A shard is picklable and opens its file itself, in the worker process. A
file's time range is remembered in an index (keyed by size and mtime, or an object's
ETag), so later runs skip files that cannot hold their windows; the index is a JSON
object at a path or fsspec URL (`load_index`, `save_index`).

Two ways to read a shard, with the same results:

- `FileShard.read` yields {(window index, batch): [message, ...]}: every line parsed
  one by one (`ops.fetch.records.parse_json_lines`). It is the reference, and what
  `read_window` uses.
- `FileShard.read_counts`, which the data stage uses, yields
  {(window index, batch): {raw message: count}}. A JSON block (whole lines, about
  `block_size` bytes) goes through `ops.fetch.fast_json.FastJsonBlocks`: msgspec decodes just
  the needed fields when their names are flat (pyarrow, with a schema of those
  fields, when a name is dotted), times are routed to windows, and identical
  (window, batch, message) rows are counted across blocks in C (`ops.fetch.tally.Tally`,
  at most TALLY_LIMIT distinct messages before it is handed on). Any block the fast
  path cannot vouch for (a bad line of any kind, ISO or float times, a time outside
  ops.windows' valid range, a missing field, non-UTF-8, an overlong line...) is parsed
  line by line by the careful path instead, so bad lines are still counted and named
  exactly. Both paths name batches with `ops.fetch.records.batch_name`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from ops.fetch.fast_json import FastJsonBlocks
from ops.fetch.tally import Tally
from ops.fetch.framing import MAX_LINE_BYTES, OverlongLine, read_line_blocks, read_raw_blocks, split_lines
from ops.fetch.locations import (SourceUnavailable, filesystem, is_local, modification_ms, reason,
                                 scan_files, shown)
from ops.fetch.records import (MAX_EXAMPLES, BadRecords, RecordFormat, decode_text_lines, get_field, parse_json_lines,
                               route_events)
from ops.fetch.streams import CorruptCompression, FileSkipped, open_stream
from ops.naming import InvalidName, validate_batch_name
from ops.windows import TimeRange, Windows

JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
TALLY_LIMIT = 50_000  # distinct raw messages counted in arrays before they are handed on
SNIFF_BYTES = 64 << 10  # what is read of a file whose name does not say its format, to decide it
# a rotated file's suffix: logrotate's `.1` and `-20261201` (dateext, `-2026120110` hourly), Python's
# TimedRotatingFileHandler `.2026-12-01` / `.2026-12-01_10-00-00`
_ROTATION = re.compile(r"[.-](?:\d{1,4}|\d{8}(?:\d{2}){0,3}|\d{4}-\d{2}-\d{2}(?:[T_.-]\d{2}(?:[:.-]?\d{2}){0,2})?)$")


def file_format(path: str) -> tuple[bool, str | None]:
    """(whether the name says JSON Lines, the compression) of a log file's name: the compression
    suffix, then any rotation suffix, set aside (`app.jsonl.2.gz` is gzip-compressed JSON Lines)."""
    name = PurePosixPath(path).name.lower()
    compression = COMPRESSION_SUFFIXES.get(PurePosixPath(name).suffix)
    if compression:
        name = name[: -len(PurePosixPath(name).suffix)]
    name = _ROTATION.sub("", name)
    return PurePosixPath(name).suffix in JSON_SUFFIXES, compression


def sniff_json(head: bytes, time_field: str) -> bool:
    """Whether a file's first bytes say JSON Lines: its first non-blank line, whole within them,
    is a JSON object holding `time_field`. A text file whose lines happen to be JSON without that
    field stays text (read as JSON, each of its lines would be a bad record)."""
    import orjson

    for line in head.lstrip(b"\xef\xbb\xbf").split(b"\n"):
        line = line.strip()
        if not line:
            continue
        if not line.startswith(b"{") or len(line) == len(head):  # not whole within `head`: not decided here
            return False
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        return isinstance(doc, dict) and get_field(doc, time_field) is not None
    return False


class _Replayed:
    """A stream whose first bytes, read already to sniff its format, are given again first."""

    def __init__(self, stream, head: bytes):
        self._stream, self._head = stream, head

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(n)
        if n is None or n < 0:
            out, self._head = self._head + self._stream.read(), b""
            return out
        out, self._head = self._head[:n], self._head[n:]
        return out


# ---- shards ---------------------------------------------------------------------

@dataclass(frozen=True)
class FileShard:
    """One file to read for a set of windows. Picklable, so it runs in a worker process,
    where it opens its file (a local path or URL) itself."""

    path: str
    source: str          # the path relative to the root, used in error examples
    fmt: RecordFormat
    text_batch: str      # batch of a plain-text file's lines
    file_id: str = ""    # size and version when planned: the index entry's identity
    block_size: int = 1 << 20
    mtime_ms: int | None = None  # the modification time when planned (a text file's lines take it)

    @property
    def compression(self) -> str | None:
        return file_format(self.path)[1]

    @property
    def size_bytes(self) -> int | None:
        """The file's size when planned (file_id is "size:version"); None when the listing gave none."""
        size = self.file_id.split(":", 1)[0]
        return int(size) if size.isdigit() else None

    @property
    def is_json(self) -> bool:
        """Whether the name says JSON Lines (`file_format`); a file it does not is sniffed when read."""
        return file_format(self.path)[0]

    @contextlib.contextmanager
    def _open(self, bad: BadRecords):
        """(stream, whether it holds JSON Lines), or (None, False) when the file cannot be read as a
        log file (counted in `bad`). The format comes from the name, else from the first bytes."""
        try:
            with open_stream(self.path, self.compression, regular_only=True) as f:
                if self.is_json:
                    yield f, True
                    return
                try:
                    head = f.read(SNIFF_BYTES)
                except CorruptCompression as exc:
                    self._corrupt(bad, 1, exc)
                    yield None, False
                    return
                yield _Replayed(f, head), sniff_json(head, self.fmt.time_field)
        except FileSkipped as exc:
            bad.add(exc.reason, self.source, str(exc))
            yield None, False

    def _corrupt(self, bad: BadRecords, line_no: int, exc: CorruptCompression) -> None:
        """The lines before `line_no` were read; the rest of the file cannot be."""
        bad.add("corrupt_compression", f"{self.source}:{line_no}", str(exc))

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        """Like `read`, but each chunk maps (window index, batch) -> {raw message: count}."""
        with self._open(bad) as (f, is_json):
            if f is None:
                return
            if not is_json:
                yield from self._read_text_counts(f, windows, bad, seen, joiner)
                return
            yield from self._read_json_counts(f, windows, bad, seen, joiner)

    def _read_json_counts(self, f, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        fast, tally = FastJsonBlocks(self.fmt), Tally()
        line_no = 1  # counted here: the fast path knows its blocks' line counts
        try:
            for _, payload in read_raw_blocks(f, self.block_size, count_lines=False):
                n = (fast.tally(payload, windows, seen, tally, joiner, line_no, self.source)
                     if isinstance(payload, bytes) else None)
                if n is not None:
                    line_no += n
                    if len(tally) > TALLY_LIMIT:
                        yield tally.flush()
                    continue
                # the careful path: each line parsed, bad ones counted and named
                lines = split_lines(payload)
                chunk = parse_json_lines(lines, self.fmt, windows, bad, self.source, line_no, seen, joiner)
                line_no += len(lines)
                if chunk:
                    yield {key: Counter(msgs) for key, msgs in chunk.items()}
        except CorruptCompression as exc:
            self._corrupt(bad, line_no, exc)
        if len(tally):
            yield tally.flush()
        if joiner is not None:
            tail = self._json_tail(joiner, bad)
            if tail:
                yield {key: Counter(msgs) for key, msgs in tail.items()}

    def _json_tail(self, joiner, bad: BadRecords) -> dict:
        """The events still open where the file ends, routed like the rest."""
        out: dict = {}
        route_events(out, set(), bad, self.source, joiner.flush())
        return out

    def _read_text_counts(self, f, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        """Plain text, counted per distinct raw line before decoding: repeated lines cost a hash.

        A block holding any line the careful path would refuse (blank, over 1 MB, not UTF-8)
        goes through that path instead, so bad lines are still counted and named exactly; so does
        a block that may begin or continue a multiline event, whose lines the joiner takes in order.
        """
        key = self._text_key(windows, bad, seen)
        if key is None:
            return
        for first_line_no, lines in self._line_blocks(f, bad):
            counts: dict[str, int] = {}
            joining = joiner is not None and (joiner.has_open or joiner.ml.may_start(b"\n".join(lines)))
            for raw, n in ({} if joining else Counter(lines)).items():
                if not raw or len(raw) > MAX_LINE_BYTES or isinstance(raw, OverlongLine):
                    break
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    break
                if not text.strip():
                    break
                counts[text] = n
            else:
                if counts:
                    yield {key: counts}
                if not joining:
                    continue
            messages = decode_text_lines(lines, bad, self.source, first_line_no, joiner)
            if messages:
                yield {key: Counter(messages)}
        if joiner is not None:
            tail = [text for _, text in joiner.flush()]
            if tail:
                yield {key: Counter(tail)}

    def read(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict[tuple[int, str], list[str]]]:
        """Chunks {(window index, batch): [message, ...]}, every line parsed one by one; with a
        multiline `joiner` (ops.fetch.multiline), messages are events (see `parse_json_lines`)."""
        with self._open(bad) as (f, is_json):
            if f is not None:
                yield from self._read(f, is_json, windows, bad, seen, joiner)

    def _read(self, f, is_json: bool, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None):
        key = None
        if not is_json:
            key = self._text_key(windows, bad, seen)
            if key is None:
                return
        for first_line_no, lines in self._line_blocks(f, bad):
            if key is None:
                chunk = parse_json_lines(lines, self.fmt, windows, bad, self.source, first_line_no, seen, joiner)
                if chunk:
                    yield chunk
            else:
                messages = decode_text_lines(lines, bad, self.source, first_line_no, joiner)
                if messages:
                    yield {key: messages}
        if joiner is not None:
            tail = self._json_tail(joiner, bad) if key is None else {key: [text for _, text in joiner.flush()]}
            if any(tail.values()):
                yield tail

    def _line_blocks(self, f, bad: BadRecords) -> Iterator[tuple[int, list]]:
        """(first line number, lines) of the open file `f`, a block at a time; a corrupt compressed
        file ends early with one bad record naming the line where the damage begins."""
        line_no = 1
        try:
            for first_line_no, lines in read_line_blocks(f, self.block_size):
                line_no = first_line_no + len(lines)
                yield first_line_no, lines
        except CorruptCompression as exc:
            self._corrupt(bad, line_no, exc)

    def _text_key(self, windows: Windows, bad: BadRecords, seen: TimeRange):
        """(window index, batch) of a plain-text file's lines (its mtime, its folder), or None."""
        mtime_ms = self.mtime_ms
        if mtime_ms is None:
            fs, path = filesystem(self.path)
            try:
                mtime_ms = modification_ms(fs.info(path))
            except Exception as exc:
                raise SourceUnavailable(f"cannot read {shown(self.path)}: {reason(exc)}") from None
            if mtime_ms is None:
                raise SourceUnavailable(f"cannot read {shown(self.path)}: no modification time")
        seen.add(mtime_ms, mtime_ms)
        w = windows.index(mtime_ms)
        if w < 0:
            return None
        try:
            return (w, validate_batch_name(self.text_batch))
        except InvalidName as exc:
            bad.add("bad_batch", self.source, str(exc))
            return None


@dataclass(frozen=True)
class SkippedFiles:
    """What the folder holds that is not read (ops.fetch.locations.scan_files' `Skipped`), as a shard
    whose reading counts them as bad records by reason, so they reach the run's bad-record
    metadata beside the records' own. Bounded: counts, and MAX_EXAMPLES examples."""

    counts: tuple            # ((reason, n), ...)
    examples: tuple          # ((rel, reason, detail), ...)
    path: str = "(skipped files)"
    file_id: str = ""        # nothing for the source index to remember
    size_bytes: int = 0      # nothing to read

    @classmethod
    def of(cls, skipped) -> "SkippedFiles":
        counts = Counter(s.reason for s in skipped)
        return cls(tuple(counts.items()), tuple((s.rel, s.reason, s.detail) for s in skipped[:MAX_EXAMPLES]))

    def _count(self, bad: BadRecords) -> None:
        for rel, why, detail in self.examples:
            bad.add(why, rel, detail)
        for why, n in self.counts:
            bad.counts[why] += n - sum(1 for e in self.examples if e[1] == why)

    def read(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        self._count(bad)
        return iter(())

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange, joiner=None) -> Iterator[dict]:
        return self.read(windows, bad, seen, joiner)


def plan_shards(
    root: str | Path, fmt: RecordFormat, windows: Windows, index: dict | None = None, block_size: int = 1 << 20
) -> list[FileShard | SkippedFiles]:
    """The files that may hold records of `windows` (`index` maps path -> {id, lo, hi}), and, last,
    a `SkippedFiles` shard when the folder holds anything that is not read."""
    index = index or {}
    shards: list = []
    listing = scan_files(root)
    for file in listing.files:
        entry = index.get(file.path)
        if entry and entry.get("id") == file.file_id and entry.get("lo") is not None:
            if not windows.overlaps(entry["lo"], entry["hi"]):
                continue
        rel_dir = PurePosixPath(file.rel).parent.as_posix()
        text_batch = fmt.default_batch if rel_dir in ("", ".") else rel_dir
        shards.append(FileShard(file.path, file.rel, fmt, text_batch, file.file_id, block_size, file.mtime_ms))
    if listing.skipped:
        shards.append(SkippedFiles.of(listing.skipped))
    return shards


def load_index(url: str | Path) -> dict:
    """The source index at a path or URL; {} when there is none yet (or it is unreadable JSON)."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            index = json.load(f)
    except (FileNotFoundError, ValueError):
        return {}  # a lost index only costs a re-read
    except Exception as exc:
        raise SourceUnavailable(f"cannot read the source index {shown(url)}: {reason(exc)}") from None
    return index if isinstance(index, dict) else {}


def save_index(url: str | Path, index: dict) -> None:
    """Replace the index whole: readers see the old one or the new one, never half of one.

    On a local disk: a temporary file in the same folder, then a rename. On an object
    store: one PUT, which is atomic there (a temporary object then a copy would not be)."""
    fs, path = filesystem(url)
    data = json.dumps(index).encode()
    try:
        if is_local(fs):
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            fs.pipe_file(path, data)
    except Exception as exc:
        raise SourceUnavailable(f"cannot write the source index {shown(url)}: {reason(exc)}") from None


def read_window(
    root: str | Path, fmt: RecordFormat, start_ms: int, end_ms: int, bad: BadRecords, block_size: int = 1 << 20,
    multiline: dict | None = None,
) -> Iterator[dict[str, list[str]]]:
    """One window's records as chunks {batch: [message, ...]} (a convenience over shards); with
    `multiline` rules (ops.fetch.multiline.load_multiline), lines are joined into events."""
    from ops.fetch.multiline import Joiner, compiled

    windows = Windows([(start_ms, end_ms)])
    ml = compiled(multiline)
    for shard in plan_shards(root, fmt, windows, block_size=block_size):
        joiner = Joiner(ml, bad) if ml is not None else None
        for chunk in shard.read(windows, bad, TimeRange(), joiner):
            yield {batch: msgs for (_, batch), msgs in chunk.items()}
