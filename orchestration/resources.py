"""Resources chosen by environment: embedded defaults unless a server is configured."""

from __future__ import annotations

import os

from orchestration import settings
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource
from resources.store import SQLiteStore

DEFAULT_BATCH_FIELDS = "cluster_id,kubernetes.namespace_name,deployment"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_resources() -> dict:
    batch_fields = _csv(os.environ.get("LOGLOOP_BATCH_FIELDS", DEFAULT_BATCH_FIELDS))
    return {
        "log_source": LocalLogSource(
            path=str(settings.logs_dir()),
            time_field=os.environ.get("LOGLOOP_TIME_FIELD", "time"),
            message_field=os.environ.get("LOGLOOP_MESSAGE_FIELD", "log"),
            batch_fields=batch_fields,
            index_path=str(settings.data_home() / "source-index.json"),
        ),
        "store": SQLiteStore(path=str(settings.store_path())),
        "artifacts": LocalArtifactStorage(root=str(settings.artifacts_dir())),
    }
