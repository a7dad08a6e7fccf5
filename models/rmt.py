"""Recurrent Memory Transformer (RMT; Bulatov et al., NeurIPS 2022) over TG's sentence streams.

One file, nanoGPT-style: `RMTConfig`, the memory state, the `RMT` model, then `RMTAdapter`
(name "rmt"). Streams, curriculum, loss and scoring are TG's (`models/segments.py`); only the memory
differs.

Each segment (a sentence `[BOS] tokens [EOS]`, or a fixed span with `segment = "span"`) runs through
a causal decoder as

    [r_1 .. r_K] [BOS] x_1 .. x_n [EOS] [w_1 .. w_K]

where the K read tokens r and the K write tokens w both carry the current memory state (the
reference's `MemoryCell.process_input`: the memory goes in at both ends), positions are absolute over
the whole row (the backbone's own learned positions), and plain causal attention lets every segment
token read all of r and lets the write tokens see everything before them. The final (`ln_f`) hidden
states of the write tokens are the next segment's memory; the first segment reads a learned initial
memory (K x d parameter). Gradients flow through the memory across the whole stream
(back-propagation through time); `bptt_segments = k > 0` detaches it at every k-th hand-over
(truncated BPTT in blocks of k segments), so a loss reaches back at most k - 1 earlier segments.

The blocks are TG's self-attention blocks (pre-LN, SwiGLU, packed rows scattered into a per-step
grid only inside attention), imported from `models/tg.py`, so RMT and TG share the token path.

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


@dataclass
class RMTConfig(SegmentConfig):
    """RMT settings: TG's stream settings plus the memory size and the BPTT window."""

    family = "rmt"

    memory_tokens: int = 10  # K read and K write tokens per segment (docs/choices.md)
    bptt_segments: int = 0  # 0 = back-propagate through the whole stream; k = detach every k segments

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bptt_segments < 0:
            raise UserError(f"rmt bptt_segments = {self.bptt_segments} is negative",
                            "use 0 (the whole stream) or a window of k >= 1 segments")


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


class RMT(nn.Module):
    """A causal stack of TG self-attention blocks with RMT's read/write memory tokens.

    Non-embedding parameters: L self-attention blocks, the final LayerNorm and the K x d initial
    memory; TG at the same width and depth has the same blocks' worth plus its W_sent (d^2 + d) and
    one gate per C block, so RMT has about 1 / (12 L) fewer (docs/choices.md).
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
        self.lm_head = nn.Linear(d, vocab.size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(TG._init_weights)
        # The reference draws the initial memory at the token embeddings' scale (randn * std).
        nn.init.normal_(self.memory, mean=0.0, std=0.02)
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
        h = self.drop(torch.cat(rows))  # (B*K + N [+ B*K], d)
        for block in self.blocks:
            h = block(h, grid, [None])  # (rows, d)
        N = step.ids.shape[0]
        x = h[B * K : B * K + N]  # (N, d) the segment rows
        if not write:
            return x, None, memory, None
        new_state = self.ln_f(h[B * K + N :]).view(B, K, d)  # (B, K, d) final hidden states of the write tokens
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
