"""Identifiers that reach file paths, SQL or Dagster partition keys.

Batch names come from log fields, so they are user data: they may hold quotes,
semicolons or `../`. They are stored verbatim as values (never spliced into SQL or
paths); wherever a name must become an identifier, `batch_key` derives a safe one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_BATCH_NAME = 200
# Dagster rejects these inside partition keys; control characters are never legitimate.
_FORBIDDEN = ("...",)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLUG = re.compile(r"[^a-z0-9]+")


class InvalidName(ValueError):
    pass


def validate_batch_name(name: object) -> str:
    """Return `name` in Unicode NFC if it can be a batch (and a Dagster partition key), else raise.

    NFC and NFD spellings of "café" print the same, so they are one batch: callers keep the
    returned (normalised) form. Invisible and direction-changing characters are refused.
    """
    if not isinstance(name, str):
        raise InvalidName(f"batch name {name!r} is not a string")
    # Unicode's format characters (category Cf) change how a name looks without showing themselves:
    # bidirectional controls (a right-to-left override prints "cba" for "abc"), zero-width ones, the
    # soft hyphen, the BOM. Two names that print the same would be two batches, two models.
    hidden = next((c for c in name if unicodedata.category(c) == "Cf"), None)
    if hidden:
        raise InvalidName(f"batch name '{shown_name(name)}' contains the invisible or direction-changing character "
                          f"U+{ord(hidden):04X} ({unicodedata.name(hidden, 'unnamed')})")
    name = unicodedata.normalize("NFC", name)
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


def shown_name(text: str) -> str:
    """`text` safe to print: characters that do not show themselves (controls, bidirectional and
    zero-width format characters) written as \\uXXXX escapes, so a name stored before they were
    refused cannot reorder or hide what a terminal shows."""
    return "".join(c if c.isprintable() or c in " \n" else f"\\u{ord(c):04x}" for c in text)


def batch_key(name: str) -> str:
    """A path- and SQL-safe identifier for a batch: readable slug plus a hash of the real name.

    The hash makes distinct names (e.g. 'a/b' and 'a-b') map to distinct keys.
    """
    name = validate_batch_name(name)
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
        if part in ("", ".", "..") or not _SAFE_SEGMENT.fullmatch(part):
            raise InvalidName(f"storage key {key!r} has an unsafe segment {part!r}")
    return key


def partition_slug(partition_key: str) -> str:
    """Time partition keys ('2026-11-23-07:00') as a path segment."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", partition_key)
    return validate_key(slug)


# -- artifact file names ----------------------------------------------------------------------------

# The documented variables of an artifact name template (docs/guides/training-requests.md; Odahu's
# {{ .Name }}, {{ .Version }}, {{ .RandomUUID }}, {{ .Batch }}), with the longest value each can
# take: a model name (63), a version (a BIGINT, 19 digits), uuid4().hex (32), a batch_key (53).
ARTIFACT_TEMPLATE_VARS = {"name": 63, "version": 19, "uuid": 32, "batch": 53}
ARTIFACT_SUFFIX = ".zip"
MAX_ARTIFACT_NAME = 200  # a storage key segment (validate_key)
_TEMPLATE_LITERAL = re.compile(r"[A-Za-z0-9._=-]*")


def validate_artifact_template(template: object) -> str:
    """Return `template` if it renders a safe artifact file name, else raise InvalidName.

    A template is str.format text whose only fields are {name}, {version}, {uuid} and {batch}:
    no attribute or index access ({name.__class__}, {name[0]}), no positional fields ({0}, {}),
    no conversions or format specs ({version!r}, {uuid:>9999}). It must contain {uuid} (names
    never collide), name a single file ([A-Za-z0-9._=-] around the variables, starting with a
    letter, digit or variable) ending in .zip, and render at most 200 characters.
    The one check for specs (`logloop train validate`) and the registered_model run config.
    """
    import string

    if not isinstance(template, str):
        raise InvalidName(f"must be a string, got {type(template).__name__}")
    if not template:
        raise InvalidName("is empty")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidName(f"not a valid template: {exc}") from None
    allowed = ", ".join("{" + v + "}" for v in ARTIFACT_TEMPLATE_VARS)
    used, literal, longest = set(), "", 0
    for text, field, spec, conversion in parts:
        literal += text
        if field is None:
            continue
        written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field not in ARTIFACT_TEMPLATE_VARS:
            raise InvalidName(f"unknown template variable {written} (known: {allowed}; no attributes, indexes "
                              "or positional fields)")
        if conversion or spec:
            raise InvalidName(f"conversions (!r) and format specs are not allowed: {written}")
        used.add(field)
        longest += ARTIFACT_TEMPLATE_VARS[field]
    if "/" in literal or "\\" in literal or parts[0][0].startswith("."):
        raise InvalidName("must name a file, not a path (no '/', '\\' or leading '.')")
    bad = _TEMPLATE_LITERAL.sub("", literal)
    if bad:
        raise InvalidName(f"{bad[0]!r} is not allowed: only letters, digits, '.', '_', '=' and '-' "
                          "besides the variables")
    if parts[0][0] and not parts[0][0][0].isalnum():
        raise InvalidName("must start with a letter, a digit or a variable")
    if "uuid" not in used:
        raise InvalidName("must contain the uuid ({uuid}), so that artifact names never collide")
    if parts[-1][1] is not None or not parts[-1][0].endswith(ARTIFACT_SUFFIX):
        raise InvalidName(f"must end in {ARTIFACT_SUFFIX} (an artifact is a zip file)")
    if len(literal) + longest > MAX_ARTIFACT_NAME:
        raise InvalidName(f"can render names longer than {MAX_ARTIFACT_NAME} characters")
    return template


def render_artifact_name(template: str, *, name: str, version: int, uuid: str, batch: str) -> str:
    """The artifact file name `template` gives for these values: a single safe path segment."""
    validate_artifact_template(template)
    out = template.format(name=name, version=version, uuid=uuid, batch=batch)
    if not _SAFE_SEGMENT.fullmatch(out) or not out.endswith(ARTIFACT_SUFFIX):
        raise InvalidName(f"{out!r} is not a safe file name (values name={name!r}, version={version!r}, batch={batch!r})")
    return out
