"""Quality of the product's own NuLog ops on Loghub: template grouping accuracy and BGL anomalies.

    python benchmarks/quality.py --data tests/data/loghub2k --json [--epochs N] [--seed S]
    python benchmarks/quality.py --loso --json

Protocols (docs/benchmarks.md):

* Grouping accuracy, per system present in --data (<S>/<S>_2k.log_structured_corrected.csv):
  messages are the Content column, truth the EventTemplate column. A model is trained on the
  system's 2,000 messages exactly as the product does (Masker -> Vocab.build -> ops.train.loop.train),
  templates come from ops.validate.templates, and a line is correct when the set of lines sharing its
  predicted template equals the set sharing its true template.
* BGL anomaly detection, when BGL/BGL_2k.log is present: a line is an anomaly when its first field
  is not "-"; the message is the line without that field (the whole rest of the line: header
  fields and Content, as a deployment would see it). The first 1,600 messages, unlabelled, become a
  model as the pipeline makes one (fit_like_the_product): masked, sampled and split train/validation
  by the sample's defaults, trained on the train split, and the threshold calibrated at the gate's
  default flag budget on the validation split. The last 400 are scored with
  ops.validate.scoring.Scorer (top-k 50, the model's threshold); reported: P/R/F1, the precision of
  each verdict reason (`flagged_by`), the level-field baseline on the same lines in the same run
  (`level_baseline`), F1 at Opni's fixed 0.7 and the best F1 over all thresholds (hindsight, not a
  result). Nothing is chosen on these 400 lines.
* The flag budget (--choose-budget), chosen leave-one-system-out on the systems other than BGL
  (choose_flag_budget): each system's raw log's first 1,600 lines become a model as above, and its
  last 400 are judged at each budget in FLAG_BUDGETS. Those systems carry no anomaly labels, so the
  truth is novelty: a line whose true event (EventId) never occurs in the first 1,600. The budget with
  the best pooled F1 of the score's own verdicts wins (ties: the smaller budget); each system's
  budget chosen on the other five is reported with its F1, and the one chosen on all six is
  ops.validate.defaults.DEFAULT_FLAG_BUDGET.

Anchors, measured in the same run on the same lines and labels (skip them with --no-anchors):

* anchors.drain3.systems.<name>.grouping_accuracy: Drain3 (the `bench` extra) with its default
  configuration, one for every system: TemplateMinerConfig() built explicitly (so no drain3.ini in
  the working directory is read), no masking instructions, no persistence. Every Content line is
  added with add_log_message; a line's template is the final template of the cluster it was
  assigned to, once all lines are in (the Loghub benchmark's way).
* anchors.bgl_baselines.<method>.{precision,recall,f1}, on the BGL protocol's 400 test lines:
  keyword: the message contains error, fatal, fail, exception, interrupt or panic (any case,
    substring; the header is part of the message, so a FATAL level matches "fatal");
  level: the level field (the 8th whitespace-separated field of the message, the Level column of
    BGL_2k.log_structured_corrected.csv) is FATAL, ERROR, SEVERE or FAILURE;
  drain3_novelty: Drain3's default configuration plus the masking instructions of Drain3's own
    example (examples/drain3.ini, [MASKING] only), trained with add_log_message on the 1,600
    training messages; a test message is flagged when match() (no adding) finds no cluster.
    It reproduces BENCHMARKS.md's 0.190; unmasked it gives F1 0.181, and after logloop's Masker 0.135
    (drain3 0.9.11, masking rules of this writing).

Leave-one-system-out (--loso): the template settings chosen on data (ops.validate.templates.
TemplateConfig: min_values, min_context) are chosen by choose_config over CONFIG_GRID on all the
systems but one, and the one left out is scored with that choice
(loso.systems.<name>.{grouping_accuracy, chosen, train_mean}, loso.mean, loso.min); chosen_on_all
is the choice on every system, which the product ships as DEFAULT_CONFIG. Templates come from the
masked lines alone, so --loso trains no model; Drain3's default runs on the same lines in the
same run (anchors.drain3.systems.<name>, anchors.drain3.mean/min; --no-anchors skips it).

Nothing here is tuned per system: every system gets the same epochs, seed, k and rules.
Output with --json: {"systems": {"<name>": {"grouping_accuracy": ...}, ...}, "bgl": {...},
"bgl_feedback": {...}, "flag_budget_choice": {...} (with --choose-budget), "anchors": {"drain3": {"systems": {"<name>": {"grouping_accuracy": ...}}}, "bgl_baselines": {...}}}.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.register.artifact import Artifact  # noqa: E402
from ops.validate.feedback import train_classifier, without_anomalies  # noqa: E402
from ops.mask.masking import Masker  # noqa: E402
from ops.mask.summary import Summary  # noqa: E402
from ops.sample.sampling import resample  # noqa: E402
from ops.validate.defaults import DEFAULT_FLAG_BUDGET, DEFAULT_THRESHOLD, DEFAULT_TOP_K  # noqa: E402
from ops.validate.evaluate import evaluate  # noqa: E402
from ops.validate.scoring import Scorer  # noqa: E402
from ops.validate.verdict import calibrate_threshold, judge  # noqa: E402
from ops.validate.templates import CONFIG_GRID, DEFAULT_CONFIG, TemplateConfig, line_templates, parse  # noqa: E402
from ops.train.loop import TrainConfig, train  # noqa: E402
from ops.train.vocab import Vocab  # noqa: E402

DEFAULT_EPOCHS = 10


def read_structured(path: Path) -> tuple[list[str], list[str]]:
    """(Content, EventTemplate) columns of a Loghub *_structured_corrected.csv."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    return [r["Content"] for r in rows], [r["EventTemplate"] for r in rows]


