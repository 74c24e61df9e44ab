"""The errors the store and artifact storage raise, in a module of their own so that code which
only catches them (the `logloop` command's entry point) need not import the resources, and with
them Dagster."""


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class VersionConflict(StoreError):
    """Another registration took this version first; re-read and retry."""


class ArtifactStorageError(RuntimeError):
    """The storage itself failed (a missing bucket, denied credentials, an unreachable endpoint, an
    upload that still failed after retries): one line naming the storage, never a secret. A key
    that is simply not there is FileNotFoundError instead."""
