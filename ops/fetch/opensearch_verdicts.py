"""Verdicts written back onto the OpenSearch documents they judge, where Opni's views read them.

A window's summary holds masked forms with counts, not document ids, so the documents are found
again the way the data stage found them: the window is re-read with the same PIT slices
(`OpenSearchShard.pages`: `_id`, `_index`, the message and the batch fields of each document),
each message is masked with the same rules as the summary's (`mask`), and the form's verdict is
looked up in what scoring decided for the window (`verdicts`: batch -> masked form -> Verdict).
A form the summary does not hold (one of a compacted tail's unsampled forms, or a document
indexed after the summary was made) is scored on the spot as one line of the window
(`score_new`), as score_summary_forms judges a tail's forms.

Each document gets a partial update (`_bulk` `update` with `doc`), so writing again overwrites
the same fields and never adds anything: scoring a window again is idempotent. The fields:

    anomaly_level     "Anomaly" or "Normal" (Opni's field and values)
    nulog_confidence  the score: the share of the line's tokens the model predicted (Opni's field)
    anomaly_reason    why: "label", "severity", "score", "established" or ""
    model_version     the batch's model version that judged it
    inference_model   "logloop"

Memory is bounded whatever the window holds: pages are read one at a time, at most `bulk_docs`
updates are buffered, and the masking cache and the on-the-spot verdicts are capped. Each
`_bulk` request is retried on transient failures (connection errors, 429, 5xx; items the node
rejected with 429 are sent again alone), all within `deadline_s` for the whole window. A
document deleted between the read and the write (a 404 `document_missing_exception`) is counted
as `deleted`, not an error; any other item error, or the deadline, raises VerdictWriteError
naming the window, the document and the reason. No Dagster import here.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson

from ops.fetch.opensearch import OpenSearchShard
from ops.fetch.opensearch_client import (Connection, OpenSearchReadError, describe_error, is_transient)
from ops.fetch.records import get_field
from ops.windows import Windows

INFERENCE_MODEL = "logloop"
MAX_CACHED = 100_000   # masked messages, and verdicts of forms scored on the spot, kept per window


class VerdictWriteError(RuntimeError):
    """Writing verdicts back failed (the message names the window, the document and the reason)."""


@dataclass(frozen=True)
class Verdict:
    anomaly: bool
    score: float
    reason: str = ""


def verdict_doc(verdict: Verdict, model_version: int) -> dict:
    """The fields a document gets (see the module docstring)."""
    return {
        "anomaly_level": "Anomaly" if verdict.anomaly else "Normal",
        "nulog_confidence": float(verdict.score),
        "anomaly_reason": verdict.reason,
        "model_version": model_version,
        "inference_model": INFERENCE_MODEL,
    }


@dataclass
class WriteBackStats:
    documents: int = 0        # documents of the window judged
    updated: int = 0          # ... whose update the node applied
    deleted: int = 0          # ... deleted between the read and the write
    scored_on_the_spot: int = 0  # distinct forms not in the summary, scored here
    requests: int = 0         # _bulk requests sent, retries included
    skipped: int = 0          # documents without a message or of a batch not written back

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Bulk:
    """Update actions waiting to be sent: at most `size`."""

    size: int
    lines: list = field(default_factory=list)
    targets: list = field(default_factory=list)  # (index, id) per action, in order

    def add(self, index: str, doc_id: str, doc: dict) -> None:
        self.lines.append(orjson.dumps({"update": {"_index": index, "_id": doc_id}}))
        self.lines.append(orjson.dumps({"doc": doc}))
        self.targets.append((index, doc_id))

    def __len__(self) -> int:
        return len(self.targets)


class BulkWriter:
    def __init__(self, conn: Connection, client, bulk_docs: int, deadline: float, where: str, stats: WriteBackStats,
                 sleep=time.sleep, clock=time.monotonic):
        self.conn, self.client, self.where, self.stats = conn, client, where, stats
        self.deadline, self.sleep, self.clock = deadline, sleep, clock
        self.pending = _Bulk(bulk_docs)

    def add(self, index: str, doc_id: str, doc: dict) -> None:
        self.pending.add(index, doc_id, doc)
        if len(self.pending) >= self.pending.size:
            self.flush()

    def flush(self) -> None:
        bulk, self.pending = self.pending, _Bulk(self.pending.size)
        attempt = 0
        while len(bulk):
            self._check_deadline(f"{len(bulk)} update(s) not written yet")
            body = b"\n".join(bulk.lines) + b"\n"
            self.stats.requests += 1
            try:
                resp = self.client.bulk(body=body)
            except Exception as exc:  # noqa: BLE001 - classified here
                if not is_transient(exc):
                    raise VerdictWriteError(self.conn.scrub(f"writing verdicts ({self.where}): {describe_error(exc)}")) from None
                attempt = self._backoff(attempt, describe_error(exc))
                continue
            retry = _Bulk(bulk.size)
            for (index, doc_id), line_pair, item in zip(bulk.targets, zip(bulk.lines[::2], bulk.lines[1::2]),
                                                         resp.get("items", [])):
                result = item.get("update") or next(iter(item.values()))
                status = result.get("status", 0)
                if status < 300:
                    self.stats.updated += 1
                elif status == 404:  # deleted since it was read
                    self.stats.deleted += 1
                elif status in (429, 503):  # the node's write queue was full: send this one again
                    retry.lines.extend(line_pair)
                    retry.targets.append((index, doc_id))
                else:
                    err = result.get("error") or {}
                    reason = f"{err.get('type', '')}: {err.get('reason', '')}" if isinstance(err, dict) else str(err)
                    raise VerdictWriteError(self.conn.scrub(
                        f"writing verdicts ({self.where}): document {doc_id!r} of index {index!r}: "
                        f"HTTP {status} {reason}"))
            if len(retry):
                attempt = self._backoff(attempt, f"{len(retry)} update(s) rejected with 429")
            else:
                attempt = 0
            bulk = retry

    def _check_deadline(self, what: str) -> None:
        if self.clock() >= self.deadline:
            raise VerdictWriteError(f"writing verdicts ({self.where}): the deadline passed; {what}")

    def _backoff(self, attempt: int, reason: str) -> int:
        if attempt >= self.conn.retries:
            raise VerdictWriteError(self.conn.scrub(
                f"writing verdicts ({self.where}): {reason} after {attempt + 1} attempts"))
        delay = min(self.conn.max_backoff_s, self.conn.backoff_s * (2 ** attempt)) * random.uniform(0.5, 1.0)
        self.sleep(max(0.0, min(delay, self.deadline - self.clock())))
        return attempt + 1


def write_back_verdicts(
    shards: Iterable[OpenSearchShard],
    window: tuple[int, int],
    verdicts: dict[str, dict[str, Verdict]],
    versions: dict[str, int],
    mask: Callable[[str], str],
    score_new: Callable[[str, list[str]], list[Verdict]],
    bulk_docs: int = 1000,
    deadline_s: float = 900.0,
    sleep=time.sleep,
    clock=time.monotonic,
) -> WriteBackStats:
    """Write the window's verdicts onto its documents (see the module docstring).

    `verdicts`: the scored batches to write back -> {masked form: Verdict}; `versions`: each
    one's model version; `score_new(batch, forms)`: verdicts of forms `verdicts` lacks."""
    stats = WriteBackStats()
    windows = Windows([window])
    deadline = clock() + deadline_s
    masked_cache: dict[str, str] = {}
    extra: dict[tuple[str, str], Verdict] = {}
    for shard in shards:
        where = shard.where(windows)
        conn = shard.conn
        client = conn.client()
        writer = BulkWriter(conn, client, bulk_docs, deadline, where, stats, sleep, clock)
        named = bool(shard.spec.batch_queries)
        fmt = shard.fmt
        try:
            for hits in shard.pages(windows, sleep=sleep):
                writer._check_deadline("the window's documents are not all read yet")
                todo: list[tuple[dict, list[tuple[str, str]]]] = []
                missing: dict[str, set] = {}
                for h in hits:
                    src = h.get("_source") or {}
                    message = get_field(src, fmt.message_field)
                    batches = (h.get("matched_queries") or ()) if named else (fmt.batch_of(src),)
                    batches = [b for b in batches if b in verdicts]
                    if not isinstance(message, str) or not batches:
                        stats.skipped += 1
                        continue
                    form = masked_cache.get(message)
                    if form is None:
                        if len(masked_cache) >= MAX_CACHED:
                            masked_cache.clear()
                        form = masked_cache[message] = mask(message)
                    pairs = [(b, form) for b in batches]
                    for b, f in pairs:
                        if f not in verdicts[b] and (b, f) not in extra:
                            missing.setdefault(b, set()).add(f)
                    todo.append((h, pairs))
                for b, forms in missing.items():
                    forms = sorted(forms)
                    if len(extra) + len(forms) > MAX_CACHED:
                        extra.clear()
                    extra.update(zip(((b, f) for f in forms), score_new(b, forms)))
                    stats.scored_on_the_spot += len(forms)
                for h, pairs in todo:
                    # a document of several batches (named filters): a flag from any of them wins
                    judged = [(verdicts[b].get(f) or extra[(b, f)], b) for b, f in pairs]
                    verdict, batch = max(judged, key=lambda vb: (vb[0].anomaly, -vb[0].score))
                    writer.add(h.get("_index") or shard.index, h["_id"], verdict_doc(verdict, versions[batch]))
                    stats.documents += 1
            writer.flush()
        except OpenSearchReadError as exc:
            raise VerdictWriteError(f"re-reading the window to write verdicts back: {exc}") from None
        finally:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
    return stats


def verdicts_of(forms) -> dict[str, Verdict]:
    """{masked form: Verdict} of ops.validate.scoring.ScoredForm's."""
    return {f.masked: Verdict(f.anomaly, f.score, f.reason) for f in forms}