def grouping_accuracy(predicted: list[str], truth: list[str]) -> float:
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} lines")
    if not truth:
        return float("nan")
    pred_groups: dict[str, set] = defaultdict(set)
    true_groups: dict[str, set] = defaultdict(set)
    for i, (p, t) in enumerate(zip(predicted, truth)):
        pred_groups[p].add(i)
        true_groups[t].add(i)
    return sum(pred_groups[p] == true_groups[t] for p, t in zip(predicted, truth)) / len(truth)


def train_artifact(messages: list[str], epochs: int, seed: int, top_k: int = DEFAULT_TOP_K,
                   threshold: float = DEFAULT_THRESHOLD, feedback: dict | None = None) -> tuple[Artifact, dict]:
    """Train like the product (default masking rules, vocabulary, NuLog defaults) -> in-memory artifact.
    With feedback ({masked form: label}), as the product does: lines labelled (or nearest to) anomaly
    are left out of training, and the labels travel in the artifact's meta."""
    masker = Masker()
    counts = Counter(masker.mask(m) for m in messages)
    lines, dropped = without_anomalies(counts.items(), feedback or {})
    vocab = Vocab.build(lines)
    cfg = TrainConfig(epochs=epochs, seed=seed, device="cpu")
    result = train(lines, vocab, cfg)
    meta = {"feedback": feedback, "feedback_model": train_classifier(feedback)} if feedback else {}
    artifact = Artifact(result.model, vocab, masker.rules, {"model": {}, "train": {}},
                        {"top_k": top_k, "threshold": threshold}, meta)
    info = {"train_s": round(result.train_s, 2), "final_loss": round(result.losses[-1], 4) if result.losses else None,
            "vocab": len(vocab), "distinct_masked": len(counts), "dropped_labelled_anomaly_lines": dropped}
    return artifact, info


