"""Settings of the continuous-training loop: when to train, how long a task may take.

These are the fields of config/loop.yaml. orchestration/config.py reads them, with the
deployment's settings, into one object (`loop_settings()` returns it): the file's values over
the defaults below, and the environment's (LOGLOOP_<FIELD>) over both. Invalid settings raise at
load time, so a bad threshold shows up as a code-location load error in the UI rather than as
silently wrong training decisions.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ops.validate.defaults import DEFAULT_FLAG_BUDGET
from ops.windows import FIRST_KEPT
from orchestration.errors import LoopSettingsError  # noqa: F401  (importable from here too)


class RetentionPolicy(BaseModel):
    """What artifact storage keeps (`retention:` in config/loop.yaml)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Whether retention_sensor deletes anything.")
    keep_versions: int = Field(
        default=5, ge=1, le=100_000,
        description="Model versions kept per batch (the newest ones); the production version and the one a "
        "rollback goes back to are kept besides.")
    keep_summaries_days: Optional[float] = Field(
        default=90, gt=0, allow_inf_nan=False,
        description="Window summaries kept this many days after the window ended; older windows leave the "
        "store's sample counts too (they drop out of future trainings). null: keep every window.")
    delete_finished_runs: bool = Field(
        default=True, description="Delete run folders (candidates, samples no kept model needs) and checkpoints of finished runs.")
    finished_run_grace_hours: float = Field(
        default=24, ge=0, allow_inf_nan=False,
        description="A run's files stay this long after it finished (retries resume from the checkpoint, "
        "re-executions read the sample).")
    interval_s: int = Field(default=3600, ge=60, description="How often retention_sensor sweeps.")
    sweep_time_limit_s: float = Field(
        default=40, gt=0, le=3600, allow_inf_nan=False,
        description="retention_sensor stops deleting after this long (a sensor tick has 60 s); the rest goes next tick.")


class IngestSettings(BaseModel):
    """How `logloop serve-ingest` treats its clients (`ingest:` in config/loop.yaml)."""

    model_config = ConfigDict(extra="forbid")

    max_connections: int = Field(
        default=64, ge=1, le=10_000,
        description="Connections served at once; a request beyond them is answered 503 (retry later), never reset.")
    backlog: int = Field(default=2048, ge=16, le=65_535,
                         description="Connections the kernel queues before the server accepts them.")
    header_timeout_s: float = Field(
        default=10, gt=0, le=3600, allow_inf_nan=False,
        description="A connection that has not sent a whole request head within this is closed.")
    idle_timeout_s: float = Field(
        default=30, gt=0, le=3600, allow_inf_nan=False,
        description="A request whose body stops arriving for this long is answered 408; nothing of it is registered.")
    request_time_limit_s: float = Field(
        default=600, gt=0, le=24 * 3600, allow_inf_nan=False,
        description="The whole body must arrive within this (a client trickling bytes is answered 408).")
    keep_alive_s: float = Field(default=5, gt=0, le=3600, allow_inf_nan=False,
                                description="An idle keep-alive connection is closed after this.")
    max_body_bytes: int = Field(
        default=256 << 20, ge=1024,
        description="The largest body accepted (413 beyond it). A body is kept in a temporary file until it has "
        "arrived whole, then registered.")


class Deadlines(BaseModel):
    """Total time limits of outbound calls (`deadlines:` in config/loop.yaml): a call to an endpoint that
    accepts a connection and never answers, or trickles its answer, fails with one line after this long,
    however its per-read timeouts are set."""

    model_config = ConfigDict(extra="forbid")

    object_storage_s: float = Field(
        default=300, gt=0, le=24 * 3600, allow_inf_nan=False,
        description="One object-storage operation (read, write, list or delete of an artifact or log file).")
    webhook_s: float = Field(default=15, gt=0, le=600, allow_inf_nan=False,
                             description="One alert webhook post, connection to last byte.")
    tdengine_s: float = Field(default=60, gt=0, le=3600, allow_inf_nan=False,
                              description="One TDengine REST request.")
    opensearch_s: float = Field(default=120, gt=0, le=3600, allow_inf_nan=False,
                                description="One OpenSearch request, retries included.")


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_start_count: int = Field(default=5_000, gt=0, description="Samples a batch needs for its first (scratch) model.")
    min_update_count: int = Field(default=5_000, gt=0, description="New samples since the model's watermark for a fine-tune.")


