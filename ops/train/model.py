"""NuLog (Nedelkoski et al. 2020): a one-layer transformer encoder that predicts a masked token.

Input is `<cls> t1 .. tn` with one position replaced by `<mask>`; the prediction is a linear
layer over the vocabulary applied to the `<cls>` output. Layout follows the Annotated
Transformer that NuLog and Opni build on: embeddings scaled by sqrt(d_model) plus sinusoidal
positions, pre-norm sublayers, a final LayerNorm.

Training and scoring always need *every* position of a line masked in turn. `masked_rows`
computes all of those rows at once; with one layer it does so algebraically instead of
running L copies of the line (see its docstring), which is where most of the speed comes from.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ops.train.config import NuLogConfig
from ops.train.vocab import MASK


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (sorted; [] when all are finite)."""
    with torch.no_grad():
        return sorted(name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all()))


def sinusoids(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class SelfAttention(nn.Module):
    def __init__(self, cfg: NuLogConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = (t.view(B, L, self.n_heads, -1).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))
        keep = ~pad_mask[:, None, None, :]  # [B,1,1,L]: True where a key may be attended to
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, L, d))


class FeedForward(nn.Module):
    def __init__(self, cfg: NuLogConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.out = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(F.relu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: NuLogConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.ff = SelfAttention(cfg), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), pad_mask))
        return x + self.drop(self.ff(self.ln2(x)))


class NuLog(nn.Module):
    """There is deliberately no dropout on the input embeddings: it is the only dropout that
    would tie the L masked copies of a line together, and leaving it out is what makes
    `masked_rows` exact in distribution as well as in eval mode."""

    def __init__(self, cfg: NuLogConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("pos", sinusoids(cfg.max_len, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        # Xavier init of every matrix, as in NuLog's code: with N(0,1) embeddings times sqrt(d) the
        # constant <cls> vector would swamp the residual stream and training would crawl.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok(ids) * math.sqrt(self.cfg.d_model) + self.pos[: ids.shape[-1]]

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """ids [B,L] with <cls> at 0; pad_mask [B,L] True on padding. Returns logits [B,V]."""
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, pad_mask)
        return self.head(self.ln_f(x[:, 0]))

    def masked_rows(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Logits for every token position of every line, that position masked: [N, V].

        Rows come line by line, position by position (N = number of non-pad tokens after
        <cls>), and row (b, i) equals `forward` on line b with position i set to <mask>.

        With one layer only the <cls> query matters, and in the copy of a line where position
        i is masked every key and value is the line's own except the one at i, which is
        <mask>'s at i. So keys/values are computed once per line (L of them, plus L <mask>
        ones shared by all lines) and each row's attention swaps in a single score; the
        projections cost O(L) per line instead of O(L^2). Deeper models fall back to
        materialising the copies.
        """
        if len(self.blocks) != 1:
            return self._masked_rows_naive(ids, pad_mask)
        B, L = ids.shape
        H, d = self.cfg.n_heads, self.cfg.d_model
        blk = self.blocks[0]
        x = self.embed(ids)                                            # [B,L,d]
        xm = self.embed(torch.full((1, L), MASK, dtype=ids.dtype, device=ids.device))
        h, hm = blk.ln1(x), blk.ln1(xm)
        (wq, wk, wv), (bq, bk, bv) = blk.attn.qkv.weight.split(d), blk.attn.qkv.bias.split(d)
        heads = lambda t: t.view(t.shape[0], -1, H, d // H).transpose(1, 2)  # [b,L,d] -> [b,H,L,hd]
        q = heads(F.linear(h[:, :1], wq, bq))                          # [B,H,1,hd]  <cls> query
        k, v = heads(F.linear(h, wk, bk)), heads(F.linear(h, wv, bv))  # [B,H,L,hd]  true tokens
        km, vm = heads(F.linear(hm, wk, bk)), heads(F.linear(hm, wv, bv))  # [1,H,L,hd]  <mask>
        scale = 1.0 / math.sqrt(d // H)
        s = (q @ k.transpose(-1, -2)) * scale                          # [B,H,1,L]
        sm = (q @ km.transpose(-1, -2)) * scale                        # [B,H,1,L]
        swap = torch.eye(L, dtype=torch.bool, device=ids.device)[1:]   # [R,L]: row r masks position r+1
        att = torch.where(swap, sm, s).masked_fill(pad_mask[:, None, None, :], float("-inf"))
        att = F.dropout(att.softmax(-1), blk.attn.dropout, self.training)  # [B,H,R,L]
        p_swap = att.diagonal(offset=1, dim1=-2, dim2=-1)[..., None]   # [B,H,R,1]
        y = att @ v + p_swap * (vm[:, :, 1:] - v[:, :, 1:])            # [B,H,R,hd]
        rows = ~pad_mask[:, 1:]                                        # drop padding rows early
        y = blk.attn.proj(y.transpose(1, 2)[rows].reshape(-1, d))     # [N,d]
        z = x[:, :1].expand(B, L - 1, d)[rows] + blk.drop(y)          # residual onto <cls>
        z = z + blk.drop(blk.ff(blk.ln2(z)))
        return self.head(self.ln_f(z))

    def _masked_rows_naive(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        b, i = (~pad_mask[:, 1:]).nonzero(as_tuple=True)
        rows = ids[b].clone()
        rows[torch.arange(len(b), device=ids.device), i + 1] = MASK
        return self(rows, pad_mask[b])