def system_quality(folder: Path, name: str, epochs: int, seed: int) -> dict:
    messages, truth = read_structured(folder / name / f"{name}_2k.log_structured_corrected.csv")
    masker = Masker()
    masking_only = grouping_accuracy([masker.mask(m) for m in messages], truth)
    artifact, info = train_artifact(messages, epochs, seed)
    t0 = time.perf_counter()
    predicted = line_templates(artifact, messages)
    parse_s = time.perf_counter() - t0
    return {"grouping_accuracy": round(grouping_accuracy(predicted, truth), 4),
            "masking_only_accuracy": round(masking_only, 4),
            "templates": len(set(predicted)), "true_templates": len(set(truth)),
            "lines": len(messages), "parse_s": round(parse_s, 3), **info}


# ---- leave-one-system-out: the template settings chosen without the system they are scored on ----


PRIOR = TemplateConfig(min_values=4, min_context=2)


def config_dict(config: TemplateConfig) -> dict:
    return {"min_values": config.min_values, "min_context": config.min_context}


def grid_accuracy(folder: Path, names: list[str], grid=CONFIG_GRID) -> dict[str, dict[TemplateConfig, float]]:
    """Grouping accuracy of every setting in the grid on every system (templates need no model: they
    come from the masked lines alone)."""
    out = {}
    for name in names:
        messages, truth = read_structured(folder / name / f"{name}_2k.log_structured_corrected.csv")
        masker = Masker()
        masked = [masker.mask(m) for m in messages]
        out[name] = {}
        for config in grid:
            by_masked = parse(masked, config)
            out[name][config] = grouping_accuracy([by_masked[m] for m in masked], truth)
    return out


def choose_config(accuracy: dict[str, dict[TemplateConfig, float]], names: list[str], grid=CONFIG_GRID) -> TemplateConfig:
    """The setting with the best mean grouping accuracy over `names`; ties go to the better worst
    system, then to the setting nearest the prior (Brain's median threshold, 4 values, and a
    context of 2 units), then to the grid's order."""
    def key(config):
        scores = [accuracy[n][config] for n in names]
        distance = abs(config.min_values - PRIOR.min_values) + abs(config.min_context - PRIOR.min_context)
        return (round(sum(scores) / len(scores), 6), round(min(scores), 6), -distance)

    best = grid[0]
    for config in grid[1:]:
        if key(config) > key(best):
            best = config
    return best


def loso(folder: Path, names: list[str], grid=CONFIG_GRID) -> dict:
    """Each system scored with the setting chosen on the others alone (choose_config over the rest)."""
    accuracy = grid_accuracy(folder, names, grid)
    systems = {}
    for held_out in names:
        train = [n for n in names if n != held_out]
        chosen = choose_config(accuracy, train, grid)
        systems[held_out] = {"grouping_accuracy": round(accuracy[held_out][chosen], 4), "chosen": config_dict(chosen),
                             "train_mean": round(sum(accuracy[n][chosen] for n in train) / len(train), 4)}
        if DEFAULT_CONFIG in accuracy[held_out]:  # the shipped setting, chosen on all the systems
            systems[held_out]["default_grouping_accuracy"] = round(accuracy[held_out][DEFAULT_CONFIG], 4)
    scores = [v["grouping_accuracy"] for v in systems.values()]
    on_all = choose_config(accuracy, names, grid)
    return {"systems": systems, "mean": round(sum(scores) / len(scores), 4) if scores else None,
            "min": round(min(scores), 4) if scores else None,
            "default": config_dict(DEFAULT_CONFIG), "chosen_on_all": config_dict(on_all),
            "grid": [config_dict(c) for c in grid]}


def prf(flagged: list[bool], labels: list[bool]) -> tuple[float, float, float]:
    tp = sum(f and y for f, y in zip(flagged, labels))
    fp = sum(f and not y for f, y in zip(flagged, labels))
    fn = sum(y and not f for f, y in zip(flagged, labels))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def read_bgl(path: Path) -> tuple[list[str], list[bool]]:
    messages, labels = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        label, _, message = line.partition(" ")
        labels.append(label != "-")
        messages.append(message)
    return messages, labels


