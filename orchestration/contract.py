"""The contract between assets: every storage key, every run tag, and the typed references
that one asset hands the next.

Nothing here imports Dagster or torch, so sensors, the CLI and retention read the same layout
as the assets that write it.

Storage keys (relative to artifact storage):

    summaries/<window>.parquet                   partition_summaries, one per time window
    runs/<batch>/<run>/sample.parquet            training_sample (train and validation split)
    runs/<batch>/<run>/labels.json               training_sample (feedback labels it used)
    runs/<batch>/<run>/candidate.zip             nulog_model (the trained candidate)
    runs/<batch>/<run>/validation.json           nulog_model_quality (the gate's verdict)
    checkpoints/<batch>/<training run>.pt        nulog_model (resume point, deleted on registration)
    models/<batch>/<artifact name>               registered_model (the versioned artifact)
    outbox/nats/, outbox/corrupt/                model events not yet published

<batch> is `ops.naming.batch_key(batch)`, <window> `ops.naming.partition_slug(partition key)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ops.naming import batch_key, partition_slug

# ---- run tags ------------------------------------------------------------------------------

TASK_TAG = "logloop/task_id"
TRAINING_ID_TAG = "logloop/training_id"  # the spec id of a `logloop train` or NATS request
BATCH_TAG = "logloop/batch"
MODE_TAG = "logloop/mode"
WORKER_TAG = "logloop/worker"  # host:pid:start of the process that runs the run's steps
NATS_SEQ_TAG = "logloop/nats_seq"
NATS_MSG_ID_TAG = "logloop/nats_msg_id"
REQUEST_KEY_TAG = "logloop/request_key"  # what a NATS request asks for (training_spec.request_key): identical ones coalesce
PARTITION_TAG = "dagster/partition"  # Dagster's own
CATCH_UP_TAG = "logloop/catch_up"  # a run the training trigger started to fill a missed window

# ---- storage keys --------------------------------------------------------------------------

SUMMARIES, RUNS, CHECKPOINTS, MODELS = "summaries", "runs", "checkpoints", "models"
OUTBOX, CORRUPT_OUTBOX = "outbox/nats", "outbox/corrupt"
SAMPLE_FILE = "sample.parquet"
LABELS_FILE = "labels.json"
CANDIDATE_FILE = "candidate.zip"
VALIDATION_FILE = "validation.json"


def summary_key(partition_key: str) -> str:
    """Where a time window's summaries live."""
    return f"{SUMMARIES}/{partition_slug(partition_key)}.parquet"


def run_folder(batch: str, run_id: str) -> str:
    """The folder of everything one training run writes for a batch."""
    return f"{RUNS}/{batch_key(batch)}/{run_id}"


def sample_key(batch: str, run_id: str) -> str:
    return f"{run_folder(batch, run_id)}/{SAMPLE_FILE}"


def labels_key(batch: str, run_id: str) -> str:
    return f"{run_folder(batch, run_id)}/{LABELS_FILE}"


def candidate_key(batch: str, run_id: str) -> str:
    return f"{run_folder(batch, run_id)}/{CANDIDATE_FILE}"


def validation_key(candidate: str) -> str:
    """The gate's verdict on a candidate: next to it, in its run folder."""
    return candidate.rsplit("/", 1)[0] + "/" + VALIDATION_FILE


def checkpoint_key(batch: str, run_id: str) -> str:
    """The resume point of the run that trained (or trains) a batch's candidate."""
    return f"{CHECKPOINTS}/{batch_key(batch)}/{run_id}.pt"


def model_key(batch: str, artifact_name: str) -> str:
    """A registered version's artifact."""
    return f"{MODELS}/{batch_key(batch)}/{artifact_name}"


# ---- typed references ----------------------------------------------------------------------
#
# What each asset hands the next, recorded in its materialization metadata (to_metadata) and read
# back by the next asset of the same run (from_metadata, through orchestration.upstream). The
# metadata keys are the ones the UI has always shown; readers tolerate keys older runs lacked.

FINETUNE, SCRATCH = "finetune", "scratch"


def _int(value) -> Optional[int]:
    return None if value is None or value == "" else int(value)


def _window_ms(metadata: dict, end: str) -> Optional[int]:
    """A window bound in epoch ms from metadata: the `window_<end>` timestamp (seconds) the UI shows, or
    the `window_<end>_ms` integer that older runs recorded beside it."""
    if metadata.get(f"window_{end}_ms") not in (None, ""):
        return int(metadata[f"window_{end}_ms"])
    seconds = metadata.get(f"window_{end}")
    return None if seconds is None or seconds == "" else round(float(seconds) * 1000)


