"""Training: the fast path optimises NuLog's objective, resumes exactly, and learns real logs."""

import csv
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from ops.validate.evaluate import evaluate, score_lines, topk_hits
from ops.train.model import NuLog, NuLogConfig
from ops.train.batches import batch_loss, encode, plan_batches
from ops.train.loop import TrainConfig, adam, loss_on, train
from ops.train.vocab import Vocab

ROOT = Path(__file__).resolve().parents[3]

SMALL = NuLogConfig(vocab_size=0, d_model=64, n_heads=4, d_ff=64)
BASELINE = dict(dedup=False, pad_to_max=True, factored=False)


def synthetic_lines(n=600, seed=0) -> list[tuple[str, int]]:
    """Masked-looking lines from a few templates, repeated unevenly like real logs."""
    rng = random.Random(seed)
    templates = [
        "user {u} logged in from <ip> port <num>",
        "session opened for user {u} by <num>",
        "disk {d} usage <num> percent on {h}",
        "receiving block <blk> src <ip> dest <ip>",
        "packetresponder <num> for block <blk> {s}",
        "connection from <ip> closed by {h} after <num> seconds with code <num>",
        "{s}",
    ]
    words = dict(u=["alice", "bob", "carol", "dave", "erin"], d=["sda", "sdb", "sdc"],
                 h=["node1", "node2", "node3", "node4"], s=["terminating", "interrupted"])
    weights = [30, 10, 8, 5, 3, 2, 1]
    lines = [rng.choices(templates, weights)[0].format(**{k: rng.choice(v) for k, v in words.items()})
             for _ in range(n)]
    return list(Counter(lines).items())


def small(vocab):
    return NuLogConfig(**{**SMALL.__dict__, "vocab_size": len(vocab)})


@pytest.fixture(scope="module")
def data():
    lines = synthetic_lines()
    return lines, Vocab.build(lines)


def test_training_lowers_the_loss(data):
    lines, vocab = data
    res = train(lines, vocab, TrainConfig(epochs=4, batch_size=32), model_config=small(vocab))
    assert res.losses[-1] < 0.5 * res.losses[0]
    assert res.n_lines == 600 and res.n_distinct == len(lines) and res.epochs_run == 4
    assert res.logs_per_s > 0 and res.rows_per_s > res.logs_per_s


def test_dedup_objective_equals_plain_objective(data):
    """Same weights, same loss: the weighted distinct lines are the repeated lines."""
    lines, vocab = data
    torch.manual_seed(1)
    model = NuLog(small(vocab))
    fast = loss_on(model, vocab, lines, TrainConfig(batch_size=64))
    plain = loss_on(model, vocab, lines, TrainConfig(batch_size=32, **BASELINE))
    rows = loss_on(model, vocab, lines, TrainConfig(batch_size=50, factored=False))
    assert fast == pytest.approx(plain, rel=1e-5) and rows == pytest.approx(plain, rel=1e-5)


def test_dedup_gradient_equals_plain_gradient(data):
    """Over an epoch, the mean batch gradient is the gradient of the un-deduplicated mean loss."""
    lines, vocab = data
    torch.manual_seed(2)
    model = NuLog(NuLogConfig(**{**small(vocab).__dict__, "dropout": 0.0}))
    grads = []
    for cfg in (TrainConfig(batch_size=40), TrainConfig(batch_size=10**9, **BASELINE)):
        d = encode(vocab, lines, model.cfg.max_len, cfg.dedup)
        batches = plan_batches(d, cfg, 0)
        norm = float((d.weight * d.lengths).sum()) / len(batches)
        model.zero_grad()
        for line, pos in batches:
            ce, w, _ = batch_loss(model, d, line, pos, cfg.pad_to_max)
            ((ce * w).sum() / norm / len(batches)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert len(plan_batches(encode(vocab, lines, 64), TrainConfig(batch_size=40), 0)) > 5
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_batches_are_length_buckets_covering_every_row(data):
    lines, vocab = data
    d = encode(vocab, lines, 64)
    cfg = TrainConfig(batch_size=48)
    b0, b1 = plan_batches(d, cfg, 0), plan_batches(d, cfg, 1)
    assert sorted(torch.cat([b for b, _ in b0]).tolist()) == list(range(len(d.lengths)))
    assert [b.tolist() for b, _ in b0] != [b.tolist() for b, _ in b1]  # reshuffled per epoch
    spans = sorted((int(d.lengths[b].min()), int(d.lengths[b].max())) for b, _ in b0)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))  # buckets do not overlap


