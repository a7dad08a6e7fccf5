"""Transformer-XL-style segment recurrence (Dai et al., ACL 2019) over TG's sentence streams.

One file, nanoGPT-style: `TXLConfig`, rotary positions, the cache, the modules, the `TXL` model,
then `TXLAdapter` (name "txl"). Streams, curriculum, loss and scoring are TG's
(`models/segments.py`); the architecture is not TG's: every layer is a self-attention block (TG
alternates self- and cross-attention), positions are rotary (TG's are learned), and the memory is a
cache of token states (docs/choices.md).

Each segment (a sentence `[BOS] tokens [EOS]`, or a fixed span with `segment = "span"`) runs
through a causal decoder whose every layer also attends over a cache of the most recent
`memory_tokens` token states of the previous segments of the same stream. As in the original
(Dai et al. 2019, eq. 1-2), the cache holds each layer's input hidden states, detached, and every
step projects them to keys and values with the layer's current LayerNorm and key/value weights: no
gradient reaches an earlier segment's tokens, but the key and value projections learn through the
cached positions too.

Positions are relative: rotary embeddings (RoPE) at each token's offset from the current segment's
start (cached rows at -1, -2, ... back to -M; the segment's rows at 0, 1, ...), so an attention score
depends only on the distance between two tokens, with no absolute position table. This replaces
Transformer-XL's sinusoidal relative encoding with learned u, v biases (docs/choices.md).

The blocks reuse TG's self-attention projections, SwiGLU and packed-row layout from `models/tg.py`.

Training FLOPs (`Adapter.train_flops`: 3 x the forward, FLOP = 2 x multiply-add). Segment step t has N_t
packed rows, B_t streams and grid width T_t; the cache before it is W_t columns wide (W_0 = 0,
W_{t+1} = min(M, W_t + T_t): the cache keeps grid columns, padding included, up to `memory_tokens` = M). Every
layer attends from the B x T grid to W + T keys (cached, then the segment's), so step t costs

    L (8 N d^2 + 4 B T (W + T) d + 6 N d inner + 4 B W d^2)
       qkv, output; q k^T and (weights) v; SwiGLU; the cached rows' keys and values

(inner = swiglu_width(d); the masked T x (W + T) grid counts in full, as SDPA computes it). The cache holds
layer inputs, so every step projects its B x W cached rows again with the current LayerNorm and key and value
weights; the rows are detached, but the LayerNorm's gain makes the projection's input need a gradient, so its
backward is the usual two forwards. Once per batch the tied output layer adds 2 N_targets d V on the rows that
have a target (every row but [EOS]).
Rotary positions are elementwise and not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tgbench.adapter import EffectiveContext, Vocab
from tgbench.core.errors import UserError
from tgbench.models.layers import (
    SelfAttention,
    SwiGLU,
    attention_flops,
    matmul_flops,
    merge_heads,
    self_attention_flops,
    split_heads,
    swiglu_flops,
)
from tgbench.models.segments import SegmentAdapter, SegmentConfig
from tgbench.models.streams import StepInputs, gather_rows, step_inputs
from tgbench.models.tg import TG

ROPE_BASE = 10000.0


@dataclass
class TXLConfig(SegmentConfig):
    """Transformer-XL settings: TG's stream settings plus the cache length in tokens."""

    family = "txl"

    memory_tokens: int = 1024  # cached token states per layer (docs/choices.md)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.width // self.n_heads) % 2:
            raise UserError(f"txl head width {self.width // self.n_heads} is odd; rotary positions need pairs",
                            "choose width and heads with an even width / heads")


# ----------------------------------------------------------------------------------------------
# Rotary positions


