"""The layers of TG and its segment-recurrent peers: attention over one sentence step's packed rows, SwiGLU.

Every layer works on the packed rows of one sentence step (`tgbench.models.streams.StepInputs`): token-wise
layers on the (N, d) rows, attention after scattering them into a (B, T) grid. A layer reads its sizes from a
config with `width`, `n_heads`, `dropout` and `attention_dropout` (`TGConfig` and the peers' configs all have
them).

The FLOP counts of these layers (`self_attention_flops`, `cross_attention_flops`, `swiglu_flops`, 2 x the
multiply-adds of their matmuls, `tgbench.adapter.matmul_flops`) are the pieces of TG's, RMT's and TXL's
formulas in their model files: N packed rows of a step, B streams, T the grid width, K memory columns.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from tgbench.adapter import matmul_flops
from tgbench.models.streams import StepInputs


class LayerConfig(Protocol):
    """What a layer reads from its model's config."""

    width: int
    n_heads: int
    dropout: float
    attention_dropout: float
    parallel_norms: bool  # Block with kind "P" only


def swiglu_width(width: int) -> int:
    """SwiGLU inner width: 2/3 * 4d rounded to a multiple of 8 (same parameters as a GELU 4d FFN)."""
    return int(8 * round(2 / 3 * 4 * width / 8))


def attention_flops(streams: int, queries: int, keys: int, width: int) -> float:
    """Both attention products (q k^T, then the weights times v) of `streams` grids of `queries` x `keys`, all
    heads together: 4 B Tq Tk d. The whole grid counts, as SDPA computes it (causal or masked entries too)."""
    return 2 * matmul_flops(streams * queries, keys, width)


def self_attention_flops(rows: int, streams: int, grid: int, width: int) -> float:
    """`SelfAttention` on `rows` packed rows over a (streams, grid) grid: qkv and output projections on the
    rows, the attention products on the grid: 8 N d^2 + 4 B T^2 d."""
    d = width
    return matmul_flops(rows, d, 3 * d) + matmul_flops(rows, d, d) + attention_flops(streams, grid, grid, d)


def cross_attention_flops(rows: int, streams: int, grid: int, slots: int, width: int) -> float:
    """`CrossAttention` reading `slots` memory columns: q and the gated output projection on the rows, the
    attention products on the (streams, grid) x slots grid: 4 N d^2 + 4 B T K d. Nothing when the memory is
    empty (the sub-layer is skipped). The keys and values were projected when written (`memory_kv`)."""
    if slots == 0:
        return 0.0
    return 2 * matmul_flops(rows, width, width) + attention_flops(streams, grid, slots, width)


def swiglu_flops(rows: int, width: int) -> float:
    """`SwiGLU` on `rows` rows: w1, w3 (d -> inner) and w2 (inner -> d): 6 N d inner."""
    return 3 * matmul_flops(rows, width, swiglu_width(width))


