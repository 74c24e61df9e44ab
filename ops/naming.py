"""Identifiers that reach file paths, SQL or Dagster partition keys.

Batch names come from log fields, so they are user data: they may hold quotes,
semicolons or `../`. They are stored verbatim as values (never spliced into SQL or
paths); wherever a name must become an identifier, `batch_key` derives a safe one.
"""

from __future__ import annotations

import hashlib
import re

MAX_BATCH_NAME = 200
# Dagster rejects these inside partition keys; control characters are never legitimate.
_FORBIDDEN = ("...",)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLUG = re.compile(r"[^a-z0-9]+")


class InvalidName(ValueError):
    pass


def validate_batch_name(name: object) -> str:
    """Return `name` if it can be a batch (and a Dagster partition key), else raise."""
    if not isinstance(name, str):
        raise InvalidName(f"batch name {name!r} is not a string")
    if not name or not name.strip():
        raise InvalidName("batch name is empty")
    if len(name) > MAX_BATCH_NAME:
        raise InvalidName(f"batch name {name[:40]!r}... is longer than {MAX_BATCH_NAME} characters")
    if _CONTROL.search(name):
        raise InvalidName(f"batch name {name!r} contains control characters")
    for bad in _FORBIDDEN:
        if bad in name:
            raise InvalidName(f"batch name {name!r} contains {bad!r}, which Dagster partition keys forbid")
    return name


def batch_key(name: str) -> str:
    """A path- and SQL-safe identifier for a batch: readable slug plus a hash of the real name.

    The hash makes distinct names (e.g. 'a/b' and 'a-b') map to distinct keys.
    """
    validate_batch_name(name)
    slug = _SLUG.sub("-", name.lower()).strip("-")[:40] or "batch"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return f"{slug}-{digest}"


_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")


def validate_key(key: str) -> str:
    """Validate a relative storage key like 'summaries/2026-01-01-00-00/part.parquet'."""
    if not isinstance(key, str) or not key:
        raise InvalidName(f"storage key {key!r} is empty or not a string")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _SAFE_SEGMENT.match(part):
            raise InvalidName(f"storage key {key!r} has an unsafe segment {part!r}")
    return key


def partition_slug(partition_key: str) -> str:
    """Time partition keys ('2026-11-23-07:00') as a path segment."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", partition_key)
    return validate_key(slug)
