"""A hostile or broken artifact is refused at load, quickly, with one line naming the file and
what is wrong: config.json fields (item 5), weights that do not fit the config or are not
finite, and masking rules that could backtrack catastrophically (item 6). Artifacts are
written with the usual umask-based file mode (not mkstemp's 0600)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import stat
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import ops.register.artifact
from ops.register.artifact import ArtifactError, read_artifact, write_artifact
from ops.mask.masking import Masker, load_rules, validate_rules
import ops.train.config
import ops.train.model
from ops.train.model import NuLog, NuLogConfig
from ops.validate.scoring import Scorer
from ops.train.loop import TrainConfig
from ops.train.vocab import Vocab
from resources.artifacts import LocalArtifactStorage

LINES = [("user <num> logged in from <ip>", 5), ("disk sda full", 2), ("session closed", 1)]
CFG = dict(d_model=32, n_heads=4, d_ff=32, max_len=16)


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging (pytest-timeout is not installed); regex matching checks signals."""
    def expired(signum, frame):
        raise TimeoutError(f"took more than {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture()
def parts():
    vocab = Vocab.build(LINES)
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=len(vocab), **CFG)).eval()
    return model, vocab


@pytest.fixture()
def good(parts, tmp_path) -> Path:
    model, vocab = parts
    return Path(write_artifact(tmp_path / "m.zip", model, vocab, load_rules(), model.cfg, {"top_k": 3},
                               {"batch": "b", "version": 1}, train_config=TrainConfig()))


@pytest.fixture()
def no_model_built(monkeypatch):
    """Refusing a bad artifact must not build (allocate) the model first."""
    def refuse(cfg):
        raise AssertionError(f"the model was built before its config was checked: {cfg}")

    monkeypatch.setattr(ops.train.model, "NuLog", refuse)  # where ops.register.artifact takes it from


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def rewrite(path: Path, **replace: bytes) -> Path:
    """The artifact with some members replaced (keyword: member name with '.' as '_')."""
    docs = members(path)
    docs.update({k.replace("_json", ".json").replace("_safetensors", ".safetensors"): v for k, v in replace.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in docs.items():
            z.writestr(n, data)
    path.write_bytes(buf.getvalue())
    return path


def with_model_config(path: Path, **changes) -> Path:
    config = json.loads(members(path)["config.json"])
    config["model"].update(changes)
    return rewrite(path, config_json=json.dumps(config).encode())


def with_weights(path: Path, change) -> Path:
    weights = st_load(members(path)["model.safetensors"])
    change(weights)
    return rewrite(path, model_safetensors=st_save(weights))


def refused(path: Path, *words: str, seconds: float = 2.0) -> str:
    """read_artifact raises ArtifactError quickly, in one line naming the file and `words`."""
    start = time.perf_counter()
    with pytest.raises(ArtifactError) as e:
        read_artifact(path)
    elapsed = time.perf_counter() - start
    message = str(e.value)
    assert elapsed < seconds, f"refusing took {elapsed:.1f}s"
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


# ---- item 5: config.json is validated before anything is allocated --------------------------

BAD_CONFIGS = [
    ({"n_heads": 3}, "n_heads"),              # 32 is not divisible by 3
    ({"n_heads": 0}, "n_heads"),
    ({"n_heads": -4}, "n_heads"),
    ({"n_heads": True}, "n_heads"),           # a bool is not an int here
    ({"d_model": 2**31}, "d_model"),          # would allocate terabytes
    ({"d_model": -8}, "d_model"),
    ({"d_model": "256"}, "d_model"),
    ({"d_model": 32.0}, "d_model"),
    ({"d_model": None}, "d_model"),
    ({"d_model": 30}, "n_heads"),             # 30 is not divisible by the 4 heads
    ({"d_model": 33, "n_heads": 3}, "d_model"),   # sinusoidal positions need an even d_model
    ({"d_ff": 0}, "d_ff"),
    ({"d_ff": 2**40}, "d_ff"),
    ({"n_layers": 0}, "n_layers"),
    ({"n_layers": 10**6}, "n_layers"),
    ({"max_len": 1}, "max_len"),
    ({"max_len": 2**40}, "max_len"),
    ({"dropout": 1.5}, "dropout"),
    ({"dropout": float("nan")}, "dropout"),   # json writes and reads NaN
    ({"dropout": "0.1"}, "dropout"),
    ({"vocab_size": 99}, "vocab_size"),       # does not match vocab.json
    ({"vocab_size": -1}, "vocab_size"),
    ({"vocab_size": "13"}, "vocab_size"),
    ({"d_model": 16384, "n_heads": 1, "d_ff": 65536}, "parameters"),  # each field sane, the total is not
]


@pytest.mark.parametrize("changes,field", BAD_CONFIGS, ids=[json.dumps(c) for c, _ in BAD_CONFIGS])
def test_bad_model_config_is_refused_in_one_line_naming_file_and_field(good, no_model_built, changes, field):
    message = refused(with_model_config(good, **changes), "config.json", field)
    assert "Traceback" not in message


def test_config_without_a_model_mapping_is_refused(good, no_model_built):
    config = json.loads(members(good)["config.json"])
    refused(rewrite(good, config_json=b'{"model": [1, 2]}'), "config.json", "model")
    refused(rewrite(good, config_json=b'{"format": 1}'), "config.json", "model")
    del config["model"]["vocab_size"]
    refused(rewrite(good, config_json=json.dumps(config).encode()), "config.json", "vocab_size")


def test_unknown_config_fields_are_still_ignored(good):
    art = read_artifact(with_model_config(good, future_field=7))
    assert art.model_config == NuLogConfig(vocab_size=len(art.vocab), **CFG)


def test_a_valid_config_of_another_shape_loads(tmp_path):
    vocab = Vocab.build(LINES)
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=48, n_heads=3, d_ff=16, n_layers=2, max_len=8,
                              dropout=0.0)).eval()
    path = write_artifact(tmp_path / "x.zip", model, vocab, load_rules(), model.cfg)
    assert read_artifact(path).model_config == model.cfg