@dataclass(frozen=True)
class SampleRef:
    """A training sample (training_sample -> nulog_model, the gate): where it is and what it is for."""

    batch: str
    run_id: str                             # the run that drew it
    key: str                                # runs/<batch>/<run>/sample.parquet
    labels_key: Optional[str] = None        # the feedback labels it used (older runs have none)
    task_id: Optional[str] = None
    parent_version: Optional[int] = None    # a fine-tune's parent model; None: from scratch
    parent_artifact: Optional[str] = None
    window_start_ms: Optional[int] = None   # the data it was drawn from, [start, end)
    window_end_ms: Optional[int] = None
    escalation: Optional[str] = None        # why the run trains from scratch instead of fine-tuning
    decision: Optional[str] = None          # the run's decision, in words (ops.train.decisions)

    @property
    def mode(self) -> str:
        """finetune when the sample was drawn for a parent model (new data plus replay), else scratch."""
        return FINETUNE if self.parent_version is not None else SCRATCH

    def to_metadata(self) -> dict:
        """The plain values; the asset adds the window as `window_start` / `window_end` timestamps,
        which from_metadata reads back (times appear once, as times)."""
        return {"sample_key": self.key, "labels_key": self.labels_key, "mode": self.mode, "task_id": self.task_id,
                "parent_version": self.parent_version, "parent_artifact": self.parent_artifact,
                **({"escalation": self.escalation} if self.escalation else {}),
                **({"decision": self.decision} if self.decision else {})}

    @classmethod
    def from_metadata(cls, batch: str, metadata: dict) -> "SampleRef":
        """`metadata`: training_sample's, as plain values with the run that made it (orchestration.upstream)."""
        return cls(batch=batch, run_id=metadata["run_id"], key=metadata["sample_key"],
                   labels_key=metadata.get("labels_key") or None, task_id=metadata.get("task_id"),
                   parent_version=_int(metadata.get("parent_version")),
                   parent_artifact=metadata.get("parent_artifact"),
                   window_start_ms=_window_ms(metadata, "start"), window_end_ms=_window_ms(metadata, "end"),
                   escalation=metadata.get("escalation") or None, decision=metadata.get("decision") or None)


@dataclass(frozen=True)
class CandidateRef:
    """A trained candidate (nulog_model -> the gate, registered_model)."""

    sample: SampleRef
    run_id: str                             # the run that trained it: registration is keyed by it
    key: str                                # runs/<batch>/<run>/candidate.zip
    checkpoint_key: Optional[str] = None    # deleted once the candidate is registered
    mode: str = SCRATCH                     # the sample's (older runs' nulog_model could escalate on its own)
    escalation: Optional[str] = None        # why the run trained from scratch instead of fine-tuning

    @property
    def batch(self) -> str:
        return self.sample.batch

    @property
    def validation_key(self) -> str:
        return validation_key(self.key)

    def to_metadata(self) -> dict:
        """The plain values (None for absent ones: no escalation, no parent); the asset adds the window
        as `window_start` / `window_end` timestamps, which from_metadata reads back."""
        s = self.sample
        return {"candidate_key": self.key, "checkpoint_key": self.checkpoint_key, "sample_key": s.key,
                "sample_run_id": s.run_id, "mode": self.mode, "escalation": self.escalation or None,
                "parent_version": s.parent_version, "task_id": s.task_id}

    @classmethod
    def from_metadata(cls, batch: str, metadata: dict) -> "CandidateRef":
        """`metadata`: nulog_model's, as plain values with the run that made it (orchestration.upstream)."""
        sample = SampleRef(batch=batch, run_id=metadata.get("sample_run_id") or metadata["run_id"],
                           key=metadata["sample_key"], task_id=metadata.get("task_id"),
                           parent_version=_int(metadata.get("parent_version")),  # the sample's, escalated or not
                           window_start_ms=_window_ms(metadata, "start"), window_end_ms=_window_ms(metadata, "end"))
        return cls(sample=sample, run_id=metadata["run_id"], key=metadata["candidate_key"],
                   checkpoint_key=metadata.get("checkpoint_key") or None, mode=metadata.get("mode", SCRATCH),
                   escalation=metadata.get("escalation") or None)


@dataclass(frozen=True)
class ModelRef:
    """What a model artifact's meta.json says about where it came from: a candidate's, and a
    registered version's (which adds version, window, training run and label).

    A fine-tune reads its parent's `sample_key` from here to replay the parent's training split.
    The keys are the artifact format's (ops.register.artifact): artifacts written before this
    class existed load, whatever keys they lack.
    """

    batch: str
    sample_key: Optional[str] = None
    mode: str = SCRATCH
    parent_version: Optional[int] = None    # lineage (orchestration.registry.lineage_parent)
    task_id: Optional[str] = None
    escalation: Optional[str] = None
    version: Optional[int] = None           # registered versions only, from here on
    train_run_id: Optional[str] = None
    window_start_ms: Optional[int] = None
    window_end_ms: Optional[int] = None
    version_label: Optional[str] = None

    def to_meta(self) -> dict:
        meta = {"batch": self.batch, "sample_key": self.sample_key, "mode": self.mode, "escalation": self.escalation,
                "parent_version": self.parent_version, "task_id": self.task_id}
        if self.version is not None:
            meta.update(version=self.version, window_start_ms=self.window_start_ms, window_end_ms=self.window_end_ms,
                        train_run_id=self.train_run_id, version_label=self.version_label)
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> "ModelRef":
        def text(key):
            value = meta.get(key)
            return value if isinstance(value, str) else None

        return cls(batch=str(meta.get("batch", "")), sample_key=text("sample_key"), mode=text("mode") or SCRATCH,
                   parent_version=_int(meta.get("parent_version")), task_id=text("task_id"),
                   escalation=text("escalation"), version=_int(meta.get("version")),
                   train_run_id=text("train_run_id"), window_start_ms=_int(meta.get("window_start_ms")),
                   window_end_ms=_int(meta.get("window_end_ms")), version_label=text("version_label"))

    @classmethod
    def of_candidate(cls, candidate: CandidateRef) -> "ModelRef":
        """A candidate's meta.json: the registry adds version, window and lineage to it."""
        return cls(batch=candidate.batch, sample_key=candidate.sample.key, mode=candidate.mode,
                   parent_version=candidate.sample.parent_version, task_id=candidate.sample.task_id,
                   escalation=candidate.escalation)
