"""Every decision about a training run, made here and nowhere else: whether a batch trains, from
scratch or as a fine-tune, from which parent, where its new data starts, and when a fine-tune
escalates to scratch. Pure functions of a batch's status: no Dagster, no store, no I/O.

Who asks, and when:
- the new-sample sensor (orchestration/sensors/new_samples.py), for every batch on every tick
  (`decide`): CML's rules, with its queue names the right way round. A batch without a model and
  at least `min_start_count` samples gets a scratch run; a batch with a model and at least
  `min_update_count` samples newer than its latest model's watermark gets a fine-tune, which
  escalates to scratch after `max_finetunes_in_a_row` fine-tunes. A batch with an active task
  or a training run in flight waits. The decision travels to the run in its run config.
- a request (`logloop train`, an Opni request over NATS, a run launched from the launchpad)
  asks for a mode, scratch, finetune or auto, and maybe its own data window; the run's first
  asset, training_sample, decides it with `decide_run` against the batch's status when the run
  starts (a request may wait in the queue while a model registers).
- the vocabulary rule (`escalate_on_vocabulary`): a fine-tune whose new data holds more tokens
  its parent does not know than `max_oov_share` trains from scratch instead. Only the run reads
  the new data, so training_sample measures the share and asks this rule, before it draws the
  sample, so an escalated run trains on a scratch run's data.

A fine-tune starts from the batch's PRODUCTION model (the pinned version, else the latest), and
its new data starts at that model's watermark. Whether there is enough new data is counted from
the LATEST version's watermark: data no registered model has seen (store_records.BatchStatus).
The two differ for a pinned batch: v1 pinned, v3 registered since; the sensor waits for data
after v3's watermark, and the fine-tune of v1 then learns from everything after v1's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

SCRATCH, FINETUNE, WAIT = "scratch", "finetune", "wait"
REQUEST_MODES = (SCRATCH, FINETUNE, "auto")

# Why a batch got its decision, in a word or three: the tick's summary counts batches by these.
BUSY = "busy"
FIRST_MODEL = "no model, enough samples"
TOO_FEW = "no model, too few samples"
NEW_DATA = "enough new samples"
TOO_FEW_NEW = "too few new samples"
IN_A_ROW = "fine-tunes in a row"
REQUESTED = "requested"


@dataclass(frozen=True)
class Decision:
    batch: str
    action: str                             # scratch | finetune | wait
    reason: str                             # for people: the tick's log, the run's metadata
    rule: str = ""                          # the reason's kind (BUSY, NEW_DATA, ...): the tick's summary counts these
    watermark_ms: Optional[int] = None      # the latest model's watermark, from which new data was counted (run key)
    parent_version: Optional[int] = None    # a fine-tune's parent: the production version
    window_start_ms: Optional[int] = None   # where the run's data starts (the parent's watermark); None: all data
    escalation: Optional[str] = None        # why a fine-tune became a scratch run

    @property
    def launches(self) -> bool:
        return self.action != WAIT


def _finetune(s, reason: str, rule: str) -> Decision:
    return Decision(s.batch, FINETUNE, reason, rule, watermark_ms=s.watermark_ms, parent_version=s.production_version,
                    window_start_ms=s.production_watermark_ms)


def _production(s) -> str:
    return f"v{s.production_version}" + (" (pinned)" if getattr(s, "pinned", False) else "")


def decide_run(s, thresholds=None, max_finetunes_in_a_row: int = 0, request: Optional[str] = None,
               in_flight_run: Optional[str] = None) -> Decision:
    """The run for batch status `s` (store_records.BatchStatus, or anything with its fields).

    request=None: the loop's own trigger, where `thresholds` (min_start_count, min_update_count)
    decide whether the batch trains at all. request = scratch | finetune | auto: someone asked for
    a run, which always trains; auto fine-tunes production when there is one, escalating after
    `max_finetunes_in_a_row` as the loop does, and an explicit finetune is taken at its word.
    """
    if request is not None:
        if request not in REQUEST_MODES:
            raise ValueError(f"unknown training mode {request!r}; expected one of {', '.join(REQUEST_MODES)}")
        if request == SCRATCH:
            return Decision(s.batch, SCRATCH, "scratch requested", REQUESTED, watermark_ms=s.watermark_ms)
        if s.production_version is None:
            return Decision(s.batch, SCRATCH, f"{request} requested, but the batch has no model: from scratch",
                            REQUESTED, watermark_ms=s.watermark_ms)
        if request == "auto" and s.finetunes_in_a_row >= max_finetunes_in_a_row:
            why = f"{s.finetunes_in_a_row} fine-tunes in a row, so from scratch"
            return Decision(s.batch, SCRATCH, f"auto requested; {why}", IN_A_ROW, watermark_ms=s.watermark_ms,
                            escalation=why)
        return _finetune(s, f"{request} requested: fine-tune {_production(s)}", REQUESTED)
    if s.active_task is not None:
        t = s.active_task
        return Decision(s.batch, WAIT, f"busy: task {t.task_id} is {t.state} (run {t.run_id or 'not started'})", BUSY)
    if in_flight_run is not None:
        return Decision(s.batch, WAIT, f"busy: run {in_flight_run} is queued or starting", BUSY)
    if s.model_version is None:
        if s.total_count >= thresholds.min_start_count:
            return Decision(s.batch, SCRATCH, f"no model and {s.total_count} samples >= {thresholds.min_start_count}",
                            FIRST_MODEL)
        return Decision(s.batch, WAIT, f"no model; {s.total_count} samples < {thresholds.min_start_count}", TOO_FEW)
    if s.new_count < thresholds.min_update_count:
        return Decision(s.batch, WAIT, f"model v{s.model_version}: {s.new_count} new samples < "
                                       f"{thresholds.min_update_count}", TOO_FEW_NEW)
    if s.finetunes_in_a_row >= max_finetunes_in_a_row:
        why = f"{s.finetunes_in_a_row} fine-tunes in a row, so from scratch"
        return Decision(s.batch, SCRATCH, f"{s.new_count} new samples; {why}", IN_A_ROW, watermark_ms=s.watermark_ms,
                        escalation=why)
    parent = "" if s.production_version == s.model_version else f"; fine-tunes production {_production(s)}"
    return _finetune(s, f"model v{s.model_version}: {s.new_count} new samples >= {thresholds.min_update_count}{parent}",
                     NEW_DATA)


def decide(statuses, thresholds_for: Callable, max_finetunes_in_a_row: int,
           in_flight: Optional[dict] = None) -> list[Decision]:
    """The loop's decision for every batch. `in_flight`: batch -> run id of training runs queued or
    running (their task may not be recorded yet)."""
    in_flight = in_flight or {}
    return [decide_run(s, thresholds_for(s.batch), max_finetunes_in_a_row, in_flight_run=in_flight.get(s.batch))
            for s in statuses]


def escalate_on_vocabulary(decision: Decision, oov_share: float, max_oov_share: float) -> Decision:
    """A fine-tune whose new data's OOV share (token occurrences its parent's vocabulary does not
    know) is above `max_oov_share` trains from scratch, on all the batch's data: the parent's
    vocabulary cannot represent what changed. Any other decision is returned as it is."""
    if decision.action != FINETUNE or oov_share <= max_oov_share:
        return decision
    why = f"new data's OOV share {oov_share:.3f} > {max_oov_share}: trained from scratch"
    return replace(decision, action=SCRATCH, reason=f"{decision.reason}; {why}", parent_version=None,
                   window_start_ms=None, escalation=why)


def describe(decisions: list[Decision], most: int = 30, first: int = 5) -> list[str]:
    """The tick's log: one line per batch with its decision and reason; beyond `most` batches, a
    summary (batches by decision and by reason) and the first `first` lines of each decision."""
    lines = [f"{d.batch}: {d.action} ({d.reason})" for d in decisions]
    if len(decisions) <= most:
        return lines
    by_action: dict[str, int] = {}
    by_rule: dict[str, int] = {}
    for d in decisions:
        by_action[d.action] = by_action.get(d.action, 0) + 1
        by_rule[d.rule or d.action] = by_rule.get(d.rule or d.action, 0) + 1
    summary = (f"{len(decisions)} batches decided: " + ", ".join(f"{n} {a}" for a, n in sorted(by_action.items()))
               + "; by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(by_rule.items(), key=lambda rn: -rn[1])))
    shown = []
    for action in sorted(by_action):
        shown += [line for d, line in zip(decisions, lines) if d.action == action][:first]
    return [summary, *shown, f"(the other {len(decisions) - len(shown)} batches' lines are left out)"]
