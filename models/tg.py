"""Thought Gestalt (TG): a decoder that reads text one sentence at a time through a working memory.

One file, nanoGPT-style: `TGConfig`, the modules, the `TG` model, the batch layout, then
`TGAdapter` (name "tg") and `TGSpanAdapter` (name "tg-span", fixed token spans as "sentences").
Section numbers refer to `shared/paper.md`.

How a batch runs (the speed design):
  * A batch is a set of sentence *streams* (consecutive sentences of one document, memory empty at
    the start), sorted by sentence count, longest first, so the streams still alive at sentence
    step t are a prefix 0..B_t-1 and dropping finished streams is a slice.
  * Step t processes the t-th sentence of every alive stream together. Token-wise layers (LN,
    projections, SwiGLU, LM head) run on the *packed* rows of that step (N_t, d): no padding is
    ever computed there. Only inside attention are the rows scattered into a (B_t, T_t) grid, T_t
    being the longest sentence of the step; padding sits at the end of each row, so causal
    attention never lets a real query see it.
  * Every index (grid position, [BOS]/[EOS] rows, targets) is computed in numpy when the batch is
    built; the step loop slices device tensors with host integers and never syncs.
  * Memory: all alive streams have written the same number of sentences at step t, so the memory
    is a dense (B_t, K, d) tensor with K = min(t, M). The cross-attention key and value projections
    are linear, so each C block projects a sentence vector once, when it is written:
    k_j = W_k m_j + b_k, v_j = W_v m_j + b_v, and at step t the keys are k_j + W_k pe(rank_j),
    identical to W_k (m_j + pe(rank_j)) + b_k with the rank encoding recomputed oldest-first.
  * The LM head runs once per batch on the rows that have a target (every row but [EOS]).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tgbench.adapter import (
    Adapter,
    Batch,
    Document,
    EffectiveContext,
    LossParts,
    MemoryReads,
    Sampler,
    Vocab,
    heads_for,
)
from tgbench.data.split import cap_and_merge
from tgbench.errors import UserError
from tgbench.models.gpt2 import cross_entropy

BLOCK_PATTERNS = ("alternate", "SC", "CS", "P")
MEMORY_MODES = ("cross", "prefix")
SENTENCE_POOLS = ("eos", "mean")
LOSS_REDUCTIONS = ("steps", "tokens")
MIN_FRAGMENT_TOKENS = 3  # the data pipeline's fragment merge (DataConfig.min_fragment_tokens)


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class TGConfig:
    """TG settings. Defaults are the paper's (section 1) or its release's where the paper is silent.

    Every ablation of section 5 is one field: `detach_memory`, `use_memory`, `memory_mode`,
    `sentence_layer`, `sentence_pool`, `context_seeding`, `eos_weight_after_first_epoch`,
    `curriculum` / `fixed_stream_sentences`, `max_sentence_tokens`, `block_pattern`. Details where
    the release differs from this implementation are switches too, off by default (the
    `release_*`-style fields below); docs/choices.md lists each with its source.
    """

    width: int = 768
    layers: int = 12
    heads: int = 0  # 0 = ceil(width / 64), at least 1 (heads at small widths are unknown in the paper)
    block_pattern: str = "alternate"  # alternate (S,C,S,C,...) | SC | CS | P (both attentions in every block)
    parallel_norms: bool = False  # P blocks: one LayerNorm per attention branch (release) instead of a shared one
    # Memory.
    use_memory: bool = True  # False: nothing is written to memory (C blocks add zero); seeding still happens
    memory_mode: str = "cross"  # cross | prefix (memory vectors prepended as tokens, read by self-attention)
    memory_slots: int = 40  # M, FIFO capacity
    detach_memory: bool = False  # detach sentence vectors when written (stops gradients across sentences)
    context_seeding: bool = True  # m_t replaces the [BOS] input embedding of sentence t+1
    # Sentence vector m_t = W_sent h.
    # 1-indexed block after which h is read (the paper's "after block 7" is 7);
    # "auto" = round(7/12 * layers), "last" = layers.
    sentence_layer: int | str = "auto"
    sentence_after_final_norm: bool = False  # reading after the last block: take h after ln_f (release)
    sentence_pool: str = "eos"  # eos (hidden state at [EOS]) | mean (mean over the sentence's rows)
    mean_pool_content_only: bool = False  # mean pool over content tokens only, not [BOS]/[EOS]/[EOD] (release)
    sentence_norm: bool = False  # release: LayerNorm before W_sent, L2-normalise, hinge penalty on the norm
    sentence_norm_penalty: float = 0.01  # weight of the hinge outside [0.9, 1.1] (with sentence_norm)
    sentence_norm_squared_hinge: bool = False  # square the hinge (release) instead of the linear hinge
    # Data.
    max_sentence_tokens: int = 64  # longer sentences are re-split like the data pipeline's cap (near-equal)
    eod_unit: bool = False  # [EOD] as its own unit [BOS] [EOD] [EOS] after the last sentence (release)
    curriculum: bool = True  # stream length S = stream_start + stream_step * floor(epoch / stream_every)
    stream_start: int = 30  # S at epoch 0 (sentences per training stream)
    stream_step: int = 12  # sentences S grows by every `stream_every` epochs
    stream_every: int = 5
    fixed_stream_sentences: int = 40  # S when curriculum is off
    # Loss.
    eos_weight_first_epoch: float = 1.0  # loss weight of [EOS] targets in epoch 0
    eos_weight_after_first_epoch: float = 0.05  # later epochs; 1.0 = the "no EOS down-weighting" ablation
    # steps: each sentence step's weighted mean, summed over the steps (paper section 3, release);
    # tokens: one weighted mean over every target of the batch (how GPT-2 is trained).
    loss_reduction: str = "steps"
    # Regularisation and memory/speed trade-offs.
    dropout: float = 0.1  # release
    attention_dropout: float = 0.2  # release
    token_dropout: float = 0.0  # drop whole input token embeddings with this probability (release: 0.15)
    sentence_dropout: float = 0.0  # dropout on sentence vectors before they are written (release: 0.15)
    # dropout inside the sentence head, between its LayerNorm and its Linear: the release's form of its 0.15
    sentence_head_dropout: float = 0.0
    checkpoint_steps: bool = False  # activation checkpointing per sentence step
    score_batch_tokens: int = 16384  # token rows per forward pass when scoring

    def __post_init__(self) -> None:
        def choice(name: str, allowed: Sequence[str]) -> None:
            if getattr(self, name) not in allowed:
                raise UserError(f"tg {name} = '{getattr(self, name)}' is unknown",
                                f"use one of {', '.join(allowed)}")

        choice("block_pattern", BLOCK_PATTERNS)
        choice("memory_mode", MEMORY_MODES)
        choice("sentence_pool", SENTENCE_POOLS)
        choice("loss_reduction", LOSS_REDUCTIONS)
        for name in ("width", "layers", "memory_slots", "max_sentence_tokens", "stream_start",
                     "stream_every", "fixed_stream_sentences", "score_batch_tokens"):
            if getattr(self, name) <= 0:
                raise UserError(f"tg {name} = {getattr(self, name)} must be positive", f"set {name} > 0")
        for name in ("dropout", "attention_dropout", "token_dropout", "sentence_dropout", "sentence_head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"tg {name} = {getattr(self, name)} is not a probability",
                                f"set {name} in [0, 1)")
        if self.heads < 0 or self.width % self.n_heads != 0:
            raise UserError(f"tg width {self.width} is not divisible by heads {self.n_heads}",
                            "choose heads dividing width, or heads = 0 for ceil(width / 64)")
        layer = self.sentence_layer
        if not (layer in ("auto", "last") or (isinstance(layer, int) and not isinstance(layer, bool)
                                                and 1 <= layer <= self.layers)):
            raise UserError(f"tg sentence_layer = {layer!r} is invalid",
                            f"use 'auto', 'last' or a block number 1..{self.layers}")

    @property
    def n_heads(self) -> int:
        return self.heads or heads_for(self.width)

    @property
    def sentence_block(self) -> int:
        """Number of blocks run before the sentence vector's hidden state is read (1-indexed block)."""
        if self.sentence_layer == "last":
            return self.layers
        if self.sentence_layer == "auto":
            return max(1, min(self.layers, round(7 / 12 * self.layers)))
        return int(self.sentence_layer)

    def block_kinds(self) -> list[str]:
        """Attention sub-layers of every block: 'S' self, 'C' cross, 'P' both in parallel.

        In prefix mode the memory is part of the self-attention sequence, so every cross sub-layer
        becomes a self-attention sub-layer (same parameters minus the gates): depth and width stay
        matched, and "P" becomes two sequential self sub-layers.
        """
        if self.block_pattern == "alternate":
            kinds = ["S" if i % 2 == 0 else "C" for i in range(self.layers)]
        else:
            kinds = [self.block_pattern] * self.layers
        if self.memory_mode == "prefix":
            kinds = ["SS" if k == "P" else k.replace("C", "S") for k in kinds]
        return kinds

    def stream_sentences(self, epoch: int) -> int:
        """Curriculum: stream length S (sentences) for an epoch (0-based)."""
        if not self.curriculum:
            return self.fixed_stream_sentences
        return self.stream_start + self.stream_step * (epoch // self.stream_every)

    def eos_weight(self, epoch: int) -> float:
        """Loss weight of `[EOS]` targets in an epoch (0-based); `[EOD]` always weighs 1."""
        return self.eos_weight_first_epoch if epoch == 0 else self.eos_weight_after_first_epoch


def swiglu_width(width: int) -> int:
    """SwiGLU inner width: 2/3 * 4d rounded to a multiple of 8 (same parameters as a GELU 4d FFN)."""
    return int(8 * round(2 / 3 * 4 * width / 8))


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


# ----------------------------------------------------------------------------------------------
# One sentence step's layout and memory state


@dataclass
class StepInputs:
    """The packed rows of one sentence step and how they map onto the attention grid.

    Attributes:
        ids: (N,) token id of each row (rows of stream 0's sentence first, then stream 1's, ...).
        pos: (N,) position of each row inside its sentence.
        grid_index: (N,) flat index b * T + pos of each row in the (B, T) attention grid.
        stream: (N,) stream index b of each row (for mean pooling).
        bos_rows: (B,) row of each stream's [BOS]; eos_rows: (B,) row of its last token.
        n_streams: B (host int); max_len: T (host int).
        embedded: (N, d) token + position embeddings of the rows, when the caller looked them up
            for a whole batch at once (one embedding backward per batch instead of one per step).
    """

    ids: torch.Tensor
    pos: torch.Tensor
    grid_index: torch.Tensor
    stream: torch.Tensor
    bos_rows: torch.Tensor
    eos_rows: torch.Tensor
    n_streams: int
    max_len: int
    embedded: torch.Tensor | None = None

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) packed rows -> (B, T, C) grid, zeros in the padding."""
        grid = x.new_zeros(self.n_streams * self.max_len, x.shape[-1]).index_copy(0, self.grid_index, x)
        return grid.view(self.n_streams, self.max_len, x.shape[-1])  # (B, T, C)

    def from_grid(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, C) grid -> (N, C) packed rows."""
        return gather_rows(y.reshape(-1, y.shape[-1]), self.grid_index)  # (N, C)

    def with_prefix(self, slots: int) -> StepInputs:
        """The layout with `slots` memory rows per stream placed before the stream's sentence.

        Memory rows come first in the packed order (stream-major, oldest slot first), then the
        sentence rows; in the (B, K + T) grid each stream's row is [memory..., sentence..., padding],
        so plain causal attention lets every sentence row see all of its stream's memory.
        """
        B, K = self.n_streams, slots
        width = K + self.max_len
        streams = torch.arange(B, device=self.pos.device)
        memory_index = (streams[:, None] * width + torch.arange(K, device=self.pos.device)[None]).reshape(-1)  # (B*K,)
        return StepInputs(
            ids=self.ids, pos=self.pos,
            grid_index=torch.cat([memory_index, self.stream * width + K + self.pos]),  # (B*K + N,)
            stream=torch.cat([streams.repeat_interleave(K), self.stream]),
            bos_rows=self.bos_rows + B * K, eos_rows=self.eos_rows + B * K,
            n_streams=B, max_len=width,
        )


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x.index_select(0, index)` for an index without repeats, with a cheaper backward.

    Autograd's generic `index_select` backward is an accumulating `index_add`, which on the CPU
    runs a multi-pass sort (several thread barriers per call) and dominated TG's step time
    whenever the machine was shared. Distinct indices need no accumulation: the gradient is a
    plain scatter (`index_copy_`). x: (R, C), index: (N,) -> (N, C).
    """
    return _UniqueGather.apply(x, index)


def step_inputs(tensors: dict[str, torch.Tensor], steps: list[tuple[int, int, int, int, int]],
                embedded: torch.Tensor) -> Iterator[StepInputs]:
    """The inputs of every sentence step of a batch of streams, each with its rows of `embedded`."""
    per_step = torch.split(embedded, [row1 - row0 for row0, row1, *_ in steps])
    for (row0, row1, s0, s1, T), emb in zip(steps, per_step, strict=True):
        yield StepInputs(
            ids=tensors["ids"][row0:row1], pos=tensors["pos"][row0:row1],
            grid_index=tensors["grid_index"][row0:row1], stream=tensors["stream"][row0:row1],
            bos_rows=tensors["bos_rows"][s0:s1], eos_rows=tensors["eos_rows"][s0:s1],
            n_streams=s1 - s0, max_len=T, embedded=emb,
        )



class _UniqueGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)  # (N, C)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, grad.shape[-1]).index_copy_(0, index, grad), None  # (R, C)


@dataclass
class MemoryState:
    """The FIFO working memory of B streams.

    Attributes:
        count: Sentences written so far (the same for every stream of a batch); K = min(count, M).
        seed: (B, d) the last sentence vector (seeds the next [BOS]), or None. It is set even when
            nothing is written to the memory (`use_memory = False`).
        keys, values: Cross mode: one (B, K, d) tensor per C sub-layer, oldest slot first:
            W_k m + b_k and W_v m + b_v (the rank encoding's W_k pe is added when read).
        vectors: Prefix mode: the (B, K, d) sentence vectors themselves, oldest first.
    """

    count: int = 0
    seed: torch.Tensor | None = None
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    vectors: torch.Tensor | None = None

    def slots(self, memory_slots: int) -> int:
        return min(self.count, memory_slots)


# ----------------------------------------------------------------------------------------------
# Modules


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, d) -> (B, h, T, d/h)."""
    B, T, d = x.shape
    return x.view(B, T, heads, d // heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d/h) -> (B, T, d)."""
    B, h, T, dh = y.shape
    return y.transpose(1, 2).reshape(B, T, h * dh)


class SelfAttention(nn.Module):
    """Causal self-attention over one step's grid: the sentence (after its memory rows in prefix mode)."""

    def __init__(self, config: TGConfig) -> None:
        super().__init__()
        d = config.width
        self.heads = config.n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.attention_dropout = config.attention_dropout
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, step: StepInputs) -> torch.Tensor:
        d = x.shape[-1]
        q, k, v = step.to_grid(self.qkv(x)).split(d, dim=-1)  # 3 x (B, T, d)
        q, k, v = (_heads(t, self.heads) for t in (q, k, v))  # (B, h, T, dh)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, h, T, dh)
        return self.residual_dropout(self.proj(step.from_grid(_merge(y))))  # (N, d)


class CrossAttention(nn.Module):
    """Non-causal attention from the sentence's rows to the memory slots, with a scalar gate."""

    def __init__(self, config: TGConfig) -> None:
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
        q = _heads(step.to_grid(self.q(x)), self.heads)  # (B, h, T, dh)
        k, v = (_heads(t, self.heads) for t in memory)  # (B, h, K, dh)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, h, T, dh)
        # The gate scales W_o and b_o (d x d) rather than the (N, d) output: same result, one
        # fewer full-size op and its backward per step.
        out = F.linear(step.from_grid(_merge(y)), self.o.weight * self.gate, self.o.bias * self.gate)  # (N, d)
        return self.residual_dropout(out)


class SwiGLU(nn.Module):
    def __init__(self, config: TGConfig) -> None:
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

    def __init__(self, kind: str, config: TGConfig) -> None:
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
                  memory: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | None:
        """One attention sub-layer's residual update; None where a C sub-layer has no memory to read."""
        if isinstance(attn, CrossAttention):
            return None if memory is None else attn(h, step, memory)
        return attn(h, step)

    def forward(self, x: torch.Tensor, step: StepInputs,
                memories: list[tuple[torch.Tensor, torch.Tensor] | None]) -> torch.Tensor:
        """x: (N, d) packed rows; memories: this block's (keys, values) per sub-layer, None if empty."""
        if self.kind == "P":
            inputs = [norm(x) for norm in self.norms] if len(self.norms) == 2 else [self.norms[0](x)] * 2
            updates = [self.attention(attn, h, step, memory)
                       for attn, h, memory in zip(self.attns, inputs, memories, strict=True)]
            for update in updates:
                x = x if update is None else x + update  # (N, d)
        else:
            for attn, norm, memory in zip(self.attns, self.norms, memories, strict=True):
                update = self.attention(attn, norm(x), step, memory)
                x = x if update is None else x + update  # (N, d); an empty memory adds exactly zero
        return x + self.mlp(self.ln_mlp(x))  # (N, d)


class TG(nn.Module):
    """The Thought Gestalt model (paper section 1).

    Non-embedding parameters at 12 x 768 (GPT-2 vocabulary): 85.66M for the alternate pattern
    (6 S blocks of 7.09M, 6 C blocks of 7.09M + gate, W_sent 0.59M, final LN), 114.03M for SC/CS.
    Biases on every linear, as in GPT-2; without biases the count would be 85.56M. Both round to
    the paper's 85.6M within 0.1M, so the paper's figure does not decide between them.
    """

    def __init__(self, config: TGConfig, vocab: Vocab, sentence_tokens: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        vocab_size = vocab.size
        d = config.width
        self.sentence_tokens = sentence_tokens or config.max_sentence_tokens
        self.wte = nn.Embedding(vocab_size, d)
        self.wpe = nn.Embedding(self.sentence_tokens + 2, d)  # [BOS] + tokens + [EOS]
        # Prefix mode: learned positions of the memory slots, oldest first.
        self.memory_wpe = nn.Embedding(config.memory_slots, d) if config.memory_mode == "prefix" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(kind, config) for kind in config.block_kinds())
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.sentence_ln = nn.LayerNorm(d) if config.sentence_norm else None
        self.w_sent = nn.Linear(d, d)
        self.register_buffer("rank_pe", rank_encoding(config.memory_slots, d), persistent=False)  # (M, d)

        # Memory readers (cross mode): every C sub-layer, indexed per block and sub-layer (-1: none).
        self.readers: list[CrossAttention] = []
        self.reader_slots: list[list[int]] = []
        for block in self.blocks:
            slots = []
            for attn in block.attns:
                reads = isinstance(attn, CrossAttention)
                slots.append(len(self.readers) if reads else -1)
                if reads:
                    self.readers.append(attn)
            self.reader_slots.append(slots)

        self.apply(self._init_weights)
        # GPT-2's scaled init of residual output projections, over the number of residual branches.
        branches = sum(len(b.attns) + 1 for b in self.blocks)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", ".o.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(branches))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # N(0, 0.02), not PyTorch's N(0, 1): with a tied head the latter makes CPU backward slow.
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- one sentence step ------------------------------------------------------------------
    def empty_memory(self) -> MemoryState:
        return MemoryState()

    def step(self, step: StepInputs, memory: MemoryState, write: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor | None, MemoryState, torch.Tensor | None]:
        """Run sentence step t for the B streams of `step`.

        Args:
            step: Packed rows of the step's sentences (each ends with [EOS] when `write`).
            memory: State after step t-1, for at least B streams (alive streams are a prefix).
            write: Compute the sentence vector, seed the next step with it and (with `use_memory`)
                write it to the memory.

        Returns:
            (x, m, memory', penalty): final-block rows (N, d) before `ln_f`; the sentence vectors
            (B, d) as computed (before any detach or dropout) or None; the new memory state; the
            release-style norm penalty summed over the B vectors, or None.
        """
        cfg = self.config
        B = step.n_streams
        K = memory.slots(cfg.memory_slots)
        x = step.embedded if step.embedded is not None else self.wte(step.ids) + self.wpe(step.pos)  # (N, d)
        if cfg.context_seeding and memory.seed is not None:
            # m_{t-1} replaces the [BOS] token embedding; the position embedding is still added.
            seed = memory.seed[:B] + self.wpe.weight[0]  # (B, d)
            x = x.index_copy(0, step.bos_rows, seed.to(x.dtype))  # (N, d)
        if cfg.token_dropout and self.training:
            keep = F.dropout(x.new_ones(x.shape[0], 1), cfg.token_dropout)  # (N, 1) whole rows, rescaled
            x = x * keep
        x = self.drop(x)  # (N, d)

        grid = step
        reads: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.readers)
        if cfg.memory_mode == "prefix" and K > 0:
            # The memory vectors become the first K rows of each stream's sequence.
            slots = memory.vectors[:B] + self.memory_wpe.weight[:K]  # (B, K, d)
            x = torch.cat([self.drop(slots.reshape(B * K, -1).to(x.dtype)), x])  # (B*K + N, d)
            grid = step.with_prefix(K)
        elif K > 0:
            pe = self.rank_pe[:K]  # (K, d) rank 0 = oldest slot
            for i, reader in enumerate(self.readers):
                keys = memory.keys[i][:B] + reader.rank_keys(pe)  # (B, K, d) rank encodes keys only
                reads[i] = (keys, memory.values[i][:B])

        h = None
        for index, (block, slots) in enumerate(zip(self.blocks, self.reader_slots, strict=True)):
            x = block(x, grid, [reads[s] if s >= 0 else None for s in slots])  # (N', d)
            if index + 1 == cfg.sentence_block:
                h = x
        if grid is not step:  # drop the memory rows: only sentence rows predict tokens
            x, h = x[B * K :], h[B * K :]  # (N, d)
        if not write:
            return x, None, memory, None

        if cfg.sentence_after_final_norm and cfg.sentence_block == cfg.layers:
            h = self.ln_f(h)
        pooled = self.pool(h, step)  # (B, d)
        penalty = None
        if self.sentence_ln is not None:
            normed = self.sentence_ln(pooled)  # (B, d)
            if cfg.sentence_head_dropout and self.training:
                normed = F.dropout(normed, cfg.sentence_head_dropout)
            m = self.w_sent(normed)  # (B, d)
            norm = m.float().norm(dim=-1, keepdim=True)  # (B, 1)
            hinge = F.relu(0.9 - norm) + F.relu(norm - 1.1)  # (B, 1)
            penalty = (hinge.square() if cfg.sentence_norm_squared_hinge else hinge).sum() * cfg.sentence_norm_penalty
            m = m / norm.clamp_min(1e-6).to(m.dtype)  # (B, d)
        else:
            if cfg.sentence_head_dropout and self.training:
                pooled = F.dropout(pooled, cfg.sentence_head_dropout)
            m = self.w_sent(pooled)  # (B, d)
        written = m.detach() if cfg.detach_memory else m
        if cfg.sentence_dropout and self.training:
            written = F.dropout(written, cfg.sentence_dropout)
        if not cfg.use_memory:  # the "no memory" ablation: nothing is stored, [BOS] seeding stays
            return x, m, dataclasses.replace(memory, seed=written), penalty
        return x, m, self.write(memory, written), penalty

    def pool(self, h: torch.Tensor, step: StepInputs) -> torch.Tensor:
        """The hidden state a sentence vector is made from: its [EOS] row, or a mean over its rows.

        h: (N, d) the sentence rows after the sentence block -> (B, d).
        """
        if self.config.sentence_pool == "eos":
            return gather_rows(h, step.eos_rows)  # (B, d)
        B = step.n_streams
        weight = torch.ones_like(step.pos, dtype=h.dtype)  # (N,)
        if self.config.mean_pool_content_only:
            content = (step.ids < self.vocab.base_size).to(h.dtype)  # (N,)
            has_content = h.new_zeros(B).index_add(0, step.stream, content) > 0  # (B,)
            # A unit without content tokens (a lone [EOD]) falls back to all of its rows.
            weight = torch.where(has_content[step.stream], content, weight)
        summed = h.new_zeros(B, h.shape[-1]).index_add(0, step.stream, h * weight[:, None])  # (B, d)
        return summed / h.new_zeros(B).index_add(0, step.stream, weight)[:, None]  # (B, d)

    def write(self, memory: MemoryState, m: torch.Tensor) -> MemoryState:
        """Append sentence vectors m (B, d) to the memory of the first B streams (FIFO of M slots)."""
        B = m.shape[0]
        drop = 1 if memory.count >= self.config.memory_slots else 0  # the oldest slot leaves a full memory

        def append(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
            new = new[:, None]  # (B, 1, d)
            if memory.count == 0:
                return new
            return torch.cat([old[:B, drop:], new.to(old.dtype)], dim=1)  # (B, K'+1, d)

        if self.config.memory_mode == "prefix":
            return MemoryState(count=memory.count + 1, seed=m, vectors=append(memory.vectors, m))
        keys, values = [], []
        for i, reader in enumerate(self.readers):
            k, v = reader.memory_kv(m)  # (B, d) each
            keys.append(append(memory.keys[i] if memory.keys else None, k))
            values.append(append(memory.values[i] if memory.values else None, v))
        return MemoryState(count=memory.count + 1, seed=m, keys=keys, values=values)

    # -- a whole batch of streams -------------------------------------------------------------
    def run(self, tensors: dict[str, torch.Tensor], steps: list[tuple[int, int, int, int, int]],
            keep_vectors: bool = False) -> dict:
        """Run every sentence step of a batch of streams (layout from `stream_layout`).

        Returns:
            dict with "hidden": (N_targets, d) `ln_f` output at every row that has a target, in
            target order; "penalty": summed norm penalty (or None); "vectors": per step the (B_t, d)
            sentence vectors (only with keep_vectors); "memory": the final MemoryState.
        """
        memory = self.empty_memory()
        outputs, vectors, penalty = [], [], None
        # One lookup for the whole batch: a per-step lookup would build a dense (V, d) gradient per step.
        embedded = self.wte(tensors["ids"]) + self.wpe(tensors["pos"])  # (N_total, d)
        for step in step_inputs(tensors, steps, embedded):
            if self.config.checkpoint_steps and self.training and torch.is_grad_enabled():
                x, m, memory, p = checkpoint(self.step, step, memory, use_reentrant=False)
            else:
                x, m, memory, p = self.step(step, memory)
            outputs.append(x)
            if keep_vectors:
                vectors.append(m)
            if p is not None:
                penalty = p if penalty is None else penalty + p
        x = gather_rows(torch.cat(outputs), tensors["target_rows"])  # (N_targets, d)
        return {"hidden": self.ln_f(x), "penalty": penalty, "vectors": vectors, "memory": memory}


# ----------------------------------------------------------------------------------------------
# Data layout


def split_units(document: Document, vocab: Vocab, cap: int, eod_unit: bool = False) -> list[np.ndarray]:
    """A document's sentences as token arrays of at most `cap` tokens, ending with `[EOD]`.

    Sentences longer than `cap` are re-split exactly as the data pipeline enforces its own cap
    (`cap_and_merge`: the fewest near-equal fragments, fragments under 3 tokens merged into a
    neighbour), so a model cap below the corpus cap (the half-length ablation) follows the same rule
    on the same documents and tokens. `[EOD]` is appended to the last sentence and counts towards
    the cap (an overflow becomes the unit `[BOS] [EOD] [EOS]`); with `eod_unit` it is always its own
    unit. An empty document becomes the single unit `[BOS] [EOD] [EOS]`.
    """
    sentences = [np.asarray(s, dtype=np.int64).reshape(-1) for s in document]
    sentences = [s for s in sentences if len(s)]
    if any(len(s) > cap for s in sentences):
        capped, _, _ = cap_and_merge([s.tolist() for s in sentences], cap, MIN_FRAGMENT_TOKENS)
        sentences = [np.asarray(s, dtype=np.int64) for s in capped]
    eod = np.array([vocab.eod_id], dtype=np.int64)
    if eod_unit or not sentences or len(sentences[-1]) == cap:
        return [*sentences, eod]
    return [*sentences[:-1], np.append(sentences[-1], vocab.eod_id)]


def split_spans(document: Document, vocab: Vocab, span: int) -> list[np.ndarray]:
    """A document's concatenated tokens (plus `[EOD]`) cut into consecutive spans of `span` tokens."""
    pieces = [np.asarray(s, dtype=np.int64).reshape(-1) for s in document]
    tokens = np.concatenate([*pieces, np.array([vocab.eod_id], dtype=np.int64)])
    return [tokens[j : j + span] for j in range(0, len(tokens), span)]


def stream_layout(streams: Sequence[Sequence[np.ndarray]], vocab: Vocab) -> tuple[dict, list, dict]:
    """Lay a set of streams out step-major, as packed rows with all indices precomputed.

    Args:
        streams: Streams of sentence token arrays, sorted by sentence count, longest first.

    Returns:
        (tensors, steps, info): numpy arrays for `TG.run` plus "targets"; per step
        (row0, row1, sentence0, sentence1, T) host ints; info with counts and per-target metadata
        ("target_stream", "target_step") for scoring and tests.
    """
    counts = np.array([len(s) for s in streams], dtype=np.int64)
    assert np.all(counts[:-1] >= counts[1:]), "streams must be sorted by sentence count, longest first"
    n_steps = int(counts[0])
    alive = (counts[None, :] > np.arange(n_steps)[:, None]).sum(axis=1)  # (steps,) streams alive per step
    sentences = [streams[b][t] for t in range(n_steps) for b in range(alive[t])]
    n_sent = len(sentences)
    lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)  # [BOS] + tokens + [EOS]
    row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (n_sent,)
    total = int(lengths.sum())

    ids = np.empty(total, dtype=np.int64)
    is_bos = np.zeros(total, dtype=bool)
    is_eos = np.zeros(total, dtype=bool)
    is_bos[row_start] = True
    is_eos[row_start + lengths - 1] = True
    ids[is_bos] = vocab.bos_id
    ids[is_eos] = vocab.eos_id
    ids[~(is_bos | is_eos)] = np.concatenate(sentences) if total > 2 * n_sent else np.zeros(0, np.int64)

    sent_of_row = np.repeat(np.arange(n_sent), lengths)  # (total,)
    pos = np.arange(total) - row_start[sent_of_row]
    step_of_sent = np.repeat(np.arange(n_steps), alive)  # (n_sent,)
    step_sent0 = np.concatenate([[0], np.cumsum(alive)[:-1]])  # (steps,) first sentence of each step
    stream_of_sent = np.arange(n_sent) - step_sent0[step_of_sent]
    step_row0 = row_start[step_sent0]  # (steps,)
    step_T = np.maximum.reduceat(lengths, step_sent0)  # (steps,) longest sentence of each step
    row_step = step_of_sent[sent_of_row]
    stream = stream_of_sent[sent_of_row]
    grid_index = stream * step_T[row_step] + pos
    bos_rows = row_start - step_row0[step_of_sent]  # row inside its step
    eos_rows = bos_rows + lengths - 1

    target_rows = np.flatnonzero(~is_eos)  # every row but [EOS] predicts the next token
    targets = ids[target_rows + 1]
    step_row1 = np.append(step_row0[1:], total)
    step_sent1 = step_sent0 + alive
    steps = [(int(a), int(b), int(c), int(d), int(T))
             for a, b, c, d, T in zip(step_row0, step_row1, step_sent0, step_sent1, step_T, strict=True)]
    tensors = {
        "ids": ids, "pos": pos, "grid_index": grid_index, "stream": stream,
        "bos_rows": bos_rows, "eos_rows": eos_rows, "target_rows": target_rows, "targets": targets,
        "target_step": row_step[target_rows],
    }
    info = {
        "rows": total,
        "grid_slots": int((alive * step_T).sum()),
        "sentences": n_sent,
        "lexical_tokens": int((targets < vocab.base_size).sum()),
        "target_stream": stream[target_rows],
        "target_step": row_step[target_rows],
    }
    return tensors, steps, info


def stream_batch(streams: Sequence[Sequence[np.ndarray]], vocab: Vocab) -> Batch:
    tensors, steps, info = stream_layout(streams, vocab)
    return Batch(
        tensors=tensors,
        lexical_tokens=info["lexical_tokens"],
        sentences=info["sentences"],
        computed_slots=info["rows"],  # rows through every token-wise layer; padding exists only in attention
        meta={"steps": steps, "grid_slots": info["grid_slots"], "streams": len(streams),
              "target_stream": info["target_stream"], "target_step": info["target_step"]},
    )


# ----------------------------------------------------------------------------------------------
# Adapters


class TGAdapter(Adapter):
    """Thought Gestalt: sentence streams with a FIFO memory of sentence vectors (paper sections 1-3)."""

    name = "tg"
    description = "Thought Gestalt: sentence-level decoder with a cross-attended memory of sentence vectors"
    config_class = TGConfig
    sentence_boundaries = True

    # -- how documents become sentence units --------------------------------------------------
    @property
    def unit_tokens(self) -> int:
        """Most tokens in one sentence unit (sizes the position table; forces [EOS] in generation)."""
        return self.config.max_sentence_tokens

    def units(self, document: Document, vocab: Vocab) -> list[np.ndarray]:
        return split_units(document, vocab, self.config.max_sentence_tokens, self.config.eod_unit)

    def prompt_units(self, prompt: Document) -> list[np.ndarray]:
        """Prompt sentences split at the cap; the last unit is the one generation continues."""
        cap = self.unit_tokens
        units = []
        for sentence in prompt:
            tokens = np.asarray(sentence, dtype=np.int64).reshape(-1)
            units.extend(tokens[j : j + cap] for j in range(0, len(tokens), cap))
        return units

    def data_config(self, data):
        """The corpus is encoded at the model's sentence cap when that is the smaller one (half length)."""
        if data.max_sentence_tokens <= self.config.max_sentence_tokens:
            return data
        return dataclasses.replace(data, max_sentence_tokens=self.config.max_sentence_tokens)

    # -- building -----------------------------------------------------------------------------
    def build(self, vocab: Vocab) -> nn.Module:
        return TG(self.config, vocab, sentence_tokens=self.unit_tokens)

    # -- training -----------------------------------------------------------------------------
    def streams(self, documents: Sequence[Document], vocab: Vocab, epoch: int) -> list[list[np.ndarray]]:
        """Training streams: each document cut into consecutive chunks of at most S sentences."""
        S = self.config.stream_sentences(epoch)
        out = []
        for doc in documents:
            units = self.units(doc, vocab)
            out.extend(units[i : i + S] for i in range(0, len(units), S))
        return out

    def batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[Batch]:
        """Streams bucketed by sentence count: shuffle, sort by count, fill batches to `batch_tokens`.

        Streams of a batch then have similar counts, so few steps run with a handful of streams;
        the batch order is shuffled so lengths do not drift through the epoch.
        """
        groups = self._stream_groups(documents, vocab, batch_tokens=batch_tokens, epoch=epoch, rng=rng)
        return [stream_batch(groups[i], vocab) for i in rng.permutation(len(groups))]

    def count_batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> int:
        return len(self._stream_groups(documents, vocab, batch_tokens=batch_tokens, epoch=epoch, rng=rng))

    def _stream_groups(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[list]:
        """The streams of each batch (before shuffling the batch order), without building tensors."""
        streams = self.streams(documents, vocab, epoch)
        if not streams:
            return []
        order = rng.permutation(len(streams))
        counts = np.array([len(streams[i]) for i in order])
        order = order[np.argsort(-counts, kind="stable")]  # longest first, random among equals
        lexical = [int(sum(int((u < vocab.base_size).sum()) for u in streams[i])) for i in order]
        groups, current, tokens = [], [], 0
        for index, n in zip(order, lexical, strict=True):
            current.append(streams[index])
            tokens += n
            if tokens >= batch_tokens:
                groups.append(current)
                current, tokens = [], 0
        if current:
            groups.append(current)
        return groups

    # -- what the model can see ---------------------------------------------------------------
    def memory_reads(self, documents, vocab, *, epoch=None) -> MemoryReads:
        """Slots read: the t-th unit of a stream (0-based) reads min(t, memory_slots) slots, nothing without
        `use_memory`. Training streams are the epoch's chunks of S units; scoring reads each document as one."""
        if epoch is None:
            lengths = [len(self.units(doc, vocab)) for doc in documents]
        else:
            lengths = [len(stream) for stream in self.streams(documents, vocab, epoch)]
        M = self.config.memory_slots
        n = np.asarray(lengths, dtype=np.int64)
        sentences = int(n.sum())
        if not self.config.use_memory:
            return MemoryReads(0, sentences, 0)
        # sum_{t < n} min(t, M) = M(M-1)/2 + M(n-M) for n > M, else n(n-1)/2
        filling = np.minimum(n, M)
        slots = filling * (filling - 1) // 2 + M * np.maximum(n - M, 0)
        return MemoryReads(int(slots.sum()), sentences, int(np.maximum(n - M, 0).sum()))

    def effective_context(self, mean_sentence_tokens: float) -> EffectiveContext:
        """The memory span: memory_slots sentences of the corpus's mean length (0 without `use_memory`)."""
        span = self.config.memory_slots * mean_sentence_tokens if self.config.use_memory else 0.0
        return EffectiveContext(float(span), "memory")

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        t = batch.tensors
        out = model.run(t, batch.meta["steps"])
        logits = model.lm_head(out["hidden"])  # (N_targets, V)
        targets = t["targets"]  # (N_targets,)
        nll = cross_entropy(logits.float(), targets)  # (N_targets,)
        eos_weight = self.config.eos_weight(epoch)
        weights = torch.where(targets == model.vocab.eos_id, eos_weight, 1.0)  # (N_targets,) [EOD] keeps 1
        if self.config.loss_reduction == "steps":
            # Each sentence step's weighted mean, summed over the steps (paper section 3).
            n_steps = len(batch.meta["steps"])
            step_nll = nll.new_zeros(n_steps).index_add(0, t["target_step"], nll * weights)  # (steps,)
            step_weight = nll.new_zeros(n_steps).index_add(0, t["target_step"], weights)  # (steps,)
            loss = (step_nll / step_weight).sum()
        else:
            loss = (nll * weights).sum() / weights.sum()
        if out["penalty"] is not None:
            loss = loss + out["penalty"] / batch.sentences  # mean hinge over the batch's sentence vectors
        return LossParts(
            loss=loss,
            lexical_nll_sum=nll.masked_fill(targets >= model.vocab.base_size, 0.0).sum().detach(),
            lexical_tokens=batch.lexical_tokens,
        )

    # -- evaluation -----------------------------------------------------------------------------
    def score_batches(self, documents: Sequence[Document], vocab: Vocab) -> list[tuple[list[int], Batch]]:
        """Evaluation documents, each one uncut stream, sorted by length and grouped into batches."""
        units = [self.units(doc, vocab) for doc in documents]
        order = sorted(range(len(units)), key=lambda i: -len(units[i]))
        groups, current, rows = [], [], 0
        for i in order:
            n = sum(len(u) + 2 for u in units[i])
            if current and rows + n > self.config.score_batch_tokens:
                groups.append(current)
                current, rows = [], 0
            current.append(i)
            rows += n
        if current:
            groups.append(current)
        return [(g, stream_batch([units[i] for i in g], vocab)) for g in groups]

    def score(self, model: nn.Module, documents: Sequence[Document], vocab: Vocab) -> list[torch.Tensor]:
        device = next(model.parameters()).device
        result: list[torch.Tensor] = [torch.zeros(0)] * len(documents)
        with torch.no_grad():
            for doc_ids, batch in self.score_batches(documents, vocab):
                b = batch.to(device)
                hidden = model.run(b.tensors, b.meta["steps"])["hidden"]  # (N_targets, d)
                targets = b.tensors["targets"]
                lexical = targets < vocab.base_size
                hidden, targets = hidden[lexical], targets[lexical]
                logps = []
                for start in range(0, len(targets), 2048):  # bound the (rows, V) logits
                    logits = model.lm_head(hidden[start : start + 2048]).float()  # (n, V)
                    logps.append(torch.log_softmax(logits, dim=-1)
                                 .gather(1, targets[start : start + 2048, None])[:, 0])
                values = torch.cat(logps).cpu().numpy() if logps else np.zeros(0, np.float32)
                # Targets are step-major; a stable sort by stream restores each document's order.
                stream = batch.meta["target_stream"][batch.tensors["targets"] < vocab.base_size]
                order = np.argsort(stream, kind="stable")
                sizes = np.bincount(stream, minlength=len(doc_ids))
                for i, part in zip(doc_ids, np.split(values[order], np.cumsum(sizes)[:-1]), strict=True):
                    result[i] = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
        return result

    def _unit_step(self, tokens: list[int], vocab: Vocab, device: torch.device, complete: bool) -> StepInputs:
        ids = [vocab.bos_id, *tokens] + ([vocab.eos_id] if complete else [])
        n = len(ids)
        arange = torch.arange(n, device=device)
        return StepInputs(
            ids=torch.tensor(ids, device=device), pos=arange, grid_index=arange,
            stream=torch.zeros(n, dtype=torch.long, device=device),
            bos_rows=torch.zeros(1, dtype=torch.long, device=device),
            eos_rows=torch.full((1,), n - 1, dtype=torch.long, device=device),
            n_streams=1, max_len=n,
        )

    def generate(self, model, prompt, vocab, *, max_new_tokens, stop=()) -> list[int]:
        """Greedy continuation of the prompt's last sentence, sentence by sentence (see `sample`).

        Returns the new content ids, including a stop sequence that ended generation (as the GPT-2
        adapter does).
        """
        sentences = self._continue(model, prompt, vocab, max_new_tokens, stop, Sampler(), 0)
        return [t for sentence in sentences for t in sentence]

    def sample(self, model, prompt, vocab, *, max_new_tokens, sampler, max_sentences=0) -> list[list[int]]:
        """Generation as in training, one sentence at a time.

        Completed prompt sentences are written to memory; the current sentence is recomputed at
        every new token. A predicted `[EOS]` (or reaching the sentence cap) closes the sentence,
        writes its vector to memory and seeds the next one with it; `[EOD]` ends generation.
        """
        return self._continue(model, prompt, vocab, max_new_tokens, (), sampler, max_sentences)

    def _continue(self, model, prompt, vocab, max_new_tokens, stop, sampler: Sampler,
                  max_sentences: int) -> list[list[int]]:
        device = next(model.parameters()).device
        units = self.prompt_units(prompt)
        cap = self.unit_tokens
        current = [int(t) for t in units.pop()] if units and len(units[-1]) < cap else []
        new: list[int] = []
        sentences: list[list[int]] = [[]]  # the continuation of the prompt's last unit, then new units
        allowed = torch.zeros(model.wte.num_embeddings, dtype=torch.bool, device=device)
        allowed[: vocab.base_size] = True
        allowed[vocab.eos_id] = allowed[vocab.eod_id] = True
        closed = 0  # a model that predicts nothing but [EOS] must still stop
        with torch.no_grad():
            memory = model.empty_memory()
            for unit in units:
                memory = model.step(self._unit_step([int(t) for t in unit], vocab, device, True), memory)[2]
            while len(new) < max_new_tokens and closed <= max_new_tokens:
                if len(current) >= cap:
                    token = vocab.eos_id
                else:
                    x = model.step(self._unit_step(current, vocab, device, False), memory, write=False)[0]
                    logits = model.lm_head(model.ln_f(x[-1])).float()  # (V,)
                    token = sampler.pick(logits.masked_fill(~allowed, float("-inf")))
                if token == vocab.eod_id:
                    break
                if token == vocab.eos_id:
                    memory = model.step(self._unit_step(current, vocab, device, True), memory)[2]
                    current = []
                    closed += 1
                    if max_sentences and sum(map(bool, sentences)) >= max_sentences:
                        break
                    sentences.append([])
                    continue
                current.append(token)
                new.append(token)
                sentences[-1].append(token)
                if any(len(s) and new[-len(s) :] == [int(t) for t in s] for s in stop):
                    break
        return sentences


@dataclass
class TGSpanConfig(TGConfig):
    """TG settings plus the span length N: a "sentence" is a fixed span of N content tokens."""

    span_tokens: int = 25  # the paper's N in {25, 50, 75}; 25 = mean sentence length
    # A span's vector does not replace the next span's [BOS] (release): a span ends mid-sentence, so
    # there is no finished thought to seed the next unit with.
    context_seeding: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.span_tokens <= 0:
            raise UserError(f"tg-span span_tokens = {self.span_tokens} must be positive", "use 25, 50 or 75")


class TGSpanAdapter(TGAdapter):
    """TG whose units are fixed spans of N tokens of the concatenated document (paper section 4)."""

    name = "tg-span"
    description = "Thought Gestalt over fixed token spans instead of sentences"
    config_class = TGSpanConfig

    @property
    def unit_tokens(self) -> int:
        return self.config.span_tokens

    def data_config(self, data):
        return data  # spans ignore sentence boundaries, so the sentence cap does not apply

    def effective_context(self, mean_sentence_tokens: float) -> EffectiveContext:
        """The memory span in spans: memory_slots x span_tokens (0 without `use_memory`)."""
        span = self.config.memory_slots * self.config.span_tokens if self.config.use_memory else 0
        return EffectiveContext(float(span), "memory")

    def units(self, document: Document, vocab: Vocab) -> list[np.ndarray]:
        return split_spans(document, vocab, self.config.span_tokens)

    def prompt_units(self, prompt: Document) -> list[np.ndarray]:
        pieces = [np.asarray(s, dtype=np.int64).reshape(-1) for s in prompt]
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        span = self.config.span_tokens
        return [tokens[j : j + span] for j in range(0, len(tokens), span)]
