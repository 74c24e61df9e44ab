"""The model artifact round-trips exactly and refuses broken files with a clear reason."""

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from ops.register.artifact import (MEMBERS, ArtifactError, artifact_bytes, load_artifact_bytes, read_artifact,
                                   restamp_artifact, write_artifact)
from ops.train.model import NuLog, NuLogConfig
from ops.train.loop import TrainConfig
from ops.train.vocab import PAD, Vocab

LINES = [("user <num> logged in from <ip>", 5), ("disk sda full", 2), ("session closed", 1)]
RULES = [{"name": "num", "pattern": "\\d+", "replacement": "<num>"}]  # read_artifact validates the rules


@pytest.fixture()
def parts():
    vocab = Vocab.build(LINES)
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=32, n_heads=4, d_ff=32)).eval()
    return model, vocab


def write(tmp_path, model, vocab, name="m.zip"):
    return Path(write_artifact(tmp_path / name, model, vocab, RULES, model.cfg, {"top_k_accuracy": 0.9},
                          {"batch": "b", "version": 3, "parent": None}, train_config=TrainConfig()))


def rewrite(path, drop=None, replace=None):
    """Copy of the artifact with one member dropped or replaced."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members.pop(drop, None)
    members.update(replace or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    path.write_bytes(buf.getvalue())
    return path


def test_round_trip_gives_same_logits(parts, tmp_path):
    model, vocab = parts
    path = write(tmp_path, model, vocab)
    art = read_artifact(path)
    ids = torch.tensor([[1] + vocab.encode("user <num> logged in from <ip>", 64)])
    torch.testing.assert_close(art.model(ids, ids == PAD), model(ids, ids == PAD), rtol=0, atol=0)
    assert art.vocab == vocab and art.vocab.counts == vocab.counts
    assert art.masking_rules == RULES
    assert art.metrics == {"top_k_accuracy": 0.9}
    assert art.meta == {"batch": "b", "version": 3, "parent": None}
    assert art.config["model"]["vocab_size"] == len(vocab) and art.config["train"]["lr"] == 1e-3
    assert art.model_config == model.cfg
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(MEMBERS)
    assert not [p for p in tmp_path.iterdir() if p.name != "m.zip"]  # no temp files left behind


def test_bytes_are_reproducible_and_loadable(parts):
    model, vocab = parts
    a = artifact_bytes(model, vocab, RULES, model.cfg, {}, {"v": 1})
    assert a == artifact_bytes(model, vocab, RULES, model.cfg, {}, {"v": 1})
    assert load_artifact_bytes(a).meta == {"v": 1}


def test_a_restamped_artifact_is_what_write_artifact_writes_for_the_new_documents(parts, tmp_path):
    model, vocab = parts
    src = write(tmp_path, model, vocab)
    new_metrics, new_meta = {"top_k_accuracy": 0.95, "gate": "passed"}, {"batch": "b", "version": 4, "parent": 3}
    restamped = Path(restamp_artifact(src, tmp_path / "v4.zip", metrics=new_metrics, meta=new_meta))
    expected = write_artifact(tmp_path / "expected.zip", model, vocab, RULES, model.cfg, new_metrics, new_meta,
                              train_config=TrainConfig())
    assert restamped.read_bytes() == Path(expected).read_bytes()
    art = read_artifact(restamped)
    assert (art.metrics, art.meta) == (new_metrics, new_meta)
    assert read_artifact(src).meta == {"batch": "b", "version": 3, "parent": None}  # the source is untouched


def test_restamping_a_broken_artifact_names_the_file_and_writes_nothing(parts, tmp_path):
    model, vocab = parts
    missing = rewrite(write(tmp_path, model, vocab, "missing.zip"), drop="vocab.json")
    with pytest.raises(ArtifactError, match=r"missing\.zip: missing member\(s\) vocab\.json"):
        restamp_artifact(missing, tmp_path / "out.zip", {}, {})
    truncated = write(tmp_path, model, vocab, "truncated.zip")
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(ArtifactError, match="truncated.zip"):
        restamp_artifact(truncated, tmp_path / "out.zip", {}, {})
    with pytest.raises(ArtifactError, match="file not found"):
        restamp_artifact(tmp_path / "nowhere.zip", tmp_path / "out.zip", {}, {})
    assert not (tmp_path / "out.zip").exists()


def test_overwrite_is_atomic_replacement(parts, tmp_path, monkeypatch):
    """An overwrite replaces the file whole (a new inode renamed over the old one, never the old
    file rewritten in place), and a write that crashes before it is done leaves the old artifact
    intact and no partial file behind."""
    import types

    import ops.register.artifact as artifact_module

    model, vocab = parts
    path = write(tmp_path, model, vocab)
    old_bias = model.head.bias.detach().clone()
    old_inode = path.stat().st_ino
    with torch.no_grad():
        model.head.bias.add_(1.0)
    write(tmp_path, model, vocab)
    torch.testing.assert_close(read_artifact(path).model.head.bias, model.head.bias)
    assert path.stat().st_ino != old_inode  # replaced, not rewritten in place

    def crash(fd):
        raise OSError("disk full")  # the bytes are written, not yet durable

    with torch.no_grad():
        model.head.bias.add_(1.0)
    monkeypatch.setattr(artifact_module, "os", types.SimpleNamespace(**{**vars(os), "fsync": crash}))
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, model, vocab)
    torch.testing.assert_close(read_artifact(path).model.head.bias, old_bias + 1.0)  # the previous write, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip"]  # no partial or temporary file left


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found") as e:
        read_artifact(tmp_path / "nope.zip")
    assert "nope.zip" in str(e.value)


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"this is not a zip")
    with pytest.raises(ArtifactError, match="not a zip"):
        read_artifact(p)


@pytest.mark.parametrize("member", MEMBERS)
def test_missing_member(parts, tmp_path, member):
    model, vocab = parts
    path = rewrite(write(tmp_path, model, vocab), drop=member)
    with pytest.raises(ArtifactError, match=f"missing member.*{member}"):
        read_artifact(path)


def test_corrupt_weights(parts, tmp_path):
    model, vocab = parts
    path = rewrite(write(tmp_path, model, vocab), replace={"model.safetensors": b"\x00garbage" * 10})
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        read_artifact(path)


def test_corrupt_json(parts, tmp_path):
    model, vocab = parts
    path = rewrite(write(tmp_path, model, vocab), replace={"vocab.json": b"{oops"})
    with pytest.raises(ArtifactError, match="vocab.json is not valid JSON"):
        read_artifact(path)


def test_vocabulary_mismatch(parts, tmp_path):
    model, vocab = parts
    bigger = Vocab.build(LINES + [("brand new tokens", 1)])
    path = rewrite(write(tmp_path, model, vocab), replace={"vocab.json": json.dumps(bigger.to_json()).encode()})
    with pytest.raises(ArtifactError, match="vocabulary mismatch"):
        read_artifact(path)
    with pytest.raises(ValueError, match="vocabulary"):
        write_artifact(tmp_path / "y.zip", model, bigger, RULES, model.cfg, {}, {})
    assert not (tmp_path / "y.zip").exists()


def test_truncated_file(parts, tmp_path):
    model, vocab = parts
    path = write(tmp_path, model, vocab)
    path.write_bytes(path.read_bytes()[: 2000])
    with pytest.raises(ArtifactError):
        read_artifact(path)


def test_multiline_rules_travel_with_the_model_and_older_artifacts_load_without_them(parts, tmp_path):
    from ops.fetch.multiline import load_multiline

    model, vocab = parts
    rules = load_multiline(["java"], max_lines=50)
    path = write_artifact(tmp_path / "m.zip", model, vocab, RULES, multiline_rules=rules)
    assert read_artifact(path).multiline_rules == rules
    older = rewrite(Path(path), drop="multiline_rules.json")
    assert read_artifact(older).multiline_rules is None  # trained before lines were joined
    broken = dict(rules, parsers={"java": {"rules": [{"state": "start_state", "regex": "(", "next": "x"}]}})
    bad = rewrite(Path(path), replace={"multiline_rules.json": json.dumps(broken).encode()})
    with pytest.raises(ArtifactError, match="multiline_rules.json: parser 'java' rule #1: regex does not compile"):
        read_artifact(bad)
    with pytest.raises(ValueError, match="max_lines"):
        write_artifact(tmp_path / "n.zip", model, vocab, RULES, multiline_rules=dict(rules, max_lines=0))
