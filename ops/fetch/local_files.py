"""Reading windows of logs from a folder of files (the embedded log source).

The folder is a local path or any fsspec URL (`s3://archive/k8s/`, `file:///var/log/k8s`,
`gs://...`, `az://...`): listing, sizes, modification times and reading all go through
fsspec (`filesystem`). Credentials and endpoints come from the environment only (the
providers' usual variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL,
which botocore honours, for s3://), never from configuration, and never appear in
errors: a location that cannot be listed or read raises `SourceUnavailable`, one line
naming the URL.

JSON Lines files (.jsonl, .ndjson, .json) hold documents in Opni's shape. Any other
file is plain text: its lines carry no time, so they take the file's modification
time, and their batch is the file's folder relative to the root ('default' at the root).
Files ending in .gz or .zst (.gzip, .zstd) are decompressed as they stream, in bounded
memory; the suffix before it decides JSON Lines or text (`app.jsonl.gz` is JSON Lines).
A compressed file that is cut short or corrupt keeps the lines read before the damage
and counts one `corrupt_compression` bad record naming the file and line; the window
goes on.

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
  (window, batch, message) rows are counted across blocks in C (`ops.fetch.fast_json.Tally`,
  at most TALLY_LIMIT distinct messages before it is handed on). Any block the fast
  path cannot vouch for (a bad line of any kind, ISO or float times, a time outside
  ops.windows' valid range, a missing field, non-UTF-8, an overlong line...) is parsed
  line by line by the careful path instead, so bad lines are still counted and named
  exactly. Both paths name batches with `ops.fetch.records.batch_name`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from ops.naming import InvalidName, validate_batch_name
from ops.fetch.fast_json import FastJsonBlocks, Tally
from ops.fetch.framing import MAX_LINE_BYTES, OverlongLine, read_line_blocks, read_raw_blocks, split_lines
from ops.fetch.records import BadRecords, RecordFormat, decode_text_lines, parse_json_lines
from ops.windows import TimeRange, Windows

JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
TALLY_LIMIT = 50_000  # distinct raw messages counted in arrays before they are handed on
REMOTE_BLOCK = 4 << 20        # bytes per ranged GET of a remote file; the next is fetched in a thread
COMPRESSED_CHUNK = 1 << 18   # compressed bytes handed to a decompressor at a time
_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCS", "FSSPEC_")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL", "CONNECTION_STRING")


class SourceUnavailable(OSError):
    """A log location cannot be listed or read (no such bucket, unreachable endpoint,
    access denied, a lost connection): one line naming the URL, without credentials."""


class CorruptCompression(Exception):
    """A compressed file ends before its end marker or holds data that does not decompress."""


# ---- where files are: fsspec ----------------------------------------------------

_FILESYSTEMS: dict = {}


def filesystem(url: str | Path):
    """(fsspec filesystem, path within it) for a URL or a plain local path.

    Options come from the environment only. Instances are kept per process and per the
    providers' environment variables (a changed endpoint or key gets a new client),
    rather than in fsspec's cache, which keys on constructor arguments alone.
    """
    import fsspec

    url = os.fspath(url)
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    env = hash(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))))
    fs = _FILESYSTEMS.get((protocol, env))
    if fs is None:
        if len(_FILESYSTEMS) >= 16:
            _FILESYSTEMS.clear()
        fs = _FILESYSTEMS[(protocol, env)] = fsspec.filesystem(protocol, skip_instance_cache=True)
    return fs, fs._strip_protocol(url)


def is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def is_local_url(url: str | Path) -> bool:
    import fsspec

    return fsspec.core.split_protocol(os.fspath(url))[0] in (None, "file", "local")


def shown(url: str | Path) -> str:
    """A URL as errors and logs may show it: any password in it replaced."""
    from resources.urls import url_without_password

    return url_without_password(os.fspath(url))


def reason(exc: BaseException) -> str:
    """An exception as one short line, with any credential from the environment blanked out."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    for name, value in os.environ.items():
        if len(value) >= 6 and any(w in name.upper() for w in _SECRET_WORDS) and value in text:
            text = text.replace(value, "***")
    return text[:300]


@dataclass(frozen=True)
class FileEntry:
    path: str            # what a shard opens: a local path, or the file's URL
    rel: str             # relative to the root, '/'-separated
    file_id: str         # size and version (mtime, or an object's ETag)
    mtime_ms: int | None


def _mtime_ms(info: dict) -> int | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return int(value * 1000)
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return int(value.timestamp() * 1000)
    return None


def _file_id(info: dict) -> str:
    version = next((info[k] for k in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified",
                                      "last_modified", "updated") if info.get(k) is not None), "")
    return f"{info.get('size')}:{version}"


def _walk_order(rel: str):
    """os.walk's order: a folder's files (sorted), then its sub-folders (sorted)."""
    parts = rel.split("/")
    return [(1, d) for d in parts[:-1]] + [(0, parts[-1])]