def rotary_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE angles for integer positions (n,) -> two (n, 1, head_dim / 2) tables."""
    freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angle = positions.to(torch.float32)[:, None] * freq[None]  # (n, dh/2)
    return angle.cos()[:, None], angle.sin()[:, None]


def rotate(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor], heads: int) -> torch.Tensor:
    """Rotate each head's halves of x (..., n, d) by the tables (n, 1, dh/2); same shape back."""
    cos, sin = tables
    shape = x.shape
    x = x.view(*shape[:-1], heads, shape[-1] // heads)  # (..., n, h, dh)
    x1, x2 = x.float().chunk(2, dim=-1)  # (..., n, h, dh/2) each
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (..., n, h, dh)
    return out.to(x.dtype).view(shape)


# ----------------------------------------------------------------------------------------------
# The cache


@dataclass
class TXLCache:
    """Per stream, the last `width` cached rows, right-aligned (oldest first), detached.

    Attributes:
        rows: (B, width, L d): every layer's input hidden state of each cached row, side by side, detached
            (one tensor, so a step's update is one scatter for every layer).
        valid: (B, width) which columns hold a real row (a stream with fewer rows so far has
            invalid columns on the left).
    """

    rows: torch.Tensor
    valid: torch.Tensor

    @property
    def width(self) -> int:
        return self.valid.shape[1]

    def layer(self, index: int, width: int, streams: int) -> torch.Tensor:
        """Layer `index`'s cached input hidden states (model width `width`) of the first `streams` streams."""
        return self.rows[:streams, :, index * width : (index + 1) * width]  # (B, M, d)


@dataclass
class StepContext:
    """What every layer of one step needs: positions and the cache (None before the first segment)."""

    rows: tuple[torch.Tensor, torch.Tensor]  # RoPE tables of the segment rows (N, 1, dh/2)
    cache: TXLCache | None
    cached: tuple[torch.Tensor, torch.Tensor] | None  # RoPE tables of the cache columns (Mc, 1, dh/2)
    mask: torch.Tensor | None  # (B, 1, T, Mc + T) True = may attend


def append_to_cache(cache: TXLCache | None, step: StepInputs, new: list[torch.Tensor], limit: int) -> TXLCache:
    """The cache after a step: each stream's old rows then its segment's rows, the last `limit` kept.

    The rows of a stream are contiguous and right-aligned, so column c of a cache of width W holds the
    row at offset c - W from the next segment's start. Selecting the last rows is a scatter with a
    dump column for the dropped ones: no host synchronisation, whatever the lengths. `new` holds each
    layer's input rows (N, d) of the step; they are stored detached.
    """
    B, T = step.n_streams, step.max_len
    device = step.pos.device
    current = torch.zeros(B * T, dtype=torch.bool, device=device).index_fill_(0, step.grid_index, True).view(B, T)
    old = 0 if cache is None else cache.width
    valid = current if cache is None else torch.cat([cache.valid[:B], current], dim=1)  # (B, old + T)
    width = min(limit, old + T)
    from_end = valid.flip(1).cumsum(1).flip(1)  # (B, old + T) real rows at or after each column
    keep = valid & (from_end <= width)
    column = torch.where(keep, width - from_end, width)  # (B, old + T), dropped rows -> dump column
    fresh = step.to_grid(torch.cat([t.detach() for t in new], dim=-1))  # (B, T, L d)
    both = fresh if cache is None else torch.cat([cache.rows[:B], fresh.to(cache.rows.dtype)], dim=1)
    rows = both.new_zeros(B, width + 1, both.shape[-1]).scatter_(1, column[..., None].expand_as(both), both)
    kept = torch.zeros(B, width + 1, dtype=torch.bool, device=device).scatter_(1, column, keep)
    return TXLCache(rows=rows[:, :width], valid=kept[:, :width])  # (B, width, L d), (B, width)


# ----------------------------------------------------------------------------------------------
# Modules


class CachedSelfAttention(SelfAttention):
    """TG's causal self-attention (same projections) over [cache of earlier segments, this segment]."""

    def forward(self, x: torch.Tensor, step: StepInputs, context: StepContext,
                cached: torch.Tensor | None) -> torch.Tensor:
        """x: (N, d) packed rows (after the block's LayerNorm); cached: (B, Mc, d) the cached rows after the
        same LayerNorm, or None -> the residual update (N, d).

        The cached rows are projected here, with this layer's current key and value weights (the query
        projection is not needed for them).
        """
        d = x.shape[-1]
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (N, d)
        q, k = rotate(q, context.rows, self.heads), rotate(k, context.rows, self.heads)
        q, k, v = (split_heads(step.to_grid(t), self.heads) for t in (q, k, v))  # (B, h, T, dh)
        dropout = self.attention_dropout if self.training else 0.0
        if cached is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, h, T, dh)
        else:
            cached_k, cached_v = F.linear(cached, self.qkv.weight[d:], self.qkv.bias[d:]).split(d, dim=-1)
            cached_k = rotate(cached_k, context.cached, self.heads).to(k.dtype)  # (B, Mc, d)
            keys = torch.cat([split_heads(cached_k, self.heads), k], dim=2)  # (B, h, Mc + T, dh)
            values = torch.cat([split_heads(cached_v.to(v.dtype), self.heads), v], dim=2)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=context.mask, dropout_p=dropout)
        return self.residual_dropout(self.proj(step.from_grid(merge_heads(y))))


class XLBlock(nn.Module):
    """Pre-LN block: cached self-attention then SwiGLU (the parameters of a TG "S" block)."""

    def __init__(self, config: TXLConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.width)
        self.attn = CachedSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.width)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, step: StepInputs, context: StepContext, layer: int) -> torch.Tensor:
        """x: (N, d) this layer's input rows; the cache's rows of this layer go through the same LayerNorm."""
        cache = context.cache
        cached = None if cache is None else self.ln_attn(cache.layer(layer, x.shape[-1], step.n_streams))
        x = x + self.attn(self.ln_attn(x), step, context, cached)  # (N, d)
        return x + self.mlp(self.ln_mlp(x))  # (N, d)