def rank_encoding(n: int, width: int) -> torch.Tensor:
    """Unit-norm sinusoidal encodings of slot ranks 0..n-1, shape (n, width).

    A raw sinusoid row has norm sqrt(width / 2) (about 19.6 at d = 768), far above the norm of
    freshly initialised sentence vectors, so keys would start out purely positional. The release
    L2-normalises each row; so does this.
    """
    rank = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))  # (w/2,)
    pe = torch.zeros(n, width)
    pe[:, 0::2] = torch.sin(rank * freq)
    pe[:, 1::2] = torch.cos(rank * freq)[:, : width // 2]
    return F.normalize(pe, dim=-1)  # (n, width)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, d) -> (B, h, T, d/h)."""
    B, T, d = x.shape
    return x.view(B, T, heads, d // heads).transpose(1, 2)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d/h) -> (B, T, d)."""
    B, h, T, dh = y.shape
    return y.transpose(1, 2).reshape(B, T, h * dh)


class SelfAttention(nn.Module):
    """Causal self-attention over one step's grid: the sentence (after its memory rows in prefix mode)."""

    def __init__(self, config: LayerConfig) -> None:
        super().__init__()
        d = config.width
        self.heads = config.n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.attention_dropout = config.attention_dropout
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, step: StepInputs, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, d) packed rows -> the residual update (N, d); causal, or as `mask` (B, 1, T, T) allows."""
        d = x.shape[-1]
        q, k, v = step.to_grid(self.qkv(x)).split(d, dim=-1)  # 3 x (B, T, d)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))  # (B, h, T, dh)
        dropout = self.attention_dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, h, T, dh)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.residual_dropout(self.proj(step.from_grid(merge_heads(y))))  # (N, d)


class CrossAttention(nn.Module):
    """Non-causal attention from the sentence's rows to the memory slots, with a scalar gate."""

    def __init__(self, config: LayerConfig) -> None:
        super().__init__()
        d = config.width
        self.heads = config.n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        # 1-element parameter: the trainer's "no decay on 1-D/0-D" rule covers it.
        self.gate = nn.Parameter(torch.ones(1))
        self.attention_dropout = config.attention_dropout
        self.residual_dropout = nn.Dropout(config.dropout)

    def memory_kv(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected key and value of newly written sentence vectors m (B, d)."""
        return self.k(m), self.v(m)  # (B, d) each

    def rank_keys(self, pe: torch.Tensor) -> torch.Tensor:
        """Key contribution of the slot-rank encodings pe (K, d): W_k pe (no bias)."""
        return F.linear(pe, self.k.weight)  # (K, d)

    def forward(self, x: torch.Tensor, step: StepInputs,
                memory: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = split_heads(step.to_grid(self.q(x)), self.heads)  # (B, h, T, dh)
        k, v = (split_heads(t, self.heads) for t in memory)  # (B, h, K, dh)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, h, T, dh)
        # The gate scales W_o and b_o (d x d) rather than the (N, d) output: same result, one
        # fewer full-size op and its backward per step.
        out = F.linear(step.from_grid(merge_heads(y)), self.o.weight * self.gate, self.o.bias * self.gate)  # (N, d)
        return self.residual_dropout(out)


class SwiGLU(nn.Module):
    def __init__(self, config: LayerConfig) -> None:
        super().__init__()
        d, inner = config.width, swiglu_width(config.width)
        self.w1 = nn.Linear(d, inner)
        self.w3 = nn.Linear(d, inner)
        self.w2 = nn.Linear(inner, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))  # (N, d)


class Block(nn.Module):
    """Pre-LN block: attention sub-layer(s) then SwiGLU.

    kind "S" / "C": one self / cross sub-layer; "SC" / "CS": both, in that order, each with its own
    LayerNorm; "P": self and cross read the same input and their updates are added together (one
    shared LayerNorm, or one per branch with `parallel_norms`); "SS": two self-attention
    sub-layers (the prefix-mode form of "SC"/"CS"/"P").
    """

    def __init__(self, kind: str, config: LayerConfig) -> None:
        super().__init__()
        self.kind = kind
        letters = "SC" if kind == "P" else kind
        self.attns = nn.ModuleList(SelfAttention(config) if c == "S" else CrossAttention(config)
                                   for c in letters)
        n_norms = 1 if kind == "P" and not config.parallel_norms else len(letters)
        self.norms = nn.ModuleList(nn.LayerNorm(config.width) for _ in range(n_norms))
        self.ln_mlp = nn.LayerNorm(config.width)
        self.mlp = SwiGLU(config)

    @staticmethod
    def attention(attn: nn.Module, h: torch.Tensor, step: StepInputs,
                  memory: tuple[torch.Tensor, torch.Tensor] | None,
                  mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """One attention sub-layer's residual update; None where a C sub-layer has no memory to read."""
        if isinstance(attn, CrossAttention):
            return None if memory is None else attn(h, step, memory)
        return attn(h, step, mask)

    def forward(self, x: torch.Tensor, step: StepInputs,
                memories: list[tuple[torch.Tensor, torch.Tensor] | None],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, d) packed rows; memories: this block's (keys, values) per sub-layer, None if empty; mask:
        what self-attention may see, (B, 1, T, T) True = allowed (None: causal)."""
        if self.kind == "P":
            inputs = [norm(x) for norm in self.norms] if len(self.norms) == 2 else [self.norms[0](x)] * 2
            updates = [self.attention(attn, h, step, memory, mask)
                       for attn, h, memory in zip(self.attns, inputs, memories, strict=True)]
            for update in updates:
                x = x if update is None else x + update  # (N, d)
        else:
            for attn, norm, memory in zip(self.attns, self.norms, memories, strict=True):
                update = self.attention(attn, norm(x), step, memory, mask)
                x = x if update is None else x + update  # (N, d); an empty memory adds exactly zero
        return x + self.mlp(self.ln_mlp(x))  # (N, d)
