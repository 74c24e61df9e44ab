"""Reading windows of logs from a folder of files (the embedded log source).

JSON Lines files (.jsonl, .ndjson, .json) hold documents in Opni's shape. Any other
file is plain text: its lines carry no time, so they take the file's modification
time, and their batch is the file's folder relative to the root ('default' at the root).

Each file is a *shard*: read once per run, its records routed to the requested
windows. A file's time range is remembered in an index (keyed by size and mtime), so
later runs skip files that cannot hold their windows.

Two ways to read a shard, with the same results:

- `FileShard.read` yields {(window index, batch): [message, ...]}: every line parsed
  one by one (`ops.records.parse_json_lines`). It is the reference, and what
  `read_window` uses.
- `FileShard.read_counts`, which the data stage uses, yields
  {(window index, batch): {raw message: count}}. A JSON block (whole lines, about
  `block_size` bytes) goes through `ops.records.FastJsonBlocks`: msgspec decodes just
  the needed fields when their names are flat (pyarrow, with a schema of those
  fields, when a name is dotted), times are routed to windows, and identical
  (window, batch, message) rows are counted across blocks in C (`ops.records.Tally`,
  at most TALLY_LIMIT distinct messages before it is handed on). Any block the fast
  path cannot vouch for (a bad line of any kind, ISO or float times, a time outside
  ops.records' valid range, a missing field, non-UTF-8, an overlong line...) is parsed
  line by line by the careful path instead, so bad lines are still counted and named
  exactly. Both paths name batches with `ops.records.batch_name`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from collections import Counter
from typing import Iterator

from ops.naming import InvalidName, validate_batch_name
from ops.records import (
    MAX_LINE_BYTES,
    BadRecords,
    OverlongLine,
    FastJsonBlocks,
    RecordFormat,
    Tally,
    TimeRange,
    Windows,
    decode_text_lines,
    parse_json_lines,
    read_line_blocks,
    read_raw_blocks,
    split_lines,
)

JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
TALLY_LIMIT = 50_000  # distinct raw messages counted in arrays before they are handed on


def list_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"log folder {root} does not exist or is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return found


def file_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class FileShard:
    """One file to read for a set of windows. Picklable, so it runs in a worker process."""

    path: str
    source: str          # the path relative to the root, used in error examples
    fmt: RecordFormat
    text_batch: str      # batch of a plain-text file's lines
    file_id: str = ""    # size and mtime when planned: the index entry's identity
    block_size: int = 1 << 20

    @property
    def is_json(self) -> bool:
        return Path(self.path).suffix.lower() in JSON_SUFFIXES

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange) -> Iterator[dict]:
        """Like `read`, but each chunk maps (window index, batch) -> {raw message: count}."""
        if not self.is_json:
            yield from self._read_text_counts(windows, bad, seen)
            return
        fast, tally = FastJsonBlocks(self.fmt), Tally()
        line_no = 1  # counted here: the fast path knows its blocks' line counts
        with open(self.path, "rb") as f:
            for _, payload in read_raw_blocks(f, self.block_size, count_lines=False):
                n = fast.tally(payload, windows, seen, tally) if isinstance(payload, bytes) else None
                if n is not None:
                    line_no += n
                    if len(tally) > TALLY_LIMIT:
                        yield tally.flush()
                    continue
                # the careful path: each line parsed, bad ones counted and named
                lines = split_lines(payload)
                chunk = parse_json_lines(lines, self.fmt, windows, bad, self.source, line_no, seen)
                line_no += len(lines)
                if chunk:
                    yield {key: Counter(msgs) for key, msgs in chunk.items()}
        if len(tally):
            yield tally.flush()

    def _read_text_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange) -> Iterator[dict]:
        """Plain text, counted per distinct raw line before decoding: repeated lines cost a hash.

        A block holding any line the careful path would refuse (blank, over 1 MB, not UTF-8)
        goes through that path instead, so bad lines are still counted and named exactly.
        """
        key = self._text_key(windows, bad, seen)
        if key is None:
            return
        with open(self.path, "rb") as f:
            for first_line_no, lines in read_line_blocks(f, self.block_size):
                raw_counts = Counter(lines)
                counts: dict[str, int] = {}
                for raw, n in raw_counts.items():
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
                    continue
                messages = decode_text_lines(lines, bad, self.source, first_line_no)
                if messages:
                    yield {key: Counter(messages)}

    def read(self, windows: Windows, bad: BadRecords, seen: TimeRange) -> Iterator[dict[tuple[int, str], list[str]]]:
        if self.is_json:
            with open(self.path, "rb") as f:
                for first_line_no, lines in read_line_blocks(f, self.block_size):
                    chunk = parse_json_lines(lines, self.fmt, windows, bad, self.source, first_line_no, seen)
                    if chunk:
                        yield chunk
            return
        key = self._text_key(windows, bad, seen)
        if key is None:
            return
        with open(self.path, "rb") as f:
            for first_line_no, lines in read_line_blocks(f, self.block_size):
                messages = decode_text_lines(lines, bad, self.source, first_line_no)
                if messages:
                    yield {key: messages}

    def _text_key(self, windows: Windows, bad: BadRecords, seen: TimeRange):
        """(window index, batch) of a plain-text file's lines (its mtime, its folder), or None."""
        mtime_ms = int(os.stat(self.path).st_mtime * 1000)
        seen.add(mtime_ms, mtime_ms)
        w = windows.index(mtime_ms)
        if w < 0:
            return None
        try:
            validate_batch_name(self.text_batch)
        except InvalidName as exc:
            bad.add("bad_batch", self.source, str(exc))
            return None
        return (w, self.text_batch)


def plan_shards(
    root: str | Path, fmt: RecordFormat, windows: Windows, index: dict | None = None, block_size: int = 1 << 20
) -> list[FileShard]:
    """The files that may hold records of `windows`; `index` maps path -> {id, lo, hi}."""
    root = Path(root)
    index = index or {}
    shards = []
    for file in list_files(root):
        entry = index.get(str(file))
        if entry and entry.get("id") == file_id(file) and entry.get("lo") is not None:
            if not windows.overlaps(entry["lo"], entry["hi"]):
                continue
        rel = file.relative_to(root)
        rel_dir = rel.parent.as_posix()
        text_batch = fmt.default_batch if rel_dir in ("", ".") else rel_dir
        shards.append(FileShard(str(file), rel.as_posix(), fmt, text_batch, file_id(file), block_size))
    return shards


def load_index(path: str | Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a lost index only costs a re-read


def save_index(path: str | Path, index: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)


def read_window(
    root: str | Path, fmt: RecordFormat, start_ms: int, end_ms: int, bad: BadRecords, block_size: int = 1 << 20
) -> Iterator[dict[str, list[str]]]:
    """One window's records as chunks {batch: [message, ...]} (a convenience over shards)."""
    windows = Windows([(start_ms, end_ms)])
    for shard in plan_shards(root, fmt, windows, block_size=block_size):
        for chunk in shard.read(windows, bad, TimeRange()):
            yield {batch: msgs for (_, batch), msgs in chunk.items()}