class AnomalyJump(BaseModel):
    """When the `anomaly_rate_jump` check (orchestration/checks/anomaly_rate.py) fails for a batch's window:

    rate(W) > max(factor x median(rates of the previous windows), min_rate)

    where rate = anomalies / lines, the previous windows are the batch's last `baseline_windows`
    scored windows before W (looked for within 4 x baseline_windows window lengths), and only
    windows with at least `min_lines` lines count, as W or as baseline. With fewer than
    `min_baseline_windows` such previous windows, W is not judged.
    """

    model_config = ConfigDict(extra="forbid")

    factor: float = Field(default=3.0, ge=1, le=1000, allow_inf_nan=False,
                          description="How many times the baseline (median) rate a window's rate must exceed.")
    min_rate: float = Field(default=0.02, ge=0, le=1, allow_inf_nan=False,
                            description="A window's rate must also exceed this floor (a share of its lines).")
    baseline_windows: int = Field(default=24, ge=1, le=24 * 31, description="Previous windows whose median rate is the baseline.")
    min_baseline_windows: int = Field(default=6, ge=1, le=24 * 31, description="Fewest previous windows to judge a window at all.")
    min_lines: int = Field(default=100, ge=1, description="Windows with fewer scored lines are neither judged nor baseline.")

    @model_validator(mode="after")
    def _min_not_above_baseline(self):
        if self.min_baseline_windows > self.baseline_windows:
            raise ValueError(f"min_baseline_windows ({self.min_baseline_windows}) is more than baseline_windows "
                             f"({self.baseline_windows})")
        return self

    def describe(self) -> str:
        return (f"rate > max({self.factor:g} x median rate of the previous {self.baseline_windows} windows, "
                f"{self.min_rate:g}), with >= {self.min_baseline_windows} previous windows; windows of >= "
                f"{self.min_lines} lines")


class TemplateCounts(BaseModel):
    """When the `template_count_shift` check (orchestration/checks/template_counts.py) and `logloop anomalies
    --templates` flag a template (a masked form of the window summaries) of a batch's window W, against
    the batch's previous `history_windows` windows (mean count per window, 0 where absent):
    new (absent from all of them, >= min_count in W), jump (>= jump_factor x the mean, >= min_count),
    drop (the mean >= min_drop_baseline, and W has <= mean / drop_factor). W is judged with at least
    `min_history_windows` previous windows."""

    model_config = ConfigDict(extra="forbid")

    history_windows: int = Field(default=24, ge=1, le=24 * 31, description="Previous windows of the batch compared "
                                 "against (their summaries are read; this bounds the memory).")
    min_history_windows: int = Field(default=3, ge=1, le=24 * 31, description="Fewest previous windows to judge a window.")
    min_count: int = Field(default=20, ge=1, description="Events a new or jumping template needs in the window.")
    jump_factor: float = Field(default=10.0, gt=1, le=1e6, allow_inf_nan=False,
                               description="A template jumps at this many times its mean count per previous window.")
    drop_factor: float = Field(default=10.0, gt=1, le=1e6, allow_inf_nan=False,
                               description="A template drops to at most its mean count divided by this.")
    min_drop_baseline: float = Field(default=20.0, ge=1, allow_inf_nan=False,
                                     description="Only templates with at least this mean count can drop.")

    @model_validator(mode="after")
    def _min_not_above_history(self):
        if self.min_history_windows > self.history_windows:
            raise ValueError(f"min_history_windows ({self.min_history_windows}) is more than history_windows "
                             f"({self.history_windows})")
        return self

    def rule(self):
        from ops.validate.template_counts import TemplateRule

        return TemplateRule(**self.model_dump())


class MultilineEvents(BaseModel):
    """How the data stage joins the lines of one event (a Java exception and its stack, a Python
    traceback, a Go panic and its goroutine dump) before masking: the parsers of
    ops/mask/multiline_rules.yaml that are on, and the caps on one event. Models store what they
    were trained with, so `logloop score` and `logloop templates` join lines the same way."""

    model_config = ConfigDict(extra="forbid")

    parsers: list[str] = Field(default_factory=lambda: ["java", "python", "go"],
                               description="Parsers of ops/mask/multiline_rules.yaml that are on, in this order; "
                               "[] turns joining off (every line is its own event).")
    max_lines: int = Field(default=200, ge=1, le=100_000,
                           description="Lines one event keeps; later continuation lines stay in the event but "
                           "out of its text, counted as event_cut bad records.")
    max_bytes: int = Field(default=16_384, ge=64, le=16 << 20,
                           description="UTF-8 bytes one event keeps (16 KiB: what a pushed sample holds); "
                           "past it, as for max_lines.")

    @model_validator(mode="after")
    def _parsers_exist(self):
        self.rules()
        return self

    def rules(self) -> dict:
        """The rules as the data stage and the model artifact take them (ops.fetch.multiline)."""
        from ops.fetch.multiline import load_multiline

        return load_multiline(self.parsers, self.max_lines, self.max_bytes)