def fit_like_the_product(messages: list[str], epochs: int, seed: int, flag_budget: float | None = DEFAULT_FLAG_BUDGET,
                         feedback: dict | None = None, validation_share: float = 0.2) -> tuple[Artifact, list, dict]:
    """A model of `messages` as the pipeline makes one: masked and counted, sampled and split
    train/validation (ops.sample.sampling.resample, the sample's defaults), trained on the train split
    (feedback as train_artifact takes it), and its threshold calibrated by the gate's rule on the
    validation split with `flag_budget` (None: Opni's fixed 0.7). -> (artifact, validation lines, info)."""
    masker = Masker()
    counts = Counter(masker.mask(m) for m in messages)
    sample = resample(Summary(counts=dict(counts)), t=max(1, len(messages)), seed=seed, validation_share=validation_share)
    train_lines, dropped = without_anomalies(sample.train, feedback or {})
    vocab = Vocab.build(train_lines)
    result = train(train_lines, vocab, TrainConfig(epochs=epochs, seed=seed, device="cpu"))
    gate = evaluate(result.model, vocab, sample.validation, top_k=DEFAULT_TOP_K,
                    threshold=None if flag_budget is not None else DEFAULT_THRESHOLD, flag_budget=flag_budget)
    metrics = {k: gate[k] for k in ("top_k", "threshold", "flag_budget", "threshold_calibrated") if k in gate}
    meta = {"feedback": feedback, "feedback_model": train_classifier(feedback)} if feedback else {}
    artifact = Artifact(result.model, vocab, masker.rules, {"model": {}, "train": {}}, metrics, meta)
    info = {"train_s": round(result.train_s, 2), "final_loss": round(result.losses[-1], 4) if result.losses else None,
            "vocab": len(vocab), "distinct_masked": len(counts), "train_lines": sample.train_lines,
            "validation_lines": sample.validation_lines, "dropped_labelled_anomaly_lines": dropped,
            "validation_flagged_by": gate["flagged_by"]}
    return artifact, sample.validation, info


def by_reason(scored, labels: list[bool]) -> dict:
    """Per verdict reason of the flagged lines: how many it flagged, how many of those are anomalies,
    and its precision."""
    out: dict = {}
    for s, y in zip(scored, labels):
        if s.anomaly:
            row = out.setdefault(s.reason, {"flagged": 0, "anomalies": 0})
            row["flagged"] += 1
            row["anomalies"] += int(y)
    for row in out.values():
        row["precision"] = round(row["anomalies"] / row["flagged"], 4)
    return dict(sorted(out.items()))


def bgl_quality(path: Path, epochs: int, seed: int, n_train: int = 1600,
                flag_budget: float | None = DEFAULT_FLAG_BUDGET) -> dict:
    messages, labels = read_bgl(path)
    train_msgs, test_msgs, test_labels = messages[:n_train], messages[n_train:], labels[n_train:]
    artifact, validation, info = fit_like_the_product(train_msgs, epochs, seed, flag_budget)
    scorer = Scorer(artifact)
    scored = scorer.score(test_msgs)
    scores = [s.score for s in scored]
    p, r, f1 = prf([s.anomaly for s in scored], test_labels)
    # the product's whole verdict (ops.validate.verdict.judge: severity, and a score below t unless the
    # form is established) at other thresholds: Opni's fixed one, and the best over all (hindsight)
    counts = Counter(s.masked for s in scored)
    forms = list(counts)
    form_scores = {s.masked: s.score for s in scored}

    def f1_at(t: float) -> float:
        verdict = dict(zip(forms, judge(forms, [form_scores[f] for f in forms], [counts[f] for f in forms], t)))
        return prf([verdict[s.masked][0] for s in scored], test_labels)[2]

    best = (0.0, None)
    for t in sorted(set(scores)) + [1.0 + 1e-9]:
        f = f1_at(t)
        if f > best[0]:
            best = (f, t)
    train_masked = {scorer.masker.mask(m) for m in train_msgs}
    novel_normal = sum(1 for s, y in zip(scored, test_labels) if not y and s.masked not in train_masked)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "level_baseline": _prf_dict(level_flags(test_msgs), test_labels),
            "f1_at_fixed_threshold": round(f1_at(DEFAULT_THRESHOLD), 4), "best_f1": round(best[0], 4),
            "best_threshold": None if best[1] is None else round(min(best[1], 1.0), 4),
            "threshold": scorer.threshold, "flag_budget": flag_budget, "top_k": scorer.top_k,
            "flagged": sum(s.anomaly for s in scored), "flagged_by": by_reason(scored, test_labels),
            "test_lines": len(test_msgs), "test_anomalies": sum(test_labels),
            "novel_masked_normal_lines": novel_normal, "train_anomalies_unlabelled": sum(labels[:n_train]), **info}


