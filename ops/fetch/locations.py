"""Where log files are: a local path or any fsspec URL (`s3://archive/k8s/`, `file:///var/log/k8s`,
`gs://...`, `az://...`). Listing, sizes, modification times and opening all go through fsspec.
Credentials and endpoints come from the environment only (the providers' usual variables),
never from configuration, and never appear in errors: a location that cannot be listed or
read raises `SourceUnavailable`, one line naming the URL.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCS", "FSSPEC_")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL", "CONNECTION_STRING")


class SourceUnavailable(OSError):
    """A log location cannot be listed or read (no such bucket, unreachable endpoint,
    access denied, a lost connection): one line naming the URL, without credentials."""


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
    from ops.urls import url_without_password

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


def modification_ms(info: dict) -> int | None:
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


# a folder whose name says it should have been a log file
_LOG_NAMES = (".log", ".jsonl", ".ndjson", ".json", ".gz", ".zst", ".txt")


@dataclass(frozen=True)
class Skipped:
    rel: str       # relative to the root
    reason: str    # a bad-record reason (ops.fetch.records.REASONS)
    detail: str = ""


@dataclass
class Listing:
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def list_files(root: str | Path) -> list[FileEntry]:
    """The files under `root` (a path or URL), in os.walk order, hidden ones ('.name') left out."""
    return scan_files(root).files


def scan_files(root: str | Path) -> Listing:
    """The files under `root` (a path or URL), in os.walk order, hidden ones ('.name') left out, and
    what was passed over and why (`Skipped`, local folders only: object stores hold only files).

    In a local folder symbolic links are followed when their target lies within the root (the
    root's real path), so Kubernetes' /var/log/containers links into /var/log/pods are read with
    the root /var/log; a link leaving the root is refused. A file reached twice (by a link and by
    its own name) is listed once, under the name met first. Nothing is opened: types come from
    lstat/stat, so a FIFO can never block the listing."""
    fs, base = filesystem(root)
    local = is_local(fs)
    if local and not fs.isdir(base):
        raise FileNotFoundError(f"log folder {root} does not exist or is not a folder")
    if local:
        listing = _scan_local(base.rstrip("/") or "/")
    else:
        try:
            fs.invalidate_cache(base)  # a listing is always fresh
            found = fs.find(base, detail=True)
        except Exception as exc:
            raise SourceUnavailable(f"cannot list {shown(root)}: {reason(exc)}") from None
        base = base.rstrip("/")
        listing = Listing()
        for name, info in found.items():
            if info.get("type", "file") != "file" or name.endswith("/"):
                continue
            rel = name[len(base) + 1:] if name.startswith(base + "/") else PurePosixPath(name).name
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            listing.files.append(FileEntry(fs.unstrip_protocol(name), rel, _file_id(info), modification_ms(info)))
    listing.files.sort(key=lambda e: _walk_order(e.rel))
    return listing


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _kind(mode: int) -> str:
    return ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")


def _scan_local(base: str) -> Listing:
    """`scan_files` of a local folder: os.scandir with lstat, links resolved against the root."""
    root_real = os.path.realpath(base)
    listing = Listing()
    skip = listing.skipped.append
    files_seen: set[str] = set()
    folders_seen = {root_real}
    todo = [(base, "", root_real)]
    while todo:
        folder, rel_folder, folder_real = todo.pop()
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skip(Skipped(rel_folder or ".", "unreadable_file", reason(exc)))
            continue
        sub = []
        for item in items:
            if item.name.startswith("."):
                continue
            rel = f"{rel_folder}/{item.name}" if rel_folder else item.name
            try:
                st = item.stat(follow_symlinks=False)
                real, link = item.path, stat.S_ISLNK(st.st_mode)
                if link:
                    real = os.path.realpath(item.path)
                    if not _within(real, root_real):
                        skip(Skipped(rel, "link_outside_root", f"it points to {real}"))
                        continue
                    try:
                        st = os.stat(item.path)
                    except FileNotFoundError:
                        skip(Skipped(rel, "broken_link", f"it points to {real}"))
                        continue
            except OSError as exc:
                skip(Skipped(rel, "unreadable_file", reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(item.path) if link else os.path.join(folder_real, item.name)
                if link and _within(folder_real, real):  # a link to the folder it is in, or above
                    skip(Skipped(rel, "link_loop", f"it points to {real}"))
                    continue
                if link and real in folders_seen:
                    continue  # a folder read under its own name (its files are listed once anyway)
                folders_seen.add(real)
                if item.name.lower().endswith(_LOG_NAMES):
                    skip(Skipped(rel, "log_named_folder"))
                sub.append((item.path, rel, real))
            elif stat.S_ISREG(st.st_mode):
                real = real if link else os.path.join(folder_real, item.name)
                if real in files_seen:
                    continue
                files_seen.add(real)
                info = {"size": st.st_size, "mtime": st.st_mtime}
                listing.files.append(FileEntry(item.path, rel, _file_id(info), modification_ms(info)))
            else:
                skip(Skipped(rel, "not_regular_file", f"a {_kind(st.st_mode)}"))
        todo.extend(reversed(sub))
    return listing
