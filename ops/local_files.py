"""Reading a time window from a folder of log files (the embedded log source).

JSON Lines files (.jsonl, .ndjson, .json) hold documents in Opni's shape. Any other
file is plain text: its lines carry no time, so they take the file's modification
time, and their batch is the file's folder relative to the root ('default' at the root).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ops.naming import InvalidName, validate_batch_name
from ops.records import BadRecords, RecordFormat, decode_text_lines, parse_json_lines, read_line_blocks

JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}


def list_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"log folder {root} does not exist or is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return found


def read_window(
    root: str | Path,
    fmt: RecordFormat,
    start_ms: int,
    end_ms: int,
    bad: BadRecords,
    block_size: int = 1 << 20,
) -> Iterator[dict[str, list[str]]]:
    """Yield chunks {batch: [message, ...]} for start_ms <= time < end_ms."""
    root = Path(root)
    for file in list_files(root):
        source = file.relative_to(root).as_posix()
        if file.suffix.lower() in JSON_SUFFIXES:
            with open(file, "rb") as f:
                for first_line_no, lines in read_line_blocks(f, block_size):
                    chunk = parse_json_lines(lines, fmt, start_ms, end_ms, bad, source, first_line_no)
                    if chunk:
                        yield chunk
            continue
        if not start_ms <= int(file.stat().st_mtime * 1000) < end_ms:
            continue
        rel_dir = file.parent.relative_to(root).as_posix()
        batch = fmt.default_batch if rel_dir in ("", ".") else rel_dir
        try:
            validate_batch_name(batch)
        except InvalidName as exc:
            bad.add("bad_batch", source, str(exc))
            continue
        with open(file, "rb") as f:
            for first_line_no, lines in read_line_blocks(f, block_size):
                messages = decode_text_lines(lines, bad, source, first_line_no)
                if messages:
                    yield {batch: messages}