# ---- choosing the flag budget: leave-one-system-out, never on BGL -----------------------------

# The budgets tried (shares of validation lines the score alone may flag).
FLAG_BUDGETS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def read_raw_with_events(folder: Path, name: str) -> tuple[list[str], list[str]]:
    """A system's raw log lines (what a deployment reads: header and content) and each line's true
    event (the EventId column of its structured CSV, row for row)."""
    with open(folder / name / f"{name}_2k.log_structured_corrected.csv", newline="", encoding="utf-8",
              errors="replace") as f:
        events = [r["EventId"] for r in csv.DictReader(f)]
    raw = [line for line in (folder / name / f"{name}_2k.log").read_text(encoding="utf-8", errors="replace")
           .splitlines() if line.strip()]
    if len(raw) != len(events):
        raise ValueError(f"{name}: {len(raw)} log lines but {len(events)} structured rows")
    return raw, events


def novelty_counts(folder: Path, name: str, epochs: int, seed: int, n_history: int = 1600,
                   budgets=FLAG_BUDGETS) -> dict:
    """For one system: a model of its first n_history lines as the pipeline makes one, then the rest
    judged at each budget's calibrated threshold. The truth is novelty, from the system's true
    events: a later line is positive when its event never occurs in the history (the score's job is to
    flag what the model has not seen; nothing in these systems is labelled anomalous). Counts
    {budget: {tp, fp, fn, threshold}} of the score's own verdicts (judge without labels, the lines
    it leaves to the score: reason "score" or "established"), since the budget moves nothing else;
    severity's flags are the same at every budget."""
    raw, events = read_raw_with_events(folder, name)
    seen = set(events[:n_history])
    truth = [e not in seen for e in events[n_history:]]
    artifact, validation, _ = fit_like_the_product(raw[:n_history], epochs, seed, flag_budget=None)
    from ops.validate.evaluate import score_lines

    v_forms = [f for f, _ in validation]
    v_scores = score_lines(artifact.model, artifact.vocab, v_forms, DEFAULT_TOP_K)
    scored = Scorer(artifact).score(raw[n_history:])
    counts = Counter(s.masked for s in scored)
    forms = list(counts)
    form_scores = {s.masked: s.score for s in scored}
    out = {}
    for budget in budgets:
        t = calibrate_threshold(v_forms, v_scores, [c for _, c in validation], budget)
        verdict = dict(zip(forms, judge(forms, [form_scores[f] for f in forms], [counts[f] for f in forms], t)))
        by_score = [(verdict[s.masked][0], y) for s, y in zip(scored, truth)
                    if verdict[s.masked][1] in ("score", "established")]
        out[str(budget)] = {"threshold": round(t, 4), "tp": sum(f and y for f, y in by_score),
                            "fp": sum(f and not y for f, y in by_score), "fn": sum(y and not f for f, y in by_score)}
    return {"novel_lines": sum(truth), "test_lines": len(truth), "budgets": out}


