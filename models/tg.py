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

Training FLOPs (`Adapter.train_flops`: 3 x the forward, FLOP = 2 x multiply-add). Sentence step t has N_t
packed rows, B_t streams, grid width T_t (its longest unit) and K_t = min(t, M) memory slots (t 0-based; 0
without `use_memory`). Over the L blocks there are s self- and c cross-attention sub-layers (alternate:
s = ceil(L/2), c = floor(L/2); SC, CS, P: s = c = L); inner = swiglu_width(d). In cross mode step t costs

    s (8 N d^2 + 4 B T^2 d)                       self-attention: qkv, output; q k^T and (weights) v on B x T x T
  + [K > 0] c (4 N d^2 + 4 B T K d + 2 K d^2)     cross-attention: q, gated output; B x T x K; W_k of the rank encodings
  + 6 L N d inner                                 SwiGLU
  + 2 B d^2                                       the sentence head W_sent
  + [use_memory] 4 c B d^2                        W_k, W_v of the written sentence vector, per C sub-layer

(the causal T x T square counts in full, as SDPA computes it; a C sub-layer with an empty memory is skipped).
In prefix mode every sub-layer is a self-attention sub-layer (c = 0; s = L for alternate, 2L for SC, CS, P) over
the memory rows placed before the sentence: N -> N + B K and T -> T + K. Once per batch the tied output layer
adds 2 N_targets d V on the rows that have a target (every row but [EOS]). Gates, norms, pooling and the rank
encodings' addition are elementwise and not counted. With `checkpoint_steps` the backward runs every step's
forward again: the steps' forward counts 4 times instead of 3 (the output layer, outside the checkpoints, 3).
"""


from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tgbench.adapter import (
    Document,
    EffectiveContext,
    MemoryReads,
    Vocab,
    heads_for,
    matmul_flops,
)
from tgbench.core.errors import UserError
from tgbench.models.layers import (
    Block,
    CrossAttention,
    cross_attention_flops,
    rank_encoding,
    self_attention_flops,
    swiglu_flops,
)
from tgbench.models.streams import StepInputs, StreamAdapter, gather_rows, split_spans, step_inputs

BLOCK_PATTERNS = ("alternate", "SC", "CS", "P")


MEMORY_MODES = ("cross", "prefix")


SENTENCE_POOLS = ("eos", "mean")


LOSS_REDUCTIONS = ("steps", "tokens")


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
    # GPT-2's N(0, 0.02 / sqrt(2L)) init of every residual branch's output projection (self-attention, the
    # cross-attention output, the SwiGLU down-projection); false: the cross-attention output and the SwiGLU
    # down-projection at N(0, 0.02), as the release (paper.md section 7), the self-attention's still scaled
    scaled_residual_init: bool = True
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
        scaled = ("proj.weight", ".o.weight", "w2.weight") if config.scaled_residual_init else ("proj.weight",)
        for name, p in self.named_parameters():
            if name.endswith(scaled):
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


def step_flops(config: TGConfig, rows: int, streams: int, grid: int, slots: int) -> float:
    """Forward FLOPs of one sentence step reading `slots` memory slots, output layer aside (module docstring)."""
    d = config.width
    if config.memory_mode == "prefix":  # the memory rows go through every layer before the sentence's
        rows, grid = rows + streams * slots, grid + slots
    letters = "".join(config.block_kinds()).replace("P", "SC")
    readers = letters.count("C")
    attention = letters.count("S") * self_attention_flops(rows, streams, grid, d)
    if slots:
        attention += readers * (cross_attention_flops(rows, streams, grid, slots, d) + matmul_flops(slots, d, d))
    writes = readers * 2 * matmul_flops(streams, d, d) if config.use_memory else 0.0
    return attention + config.layers * swiglu_flops(rows, d) + matmul_flops(streams, d, d) + writes


class TGAdapter(StreamAdapter):
    """Thought Gestalt: sentence streams with a FIFO memory of sentence vectors (paper sections 1-3)."""

    name = "tg"
    description = "Thought Gestalt: sentence-level decoder with a cross-attended memory of sentence vectors"
    config_class = TGConfig
    # no memory writes (the C blocks add zero) and no seeding of [BOS] with the previous sentence's vector
    controls = {"no-memory": {"use_memory": False, "context_seeding": False}}

    # -- building -----------------------------------------------------------------------------
    def build(self, vocab: Vocab) -> nn.Module:
        return TG(self.config, vocab, sentence_tokens=self.unit_tokens)

    @property
    def recomputes_steps(self) -> bool:
        return self.config.checkpoint_steps

    def steps_forward_flops(self, steps) -> float:
        """Every step's `step_flops`, step t reading min(t, memory_slots) slots (none without `use_memory`)."""
        M = self.config.memory_slots if self.config.use_memory else 0
        return sum(step_flops(self.config, row1 - row0, stream1 - stream0, T, min(t, M))
                   for t, (row0, row1, stream0, stream1, T) in enumerate(steps))

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