# ---- weights: shapes, dtypes, names and finiteness checked before load_state_dict -------------

def test_weights_of_another_shape_are_refused_naming_the_tensor(good, no_model_built):
    # the config says d_ff 64, the weights were trained with 32
    refused(with_model_config(good, d_ff=64), "model.safetensors", "blocks.0.ff.fc.weight", "shape")


def test_weights_of_another_dtype_are_refused(good, no_model_built):
    def to_double(w):
        w["head.weight"] = w["head.weight"].double()
    refused(with_weights(good, to_double), "model.safetensors", "head.weight", "float64")


def test_missing_and_unexpected_tensors_are_refused(good, tmp_path, no_model_built):
    other = tmp_path / "other.zip"
    other.write_bytes(good.read_bytes())
    refused(with_weights(good, lambda w: w.pop("ln_f.bias")), "model.safetensors", "ln_f.bias", "missing")
    refused(with_weights(other, lambda w: w.__setitem__("extra.weight", torch.zeros(2))), "model.safetensors",
            "extra.weight", "unexpected")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(good, no_model_built, bad):
    def poison(w):
        w["head.bias"][1] = bad
    refused(with_weights(good, poison), "model.safetensors", "head.bias", "non-finite")


def test_nonfinite_parameters_names_the_poisoned_parameters(parts):
    model, _ = parts
    assert ops.train.model.nonfinite_parameters(model) == []
    with torch.no_grad():
        model.head.bias[0] = float("nan")
        model.blocks[0].ff.fc.weight[0, 0] = float("inf")
    assert ops.train.model.nonfinite_parameters(model) == ["blocks.0.ff.fc.weight", "head.bias"]


# ---- item 6: masking rules are checked at load, and every error names the artifact ------------

EVIL = {"name": "evil", "pattern": "(a+)+$", "replacement": "<evil>"}


def test_catastrophic_rule_in_an_artifact_is_refused_at_load_naming_file_and_rule(good):
    path = rewrite(good, masking_rules_json=json.dumps(load_rules() + [EVIL]).encode())
    with time_limit(20):
        refused(path, "masking_rules.json", "'evil'", "backtrack", "catastrophic")


def test_scoring_with_an_artifact_holding_a_catastrophic_rule_cannot_hang(good):
    path = rewrite(good, masking_rules_json=json.dumps(load_rules() + [EVIL]).encode())
    with time_limit(20), pytest.raises(ArtifactError, match="evil"):
        Scorer.from_path(path).score(["a" * 40 + "!"])  # before the fix: hung in re.sub, 2**40 ways to try


def test_bad_regex_in_an_artifact_names_the_file_and_rule(good):
    bad = {"name": "broken", "pattern": "(", "replacement": "<x>"}
    path = rewrite(good, masking_rules_json=json.dumps([bad]).encode())
    refused(path, "masking_rules.json", "'broken'", "bad regex")
    refused(rewrite(good, masking_rules_json=b'{"not": "a list"}'), "masking_rules.json", "list")


