"""What the new-sample sensor decides for each batch: train from scratch, fine-tune, or wait.

CML's rules, with its queue names the right way round: a batch without a model and at
least `min_start_count` samples gets a scratch run; a batch with a model and at least
`min_update_count` samples newer than the model's data watermark gets a fine-tune, which
escalates to scratch after `max_finetunes_in_a_row` fine-tunes. A batch with an active
task or a training run in flight is left alone. Pure function of the store's grouped status
rows and the in-flight runs: no Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Decision:
    batch: str
    action: str              # "scratch" | "finetune" | "wait"
    reason: str
    watermark_ms: Optional[int] = None   # new data starts here (fine-tune); None = all data


def decide(statuses, thresholds_for: Callable, max_finetunes_in_a_row: int,
           in_flight: Optional[dict] = None) -> list[Decision]:
    """`in_flight`: batch -> run id of training runs queued or running (their task may not be recorded yet)."""
    in_flight = in_flight or {}
    out = []
    for s in statuses:
        th = thresholds_for(s.batch)
        if s.active_task is not None:
            t = s.active_task
            out.append(Decision(s.batch, "wait", f"busy: task {t.task_id} is {t.state} (run {t.run_id or 'not started'})"))
        elif s.batch in in_flight:
            out.append(Decision(s.batch, "wait", f"busy: run {in_flight[s.batch]} is queued or starting"))
        elif s.model_version is None:
            if s.total_count >= th.min_start_count:
                out.append(Decision(s.batch, "scratch", f"no model and {s.total_count} samples >= {th.min_start_count}"))
            else:
                out.append(Decision(s.batch, "wait", f"no model; {s.total_count} samples < {th.min_start_count}"))
        elif s.new_count >= th.min_update_count:
            if s.finetunes_in_a_row >= max_finetunes_in_a_row:
                out.append(Decision(
                    s.batch, "scratch",
                    f"{s.new_count} new samples; {s.finetunes_in_a_row} fine-tunes in a row, so from scratch",
                ))
            else:
                out.append(Decision(
                    s.batch, "finetune", f"model v{s.model_version}: {s.new_count} new samples >= {th.min_update_count}",
                    watermark_ms=s.watermark_ms,
                ))
        else:
            out.append(Decision(s.batch, "wait", f"model v{s.model_version}: {s.new_count} new samples < {th.min_update_count}"))
    return out
