"""NuLog and its vocabulary: the fast all-rows pass must be the model, not an approximation."""

import pytest
import torch

from ops.train.model import NuLog, NuLogConfig
from ops.train.vocab import CLS, MASK, PAD, SPECIALS, UNK, Vocab


def lines_batch(vocab_size=60, lengths=(9, 4, 1, 0, 6, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    L = max(lengths) + 1
    ids = torch.randint(4, vocab_size, (len(lengths), L), generator=g)
    ids[:, 0] = CLS
    pad = torch.arange(L)[None, :] > torch.tensor(lengths)[:, None]
    ids[pad] = PAD
    return ids, pad


def naive_rows(model, ids, pad):
    """The definition: one copy of the line per token position, that position masked."""
    out = []
    for b in range(len(ids)):
        for i in range(1, int((~pad[b]).sum())):
            row = ids[b].clone()
            row[i] = MASK
            out.append(model(row[None], pad[b][None])[0])
    return torch.stack(out)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_masked_rows_equal_masked_copies(n_layers):
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=60, n_layers=n_layers, d_model=64, n_heads=4, d_ff=64)).eval()
    ids, pad = lines_batch()
    with torch.no_grad():
        fast, slow = model.masked_rows(ids, pad), naive_rows(model, ids, pad)
    assert fast.shape == (9 + 4 + 1 + 6 + 9, 60)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_masked_rows_gradients_equal_masked_copies():
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=60, dropout=0.0)).train()
    ids, pad = lines_batch()
    target = ids[:, 1:][~pad[:, 1:]]
    grads = []
    for fn in (model.masked_rows, lambda i, p: naive_rows(model, i, p)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(fn(ids, pad), target).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_forward_shape_and_padding_is_ignored():
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=30)).eval()
    ids = torch.tensor([[CLS, 5, MASK, 7]])
    short = model(ids, ids == PAD)
    padded_ids = torch.tensor([[CLS, 5, MASK, 7, PAD, PAD]])
    padded = model(padded_ids, padded_ids == PAD)
    assert short.shape == (1, 30)
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


def test_published_shape():
    model = NuLog(NuLogConfig(vocab_size=100))
    assert (model.cfg.d_model, model.cfg.n_heads, model.cfg.d_ff, len(model.blocks), model.cfg.max_len) == (256, 8, 256, 1, 64)
    assert "pos" not in model.state_dict()  # positions are recomputed, not stored as weights


def test_vocab_build_encode_and_counts():
    lines = [("a b <num>", 3), ("b c", 1), ("a a", 1)]
    v = Vocab.build(lines)
    assert v.itos[: len(SPECIALS)] == list(SPECIALS)
    assert v.itos[4:] == ["a", "b", "<num>", "c"]  # a:5, b:4, <num>:3, c:1 (weighted by count)
    assert v.counts == {"a": 5, "b": 4, "<num>": 3, "c": 1}
    assert v.encode("a zzz c", 64) == [4, UNK, 7]
    assert v.encode("a b a b a", 4) == [4, 5, 4]  # max_len-1: room for <cls>
    assert len(Vocab.build(lines, min_count=2)) == 4 + 3
    assert len(Vocab.build(lines, max_size=6)) == 6
    assert v.oov_share([("a zzz", 3), ("c", 1)]) == pytest.approx(3 / 7)
    assert Vocab.from_json(v.to_json()) == v and Vocab.from_json(v.to_json()).counts == v.counts
    assert len(v) == 8


def test_vocab_rejects_bad_token_lists():
    with pytest.raises(ValueError):
        Vocab(["a", "b"])
    with pytest.raises(ValueError):
        Vocab(list(SPECIALS) + ["x", "x"])
