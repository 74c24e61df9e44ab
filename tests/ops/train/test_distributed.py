"""DDP training: 2 gloo processes on CPU give the single-process run's weights and losses."""

import pytest
import torch

from ops.train.model import NuLogConfig
from ops.train.ddp import shard
from ops.train.batches import encode, plan_batches
from ops.train.loop import TrainConfig, resolve_world_size, train
from ops.train.vocab import Vocab
from tests.ops.train.test_train import synthetic_lines

TINY = dict(d_model=32, n_heads=4, d_ff=32, dropout=0.0)


@pytest.fixture(scope="module")
def data():
    lines = synthetic_lines(n=300, seed=5)
    return lines, Vocab.build(lines)


def tiny(vocab):
    return NuLogConfig(vocab_size=len(vocab), **TINY)


def assert_same_weights(a, b, atol=1e-5):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        scale = max(1.0, float(y.abs().max()))
        torch.testing.assert_close(x, y, atol=atol * scale, rtol=1e-4, msg=name)


def test_shards_partition_every_batch(data):
    lines, vocab = data
    d = encode(vocab, lines, 64)
    for cfg in (TrainConfig(batch_size=48), TrainConfig(batch_size=7, factored=False)):
        for line, pos in plan_batches(d, cfg, 0):
            for ws in (2, 3):
                parts = [shard(line, pos, r, ws) for r in range(ws)]
                real = [(l, p) for l, p, ok in parts if ok]
                assert torch.equal(torch.cat([l for l, _ in real]), line)
                if pos is not None:
                    assert torch.equal(torch.cat([p for _, p in real]), pos)
                assert all(len(l) == 1 for l, _, ok in parts if not ok)
    one = torch.tensor([4])
    assert [ok for _, _, ok in (shard(one, None, r, 2) for r in range(2))] == [True, False]


def test_world_size_resolution():
    cpu = torch.device("cpu")
    assert resolve_world_size(TrainConfig(), cpu) == 1
    assert resolve_world_size(TrainConfig(world_size="auto"), cpu) == 1
    assert resolve_world_size(TrainConfig(world_size=0), cpu) == 1
    assert resolve_world_size(TrainConfig(world_size=2), cpu) == 2
    with pytest.raises(ValueError):
        resolve_world_size(TrainConfig(world_size=-1), cpu)


def test_two_gloo_ranks_equal_one_process(data, tmp_path):
    """Same global batches, same updates: weights and per-epoch losses match the single process.

    Batch size 24 gives a batch of a single line too, so empty shards (a rank running a
    zero-weight dummy line) are exercised as well. Also: progress is relayed from rank 0 and
    rank 0's checkpoint resumes a single-process run.
    """
    lines, vocab = data
    cfg = dict(epochs=2, batch_size=24, spread=0.0, seed=4, device="cpu", log_every=4)
    single = train(lines, vocab, TrainConfig(**cfg), model_config=tiny(vocab))
    calls = []
    ck = tmp_path / "ck.pt"
    ddp = train(lines, vocab, TrainConfig(**cfg, world_size=2), model_config=tiny(vocab),
                progress=calls.append, checkpoint_path=str(ck))

    d = encode(vocab, lines, 64)
    assert any(len(b) < 2 for b, _ in plan_batches(d, TrainConfig(**cfg), 0))  # empty shards happen
    assert ddp.extra["world_size"] == 2 and ddp.extra["backend"] == "gloo" and ddp.device == "cpu"
    assert ddp.steps == single.steps and ddp.epochs_run == 2 and ddp.resumed_from == 0
    assert ddp.losses == pytest.approx(single.losses, rel=1e-5)
    assert ddp.losses[-1] < ddp.losses[0]
    assert ddp.logs_per_s > 0 and ddp.rows_per_s > ddp.logs_per_s
    assert not ddp.model.training
    assert_same_weights(ddp.model, single.model)

    # Progress came back from rank 0: mid-epoch and epoch-end reports, global figures.
    assert [c["epoch"] for c in calls if c["step"] == c["steps"]] == [1, 2]
    assert len(calls) > 2 and calls[-1]["loss"] == pytest.approx(ddp.losses[-1])

    # Rank 0's checkpoint is the usual one: a single-process run with 2 epochs finds it done.
    saved = torch.load(ck, weights_only=True)
    assert saved["epoch"] == 2 and saved["losses"] == ddp.losses
    assert not any(k.startswith("module.") for k in saved["model"])
    resumed = train(lines, vocab, TrainConfig(**cfg), model_config=tiny(vocab), checkpoint_path=str(ck))
    assert resumed.resumed_from == 2 and resumed.epochs_run == 0 and resumed.losses == ddp.losses
    assert_same_weights(resumed.model, ddp.model, atol=0)
    assert not list(tmp_path.glob("*.tmp*"))