def pooled_f1(per_system: dict, budget: str) -> float:
    tp = sum(s["budgets"][budget]["tp"] for s in per_system.values())
    fp = sum(s["budgets"][budget]["fp"] for s in per_system.values())
    fn = sum(s["budgets"][budget]["fn"] for s in per_system.values())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def best_budget(per_system: dict) -> str:
    """The budget with the best pooled F1 over `per_system`; ties go to the smaller budget (fewer flags)."""
    budgets = list(next(iter(per_system.values()))["budgets"])
    return max(budgets, key=lambda b: (pooled_f1(per_system, b), -float(b)))


def choose_flag_budget(folder: Path, names: list[str], epochs: int, seed: int) -> dict:
    """The flag budget chosen leave-one-system-out on `names` (never BGL): each system's budget is
    chosen on the others and scored on it; the one chosen on all of them is the default's evidence."""
    names = [n for n in names if n != "BGL"]
    per_system = {n: novelty_counts(folder, n, epochs, seed) for n in names}
    loso = {}
    for held_out in names:
        others = {n: v for n, v in per_system.items() if n != held_out}
        chosen = best_budget(others)
        loso[held_out] = {"chosen_on_the_others": float(chosen),
                          "held_out_f1": round(pooled_f1({held_out: per_system[held_out]}, chosen), 4),
                          "held_out_novel_lines": per_system[held_out]["novel_lines"]}
    chosen = best_budget(per_system)
    return {"chosen": float(chosen), "default": DEFAULT_FLAG_BUDGET, "systems": names,
            "criterion": "pooled F1 of the score's own verdicts against novel events (a line's true event absent "
                         "from the first 1600 lines), last 400 lines of each system; ties to the smaller budget",
            "pooled_f1": {b: round(pooled_f1(per_system, b), 4) for b in per_system[names[0]]["budgets"]},
            "loso": loso, "per_system": per_system}


# ---- anchors: other methods on the same lines, in the same run -------------------------------

BENCH_EXTRA_HINT = "drain3 is not installed: install the bench extra (pip install -e '.[bench]')"

# The [MASKING] instructions of Drain3's own example configuration (logpai/Drain3, examples/drain3.ini,
# MIT licence), as (regex_pattern, mask_with). Used only by the drain3_novelty baseline.
DRAIN3_EXAMPLE_MASKING = [
    (r"((?<=[^A-Za-z0-9])|^)(([0-9a-f]{2,}:){3,}([0-9a-f]{2,}))((?=[^A-Za-z0-9])|$)", "ID"),
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9a-f]{6,} ?){3,}((?=[^A-Za-z0-9])|$)", "SEQ"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9A-F]{4} ?){4,}((?=[^A-Za-z0-9])|$)", "SEQ"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-f0-9A-F]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
    (r'(?<=executed cmd )(".+?")', "CMD"),
]
KEYWORDS = ("error", "fatal", "fail", "exception", "interrupt", "panic")
BAD_LEVELS = frozenset({"FATAL", "ERROR", "SEVERE", "FAILURE"})
# 0-based index of the level in a BGL message (the line without its label field):
# Timestamp Date Node Time NodeRepeat Type Component Level Content...
BGL_LEVEL_FIELD = 7


def drain3_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("drain3")
    except PackageNotFoundError:
        return None


def require_drain3() -> None:
    """Raise RuntimeError (saying to install the bench extra) when drain3 cannot be imported."""
    try:
        importlib.import_module("drain3")
    except ImportError as e:
        raise RuntimeError(BENCH_EXTRA_HINT) from e


def drain3_miner(masking: list[tuple[str, str]] | None = None):
    """A Drain3 TemplateMiner with the default configuration, built explicitly (never drain3.ini), in memory."""
    require_drain3()
    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    config = TemplateMinerConfig()  # the defaults; TemplateMiner(config=None) would read ./drain3.ini
    if masking:
        config.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in masking]
    return TemplateMiner(persistence_handler=None, config=config)