def test_frequent_lines_are_spread_over_batches(data):
    lines, vocab = data
    d = encode(vocab, lines, 64, spread=0.5)
    top = max(lines, key=lambda x: x[1])
    copies = (d.ids[:, 1:len(vocab.encode(top[0], 64)) + 1] == torch.tensor(vocab.encode(top[0], 64))).all(1)
    copies &= d.lengths == len(vocab.encode(top[0], 64))
    assert int(copies.sum()) == math.ceil(top[1] ** 0.5)
    assert float(d.weight[copies].sum()) == pytest.approx(top[1])
    batches = plan_batches(d, TrainConfig(batch_size=48, spread=0.5), 0)
    assert all(int(copies[b].sum()) <= 1 for b, _ in batches)


def test_seeded_runs_are_identical(data):
    lines, vocab = data
    cfg = TrainConfig(epochs=1, batch_size=64, seed=3)
    a = train(lines, vocab, cfg, model_config=small(vocab))
    b = train(lines, vocab, cfg, model_config=small(vocab))
    assert a.losses == b.losses
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_resume_continues_at_next_epoch(data, tmp_path):
    lines, vocab = data
    ck = tmp_path / "ck.pt"
    calls = []
    straight = train(lines, vocab, TrainConfig(epochs=2, batch_size=64), model_config=small(vocab))
    first = train(lines, vocab, TrainConfig(epochs=1, batch_size=64), model_config=small(vocab), checkpoint_path=str(ck))
    saved = torch.load(ck, weights_only=True)  # plain tensors and containers only
    assert saved["epoch"] == 1 and saved["losses"] == first.losses
    resumed = train(lines, vocab, TrainConfig(epochs=2, batch_size=64), model_config=small(vocab),
                    checkpoint_path=str(ck), progress=calls.append)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 1
    assert [c["epoch"] for c in calls] == [2]
    assert resumed.losses == straight.losses
    for x, y in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(x, y)
    assert not list(tmp_path.glob("*.tmp*"))
    # A checkpoint of another run (other seed) is not resumed.
    other = train(lines, vocab, TrainConfig(epochs=2, batch_size=64, seed=9), model_config=small(vocab),
                  checkpoint_path=str(ck))
    assert other.resumed_from == 0 and other.epochs_run == 2


def test_progress_reports_per_epoch_and_every_n_steps(data):
    lines, vocab = data
    calls = []
    train(lines, vocab, TrainConfig(epochs=2, batch_size=16, log_every=5), model_config=small(vocab),
          progress=calls.append)
    assert {"epoch", "loss", "samples_per_s", "rows_per_s", "step", "steps"} <= set(calls[0])
    assert [c["epoch"] for c in calls if c["step"] == c["steps"]] == [1, 2]
    assert len(calls) > 4


def test_fine_tune_starts_from_given_model(data):
    lines, vocab = data
    cfg = TrainConfig(epochs=2, batch_size=32)
    base = train(lines, vocab, cfg, model_config=small(vocab))
    tuned = train(lines, vocab, TrainConfig(epochs=1, batch_size=32, seed=1), model=base.model)
    assert tuned.model is base.model
    assert tuned.losses[0] < base.losses[0]
    with pytest.raises(ValueError, match="vocabulary"):
        train(lines, Vocab.build(lines[:2]), cfg, model=base.model)


def test_evaluate_trained_beats_untrained(data):
    lines, vocab = data
    torch.manual_seed(0)
    untrained = NuLog(small(vocab))
    trained = train(lines, vocab, TrainConfig(epochs=4, batch_size=32), model_config=small(vocab)).model
    before, after = evaluate(untrained, vocab, lines, top_k=2), evaluate(trained, vocab, lines, top_k=2)
    assert after["top_k_accuracy"] > before["top_k_accuracy"] + 0.3
    assert after["anomaly_share"] < before["anomaly_share"]
    assert after["n_lines"] == 600 and after["n_distinct"] == len(lines)
    assert 0 <= after["score_p01"] <= after["score_p05"] <= after["score_p50"] <= 1


def test_scores_and_hits_agree_and_keep_order(data):
    lines, vocab = data
    torch.manual_seed(0)
    model = NuLog(small(vocab))
    texts = [line for line, _ in lines] + ["", "never seen tokens here"]
    hits = topk_hits(model, vocab, texts, top_k=3, batch_size=7)
    scores = score_lines(model, vocab, texts, top_k=3, batch_size=7)
    assert [len(h) for h in hits] == [len(t.split()) for t in texts]
    assert scores == pytest.approx([sum(h) / len(h) if h else 1.0 for h in hits])
    assert scores[-2] == 1.0 and scores[-1] == 0.0  # no tokens; all OOV
    one_by_one = [score_lines(model, vocab, [t], top_k=3)[0] for t in texts[:5]]
    assert scores[:5] == pytest.approx(one_by_one)
    assert score_lines(model, vocab, texts[:3], top_k=len(vocab)) == [1.0, 1.0, 1.0]