def list_files(root: str | Path) -> list[FileEntry]:
    """The files under `root` (a path or URL), in os.walk order, hidden ones ('.name') left out."""
    fs, base = filesystem(root)
    local = is_local(fs)
    if local and not fs.isdir(base):
        raise FileNotFoundError(f"log folder {root} does not exist or is not a folder")
    try:
        if not local:
            fs.invalidate_cache(base)  # a listing is always fresh
        found = fs.find(base, detail=True)
    except Exception as exc:
        raise SourceUnavailable(f"cannot list {shown(root)}: {reason(exc)}") from None
    base = base.rstrip("/")
    entries = []
    for name, info in found.items():
        if info.get("type", "file") != "file" or name.endswith("/"):
            continue
        rel = name[len(base) + 1:] if name.startswith(base + "/") else PurePosixPath(name).name
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        path = name if local else fs.unstrip_protocol(name)
        entries.append(FileEntry(path, rel, _file_id(info), _mtime_ms(info)))
    entries.sort(key=lambda e: _walk_order(e.rel))
    return entries


# ---- decompression, streamed ----------------------------------------------------

class _Guarded:
    """A file's read(n); any failure (a lost connection, a vanished file) is one line naming it."""

    def __init__(self, f, where: str):
        self._f, self._where = f, where

    def read(self, n: int = -1) -> bytes:
        try:
            return self._f.read(n)
        except Exception as exc:
            raise SourceUnavailable(f"cannot read {self._where}: {reason(exc)}") from None


class _Decompressed:
    """Decompressed bytes, at most n per read(n). What decompressed cleanly before a
    fault is returned first; the read after it raises CorruptCompression."""

    def __init__(self):
        self._error: CorruptCompression | None = None

    def _more(self, n: int) -> bytes:
        raise NotImplementedError

    def read(self, n: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        n = n if n is not None and n > 0 else 1 << 20
        out, have = [], 0
        try:
            while have < n:
                piece = self._more(n - have)
                if not piece:
                    break
                out.append(piece)
                have += len(piece)
        except CorruptCompression as exc:
            self._error = exc
            if not out:
                raise
        return out[0] if len(out) == 1 else b"".join(out)


class GzipStream(_Decompressed):
    """A gzip file (one member or several concatenated, zero padding allowed), streamed."""

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._tail = b""       # compressed bytes read but not decompressed yet
        self._fed = False      # whether the current member has had input
        self._done = False

    def _more(self, n: int) -> bytes:
        while not self._done:
            data, self._tail = self._tail or self._raw.read(COMPRESSED_CHUNK), b""
            if not data:
                if self._fed:
                    raise CorruptCompression("the gzip stream ends early (the file is truncated)")
                self._done = True
                break
            if not self._fed:
                data = data.lstrip(b"\0")
                if not data:
                    continue
            try:
                piece = self._d.decompress(data, n)
            except zlib.error as exc:
                raise CorruptCompression(f"invalid gzip data ({exc})") from None
            if self._d.eof:  # a member ended: another may follow (zlib then leaves the rest in
                # unused_data; unconsumed_tail may hold a copy of it, not to be read twice)
                self._tail = self._d.unused_data
                self._d, self._fed = zlib.decompressobj(zlib.MAX_WBITS | 16), False
            else:
                self._tail, self._fed = self._d.unconsumed_tail, True
            if piece:
                return piece
        return b""


class _ZstdFrames:
    """Follows a zstd stream's frame and block headers as its bytes pass (nothing is
    decoded), to tell a stream that ends between frames from one cut short."""

    def __init__(self):
        self._state, self._need, self._buf, self._skip = "magic", 4, b"", 0
        self._checksum = False
        self.bad = False

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip and not self.bad

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and not self.bad:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            take = min(self._need - len(self._buf), n - i)
            self._buf += data[i : i + take]
            i += take
            if len(self._buf) == self._need:
                head, self._buf = self._buf, b""
                self._advance(head)

    def _advance(self, head: bytes) -> None:
        value = int.from_bytes(head, "little")
        if self._state == "magic":
            if value == 0xFD2FB528:
                self._state, self._need = "frame_header", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
                self._state, self._need = "skippable_size", 4
            else:
                self.bad = True
        elif self._state == "skippable_size":
            self._state, self._need, self._skip = "magic", 4, value
        elif self._state == "frame_header":
            single = (value >> 5) & 1
            self._checksum = bool((value >> 2) & 1)
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[value & 3] + ((1 if single else 0), 2, 4, 8)[value >> 6]
            self._state, self._need = "block", 3
        else:  # a block header: last flag, type, size
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                self.bad = True
                return
            self._skip = 1 if kind == 1 else size
            if value & 1:  # the frame's last block, then its checksum if it has one
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4


class _Tee:
    def __init__(self, raw, see):
        self._raw, self._see = raw, see

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._see(data)
        return data


class ZstdStream(_Decompressed):
    """A zstd file (any number of frames), streamed. zstandard's reader stops quietly at
    the end of its input, so the frame headers are followed alongside to see a cut."""

    def __init__(self, raw):
        import zstandard

        super().__init__()
        self._frames = _ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _Tee(raw, self._frames.feed), read_size=COMPRESSED_CHUNK, read_across_frames=True, closefd=False)
        self._zstd_error = zstandard.ZstdError

    def _more(self, n: int) -> bytes:
        try:
            piece = self._reader.read(n)
        except self._zstd_error as exc:
            raise CorruptCompression(f"invalid zstd data ({exc})") from None
        if not piece and not self._frames.complete:
            raise CorruptCompression("invalid zstd data" if self._frames.bad
                                     else "the zstd stream ends early (the file is truncated)")
        return piece