def test_an_artifact_is_not_written_with_rules_it_could_not_be_read_with(parts, tmp_path):
    model, vocab = parts
    with pytest.raises(ValueError, match="'evil'.*backtrack"):
        write_artifact(tmp_path / "x.zip", model, vocab, load_rules() + [EVIL], model.cfg)
    assert not list(tmp_path.iterdir())


CATASTROPHIC = [
    "(a+)+$",
    "(a*)*b",
    "(?:a+)*x",
    "(a|a)+$",
    "(a|aa)+$",
    "(a|ab|b)*c",
    r"(\w+\s?)+$",
    r"(?:\d+\.?)+x",
    r"(?:[a-z0-9]+[a-z0-9\-]*)+!",
    r"^(\w+|\d+)+$",
    "(?:a|a){1,50}x",                       # bounded repeats too, when they allow many iterations
    "(?:a{1,3}){1,20}x",
    "((?:a|ab|b){1,10}){1,10}c",            # ... counting the enclosing repeats
    r"(?:a*\w*?){3}!",                       # a few iterations of a body as long as the line: n**6
    "(?:x(?:a|a))+y",
    "(a?a?)+b",
    r"(.*,)*z",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_patterns_are_rejected_quickly(pattern):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"masking rule #1 'x': .*backtrack"):
        validate_rules([{"name": "x", "pattern": pattern, "replacement": "<x>"}])
    assert time.perf_counter() - start < 0.5


SAFE = [
    r"(?:\.[a-z0-9\-]+)*",                                  # the email rule's domain labels
    r"(?:/+[\w.@+~%\-]+)+/*",                               # the path rule
    r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s))+",             # the duration rule
    r"-?\d+(?:\.\d+)*",                                      # the num rule
    r"(?:[0-9a-f]{2}:)+[0-9a-f]{2}",
    r"(?:ab|cd)+",
    r"(a++)+x",                                              # possessive: no backtracking to share out
    r"(?>a+)+x",
    r"[\w\-]*?\d[\w\-]*",
    r"(?:(?:25[0-5]|2[0-4]\d|[01]?\d?\d)\.){3}",            # bounded, small: the ipv4 rule
    r"(a?)+b",                                               # re ends a loop on an empty iteration
    r"(?:(\w)\1)+",                                          # a backreference makes no choice
]


@pytest.mark.parametrize("pattern", SAFE)
def test_safe_nested_patterns_are_accepted(pattern):
    validate_rules([{"name": "x", "pattern": "z" + pattern, "replacement": "<x>"}])


def test_default_rules_still_load_and_mask():
    rules = load_rules()
    validate_rules(rules)
    assert Masker(rules).mask("took 150ms from 10.0.0.1") == "took <duration> from <ip>"


def test_rule_files_and_custom_rules_are_checked_naming_the_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("- name: evil\n  pattern: '(a+)+$'\n  replacement: '<evil>'\n", encoding="utf-8")
    with pytest.raises(ValueError, match="backtrack") as e:
        load_rules(path)
    assert str(path) in str(e.value) and "'evil'" in str(e.value)
    with pytest.raises(ValueError, match="masking rule #1 'evil'.*backtrack"):
        Masker([EVIL])


def test_the_check_runs_at_load_not_per_line(monkeypatch):
    import ops.mask.masking

    masker = Masker()
    monkeypatch.setattr(ops.mask.masking, "backtracking_risk", lambda *a, **k: pytest.fail("checked per line"))
    assert masker.mask("user 42 from 10.0.0.1 took 3ms") == "user <num> from <ip> took <duration>"


# ---- also: artifacts get the usual umask-based file mode --------------------------------------

@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_artifacts_get_the_umask_based_mode(parts, tmp_path, mask):
    model, vocab = parts
    with umask(mask):
        direct = write_artifact(tmp_path / "direct.zip", model, vocab, load_rules(), model.cfg)
        storage = LocalArtifactStorage(root=str(tmp_path / "store"))
        with storage.writing("runs/b/candidate.zip") as tmp:  # how the nulog_model asset writes it
            write_artifact(tmp, model, vocab, load_rules(), model.cfg)
        with storage.writing("samples/b.parquet") as tmp:     # a writer that opens the temp path itself
            Path(tmp).write_bytes(b"x")
    want = 0o666 & ~mask
    for path in (Path(direct), tmp_path / "store/runs/b/candidate.zip", tmp_path / "store/samples/b.parquet"):
        assert stat.S_IMODE(path.stat().st_mode) == want, f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}"
    leftovers = [p for p in tmp_path.rglob(".tmp-*")]
    assert not leftovers


