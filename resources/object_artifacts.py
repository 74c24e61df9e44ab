"""Artifact storage in an object store (S3, GCS, Azure Blob) through fsspec.

    ObjectArtifactStorageCore(url="s3://bucket/prefix")     # or gs://bucket/prefix, az://container/prefix

(the plain class; resources.artifacts.ObjectArtifactStorage is the same as a Dagster resource).

Chosen by LOGLOOP_ARTIFACTS_URL (orchestration.resources). s3:// needs s3fs (a dependency);
gs:// needs gcsfs and az:// / abfs:// need adlfs (the extras `logloop[gcs]`, `logloop[azure]`).

Credentials come from the provider's usual environment only, never from the URL or run config:
- S3: botocore's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE,
  web identity, instance roles). A custom endpoint (MinIO, on-premise S3) is AWS_ENDPOINT_URL
  (or AWS_ENDPOINT_URL_S3), which botocore itself honours.
- GCS: GOOGLE_APPLICATION_CREDENTIALS or the metadata server (STORAGE_EMULATOR_HOST for an emulator).
- Azure: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY,
  AZURE_STORAGE_SAS_TOKEN or a service principal (AZURE_STORAGE_CLIENT_ID/_SECRET/TENANT_ID).
A URL with a password or a query string (a SAS token) is refused, so repr(), uri() and error
messages can never show one; messages are also scrubbed of those variables' values.

The promises of the local folder hold:
- `writing(key)` yields a local temp file; on success it is uploaded as one object: a single PUT
  up to 2 x `multipart_chunk_bytes` (100 MiB by default), else a multipart upload that becomes
  visible only when completed and is aborted on failure. Either way a reader sees the old object
  or the new one, never half of one, and a failed write (an exception in the block, a failed
  upload, a process killed mid-upload) leaves no object. An upload killed by SIGKILL cannot abort
  its multipart parts: they stay invisible and billable until the bucket's lifecycle rule
  (AbortIncompleteMultipartUpload) removes them.
- `reading(key)` downloads into a bounded local cache (an LRU folder of at most `cache_max_bytes`,
  entries named by the key and the object's ETag and size, so a changed object is fetched again)
  and yields a private hard link, so eviction by another reader never pulls a file from under it.
  Nothing assumes a shared disk.

Faults: transient 5xx, throttling, connection errors and timeouts are retried with exponential
backoff and jitter by botocore's "standard" retry mode (`max_attempts` attempts in all, connect and
read timeouts `connect_timeout_s` / `read_timeout_s`); s3fs retries truncated reads on top. gcsfs
and adlfs retry with their own backoff. What still fails raises ArtifactStorageError: one line naming
the URL and the reason (a missing bucket, denied credentials, an unreachable endpoint), no secret.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr

from ops.naming import InvalidName, validate_key
from resources.artifact_core import ArtifactStorageCore, ArtifactStorageError, check_size
from ops.urls import url_without_password

# URL scheme -> (fsspec protocol, the package that implements it)
PROTOCOLS = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
    "az": ("az", "adlfs"), "abfs": ("abfs", "adlfs"), "abfss": ("abfs", "adlfs"),
}
EXTRAS = {"gcsfs": "logloop[gcs]", "adlfs": "logloop[azure]"}
# values that must never reach a message, whatever a library puts in its errors
SECRET_VARS = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET",
)
CREDENTIAL_HINT = {
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY",
    "abfs": "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY",
}
_TMP = ".tmp-"


def parse_artifacts_url(url: str) -> tuple[str, str]:
    """(fsspec protocol, package) of an object-store URL, or ValueError saying what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"artifact URL {url!r} is not an object-store URL like s3://bucket/prefix")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("artifact URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in PROTOCOLS:
        raise ValueError(f"artifact URL scheme {scheme!r}:// is not supported: use s3://, gs:// or az:// (abfs://)")
    if parts.password is not None or (parts.username is not None and scheme not in ("abfs", "abfss")):
        raise ValueError(f"artifact URL {url_without_password(url)!r} carries credentials: put them in the "
                         f"provider's environment variables ({CREDENTIAL_HINT[PROTOCOLS[scheme][0]]})")
    if parts.query or parts.fragment:
        raise ValueError(f"artifact URL {scheme}://{parts.netloc}{parts.path} has a query or fragment "
                         "(a SAS token?): credentials go in environment variables, not in the URL")
    if not parts.hostname:
        raise ValueError(f"artifact URL {url!r} names no bucket")
    prefix = parts.path.strip("/")
    if prefix:
        validate_key(prefix)
    return PROTOCOLS[scheme]


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _redact(text: str) -> str:
    for var in SECRET_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _denied(exc: BaseException) -> bool:
    """Access denied: s3fs and gcsfs raise PermissionError; azure-storage raises ClientAuthenticationError
    for a bad signature (AuthenticationFailed) but a bare HttpResponseError with status 403 for other
    refusals (AuthorizationFailure, also what Azurite answers to a wrong key)."""
    return (isinstance(exc, PermissionError) or "ClientAuthenticationError" in _names(exc)
            or getattr(exc, "status_code", None) in (401, 403))


class ObjectArtifactStorageCore(ArtifactStorageCore):
    """Artifacts under an object-store URL (see the module docstring for the promises and faults)."""

    url: str = Field(description="s3://bucket/prefix, gs://bucket/prefix or az://container/prefix. "
                                 "Credentials come from the provider's environment variables, never from here.")
    cache_dir: Optional[str] = Field(default=None, description="Local read cache; default: a folder under the temp dir.")
    cache_max_bytes: int = Field(default=2 * 1024**3, ge=0, description="Size cap of the local read cache (LRU).")
    max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per S3 request (botocore standard retry mode).")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    read_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    multipart_chunk_bytes: int = Field(default=50 * 1024**2, ge=5 * 1024**2,
                                       description="S3 part size; objects below twice this are one PUT.")
    deadline_s: float = Field(default=300.0, gt=0, le=24 * 3600,
                              description="Total time of one operation (read, write, list, delete), retries "
                                          "included; then it is cancelled (deadlines.object_storage_s).")

    _state: dict = PrivateAttr(default_factory=dict)

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def describe(self) -> str:
        return self.base_url

    def _protocol(self) -> str:
        return parse_artifacts_url(self.url)[0]

    def _fs(self):
        """The fsspec filesystem, made once per process (an async client must not cross a fork)."""
        pid = os.getpid()
        if self._state.get("pid") != pid:
            protocol, package = parse_artifacts_url(self.url)
            try:
                import fsspec

                __import__(package)
            except ImportError:
                hint = f" (pip install '{EXTRAS[package]}')" if package in EXTRAS else ""
                raise ArtifactStorageError(f"artifact storage {self.base_url}: needs the package {package}{hint}") from None
            options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
            if protocol == "s3":
                options["config_kwargs"] = {
                    "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
                    "connect_timeout": self.connect_timeout_s, "read_timeout": self.read_timeout_s,
                }
            # url_to_fs also takes what the URL itself says (abfs://container@ACCOUNT.dfs.core.windows.net)
            fs, root = fsspec.core.url_to_fs(self.base_url, **options)
            self._state.clear()
            self._state.update(pid=pid, fs=fs, root=root.rstrip("/"), ready=False)
        return self._state["fs"]

    def _root(self) -> str:
        self._fs()
        return self._state["root"]

    def _path(self, key: str) -> str:
        return f"{self._root()}/{validate_key(key)}"

    def _endpoint(self) -> str:
        if self._protocol() == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            return f" at {url_without_password(endpoint)}" if endpoint else ""
        return ""

    def _error(self, what: str, exc: BaseException) -> ArtifactStorageError:
        names = _names(exc)
        detail = _one_line(exc) or type(exc).__name__
        if "NoCredentialsError" in names or "PartialCredentialsError" in names:
            reason = f"no credentials found: set {CREDENTIAL_HINT[self._protocol()]}"
        elif _denied(exc):
            reason = f"access denied ({detail}); check the credentials: {CREDENTIAL_HINT[self._protocol()]}"
        elif "FSTimeoutError" in names:
            reason = (f"no complete answer from the object store{self._endpoint()} within {self.deadline_s:g} s "
                      "(deadlines.object_storage_s)")
        elif names & {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                      "ClientConnectorError", "ServerDisconnectedError", "FSTimeoutError", "ServiceRequestError",
                      "TimeoutError", "ConnectionError"}:
            reason = f"cannot reach the object store{self._endpoint()} ({detail})"
        elif getattr(exc, "errno", None) == errno.EBUSY or re.search(r"Service ?Unavailable|SlowDown|InternalError", detail):
            reason = f"the object store is unavailable ({detail}), still after {self.max_attempts} attempts"
        else:
            reason = f"{type(exc).__name__}: {detail}"
        return ArtifactStorageError(_one_line(_redact(f"artifact storage {self.base_url}: {what} failed: {reason}"), 600))

    @contextlib.contextmanager
    def _faults(self, what: str):
        """Storage faults become one-line ArtifactStorageErrors; a missing key stays FileNotFoundError."""
        try:
            yield
        except (ArtifactStorageError, InvalidName, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - every library's errors, translated once here
            raise self._error(what, exc) from None

    def _ready(self) -> None:
        """Check once per process that the bucket is there, so that a missing bucket is named as such
        (fsspec reports it as FileNotFoundError, like a missing key). Access denied to the bucket
        itself is left to the operations: a policy may allow objects but not the bucket."""
        fs = self._fs()
        if self._state["ready"]:
            return
        bucket = self._state["root"].split("/", 1)[0]
        noun = "container" if self._protocol() in ("az", "abfs") else "bucket"  # Azure's word for it
        try:
            fs.info(bucket, timeout=self.deadline_s)
        except FileNotFoundError:
            raise ArtifactStorageError(
                f"artifact storage {self.base_url}: {noun} {bucket!r} does not exist{self._endpoint()}") from None
        except Exception as exc:  # noqa: BLE001
            if not _denied(exc):
                raise self._error(f"checking the {noun}", exc) from None
        self._state["ready"] = True

    def _info(self, key: str) -> Optional[dict]:
        """The object's info, or None when there is none (file or folder)."""
        path = self._path(key)
        with self._faults(f"looking up {key!r}"):
            self._ready()
            try:
                return self._fs().info(path, timeout=self.deadline_s)
            except FileNotFoundError:
                return None

    # -- the interface --------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self._info(key) is not None

    def uri(self, key: str) -> str:
        return f"{self.base_url}/{validate_key(key)}"

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[str]:
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(prefix=_TMP, suffix=Path(key).suffix)
        os.close(fd)
        try:
            yield tmp
            self._upload(tmp, key, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _upload(self, local: str, key: str, path: str) -> None:
        with self._faults(f"writing {key!r}"):
            self._ready()
            fs = self._fs()
            extra = {"chunksize": self.multipart_chunk_bytes} if self._protocol() == "s3" else {}
            try:
                fs.put_file(local, path, **extra, timeout=self.deadline_s)
            except FileNotFoundError as exc:  # the bucket went away since _ready
                raise self._error(f"writing {key!r}", exc) from None

    @contextlib.contextmanager
    def reading(self, key: str, max_bytes: int | None = None) -> Iterator[str]:
        validate_key(key)
        info = self._info(key)
        if info is None or info.get("type") == "directory":
            raise FileNotFoundError(f"artifact {key!r} not found under {self.base_url}")
        check_size(f"artifact {self.uri(key)}", int(info.get("size") or 0), max_bytes)
        name = Path(key).name
        private = tempfile.mkdtemp(prefix=_TMP + "read-", dir=self._cache_root())
        try:
            local = os.path.join(private, name)
            self._fetch(key, info, local)
            yield local
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def delete(self, key: str) -> None:
        info = self._info(key)
        if info is None:
            return
        with self._faults(f"deleting {key!r}"):
            fs = self._fs()
            try:
                if info.get("type") == "directory":
                    fs.rm(self._path(key), recursive=True, timeout=self.deadline_s)
                else:
                    fs.rm_file(self._path(key), timeout=self.deadline_s)
            except FileNotFoundError:
                pass

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        root = self._root() + "/"
        with self._faults(f"listing {prefix!r}"):
            self._ready()
            try:
                found = self._fs().find(folder, timeout=self.deadline_s)
            except FileNotFoundError:
                return []
        keys = []
        for p in found:
            p = p.rstrip("/")
            if not p.startswith(root):
                continue
            rel = p[len(root):]
            if rel.startswith(validate_key(prefix) + "/") and not any(s.startswith(_TMP) for s in rel.split("/")):
                keys.append(rel)
        return sorted(keys)

    # -- the read cache -------------------------------------------------------------------------

    def _cache_root(self) -> str:
        base = self.cache_dir or os.path.join(tempfile.gettempdir(), "logloop-artifact-cache")
        root = os.path.join(base, hashlib.sha256(self.base_url.encode()).hexdigest()[:16])
        os.makedirs(os.path.join(root, "objects"), mode=0o700, exist_ok=True)
        return root

    @staticmethod
    def _version(info: dict) -> str:
        for field in ("ETag", "etag", "generation", "md5Hash", "LastModified", "last_modified", "mtime"):
            if info.get(field):
                return str(info[field])
        return ""

    def _fetch(self, key: str, info: dict, local: str) -> None:
        """Put the object at `local` (a private path): hard-linked from the cache, downloaded into it
        first when needed. An object larger than the whole cache is downloaded straight to `local`."""
        objects = os.path.join(self._cache_root(), "objects")
        for _ in range(5):
            size = int(info.get("size") or 0)
            if size > self.cache_max_bytes:
                changed = self._download(key, info, local)
                if changed is None:
                    return
                info = changed
                continue
            entry_id = hashlib.sha256(f"{key}\0{self._version(info)}\0{size}".encode()).hexdigest()[:32]
            entry = os.path.join(objects, entry_id + Path(key).suffix)
            if not os.path.exists(entry):
                fd, tmp = tempfile.mkstemp(prefix=_TMP, dir=objects)
                os.close(fd)
                try:
                    changed = self._download(key, info, tmp)
                    if changed is not None:  # replaced while downloading: name it by its new version
                        info = changed
                        continue
                    os.replace(tmp, entry)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                self._evict(keep=entry)
            with contextlib.suppress(OSError):
                os.utime(entry)  # most recently used
            try:
                os.link(entry, local)
                return
            except FileNotFoundError:  # evicted just now by another reader: fetch again
                continue
            except OSError:  # no hard links here: copy
                shutil.copyfile(entry, local)
                return
        raise self._error(f"reading {key!r}", OSError("the object kept changing while it was downloaded"))

    def _download(self, key: str, info: dict, local: str) -> Optional[dict]:
        """Download the object to `local`: None when what arrived is the version `info` describes,
        else the object's current info (it was replaced meanwhile; the caller fetches again). A short
        download is an error."""
        path = self._path(key)
        with self._faults(f"reading {key!r}"):
            fs = self._fs()
            fs.get_file(path, local, timeout=self.deadline_s)
            now = fs.info(path, timeout=self.deadline_s)
        if self._version(now) != self._version(info) or int(now.get("size") or 0) != int(info.get("size") or 0):
            return now
        if os.path.getsize(local) != int(info.get("size") or 0):
            raise self._error(f"reading {key!r}", OSError(
                f"short download: {os.path.getsize(local)} of {info.get('size')} bytes"))
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        if re.fullmatch(r"[0-9a-f]{32}", etag) and _md5(local) != etag:
            # replaced and replaced back while downloading (a, b, a: the ETag before and after is a's,
            # the bytes are b's); a single-part ETag is the content's MD5, so this is caught: fetch again
            return now
        return None

    def _evict(self, keep: str) -> None:
        """Remove least recently used entries until the cache fits its cap (never `keep`)."""
        objects = os.path.join(self._cache_root(), "objects")
        entries = []
        for e in os.scandir(objects):
            if e.name.startswith(_TMP) or not e.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = e.stat(follow_symlinks=False)
                entries.append((st.st_mtime, st.st_size, e.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.cache_max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