class TXL(nn.Module):
    """A causal stack whose every layer also reads a detached cache of the stream's earlier segments.

    Non-embedding parameters: L blocks with the parameters of TG's self-attention blocks and the
    final LayerNorm (no position table: RoPE has no parameters); TG at the same width and depth has
    the same blocks' worth plus W_sent (d^2 + d) and its gates, about 1 / (12 L) more (docs/choices.md).
    """

    def __init__(self, config: TXLConfig, vocab: Vocab) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        d = config.width
        self.wte = nn.Embedding(vocab.size, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(XLBlock(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab.size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(TG._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init over the 2L residual branches
            if name.endswith(("proj.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    def empty_memory(self) -> TXLCache | None:
        return None

    def context(self, step: StepInputs, cache: TXLCache | None) -> StepContext:
        head_dim = self.config.width // self.config.n_heads
        rows = rotary_tables(step.pos, head_dim)
        if cache is None or cache.width == 0:
            return StepContext(rows=rows, cache=None, cached=None, mask=None)
        B, T, M = step.n_streams, step.max_len, cache.width
        cached = rotary_tables(torch.arange(-M, 0, device=step.pos.device), head_dim)
        causal = torch.ones(T, T, dtype=torch.bool, device=step.pos.device).tril()  # (T, T)
        mask = torch.cat([cache.valid[:B, None, None, :].expand(B, 1, T, M),
                          causal.expand(B, 1, T, T)], dim=-1)  # (B, 1, T, M + T)
        return StepContext(rows=rows, cache=cache, cached=cached, mask=mask)

    def step(self, step: StepInputs, memory: TXLCache | None, write: bool = True
             ) -> tuple[torch.Tensor, None, TXLCache | None, None]:
        """Run segment t of the B streams of `step` over the cache `memory` (alive streams are a prefix).

        Returns:
            (x, None, cache', None): the segment rows (N, d) before `ln_f`; the cache with this
            segment appended (when `write`, else unchanged).
        """
        context = self.context(step, memory)
        x = self.drop(step.embedded if step.embedded is not None else self.wte(step.ids))  # (N, d)
        inputs = []  # each layer's input rows: what the next segments' cache holds
        for layer, block in enumerate(self.blocks):
            inputs.append(x)
            x = block(x, step, context, layer)  # (N, d)
        if not write or self.config.memory_tokens == 0:
            return x, None, memory, None
        return x, None, append_to_cache(memory, step, inputs, self.config.memory_tokens), None

    def run(self, tensors: dict[str, torch.Tensor], steps: list[tuple[int, int, int, int, int]]) -> dict:
        """Every segment step of a batch of streams (TG's `stream_layout`), as `TG.run`.

        Returns:
            dict with "hidden": (N_targets, d) `ln_f` rows of every target, in target order;
            "penalty": None; "memory": the final cache.
        """
        cache = self.empty_memory()
        embedded = self.wte(tensors["ids"])  # (N_total, d) one lookup per batch
        outputs = []
        for step in step_inputs(tensors, steps, embedded):
            x, _, cache, _ = self.step(step, cache)
            outputs.append(x)
        x = gather_rows(torch.cat(outputs), tensors["target_rows"])  # (N_targets, d)
        return {"hidden": self.ln_f(x), "penalty": None, "memory": cache}


class TXLAdapter(SegmentAdapter):
    """Transformer-XL on TG's sentence streams: every layer reads a detached cache of earlier segments."""

    name = "txl"
    description = "Transformer-XL-style recurrence: each layer attends over cached states of earlier sentences"
    config_class = TXLConfig
    controls = {"no-memory": {"memory_tokens": 0}}  # no cache: each segment attends to itself only

    def build(self, vocab: Vocab) -> nn.Module:
        return TXL(self.config, vocab)

    def steps_forward_flops(self, steps) -> float:
        """Every step's blocks, each layer's attention also over the W_t cached columns (module docstring)."""
        d, layers = self.config.width, self.config.layers
        total, cached = 0.0, 0
        for row0, row1, stream0, stream1, T in steps:
            rows, B = row1 - row0, stream1 - stream0
            attention = self_attention_flops(rows, B, T, d) + attention_flops(B, T, cached, d)
            total += layers * (attention + swiglu_flops(rows, d) + matmul_flops(B * cached, d, 2 * d))
            cached = min(self.config.memory_tokens, cached + T)
        return total

    def memory_reads(self, documents, vocab, *, epoch=None) -> None:
        """None: the cache holds token states, not a memory of sentence slots (see `effective_context`)."""
        return None

    def effective_context(self, mean_sentence_tokens: float) -> EffectiveContext:
        """Layers x cached tokens: each layer reaches `memory_tokens` further back (Dai et al., section 3.2)."""
        return EffectiveContext(float(self.config.layers * self.config.memory_tokens), "window")