def test_storage_writing_removes_its_temp_file_on_failure(tmp_path):
    storage = LocalArtifactStorage(root=str(tmp_path))
    with pytest.raises(RuntimeError):
        with storage.writing("a/b.zip") as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("boom")
    assert not list((tmp_path / "a").iterdir())


# ---- decompression bombs: every declared size is checked, by kind, before a member is read ----

def bombed(path: Path, member: str, chunks, keep=()) -> Path:
    """The artifact with `member` replaced by the bytes `chunks` yields, streamed into the zip
    (deflated, so a gigabyte of padding takes a megabyte); `keep` adds extra entries."""
    docs = members(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in docs.items():
            if name == member:
                with z.open(name, "w", force_zip64=True) as out:
                    for chunk in chunks:
                        out.write(chunk)
            else:
                z.writestr(name, data)
        for name, data in keep:
            z.writestr(name, data)
    return path


class ReadGuard:
    """Once armed, only the members in `allowed` may be opened (decompressed)."""

    def __init__(self):
        self.allowed: set[str] = set()
        self.armed = False

    def arm(self, *allowed: str) -> None:
        self.allowed.update(allowed)
        self.armed = True


@pytest.fixture()
def nothing_read(monkeypatch):
    guard = ReadGuard()
    real_open = zipfile.ZipFile.open

    def guarded(self, name, *args, **kwargs):
        member = name.filename if isinstance(name, zipfile.ZipInfo) else name
        assert not guard.armed or member in guard.allowed, f"{member} was read before it was refused"
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", guarded)
    return guard


def padded_json(doc: dict, mb: int):
    """Valid JSON of `mb` MB: the document after that much whitespace."""
    block = b" " * (1 << 20)
    for _ in range(mb):
        yield block
    yield json.dumps(doc).encode()


@pytest.mark.parametrize("member", ["meta.json", "metrics.json", "masking_rules.json", "config.json"])
def test_a_json_member_inflating_past_its_cap_is_refused_before_anything_is_read(good, nothing_read, member):
    # before: each JSON member could inflate to the weights' cap (1 GiB), so five of them took 6.5 GB
    path = bombed(good, member, padded_json({}, 17))  # 17 MB: over every JSON member's cap
    nothing_read.arm()
    refused(path, member, "too large")


def test_a_vocabulary_larger_than_the_config_says_is_refused_fast_and_unread(good, parts, nothing_read):
    # 2 million tokens (about 20 MB of JSON) behind a config.json of 15 tokens: refused from the zip's
    # directory and config.json alone (before: parsed first; 5 million took 10 s and 1.1 GB, see
    # benchmarks/artifact_bombs.py)
    def vocab(n=2_000_000, per=100_000):
        yield b'{"counts": {}, "itos": ["<pad>", "<cls>", "<mask>", "<unk>"'
        for start in range(0, n, per):
            yield b"".join(b', "t%d"' % i for i in range(start, start + per))
        yield b"]}"

    path = bombed(good, "vocab.json", vocab())
    nothing_read.arm("config.json")
    message = refused(path, "vocab.json", "too large", f"vocab_size {len(parts[1])}", seconds=1.0)
    assert "inflated" in message


def test_weights_larger_than_the_config_shapes_need_are_refused_unread(good, nothing_read):
    need = 4 * sum(math.prod(s) for s in ops.train.config.state_dict_shapes(read_artifact(good).model_config).values())
    path = bombed(good, "model.safetensors", iter([b"\0" * (need + (2 << 20))]))
    nothing_read.arm("config.json")
    refused(path, "model.safetensors", "too large", "config.json's shapes")


def test_too_many_entries_or_too_much_in_total_is_refused_before_reading(good, tmp_path, monkeypatch, nothing_read):
    many = [(f"extra/{i}.txt", b"x") for i in range(100)]
    other = tmp_path / "total.zip"
    other.write_bytes(good.read_bytes())
    path = bombed(good, "meta.json", iter([b"{}"]), keep=many)
    nothing_read.arm()
    refused(path, "entries")
    # extra entries are never read, but they count towards the total
    monkeypatch.setattr(ops.register.artifact, "MAX_TOTAL_BYTES", 8 << 20, raising=False)
    nothing_read.armed = False
    path = bombed(other, "meta.json", iter([b"{}"]), keep=[("notes.bin", b"\0" * (9 << 20))])
    nothing_read.arm()
    refused(path, "inflate", "together")


def test_an_artifact_file_over_the_total_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.zip"
    with open(path, "wb") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse: no disk used
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("the file was read"))
    refused(path, "too large")