def cron_interval_s(cron: str) -> int:
    """The shortest gap between two ticks of `cron` over a sample of its ticks (for `reaper_cron`)."""
    import datetime as dt

    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp(), cron, "UTC")
    times = [next(ticks).timestamp() for _ in range(50)]
    return int(min(b - a for a, b in zip(times, times[1:])))


class VerdictWriteBack(BaseModel):
    """anomaly_scores writing each scored window's verdicts onto the OpenSearch documents
    (ops/fetch/opensearch_verdicts.py: anomaly_level, nulog_confidence, anomaly_reason,
    model_version, inference_model)."""

    model_config = ConfigDict(extra="forbid")

    batches: list[str] = Field(default_factory=list, description="Scored batches whose verdicts are written back "
                               "onto their documents; '*' = every scored batch; [] = none (the default). Needs the "
                               "OpenSearch log source.")
    bulk_docs: int = Field(default=1000, ge=1, le=50_000, description="Document updates per _bulk request.")
    deadline_s: float = Field(default=900, gt=0, le=86_400, allow_inf_nan=False,
                              description="Time allowed for one window's write-back, retries included.")


class LoopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: Thresholds = Field(default_factory=Thresholds)
    batch_overrides: dict[str, Thresholds] = Field(default_factory=dict, description="Per-batch thresholds.")
    max_finetunes_in_a_row: int = Field(default=5, ge=0, description="After this many fine-tunes, train from scratch.")
    max_oov_share: float = Field(default=0.05, ge=0, le=1, description="New data's OOV share above which a fine-tune becomes scratch.")
    replay_share: float = Field(default=0.2, ge=0, lt=1, description="Share of a fine-tune's sample drawn from the previous training data.")
    champion_tolerance: float = Field(default=0.02, ge=0, le=1, description="How much worse (top-k accuracy) a challenger may be.")
    flag_budget: float = Field(
        default=DEFAULT_FLAG_BUDGET, ge=0, le=1, allow_inf_nan=False,
        description="The share of validation lines the score alone may flag: the gate calibrates each model's score "
        "threshold to it, and the model keeps that threshold wherever it scores (a gate run config's `threshold` "
        "fixes one instead).")
    task_time_limit_s: int = Field(default=2 * 3600, gt=0, description="A task still working after this is dead (CML's limit_time).")
    sensor_interval_s: int = Field(default=60, ge=1, description="How often new_samples_sensor, the NATS and the alert "
                                   "sensors tick (seconds).")
    observe_interval_s: int = Field(default=300, ge=10, description="How often raw_logs_observer counts the source.")
    observe_windows: int = Field(default=2, ge=0, description="Closed windows raw_logs_observer counts each time.")
    catch_up_windows: int = Field(
        default=24, ge=0, le=24 * 31,
        description="Last closed windows new_samples_sensor checks for records not yet ingested (sources that "
        "count cheaply only); 0 = no catch-up.",
    )
    reaper_interval_s: int = Field(
        default=300, ge=5, le=24 * 3600,
        description="How often the dead_task_reaper sensor checks active tasks (it starts no run). The former "
        "`reaper_cron` is still read: its shortest gap between ticks becomes this interval.",
    )
    partition_start: Optional[str] = Field(
        default=None,
        description="The first time window (YYYY-MM-DD-HH:MM, UTC). "
        "Unset: derived from the data when the code location loads (orchestration/partitions.py).",
    )
    partition_lookback_days: float = Field(
        default=7, gt=0, le=3660, allow_inf_nan=False,
        description="Without an explicit start and with no data known (nothing ingested, no log file read), "
        "the windows begin this many days ago. With OpenSearch the start is never later than this either.",
    )
    partition_max_days: float = Field(
        default=400, gt=0, le=36600, allow_inf_nan=False,
        description="A start derived from the log files' times is never more than this many days back "
        "(ingested windows always count, however old).",
    )
    partition_start_min_records: int = Field(
        default=10, ge=1, le=FIRST_KEPT,
        description="A start derived from the log files' times needs this many records at or before it: it is the "
        "time of the N-th earliest record known, so a few records with a wrong clock (a device booted in 1970) "
        "cannot move the windows back; records before the start are counted as bad, `time_before_start`. "
        f"At most {FIRST_KEPT}, the earliest times kept per file.",
    )
    future_tolerance_s: int = Field(
        default=86_400, ge=0, le=366 * 86_400,
        description="How far ahead of the clock a record's time may be. A record dated later than now plus this, "
        "when partition_summaries reads it, is counted as bad (`time_in_future`), not left for a window that may "
        "never come; one within it is summarised when its window has closed.",
    )
    max_new_batches_per_window: int = Field(
        default=1_000, ge=1, le=1_000_000,
        description="New batches (not yet a partition of `batches`) one time window may add. Records of further "
        "new batches are summarised under the batch `_overflow_new_batches`, and partition_summaries warns, "
        "naming the batch fields: a field holding a value per record (a request id) would otherwise make a "
        "batch, a summary and a partition per record.")
    anomaly_jump: AnomalyJump = Field(default_factory=AnomalyJump,
                                      description="The anomaly_rate_jump check's rule on anomaly_scores.")
    multiline: MultilineEvents = Field(default_factory=MultilineEvents,
                                       description="Joining the lines of one event (stack traces) when logs are fetched.")
    template_counts: TemplateCounts = Field(default_factory=TemplateCounts,
                                            description="The template_count_shift check's rule on partition_summaries.")
    score_batches: list[str] = Field(default_factory=list, description="Batches the anomaly_scores asset scores; '*' = all with a model.")
    record_results_batches: list[str] = Field(
        default_factory=list,
        description="Scored batches whose forms anomaly_scores also records as inference results (one row per distinct "
        "masked form of a window, with its line count, score, verdict and model version); '*' = every scored batch.")
    verdict_write_back: VerdictWriteBack = Field(
        default_factory=VerdictWriteBack,
        description="Verdicts written back onto the OpenSearch documents, where Opni's views read them.")
    training_run_config: dict = Field(default_factory=dict, description="Run config merged into sensor-launched training runs.")
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy,
                                       description="What artifact storage keeps (orchestration/services/retention_plan.py).")
    ingest: IngestSettings = Field(default_factory=IngestSettings,
                                   description="Limits of `logloop serve-ingest` (connections, time, body size).")
    deadlines: Deadlines = Field(default_factory=Deadlines,
                                 description="Total time limits of outbound calls (object storage, webhooks, "
                                 "TDengine, OpenSearch).")

    @model_validator(mode="after")
    def _overrides_name_valid_batches(self):
        from ops.naming import InvalidName, validate_batch_name

        normalised = {}
        for name, thresholds in self.batch_overrides.items():
            try:
                normalised[validate_batch_name(name)] = thresholds
            except InvalidName as exc:
                raise ValueError(f"batch_overrides: {exc}") from exc
        self.batch_overrides = normalised  # keys in NFC, as batches are named
        return self

    @model_validator(mode="before")
    @classmethod
    def _reaper_cron_becomes_an_interval(cls, data):
        """`reaper_cron` (a schedule, before the reaper became a sensor) still loads: its shortest
        gap between ticks is the interval ('*/5 * * * *' -> 300 s, '* * * * *' -> 60 s)."""
        if not isinstance(data, dict) or "reaper_cron" not in data:
            return data
        from dagster._utils.schedules import is_valid_cron_string

        data = dict(data)
        cron = data.pop("reaper_cron")
        if "reaper_interval_s" in data:
            raise ValueError("reaper_cron and reaper_interval_s are both set: reaper_cron is replaced by "
                             "reaper_interval_s (seconds); remove reaper_cron")
        if not isinstance(cron, str) or not is_valid_cron_string(cron):
            raise ValueError(f"reaper_cron {cron!r} is not a valid cron string (better: reaper_interval_s, in seconds)")
        data["reaper_interval_s"] = max(5, min(24 * 3600, cron_interval_s(cron)))
        return data

    @model_validator(mode="after")
    def _partition_start_is_a_window(self):
        if self.partition_start is not None:
            import datetime as dt

            try:
                dt.datetime.strptime(self.partition_start, "%Y-%m-%d-%H:%M")
            except (TypeError, ValueError):
                raise ValueError(f"partition_start {self.partition_start!r} is not YYYY-MM-DD-HH:MM") from None
        return self

    def thresholds_for(self, batch: str) -> Thresholds:
        return self.batch_overrides.get(batch, self.thresholds)


def merge_run_config(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, nested dicts key by key (`extra` wins): how the loop's
    training_run_config meets a run's own config (sensor- and NATS-launched runs)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_run_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
