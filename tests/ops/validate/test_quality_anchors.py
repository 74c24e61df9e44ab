"""The anchors of benchmarks/quality.py (Drain3 grouping, BGL baselines) on tiny inputs with known answers.

Drain3 comes with the `bench` extra; without it these tests fail (they never skip).
"""

from __future__ import annotations

import csv
import json
import sys

import pytest

from benchmarks.quality import (BENCH_EXTRA_HINT, anchors, bgl_baselines, drain3_miner, drain3_novelty_flags,
                                drain3_system, drain3_templates, keyword_flags, level_flags, main, require_drain3)

try:
    import drain3
except ImportError:
    drain3 = None


def test_drain3_installed():
    if drain3 is None:
        pytest.fail(BENCH_EXTRA_HINT)


LOGIN = ["user alice logged in from 10.0.0.1", "user bob logged in from 10.0.0.2"]
CLOSED = ["connection closed by 10.0.0.1", "connection closed by 10.0.0.3"]
DISK = ["disk full on sda1"]


def write_system(folder, name, contents, templates):
    (folder / name).mkdir(parents=True)
    with open(folder / name / f"{name}_2k.log_structured_corrected.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["LineId", "Content", "EventId", "EventTemplate"])
        for i, (c, t) in enumerate(zip(contents, templates), 1):
            w.writerow([i, c, "E", t])


def test_drain3_line_template_is_its_clusters_final_template():
    templates = drain3_templates(LOGIN + CLOSED + DISK)
    # the first line was added alone (its template then was the line itself); it gets the final one
    assert templates[0] == templates[1] == "user <*> logged in from <*>"
    assert templates[2] == templates[3] == "connection closed by <*>"
    assert templates[4] == "disk full on sda1"  # alone in its cluster: the line itself


def test_drain3_grouping_accuracy_known_answer(tmp_path):
    lines = LOGIN + CLOSED + DISK
    write_system(tmp_path, "Ok", lines, ["login <*>"] * 2 + ["closed <*>"] * 2 + ["disk <*>"])
    ok = drain3_system(tmp_path, "Ok")
    assert (ok["grouping_accuracy"], ok["templates"], ok["lines"]) == (1.0, 3, 5)
    # truth splits the login lines into two events: Drain3 merges them, so both are wrong -> 3/5
    write_system(tmp_path, "Split", lines, ["alice <*>", "bob <*>"] + ["closed <*>"] * 2 + ["disk <*>"])
    assert drain3_system(tmp_path, "Split")["grouping_accuracy"] == 0.6


def test_drain3_ini_in_the_working_directory_is_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "drain3.ini").write_text('[MASKING]\nmasking = [{"regex_pattern": ".+", "mask_with": "ALL"}]\n')
    from drain3 import TemplateMiner
    assert TemplateMiner().add_log_message(DISK[0])["template_mined"] == "<ALL>"  # the file would be read ...
    assert drain3_templates(DISK) == ["disk full on sda1"]  # ... but the anchor builds its config itself
    assert drain3_miner().config.masking_instructions == []


def test_drain3_novelty_matches_without_adding():
    train = ["connection from 10.0.0.1 closed", "connection from 10.0.0.2 closed"]
    test = ["connection from 10.9.9.9 closed", "disk sda failed", "disk sda failed"]
    assert drain3_novelty_flags(train, test) == [False, True, True]  # the novel line was not learned


def bgl_line(label, level, content, component="KERNEL"):
    return (f"{label} 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 "
            f"R02-M1-N0-C:J12-U11 RAS {component} {level} {content}")


def message(line):
    return line.partition(" ")[2]


def test_level_field():
    msgs = [message(bgl_line("-", lvl, "x")) for lvl in ("FATAL", "ERROR", "SEVERE", "FAILURE", "INFO", "WARNING")]
    assert level_flags(msgs) == [True] * 4 + [False] * 2
    assert level_flags([message(bgl_line("-", "INFO", "FATAL ERROR in content")), "short FATAL line"]) == [False] * 2


def test_keyword_any_case_substring():
    assert keyword_flags(["Kernel PANIC", "3 ddr errors", "failed", "Exception:", "interrupts", "ok", "FAtal"]) == \
        [True, True, True, True, True, False, True]


def test_bgl_baselines_known_prf(tmp_path):
    train = [bgl_line("-", "INFO", "instruction cache parity error corrected"),
             bgl_line("-", "INFO", "generating core.2275")]
    test = [bgl_line("KERNDTLB", "FATAL", "data TLB error interrupt"),            # a: anomaly
            bgl_line("-", "INFO", "instruction cache parity error corrected"),   # b: normal, seen in training
            bgl_line("-", "FATAL", "ciod: failed to read message prefix", "APP"),  # c: normal
            bgl_line("APPSEV", "ERROR", "ciod: something went wrong", "APP"),    # d: anomaly
            bgl_line("KERNMNTF", "INFO", "Lustre mount went away"),              # e: anomaly
            bgl_line("-", "INFO", "total of 12 ddr errors detected")]            # f: normal
    path = tmp_path / "BGL_2k.log"
    path.write_text("\n".join(train + test) + "\n")
    got = bgl_baselines(path, n_train=2)
    # keyword flags a b c d f: TP a d, FP b c f, FN e
    assert got["keyword"]["flagged"] == 5
    assert (got["keyword"]["precision"], got["keyword"]["recall"], got["keyword"]["f1"]) == (0.4, 0.6667, 0.5)
    # level flags a c d: TP a d, FP c, FN e
    assert got["level"]["flagged"] == 3
    assert (got["level"]["precision"], got["level"]["recall"], got["level"]["f1"]) == (0.6667, 0.6667, 0.6667)
    # novelty flags everything but b (other token counts than training): TP a d e, FP c f
    nov = got["drain3_novelty"]
    assert (nov["flagged"], nov["precision"], nov["recall"], nov["f1"]) == (5, 0.6, 1.0, 0.75)


def test_quality_json_has_anchors_and_no_anchors_skips_them(tmp_path, capsys):
    write_system(tmp_path, "Tiny", LOGIN + CLOSED + DISK, ["login <*>"] * 2 + ["closed <*>"] * 2 + ["disk <*>"])
    assert main(["--data", str(tmp_path), "--epochs", "1", "--json"]) == 0
    with_anchors = json.loads(capsys.readouterr().out)
    assert with_anchors["anchors"]["drain3"]["systems"]["Tiny"]["grouping_accuracy"] == 1.0
    assert "bgl_baselines" not in with_anchors["anchors"]  # no BGL in this folder
    assert main(["--data", str(tmp_path), "--epochs", "1", "--json", "--no-anchors"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert "anchors" not in without
    assert without["systems"]["Tiny"]["grouping_accuracy"] == with_anchors["systems"]["Tiny"]["grouping_accuracy"]


def test_missing_drain3_says_install_the_bench_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "drain3", None)  # import drain3 -> ImportError
    with pytest.raises(RuntimeError, match="bench extra"):
        require_drain3()
    assert main(["--data", str(tmp_path), "--json"]) == 2
    assert "bench extra" in capsys.readouterr().err


def test_apache_drain3_default_grouping_accuracy(loghub):
    # BENCHMARKS.md: Drain3 with its default configuration groups Apache perfectly
    got = anchors(loghub, ["Apache"], None)
    assert got["drain3"]["systems"]["Apache"]["lines"] == 2000
    assert got["drain3"]["systems"]["Apache"]["grouping_accuracy"] == 1.0
