"""Recurrent Memory Transformer (RMT; Bulatov et al., NeurIPS 2022) over TG's sentence streams.

One file, nanoGPT-style: `RMTConfig`, the memory state, the attention mask, the `RMT` model, then
`RMTAdapter` (name "rmt"). Streams, curriculum, loss and scoring are TG's (`models/segments.py`); the
architecture is not TG's: every layer is a self-attention block over the segment and its memory rows
(TG alternates self- and cross-attention), and positions are learned over the whole row
(docs/choices.md).

Each segment (a sentence `[BOS] tokens [EOS]`, or a fixed span with `segment = "span"`) runs through
a decoder as

    [r_1 .. r_K] [BOS] x_1 .. x_n [EOS] [w_1 .. w_K]

where the K read tokens r and the K write tokens w both carry the current memory state (the
reference's `MemoryCell.process_input`: the memory goes in at both ends) and positions are absolute
over the whole row (the backbone's own learned positions). Attention is LM-RMT's (`memory_mask =
"full"`): the read tokens see each other, the segment's tokens are causal among themselves and see
every read token, the write tokens see everything before them and each other. The write tokens' final
hidden states after the final LayerNorm are the next segment's memory, as in the reference code
(`memory_norm = "final"`; "scaled" starts them at the token embeddings' norm instead); the first
segment reads a learned initial memory (K x d parameter, drawn at the token embeddings' scale).
Gradients flow through the memory across the whole stream (back-propagation through time, as TG's
memory); `bptt_segments = k > 0` detaches it at every k-th hand-over (truncated BPTT in blocks of k
segments), so a loss reaches back at most k - 1 earlier segments.

The blocks are TG's self-attention blocks (pre-LN, SwiGLU, packed rows scattered into a per-step
grid only inside attention), imported from `models/layers.py`, so RMT and TG share the token path.

Training FLOPs (`Adapter.train_flops`: 3 x the forward, FLOP = 2 x multiply-add). Segment step t has N_t
packed rows, B_t streams and grid width T_t; the K read and K write rows of every stream run through all L
layers with the segment, so with R = N + 2 B K rows on a grid of width G = T + 2 K step t costs

    L (8 R d^2 + 4 B G^2 d + 6 R d inner)    qkv, output; q k^T and (weights) v on B x G x G; SwiGLU

(inner = swiglu_width(d); the causal G x G square counts in full, as SDPA computes it). Once per batch the
tied output layer adds 2 N_targets d V on the segment rows that have a target (every row but [EOS]); the write
rows' final LayerNorm is not a matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tgbench.adapter import EffectiveContext, MemoryReads, Vocab
from tgbench.core.errors import UserError
from tgbench.models.layers import Block, self_attention_flops, swiglu_flops
from tgbench.models.segments import SegmentAdapter, SegmentConfig
from tgbench.models.streams import StepInputs, gather_rows, step_inputs
from tgbench.models.tg import TG

EMBEDDING_STD = 0.02  # the init std of token embeddings (TG._init_weights), and of the memory's rows
MEMORY_MASKS = ("full", "causal")
MEMORY_NORMS = ("scaled", "final")


@dataclass
class RMTConfig(SegmentConfig):
    """RMT settings: TG's stream settings plus the memory size, the BPTT window and the memory's attention
    and scale (docs/choices.md gives each default's source)."""

    family = "rmt"

    memory_tokens: int = 10  # K read and K write tokens per segment (docs/choices.md)
    bptt_segments: int = 0  # 0 = back-propagate through the whole stream (as TG); k = detach every k segments
    # full: read rows see each other, write rows see each other (LM-RMT); causal: plain causal over the row
    memory_mask: str = "full"
    # final: ln_f, as the reference's hidden_states[-1] (about 50x the token rows' norm at init); scaled: the
    # memory's own LayerNorm, its gain starting at EMBEDDING_STD (measured less stable: docs/choices.md)
    memory_norm: str = "final"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bptt_segments < 0:
            raise UserError(f"rmt bptt_segments = {self.bptt_segments} is negative",
                            "use 0 (the whole stream) or a window of k >= 1 segments")
        for name, allowed in (("memory_mask", MEMORY_MASKS), ("memory_norm", MEMORY_NORMS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"rmt {name} = '{getattr(self, name)}' is unknown", f"use one of {', '.join(allowed)}")


@dataclass
class RMTMemory:
    """The memory of B streams after `count` segments: (B, K, d) write-token states, or None (initial)."""

    count: int = 0
    state: torch.Tensor | None = None


def memory_rows(step: StepInputs, slots: int, write: bool) -> StepInputs:
    """The step's layout with K read rows before and (when `write`) K write rows after each segment.

    Packed row order: read rows (stream-major), the segment rows, write rows (stream-major). In the
    (B, K + T + K) grid stream b's row is [read..., segment (len_b rows)..., write..., padding], so the
    write rows sit right after the segment's last real row and causal attention never sees padding.
    """
    B, K, T = step.n_streams, slots, step.max_len
    width = K + T + (K if write else 0)
    device = step.grid_index.device
    streams = torch.arange(B, device=device)
    j = torch.arange(K, device=device)
    read_index = (streams[:, None] * width + j[None]).reshape(-1)  # (B*K,)
    parts = [read_index, step.stream * width + K + step.pos]
    if write:
        lengths = step.eos_rows - step.bos_rows + 1  # (B,) rows of each segment
        parts.append((streams[:, None] * width + K + lengths[:, None] + j[None]).reshape(-1))  # (B*K,)
    return StepInputs(
        ids=step.ids, pos=step.pos, grid_index=torch.cat(parts), stream=step.stream,
        bos_rows=step.bos_rows + B * K, eos_rows=step.eos_rows + B * K, n_streams=B, max_len=width,
    )


def memory_mask(step: StepInputs, slots: int, write: bool) -> torch.Tensor:
    """LM-RMT's attention over `memory_rows`'s grid: (B, 1, W, W), True = row i may attend to row j.

    Causal, plus: the K read rows see each other (all of them, not only earlier ones), and the K write rows
    of each stream see each other. So a segment token sees every read row and the segment up to itself, a
    write row sees the read rows, the whole segment and every write row, and no real row sees padding
    (it sits after a stream's last real row).
    """
    B, K, T = step.n_streams, slots, step.max_len
    width = K + T + (K if write else 0)
    r = torch.arange(width, device=step.grid_index.device)
    read = r < K  # (W,)
    allowed = (r[None, :] <= r[:, None]) | (read[:, None] & read[None, :])  # (W, W)
    if not write:
        return allowed.expand(B, 1, width, width)
    start = K + step.eos_rows - step.bos_rows + 1  # (B,) each stream's first write row
    writes = (r[None] >= start[:, None]) & (r[None] < start[:, None] + K)  # (B, W)
    return (allowed[None] | (writes[:, :, None] & writes[:, None, :]))[:, None]  # (B, 1, W, W)


class RMT(nn.Module):
    """A stack of TG self-attention blocks with RMT's read/write memory tokens (LM-RMT's mask by default).

    Non-embedding parameters: L self-attention blocks, the final LayerNorm, the K x d initial memory and
    (`memory_norm = "scaled"`) the memory's LayerNorm; TG at the same width and depth has the same blocks'
    worth plus its W_sent (d^2 + d) and one gate per C block, so RMT has about 1 / (12 L) fewer
    (docs/choices.md).
    """

    def __init__(self, config: RMTConfig, vocab: Vocab, segment_tokens: int) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        d, K = config.width, config.memory_tokens
        self.wte = nn.Embedding(vocab.size, d)
        self.wpe = nn.Embedding(2 * K + segment_tokens + 2, d)  # [read K] [BOS] tokens [EOS] [write K]
        self.memory = nn.Parameter(torch.empty(K, d))  # the initial memory, read by the first segment
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block("S", config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(d)
        # memory_norm = "scaled": the written memory's own LayerNorm, its rows starting at the token embeddings'
        # norm instead of ln_f's sqrt(d)
        self.ln_mem = nn.LayerNorm(d) if config.memory_norm == "scaled" else None
        self.lm_head = nn.Linear(d, vocab.size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(TG._init_weights)
        # The reference draws the initial memory at the token embeddings' scale (randn * std).
        nn.init.normal_(self.memory, mean=0.0, std=EMBEDDING_STD)
        if self.ln_mem is not None:
            nn.init.constant_(self.ln_mem.weight, EMBEDDING_STD)
        for name, p in self.named_parameters():  # GPT-2's scaled init over the 2L residual branches
            if name.endswith(("proj.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    def empty_memory(self) -> RMTMemory:
        return RMTMemory()

    def step(self, step: StepInputs, memory: RMTMemory, write: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor | None, RMTMemory, None]:
        """Run segment t of the B streams of `step`.

        Args:
            step: Packed rows of the step's segments (positions 0.. inside the segment).
            memory: State after segment t-1 for at least B streams (alive streams are a prefix).
            write: Append the write tokens and return the memory they produce.

        Returns:
            (x, new_state, memory', None): the segment rows (N, d) before `ln_f`; the (B, K, d) write
            states (before any BPTT detach) or None; the memory for segment t+1; no penalty.
        """
        cfg = self.config
        B, K, d = step.n_streams, cfg.memory_tokens, cfg.width
        state = self.memory.expand(B, K, d) if memory.state is None else memory.state[:B]  # (B, K, d)
        x = step.embedded if step.embedded is not None else self.wte(step.ids) + self.wpe(K + step.pos)  # (N, d)
        slots = torch.arange(K, device=x.device)
        rows = [(state + self.wpe(slots)).reshape(B * K, d).to(x.dtype), x]  # read tokens, then the segment
        if write:
            lengths = step.eos_rows - step.bos_rows + 1  # (B,)
            write_pos = K + lengths[:, None] + slots[None]  # (B, K) right after each segment
            rows.append((state + self.wpe(write_pos)).reshape(B * K, d).to(x.dtype))
        grid = memory_rows(step, K, write)
        mask = memory_mask(step, K, write) if cfg.memory_mask == "full" and K else None  # None: causal
        h = self.drop(torch.cat(rows))  # (B*K + N [+ B*K], d)
        for block in self.blocks:
            h = block(h, grid, [None], mask)  # (rows, d)
        N = step.ids.shape[0]
        x = h[B * K : B * K + N]  # (N, d) the segment rows
        if not write:
            return x, None, memory, None
        norm = self.ln_mem if self.ln_mem is not None else self.ln_f
        new_state = norm(h[B * K + N :]).view(B, K, d)  # (B, K, d) final hidden states of the write tokens
        count = memory.count + 1
        carried = new_state
        if cfg.bptt_segments and count % cfg.bptt_segments == 0:
            carried = new_state.detach()  # truncated BPTT: the window closes here
        return x, new_state, RMTMemory(count=count, state=carried), None

    def run(self, tensors: dict[str, torch.Tensor], steps: list[tuple[int, int, int, int, int]]) -> dict:
        """Every segment step of a batch of streams (TG's `stream_layout`), as `TG.run`.

        Returns:
            dict with "hidden": (N_targets, d) `ln_f` rows of every target, in target order;
            "penalty": None; "memory": the final RMTMemory.
        """
        memory = self.empty_memory()
        K = self.config.memory_tokens
        # One lookup for the whole batch (one embedding backward per batch, as TG does).
        embedded = self.wte(tensors["ids"]) + self.wpe(K + tensors["pos"])  # (N_total, d)
        outputs = []
        for step in step_inputs(tensors, steps, embedded):
            x, _, memory, _ = self.step(step, memory)
            outputs.append(x)
        x = gather_rows(torch.cat(outputs), tensors["target_rows"])  # (N_targets, d)
        return {"hidden": self.ln_f(x), "penalty": None, "memory": memory}


class RMTAdapter(SegmentAdapter):
    """RMT on TG's sentence streams: K memory tokens read at the start and written at the end of each segment."""

    name = "rmt"
    description = "Recurrent Memory Transformer: read/write memory tokens per sentence, BPTT through memory"
    config_class = RMTConfig
    controls = {"no-memory": {"memory_tokens": 0}}  # no read or write tokens: each segment on its own

    def build(self, vocab: Vocab) -> nn.Module:
        return RMT(self.config, vocab, segment_tokens=self.unit_tokens)

    def steps_forward_flops(self, steps) -> float:
        """Every step's blocks on its segment rows plus K read and K write rows per stream (module docstring)."""
        d, K, layers = self.config.width, self.config.memory_tokens, self.config.layers
        total = 0.0
        for row0, row1, stream0, stream1, T in steps:
            B = stream1 - stream0
            rows, grid = row1 - row0 + 2 * B * K, T + 2 * K
            total += layers * (self_attention_flops(rows, B, grid, d) + swiglu_flops(rows, d))
        return total

    def memory_reads(self, documents, vocab, *, epoch=None) -> MemoryReads:
        """Every segment reads all K memory tokens (the first one the learned initial memory): K per unit."""
        if epoch is None:
            units = sum(len(self.units(doc, vocab)) for doc in documents)
        else:
            units = sum(len(stream) for stream in self.streams(documents, vocab, epoch))
        K = self.config.memory_tokens
        return MemoryReads(K * units, units, units if K else 0)

    def effective_context(self, mean_sentence_tokens: float) -> EffectiveContext | None:
        """None: the recurrence has no hard limit (everything earlier in the stream can reach the memory)."""
        return None
