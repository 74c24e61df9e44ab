"""Artifact storage: where partition summaries, samples, checkpoints and models live.

The storages' plain classes, without Dagster: what the `logloop` command uses. The code
location's resources (resources/artifacts.py) are the same classes as Dagster resources."""

from __future__ import annotations

import contextlib
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, ConfigDict

from ops.files import create_temp_file
from ops.naming import validate_key
from resources.errors import ArtifactStorageError  # noqa: F401  (raised by every storage)


def check_size(what: str, size: int, max_bytes: int | None) -> None:
    """Refuse an object larger than `max_bytes` (None: no limit) before it is read."""
    if max_bytes is not None and size > max_bytes:
        raise ArtifactStorageError(f"{what} is too large ({size:,} bytes, at most {max_bytes:,})")


class ArtifactStorageCore(BaseModel, ABC):
    """Keys are relative, validated paths like 'summaries/2026-11-23-07-00.parquet'.

    Implementations: LocalArtifactStorageCore (a folder) and resources.object_artifacts.
    ObjectArtifactStorageCore (s3://, gs://, az://). Both keep the same promises: a reader sees the
    old object or the new one, never half of one; a failed write leaves nothing behind;
    `reading` a missing key raises FileNotFoundError; faults of the storage itself raise
    ArtifactStorageError. Frozen, as Dagster's resources are.
    """

    model_config = ConfigDict(frozen=True)

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[str]:
        """Yield a local temp path to write; it becomes `key` atomically on success."""

    @abstractmethod
    @contextlib.contextmanager
    def reading(self, key: str, max_bytes: int | None = None) -> Iterator[str]:
        """Yield a local path holding the object at `key`. An object larger than `max_bytes` raises
        ArtifactStorageError before any of it is read (or downloaded)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """The keys of the finished objects under the folder `prefix`, sorted (no temp files)."""


class LocalArtifactStorageCore(ArtifactStorageCore):
    """A folder on local disk (the embedded default)."""

    root: str

    def _path(self, key: str) -> Path:
        return Path(self.root) / validate_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def uri(self, key: str) -> str:
        return str(self._path(key).resolve())

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[str]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp_file(str(target.parent), prefix=".tmp-", suffix=target.suffix)
        os.close(fd)
        try:
            yield tmp
            os.replace(tmp, target)  # atomic on POSIX: readers see old or new, never half
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @contextlib.contextmanager
    def reading(self, key: str, max_bytes: int | None = None) -> Iterator[str]:
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(f"artifact {key!r} not found under {self.root}")
        if max_bytes is not None:
            check_size(f"artifact {key!r} under {self.root}", path.stat().st_size, max_bytes)
        yield str(path)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def list(self, prefix: str) -> list[str]:
        root, folder = Path(self.root), self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in folder.rglob("*")
                      if p.is_file() and not p.name.startswith(".tmp-"))
