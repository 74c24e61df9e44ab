"""Artifact storage as the code location's Dagster resources: the plain classes of
resources/artifact_core.py and resources/object_artifacts.py, each made a ConfigurableResource."""

from __future__ import annotations

from dagster import ConfigurableResource

from resources.artifact_core import ArtifactStorageCore, LocalArtifactStorageCore, check_size  # noqa: F401
from resources.errors import ArtifactStorageError  # noqa: F401  (raised by every storage)
from resources.object_artifacts import ObjectArtifactStorageCore


class ArtifactStorage(ConfigurableResource, ArtifactStorageCore):
    """Where artifacts live (see ArtifactStorageCore for the promises every storage keeps)."""


class LocalArtifactStorage(ArtifactStorage, LocalArtifactStorageCore):
    """A folder on local disk (the embedded default)."""


class ObjectArtifactStorage(ArtifactStorage, ObjectArtifactStorageCore):
    """Artifacts under an object-store URL (resources/object_artifacts.py)."""
