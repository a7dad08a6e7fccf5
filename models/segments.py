"""What the segment-recurrent peers (`rmt`, `txl`) share with TG: its streams, loss and scoring.

A peer adapter is a `TGAdapter` with another model behind it. Everything outside the model is TG's
code, inherited rather than copied: documents are cut into the same units (sentences capped like
TG's, or fixed spans like tg-span's), grouped into the same streams under the same curriculum,
laid out by the same `stream_layout` (`[BOS] tokens [EOS]` per unit, step-major packed rows), trained
with the same weighted loss and scored by the same `score` (each test document one uncut stream,
every content token once, in order). The models themselves differ in more than the memory: TG's
blocks alternate self- and cross-attention (L/2 self-attention sub-layers at L layers), while rmt and
txl stack L self-attention blocks that read the memory inside them; txl has rotary relative positions
where TG and rmt learn absolute ones (docs/choices.md). So a measured difference between TG and a peer
is not the memory's alone: at a document's first sentence, where no model holds anything of earlier
sentences, it is none of it.

A peer model provides what TG's adapter calls on a TG model: `run(tensors, steps)` returning
`{"hidden": (N_targets, d), "penalty": None, ...}`, `empty_memory()`,
`step(StepInputs, memory, write) -> (rows (N, d) before ln_f, _, memory', None)` (greedy generation),
`wte`, `ln_f`, `lm_head` and `vocab`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tgbench.adapter import Document, Vocab, heads_for
from tgbench.core.errors import UserError
from tgbench.models.streams import StreamAdapter, split_spans, split_units
from tgbench.models.tg import LOSS_REDUCTIONS, TGConfig

SEGMENTS = ("sentence", "span")


@dataclass
class SegmentConfig:
    """Settings every segment-recurrent peer shares; the stream, data and loss fields mean what TG's do.

    Defaults are TG's (its curriculum, `[EOS]` down-weighting, dropout, sentence cap), so a peer and
    TG at the same width and layers share their data, loss and regularisation settings (their
    architectures still differ: see the module docstring).
    """

    family: ClassVar[str] = "segment"  # the adapter name, for error messages

    width: int = 768
    layers: int = 12
    heads: int = 0  # 0 = ceil(width / 64), at least 1 (TG's rule)
    memory_tokens: int = 0  # the family's memory size (set by each family's config)
    segment: str = "sentence"  # sentence | span (fixed spans of `span_tokens`, like tg-span)
    span_tokens: int = 25  # with segment = "span"
    # Data and curriculum, as TGConfig.
    max_sentence_tokens: int = 64
    eod_unit: bool = False
    curriculum: bool = True
    stream_start: int = 30
    stream_step: int = 12
    stream_every: int = 5
    fixed_stream_sentences: int = 40
    # Loss, as TGConfig.
    eos_weight_first_epoch: float = 1.0
    eos_weight_after_first_epoch: float = 0.05
    loss_reduction: str = "steps"
    # Regularisation, as TGConfig's defaults.
    dropout: float = 0.1
    attention_dropout: float = 0.2
    score_batch_tokens: int = 16384

    # The schedules are TG's own methods (they read only the fields above).
    stream_sentences = TGConfig.stream_sentences
    eos_weight = TGConfig.eos_weight

    def __post_init__(self) -> None:
        name = self.family

        def choice(field: str, allowed: Sequence[str]) -> None:
            if getattr(self, field) not in allowed:
                raise UserError(f"{name} {field} = '{getattr(self, field)}' is unknown",
                                f"use one of {', '.join(allowed)}")

        choice("segment", SEGMENTS)
        choice("loss_reduction", LOSS_REDUCTIONS)
        for field in ("width", "layers", "span_tokens", "max_sentence_tokens", "stream_start", "stream_every",
                      "fixed_stream_sentences", "score_batch_tokens"):
            if getattr(self, field) <= 0:
                raise UserError(f"{name} {field} = {getattr(self, field)} must be positive", f"set {field} > 0")
        if self.memory_tokens < 0:
            raise UserError(f"{name} memory_tokens = {self.memory_tokens} is negative",
                            "set memory_tokens >= 0 (0 = no memory: every segment on its own)")
        for field in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise UserError(f"{name} {field} = {getattr(self, field)} is not a probability",
                                f"set {field} in [0, 1)")
        if self.heads < 0 or self.width % self.n_heads != 0:
            raise UserError(f"{name} width {self.width} is not divisible by heads {self.n_heads}",
                            "choose heads dividing width, or heads = 0 for ceil(width / 64)")

    @property
    def n_heads(self) -> int:
        return self.heads or heads_for(self.width)

    @property
    def unit_tokens(self) -> int:
        """Most content tokens in one segment."""
        return self.span_tokens if self.segment == "span" else self.max_sentence_tokens


class SegmentAdapter(StreamAdapter):
    """TG's adapter with sentence or span units chosen by `segment`; subclasses set `build`."""

    config_class = SegmentConfig

    @property
    def unit_tokens(self) -> int:
        return self.config.unit_tokens

    def units(self, document: Document, vocab: Vocab) -> list[np.ndarray]:
        if self.config.segment == "span":
            return split_spans(document, vocab, self.config.span_tokens)
        return split_units(document, vocab, self.config.max_sentence_tokens, self.config.eod_unit)

    def prompt_units(self, prompt: Document) -> list[np.ndarray]:
        if self.config.segment != "span":
            return super().prompt_units(prompt)
        pieces = [np.asarray(s, dtype=np.int64).reshape(-1) for s in prompt]
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        span = self.config.span_tokens
        return [tokens[j : j + span] for j in range(0, len(tokens), span)]

    def data_config(self, data):
        """Sentences: the corpus is encoded at the model's sentence cap (TG's rule); spans ignore it."""
        if self.config.segment == "span" or data.max_sentence_tokens <= self.config.max_sentence_tokens:
            return data
        return dataclasses.replace(data, max_sentence_tokens=self.config.max_sentence_tokens)