def drain3_templates(messages: list[str]) -> list[str]:
    """Each message's template: the final template of the Drain3 cluster it was assigned to."""
    miner = drain3_miner()
    cluster_ids = [miner.add_log_message(m)["cluster_id"] for m in messages]
    final = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    return [final[c] for c in cluster_ids]


def drain3_system(folder: Path, name: str) -> dict:
    messages, truth = read_structured(folder / name / f"{name}_2k.log_structured_corrected.csv")
    t0 = time.perf_counter()
    predicted = drain3_templates(messages)
    parse_s = time.perf_counter() - t0
    return {"grouping_accuracy": round(grouping_accuracy(predicted, truth), 4), "templates": len(set(predicted)),
            "lines": len(messages), "parse_s": round(parse_s, 3)}


def keyword_flags(messages: list[str]) -> list[bool]:
    return [any(k in m.lower() for k in KEYWORDS) for m in messages]


def level_flags(messages: list[str]) -> list[bool]:
    """BGL messages (label removed) whose level field is FATAL, ERROR, SEVERE or FAILURE."""
    flags = []
    for m in messages:
        fields = m.split()
        flags.append(len(fields) > BGL_LEVEL_FIELD and fields[BGL_LEVEL_FIELD] in BAD_LEVELS)
    return flags


def drain3_novelty_flags(train_msgs: list[str], test_msgs: list[str],
                         masking: list[tuple[str, str]] | None = DRAIN3_EXAMPLE_MASKING) -> list[bool]:
    """Test messages that match no cluster Drain3 learned from train_msgs (match() adds nothing)."""
    miner = drain3_miner(masking)
    for m in train_msgs:
        miner.add_log_message(m)
    return [miner.match(m) is None for m in test_msgs]


def _prf_dict(flagged: list[bool], labels: list[bool]) -> dict:
    p, r, f1 = prf(flagged, labels)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "flagged": sum(flagged)}


def bgl_baselines(path: Path, n_train: int = 1600) -> dict:
    """The BGL protocol's baselines: same split and labels as bgl_quality."""
    messages, labels = read_bgl(path)
    train_msgs, test_msgs, test_labels = messages[:n_train], messages[n_train:], labels[n_train:]
    return {"keyword": {**_prf_dict(keyword_flags(test_msgs), test_labels), "keywords": list(KEYWORDS)},
            "drain3_novelty": {**_prf_dict(drain3_novelty_flags(train_msgs, test_msgs), test_labels),
                               "masking": "Drain3's example masking instructions (examples/drain3.ini)"},
            "level": {**_prf_dict(level_flags(test_msgs), test_labels), "levels": sorted(BAD_LEVELS)}}


def anchors(folder: Path, names: list[str], bgl: Path | None) -> dict:
    out: dict = {"drain3": {"version": drain3_version(), "config": "TemplateMinerConfig() defaults, no masking",
                            "systems": {name: drain3_system(folder, name) for name in names}}}
    if bgl is not None:
        out["bgl_baselines"] = bgl_baselines(bgl)
    return out


def bgl_feedback_quality(path: Path, epochs: int, seed: int, n_train: int = 1600,
                         flag_budget: float | None = DEFAULT_FLAG_BUDGET) -> dict:
    """The BGL protocol with feedback: the labels of the first n_train lines are given (each line's
    masked form gets its line's label; a later line's label wins), the model is made of those lines
    with the labels as the pipeline makes one (fit_like_the_product), and the last lines are scored."""
    messages, labels = read_bgl(path)
    masker = Masker()
    feedback = {masker.mask(m): ("anomaly" if y else "normal") for m, y in zip(messages[:n_train], labels[:n_train])}
    artifact, _, info = fit_like_the_product(messages[:n_train], epochs, seed, flag_budget, feedback=feedback)
    scorer = Scorer(artifact)
    scored = scorer.score(messages[n_train:])
    p, r, f1 = prf([s.anomaly for s in scored], labels[n_train:])
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "threshold": scorer.threshold,
            "flagged": sum(s.anomaly for s in scored), "flagged_by": by_reason(scored, labels[n_train:]),
            "labelled_forms": len(feedback), "labelled_anomalous_forms": sum(v == "anomaly" for v in feedback.values()),
            "test_lines_with_a_labelled_form": sum(s.masked in feedback for s in scored), **info}


def systems_in(folder: Path) -> list[str]:
    return sorted(p.parent.name for p in folder.glob("*/*_2k.log_structured_corrected.csv")
                  if p.name == f"{p.parent.name}_2k.log_structured_corrected.csv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "loghub2k", help="a loghub2k-style folder (any subset of systems)")
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs (default {DEFAULT_EPOCHS})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--systems", help="comma-separated subset of the systems in --data (default: all)")
    ap.add_argument("--no-bgl", action="store_true", help="skip the BGL anomaly protocol")
    ap.add_argument("--no-anchors", action="store_true", help="skip the anchors (Drain3, BGL baselines)")
    ap.add_argument("--loso", action="store_true", help="template grouping accuracy leave-one-system-out only "
                    "(every data-chosen template setting chosen on the other systems), with Drain3's in the same run")
    ap.add_argument("--choose-budget", action="store_true",
                    help="also choose the flag budget leave-one-system-out on the systems other than BGL "
                         "(one more model per system)")
    ap.add_argument("--flag-budget", type=float, default=DEFAULT_FLAG_BUDGET,
                    help=f"the flag budget BGL's model is calibrated with (default {DEFAULT_FLAG_BUDGET}, the product's)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder", file=sys.stderr)
        return 2
    if not args.no_anchors:
        try:
            require_drain3()
        except RuntimeError as e:
            print(f"error: {e}, or pass --no-anchors", file=sys.stderr)
            return 2
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    names = systems_in(args.data)
    if args.systems:
        wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
        names = [n for n in names if n in wanted]
    if args.loso:
        if len(names) < 2:
            print(f"error: --loso needs two or more systems, {args.data} has {len(names)}", file=sys.stderr)
            return 2
        out = {"loso": loso(args.data, names)}
        if not args.no_anchors:
            out["anchors"] = anchors(args.data, names, None)
            d3 = [v["grouping_accuracy"] for v in out["anchors"]["drain3"]["systems"].values()]
            out["anchors"]["drain3"]["mean"] = round(sum(d3) / len(d3), 4)
            out["anchors"]["drain3"]["min"] = round(min(d3), 4)
        print(json.dumps(out, indent=None if args.json else 2))
        return 0
    out: dict = {"systems": {}, "bgl": None}
    for name in names:
        out["systems"][name] = system_quality(args.data, name, args.epochs, args.seed)
        if not args.json:
            print(f"{name}: {out['systems'][name]}", file=sys.stderr)
    bgl = args.data / "BGL" / "BGL_2k.log"
    run_bgl = bgl.is_file() and not args.no_bgl
    if args.choose_budget:
        out["flag_budget_choice"] = choose_flag_budget(args.data, names, args.epochs, args.seed)
        if not args.json:
            print(f"flag budget chosen: {out['flag_budget_choice']['chosen']}", file=sys.stderr)
    if run_bgl:
        out["bgl"] = bgl_quality(bgl, args.epochs, args.seed, flag_budget=args.flag_budget)
        out["bgl_feedback"] = bgl_feedback_quality(bgl, args.epochs, args.seed, flag_budget=args.flag_budget)
    if not args.no_anchors:  # after logloop's own figures, which they leave untouched
        out["anchors"] = anchors(args.data, names, bgl if run_bgl else None)
        if not args.json:
            print(f"anchors: {out['anchors']}", file=sys.stderr)
    out["config"] = {"epochs": args.epochs, "seed": args.seed, "top_k": DEFAULT_TOP_K, "flag_budget": args.flag_budget,
                     "threshold": "calibrated per model on its validation split to the flag budget"}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