@contextlib.contextmanager
def open_stream(url: str, compression: str | None = None):
    """A file's bytes as a stream with read(n), decompressed when `compression` says so."""
    fs, path = filesystem(url)
    kwargs = {} if is_local(fs) else {
        "block_size": REMOTE_BLOCK, "cache_type": "background", "cache_options": {"maxblocks": 2}}
    try:
        f = fs.open(path, "rb", **kwargs)
    except Exception as exc:
        raise SourceUnavailable(f"cannot read {shown(url)}: {reason(exc)}") from None
    try:
        raw = _Guarded(f, shown(url))
        yield GzipStream(raw) if compression == "gzip" else ZstdStream(raw) if compression == "zstd" else raw
    finally:
        f.close()


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
        return COMPRESSION_SUFFIXES.get(PurePosixPath(self.path).suffix.lower())

    @property
    def is_json(self) -> bool:
        name = PurePosixPath(self.path)
        if self.compression:
            name = name.with_suffix("")  # app.jsonl.gz is JSON Lines
        return name.suffix.lower() in JSON_SUFFIXES

    def _open(self):
        return open_stream(self.path, self.compression)

    def _corrupt(self, bad: BadRecords, line_no: int, exc: CorruptCompression) -> None:
        """The lines before `line_no` were read; the rest of the file cannot be."""
        bad.add("corrupt_compression", f"{self.source}:{line_no}", str(exc))

    def read_counts(self, windows: Windows, bad: BadRecords, seen: TimeRange) -> Iterator[dict]:
        """Like `read`, but each chunk maps (window index, batch) -> {raw message: count}."""
        if not self.is_json:
            yield from self._read_text_counts(windows, bad, seen)
            return
        fast, tally = FastJsonBlocks(self.fmt), Tally()
        line_no = 1  # counted here: the fast path knows its blocks' line counts
        with self._open() as f:
            try:
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
            except CorruptCompression as exc:
                self._corrupt(bad, line_no, exc)
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
        line_no = 1
        with self._open() as f:
            try:
                for first_line_no, lines in read_line_blocks(f, self.block_size):
                    line_no = first_line_no + len(lines)
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
            except CorruptCompression as exc:
                self._corrupt(bad, line_no, exc)

    def read(self, windows: Windows, bad: BadRecords, seen: TimeRange) -> Iterator[dict[tuple[int, str], list[str]]]:
        key = None
        if not self.is_json:
            key = self._text_key(windows, bad, seen)
            if key is None:
                return
        line_no = 1
        with self._open() as f:
            try:
                for first_line_no, lines in read_line_blocks(f, self.block_size):
                    line_no = first_line_no + len(lines)
                    if key is None:
                        chunk = parse_json_lines(lines, self.fmt, windows, bad, self.source, first_line_no, seen)
                        if chunk:
                            yield chunk
                    else:
                        messages = decode_text_lines(lines, bad, self.source, first_line_no)
                        if messages:
                            yield {key: messages}
            except CorruptCompression as exc:
                self._corrupt(bad, line_no, exc)

    def _text_key(self, windows: Windows, bad: BadRecords, seen: TimeRange):
        """(window index, batch) of a plain-text file's lines (its mtime, its folder), or None."""
        mtime_ms = self.mtime_ms
        if mtime_ms is None:
            fs, path = filesystem(self.path)
            try:
                mtime_ms = _mtime_ms(fs.info(path))
            except Exception as exc:
                raise SourceUnavailable(f"cannot read {shown(self.path)}: {reason(exc)}") from None
            if mtime_ms is None:
                raise SourceUnavailable(f"cannot read {shown(self.path)}: no modification time")
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
    index = index or {}
    shards = []
    for file in list_files(root):
        entry = index.get(file.path)
        if entry and entry.get("id") == file.file_id and entry.get("lo") is not None:
            if not windows.overlaps(entry["lo"], entry["hi"]):
                continue
        rel_dir = PurePosixPath(file.rel).parent.as_posix()
        text_batch = fmt.default_batch if rel_dir in ("", ".") else rel_dir
        shards.append(FileShard(file.path, file.rel, fmt, text_batch, file.file_id, block_size, file.mtime_ms))
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
    root: str | Path, fmt: RecordFormat, start_ms: int, end_ms: int, bad: BadRecords, block_size: int = 1 << 20
) -> Iterator[dict[str, list[str]]]:
    """One window's records as chunks {batch: [message, ...]} (a convenience over shards)."""
    windows = Windows([(start_ms, end_ms)])
    for shard in plan_shards(root, fmt, windows, block_size=block_size):
        for chunk in shard.read(windows, bad, TimeRange()):
            yield {batch: msgs for (_, batch), msgs in chunk.items()}
