"""ops.validate.scoring.Scorer, ops.validate.templates and the `logloop score` / `logloop templates` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from ops.register.artifact import Artifact, ArtifactError, write_artifact
from ops.validate.evaluate import score_lines
from ops.mask.masking import Masker
from ops.train.model import NuLogConfig
from ops.validate.scoring import Scorer
from ops.validate.templates import VARIABLE, collapse, generalize, templates, token_template
from ops.train.loop import TrainConfig, train
from ops.train.vocab import Vocab
from resources.artifacts import LocalArtifactStorage
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord


LINES = (
    ["connection from 10.0.0.%d port %d accepted" % (i % 7, 4000 + i) for i in range(60)]
    + ["user alice logged in after %d ms" % i for i in range(30)]
    + ["user bob logged in after %d ms" % i for i in range(25)]
    + ["disk /dev/sda%d is %d%% full" % (i % 3, 50 + i) for i in range(20)]
)


@pytest.fixture(scope="module")
def artifact() -> Artifact:
    masker = Masker()
    counts = Counter(masker.mask(line) for line in LINES)
    vocab = Vocab.build(counts.items())
    torch.manual_seed(0)
    result = train(counts.items(), vocab, TrainConfig(epochs=8, seed=0, device="cpu"),
                   model_config=NuLogConfig(vocab_size=len(vocab), d_model=64, n_heads=4, d_ff=64, max_len=32))
    return Artifact(result.model, vocab, masker.rules, {}, {"top_k": 5, "threshold": 0.7}, {})


def test_scores_match_uncached_evaluation_and_cache_is_reused(artifact):
    scorer = Scorer(artifact)
    assert (scorer.top_k, scorer.threshold) == (5, 0.7)  # from the artifact's metrics
    probe = LINES + ["totally new words never seen", "user carol logged in after 3 ms"]
    first = scorer.score(probe)
    masked = [Masker(artifact.masking_rules).mask(line) for line in probe]
    expected = score_lines(artifact.model, artifact.vocab, masked, top_k=5)
    assert [s.masked for s in first] == masked
    assert [s.score for s in first] == pytest.approx(expected)
    counts = Counter(masked)  # a form of 10+ lines and 1%+ of the call is established: not flagged by its score
    assert [s.anomaly for s in first] == [e < 0.7 and not (counts[m] >= 10 and counts[m] >= 0.01 * len(masked))
                                          for e, m in zip(expected, masked)]
    distinct = len(set(masked))
    assert scorer.misses == distinct and scorer.hits == 0 and scorer.cache_len == distinct
    again = scorer.score(reversed(probe))
    assert [s.score for s in again] == [s.score for s in reversed(first)]
    assert scorer.misses == distinct and scorer.hits == distinct  # nothing recomputed
    assert scorer.score(["totally new words never seen"])[0].anomaly  # unknown words miss


def test_bounded_cache_evicts_least_recently_used(artifact):
    scorer = Scorer(artifact, cache_size=2)
    uncached = Scorer(artifact, cache_size=0)
    lines = ["user alice logged in after 1 ms", "connection from 1.2.3.4 port 5 accepted", "disk /x is 5% full"]
    for line in lines * 2:
        assert scorer.score([line]) == uncached.score([line])
    assert scorer.cache_len == 2 and uncached.cache_len == 0
    assert scorer.misses == 6  # cycling 3 lines through 2 slots always misses


def test_overrides_and_bad_inputs(artifact):
    strict = Scorer(artifact, threshold=1.0)
    assert strict.threshold == 1.0
    with pytest.raises(ValueError, match="empty input"):
        Scorer(artifact).score([])
    with pytest.raises(TypeError, match="not a single string"):
        Scorer(artifact).score("one line")
    with pytest.raises(ValueError, match="top_k"):
        Scorer(artifact, top_k=0)
    with pytest.raises(ValueError, match="threshold"):
        Scorer(artifact, threshold=1.5)
    with pytest.raises(TypeError, match="Artifact"):
        Scorer(artifact.model)


def test_vocabulary_mismatch_is_refused(artifact):
    bigger = Vocab(artifact.vocab.itos + ["extra-token"])
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        Scorer(Artifact(artifact.model, bigger, artifact.masking_rules, {}, {}, {}))


def test_missing_and_corrupt_artifacts_name_the_path(artifact, tmp_path):
    with pytest.raises(ArtifactError, match="nope.zip: file not found"):
        Scorer.from_path(tmp_path / "nope.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="bad.zip"):
        Scorer.from_path(bad)
    good = tmp_path / "good.zip"
    write_artifact(good, artifact.model, artifact.vocab, artifact.masking_rules, metrics=artifact.metrics)
    line = "user alice logged in after 1 ms"
    assert Scorer.from_path(good).score([line]) == Scorer(artifact).score([line])


def test_template_rules():
    assert token_template(["user", "<num>", "v2", "bob", "in"], [0, 0, 0, 7, 1], 5) == \
        ["user", VARIABLE, VARIABLE, VARIABLE, "in"]
    assert token_template(["a", "b"], [0], 5) == ["a", VARIABLE]  # past max_len: no rank
    assert collapse(["for", VARIABLE, ".", VARIABLE, "-", VARIABLE, "port", VARIABLE, "]"]) == \
        ["for", VARIABLE, "port", VARIABLE, "]"]
    assert collapse([VARIABLE, VARIABLE, "x", VARIABLE]) == [VARIABLE, "x", VARIABLE]
    mapping = generalize(Counter({"user root from <*>": 5, "user <*> from <*>": 2, "user root to <*>": 1}))
    assert mapping == {"user root from <*>": "user <*> from <*>", "user <*> from <*>": "user <*> from <*>",
                       "user root to <*>": "user root to <*>"}


def test_templates_group_lines(artifact):
    # k = the whole vocabulary: every known token is a hit, so only placeholders become <*>
    counts = templates(artifact, LINES, top_k=len(artifact.vocab))
    assert counts == Counter({"connection from <*> port <*> accepted": 60, "user alice logged in after <*> ms": 30,
                              "user bob logged in after <*> ms": 25, "disk <*> is <*> % full": 20})
    assert sum(templates(artifact, LINES).values()) == len(LINES)  # the model's own k


# -- the CLI, end to end -------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch, artifact):
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    storage = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    for version in (1, 2):
        key = f"models/team/nulog-{version}.zip"
        with storage.writing(key) as tmp:
            write_artifact(tmp, artifact.model, artifact.vocab, artifact.masking_rules,
                           metrics={**artifact.metrics, "threshold": 0.7 if version == 2 else 1.0})
        store.register_model(ModelRecord(batch="team", version=version, run_id=f"run-{version}", artifact=key,
                                         artifact_uri=storage.uri(key), metrics={}, mode="scratch"))
    logs = tmp_path / "logs.txt"
    logs.write_text("\n".join(LINES[:3] + ["", "totally new words never seen"]) + "\n")
    return tmp_path


def logloop(*args, stdin=None, env=None):
    exe = Path(sys.executable).with_name("logloop")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, input=stdin,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_score_json_lines_and_text(home, artifact):
    out = logloop("score", "--batch", "team", "--json", str(home / "logs.txt"))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 5]  # blank line 4 skipped, numbers kept
    expected = Scorer(artifact, threshold=0.7).score(LINES[:3] + ["totally new words never seen"])
    assert [r["score"] for r in rows] == pytest.approx([s.score for s in expected], abs=1e-6)
    assert [r["anomaly"] for r in rows] == [s.anomaly for s in expected] and rows[-1]["anomaly"]
    assert [r["masked"] for r in rows] == [s.masked for s in expected]
    # every line says why, and a score verdict with the threshold it was judged against
    assert [r["reason"] for r in rows] == [s.reason for s in expected] and rows[-1]["reason"] == "score"
    assert all(r["threshold"] == 0.7 for r in rows)

    code, stdout, stderr = run_main(["score", "--batch", "team", "--version", "1", "-"],
                                    stdin=LINES[0] + "\ntotally new words never seen\n")
    assert code == 0, stderr
    first, new = (line.split("\t") for line in stdout.rstrip("\n").split("\n"))
    assert first[1] in ("normal", "ANOMALY") and first[3] == expected[0].masked
    assert new[1:3] == ["ANOMALY", "score<1"]  # v1's own threshold, in its reason
    assert "model v1" in stderr and "threshold 1;" in stderr and "flagged: " in stderr and " by score" in stderr


def test_cli_templates(home):
    out = logloop("templates", "--batch", "team", "--json", str(home / "logs.txt"))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sum(r["count"] for r in rows) == 4
    assert {"template": "connection from <*> port <*> accepted", "count": 3} in rows
    code, stdout, _ = run_main(["templates", "--batch", "team", str(home / "logs.txt")])
    assert code == 0 and stdout.split("\n")[0].split(None, 1) == ["3", "connection from <*> port <*> accepted"]


def run_main(argv, stdin="", monkeypatch=None):
    """The CLI in-process (cheaper than a subprocess): (exit status, stdout, stderr)."""
    import contextlib
    import io

    from orchestration.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def test_cli_errors_are_one_line(home):
    cases = [
        (("score", "--batch", "nobody", str(home / "logs.txt")), "no model registered for batch 'nobody'"),
        (("score", "--batch", "team", "--version", "7", str(home / "logs.txt")), "no model registered for version 7"),
        (("score", "--batch", "team", str(home / "missing.txt")), "cannot read"),
        (("templates", "--batch", "team", "-"), "no log lines in standard input"),
    ]
    for args, message in cases:
        code, _, err = run_main(list(args))
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    (home / "artifacts" / "models" / "team" / "nulog-2.zip").write_bytes(b"garbage")
    code, _, err = run_main(["score", "--batch", "team", str(home / "logs.txt")])
    assert code == 1 and "nulog-2.zip" in err and "not a zip file" in err and len(err.strip().splitlines()) == 1
    os.unlink(home / "artifacts" / "models" / "team" / "nulog-2.zip")
    code, _, err = run_main(["score", "--batch", "team", str(home / "logs.txt")])
    assert code == 1 and "not found" in err
    out = logloop("score", "--batch", "nobody", "-", stdin="x\n")  # as users run it: no traceback
    assert out.returncode == 1 and out.stderr.strip() == "error: no model registered for batch 'nobody'"


def test_the_verdict_label_first_then_severity_then_a_score_that_is_not_established():
    from ops.validate.verdict import judge

    forms = ["a b", "x <severe> y", "rare new form", "common new form", "labelled ok", "labelled bad"]
    scores = [0.9, 1.0, 0.1, 0.1, 0.0, 1.0]
    counts = [500, 1, 3, 40, 1, 1]  # of 546 lines: 40 lines (7%) make a form established
    verdicts = judge(forms, scores, counts, 0.7, labels={"labelled ok": "normal", "labelled bad": "anomaly",
                                                          "x <severe> y": "normal"})
    assert verdicts == [(False, "score"), (False, "label"), (True, "score"), (False, "established"), (False, "label"),
                        (True, "label")]
    assert judge(["x <severe> y"], [1.0], [1], 0.7) == [(True, "severity")]
    # 10 lines are not enough when they are under 1% of what is judged
    assert judge(["f"], [0.1], [10], 0.7, total=5_000) == [(True, "score")]
    assert judge(["f"], [0.1], [9], 0.7, total=10) == [(True, "score")]
    assert judge(["f"], [0.1], [10], 0.7, total=10) == [(False, "established")]


def test_every_verdict_has_one_reason_and_feedback_says_where_its_label_came_from():
    from ops.validate.verdict import REASONS, describe, judge, reason_counts

    forms = ["own", "near one", "by classifier", "x <severe> y", "low", "high"]
    labels = {"own": "anomaly", "near one": ("normal", "near_label"), "by classifier": ("anomaly", "classifier")}
    verdicts = judge(forms, [0.9, 0.1, 0.9, 0.9, 0.2, 0.8], [1] * 6, 0.5, labels=labels)
    assert verdicts == [(True, "label"), (False, "near_label"), (True, "classifier"), (True, "severity"),
                        (True, "score"), (False, "score")]
    assert all(reason in REASONS for _, reason in verdicts)
    with pytest.raises(ValueError, match="source"):
        judge(["f"], [0.1], [1], 0.5, labels={"f": ("anomaly", "guess")})
    # a score verdict names the threshold it was judged against
    assert [describe(r, flag, 0.5) for flag, r in verdicts[3:]] == ["severity", "score<0.5", "score>=0.5"]
    assert reason_counts(verdicts, [1, 2, 3, 4, 5, 6]) == {
        "flagged_by": {"classifier": 3, "label": 1, "score": 5, "severity": 4},
        "normal_by": {"near_label": 2, "score": 6}}


def test_the_threshold_is_calibrated_to_the_flag_budget_of_what_the_score_alone_decides():
    from ops.validate.verdict import calibrate_threshold, judge

    forms = ["a", "b", "c", "d", "x <severe> y", "common"]
    scores = [0.2, 0.4, 0.6, 0.9, 0.0, 0.1]
    counts = [1, 2, 3, 44, 10, 40]  # 100 lines; "common" (40) is established, severity is not the score's
    # nothing may be flagged: the threshold is the lowest score left to the score ("a"'s), which stays normal
    assert calibrate_threshold(forms, scores, counts, 0.0) == 0.2
    assert calibrate_threshold(forms, scores, counts, 0.01) == 0.4   # "a" (1 line) fits a budget of 1 line
    assert calibrate_threshold(forms, scores, counts, 0.029) == 0.4  # 1 + 2 lines do not fit 2.9
    assert calibrate_threshold(forms, scores, counts, 0.03) == 0.6
    assert calibrate_threshold(forms, scores, counts, 0.5) == 1.0    # every line the score decides fits
    for budget in (0.0, 0.01, 0.03, 0.06, 0.5):
        t = calibrate_threshold(forms, scores, counts, budget)
        flagged = sum(n for n, (flag, why) in zip(counts, judge(forms, scores, counts, t)) if flag and why == "score")
        assert flagged <= budget * sum(counts)
    # labelled forms are feedback's, not the score's
    assert calibrate_threshold(forms, scores, counts, 0.0, labels={"a": "normal"}) == 0.4
    # the lowest-scoring line at 0 already over the budget: threshold 0, the score flags nothing
    assert calibrate_threshold(["z", "a"], [0.0, 0.5], [1, 99], 0.0) == 0.0
    assert judge(["z"], [0.0], [1], 0.0, total=100) == [(False, "score")]
    with pytest.raises(ValueError, match="budget"):
        calibrate_threshold(forms, scores, counts, 1.5)


def test_a_scorer_uses_the_models_calibrated_threshold_and_old_models_keep_the_default(artifact):
    from dataclasses import replace

    from ops.validate.defaults import DEFAULT_THRESHOLD

    assert Scorer(replace(artifact, metrics={})).threshold == DEFAULT_THRESHOLD  # an artifact from before calibration
    calibrated = replace(artifact, metrics={"top_k": 50, "threshold": 0.35, "flag_budget": 0.0})
    assert Scorer(calibrated).threshold == 0.35
    assert Scorer(replace(artifact, metrics={"threshold": 0.0})).threshold == 0.0  # 0 is a threshold, not "unset"
    assert Scorer(calibrated, threshold=0.9).threshold == 0.9  # an explicit one wins


def test_feedback_labels_override_the_score_in_the_scorer(artifact):
    plain = Scorer(artifact).score(["totally new words never seen"])[0]
    assert plain.anomaly and plain.reason == "score"
    labelled = Scorer(artifact, labels={plain.masked: "normal"}).score(["totally new words never seen"])[0]
    assert not labelled.anomaly and labelled.reason == "label" and labelled.score == plain.score


def test_a_summary_scores_once_per_form_and_its_forms_add_up_to_the_window(artifact):
    from ops.mask.summary import Summary
    from ops.validate.scoring import score_summary, score_summary_forms

    masker = Masker(artifact.masking_rules)
    common, known = masker.mask(LINES[0]), masker.mask(LINES[70])
    # 1,000 counted lines, and a compacted tail of 103 lines of which 4 were kept (one of them twice,
    # one also a counted form)
    tail = ["totally new words never seen", "another unseen <severe> thing", "totally new words never seen", known]
    summary = Summary(counts={common: 900, known: 60, "never seen before at all": 40}, tail_count=103,
                      tail_keys=[0.1, 0.2, 0.3, 0.4], tail_lines=tail)
    scorer = Scorer(artifact, labels={"never seen before at all": "anomaly"})
    forms = score_summary_forms(scorer, summary)
    assert [f.masked for f in forms] == [common, known, "never seen before at all", tail[0], tail[1]]
    # 103 = 4 x 25 + 3: the first three sampled lines stand for 26 lines, the fourth for 25
    assert [f.lines for f in forms] == [900, 60 + 25, 40, 26 + 26, 26] and sum(f.lines for f in forms) == 1103
    by = {f.masked: f for f in forms}
    assert by["never seen before at all"].reason == "label" and by[tail[1]].reason == "severity"
    assert by[tail[0]].anomaly and by[tail[0]].reason == "score"  # one sampled line: never established
    assert score_summary(scorer, summary) == (1103, sum(f.lines for f in forms if f.anomaly))
    assert scorer.misses == 5  # each distinct form through the model once
    exact = Summary(counts={common: 3})
    assert [(f.lines, f.masked) for f in score_summary_forms(scorer, exact)] == [(3, common)]