def test_learns_real_hdfs_logs(loghub):
    from ops.mask.masking import Masker

    masker = Masker()
    with open(loghub / "HDFS" / "HDFS_2k.log_structured_corrected.csv", newline="") as f:
        content = [masker.mask(row["Content"]) for row in csv.DictReader(f)]
    cut = int(0.8 * len(content))
    tr, va = list(Counter(content[:cut]).items()), list(Counter(content[cut:]).items())
    vocab = Vocab.build(tr)
    res = train(tr, vocab, TrainConfig(epochs=3, batch_size=64))
    untrained = evaluate(NuLog(NuLogConfig(len(vocab))), vocab, va, top_k=5)
    got = evaluate(res.model, vocab, va, top_k=5)
    assert got["top_k_accuracy"] > HDFS_FLOOR, (got, untrained)
    assert got["top_k_accuracy"] > untrained["top_k_accuracy"]


# Measured 0.960 top-5 accuracy after 3 epochs (untrained: 0.115); the floor leaves room for seeds.
HDFS_FLOOR = 0.9


def test_fused_adam_makes_the_same_updates_as_the_per_tensor_loop():
    torch.manual_seed(0)
    fused_model = NuLog(NuLogConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=32))
    loop_model = NuLog(NuLogConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=32))
    loop_model.load_state_dict(fused_model.state_dict())
    start = [p.detach().clone() for p in fused_model.parameters()]
    cfg = TrainConfig()
    fused = adam(fused_model, cfg)
    loop = torch.optim.Adam(loop_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    assert fused.defaults["fused"] and (fused.defaults["lr"], fused.defaults["weight_decay"]) == (1e-3, 0.005)
    assert not isinstance(fused, torch.optim.Optimizer)  # see ops.train.adam
    for _ in range(30):
        for p, q in zip(fused_model.parameters(), loop_model.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    assert max((p - p0).abs().max().item() for p, p0 in zip(fused_model.parameters(), start)) > 1e-3
    for p, q in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def _paired_models():
    torch.manual_seed(0)
    ours = NuLog(NuLogConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=32))
    theirs = NuLog(NuLogConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=32))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _same_gradients(ours, theirs, skip_first: bool = False):
    for i, (p, q) in enumerate(zip(ours.parameters(), theirs.parameters())):
        if skip_first and i == 0:  # a parameter without a gradient is left alone, state and all
            p.grad = q.grad = None
            continue
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()


def test_the_per_tensor_adam_matches_torch_and_a_parameter_without_gradient_is_left_alone():
    from ops.train.adam import Adam

    ours, theirs = _paired_models()
    mine, torch_opt = Adam(ours.parameters(), lr=1e-3, weight_decay=0.005, fused=False), \
        torch.optim.Adam(theirs.parameters(), lr=1e-3, weight_decay=0.005)
    first = next(ours.parameters()).detach().clone()
    for k in range(10):
        _same_gradients(ours, theirs, skip_first=k < 5)
        mine.step()
        torch_opt.step()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert not torch.equal(next(ours.parameters()), first) and mine.state[0]["step"].item() == 5


def test_adam_state_moves_between_torch_optim_and_ours_both_ways():
    from ops.train.adam import Adam

    cfg = TrainConfig()
    ours, theirs = _paired_models()
    mine, torch_opt = adam(ours, cfg), torch.optim.Adam(theirs.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                        fused=True)
    for _ in range(3):
        _same_gradients(ours, theirs)
        mine.step()
        torch_opt.step()
    # swap states: each goes on from where the other one was
    swapped_mine, swapped_torch = Adam(ours.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), \
        torch.optim.Adam(theirs.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    swapped_mine.load_state_dict(torch_opt.state_dict())
    swapped_torch.load_state_dict(mine.state_dict())
    for _ in range(3):
        _same_gradients(ours, theirs)
        swapped_mine.step()
        swapped_torch.step()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert swapped_mine.state[0]["step"].item() == 6
    with pytest.raises(ValueError, match="for 3 parameters"):
        Adam(ours.parameters()).load_state_dict(
            {"state": {}, "param_groups": [{"params": [0, 1, 2], "lr": 1e-3}]})


def test_training_does_not_load_the_torch_compile_machinery():
    """torch.optim's optimizers import torch._dynamo on first use (seconds of CPU per training
    process); training without `compile` must not."""
    code = ("import sys; from ops.train.loop import train; from ops.train.vocab import Vocab; "
            "from ops.train.config import TrainConfig; lines = [('a <*> b', 3), ('c d <*>', 2)] * 5; "
            "import tempfile, os; ck = os.path.join(tempfile.mkdtemp(), 'ck.pt'); "
            "r = train(lines, Vocab.build(lines), TrainConfig(epochs=2), checkpoint_path=ck); "
            "assert os.path.exists(ck); r = train(lines, Vocab.build(lines), TrainConfig(epochs=3), checkpoint_path=ck); "
            "assert len(r.losses) == 3; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout
