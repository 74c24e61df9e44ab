"""A file's bytes, decompressed as they stream (.gz, .zst) in bounded memory.

What decompressed cleanly before damage is kept; a truncated or corrupt file raises
`CorruptCompression` after it, so the reader counts one bad record and goes on.
"""

from __future__ import annotations

import contextlib
import zlib

from ops.fetch.locations import SourceUnavailable, filesystem, is_local, reason, shown

REMOTE_BLOCK = 4 << 20        # bytes per ranged GET of a remote file; the next is fetched in a thread
COMPRESSED_CHUNK = 1 << 18   # compressed bytes handed to a decompressor at a time


class CorruptCompression(Exception):
    """A compressed file ends before its end marker or holds data that does not decompress."""


class FileSkipped(SourceUnavailable):
    """A local file that cannot be read as a log file (not a regular file, permission denied,
    vanished): `reason` is its bad-record reason (ops.fetch.records.REASONS)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _open_local(path: str):
    """A local file opened for reading, refused unless it is a regular file. It is opened
    non-blocking, so a FIFO put in a file's place after the listing cannot hang the read, then
    checked with fstat (the file itself, not its name) before a byte is read."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (PermissionError, FileNotFoundError) as exc:
        raise FileSkipped(f"cannot read {path}: {reason(exc)}", "unreadable_file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileSkipped(f"{path} is not a regular file", "not_regular_file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
def open_stream(url: str, compression: str | None = None, regular_only: bool = False):
    """A file's bytes as a stream with read(n), decompressed when `compression` says so. With
    `regular_only` (a folder's log files), a local file that is not a regular file, cannot be
    opened for its permissions or has vanished raises FileSkipped, and nothing blocks."""
    fs, path = filesystem(url)
    kwargs = {} if is_local(fs) else {
        "block_size": REMOTE_BLOCK, "cache_type": "background", "cache_options": {"maxblocks": 2}}
    try:
        f = _open_local(path) if regular_only and is_local(fs) else fs.open(path, "rb", **kwargs)
    except FileSkipped:
        raise
    except Exception as exc:
        raise SourceUnavailable(f"cannot read {shown(url)}: {reason(exc)}") from None
    try:
        raw = _Guarded(f, shown(url))
        yield GzipStream(raw) if compression == "gzip" else ZstdStream(raw) if compression == "zstd" else raw
    finally:
        f.close()
