"""The Adapter contract: everything the harness needs to know about one architecture.

Trainer, evaluator, reversal probe, lm-eval bridge and benchmarks only ever talk to adapters.
An adapter wraps one model family (GPT-2, TG, ...) and one config dataclass of that family.

Data enters an adapter as *documents*: a document is a list of sentences, a sentence a 1-D
integer array of **content token ids** (no special tokens). Special ids come from `Vocab`.

Adapters are found by name through `tgbench.registry` (built-ins, the entry-point group
``tgbench.adapters``, or ``package.module:Class`` / ``path/to/file.py:Class`` references).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

Sentence = np.ndarray  # 1-D int array of content token ids
Document = list[Sentence]

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[EOD]")
HEAD_DIM = 64  # the paper's head width at 768; the head count at smaller widths is not stated


def heads_for(width: int, head_dim: int = HEAD_DIM) -> int:
    """The head rule every built-in adapter uses when `heads = 0`: ceil(width / head_dim), at least 1."""
    return max(1, math.ceil(width / head_dim))


# Training FLOPs of a batch per forward FLOP: the forward, then a backward of two matmuls per forward matmul
# (the gradients of both operands). See `Adapter.train_flops`.
TRAIN_FLOPS_PER_FORWARD = 3


def matmul_flops(rows: int, inner: int, cols: int) -> float:
    """FLOPs of a (rows, inner) x (inner, cols) product: 2 x its multiply-adds (torch's FlopCounterMode's unit)."""
    return 2.0 * rows * inner * cols


def batch_ends(lexical: Sequence[int] | np.ndarray, batch_tokens: int) -> list[int]:
    """Where to close each batch of consecutive units so that the batches carry `batch_tokens` lexical tokens each
    on average: the equal-steps rule every built-in adapter groups its units (token blocks, sentence streams) by.

    With T lexical tokens in all, the epoch gets n = round(T / batch_tokens) batches (at least 1, at most one per
    unit), and batch k closes at the unit boundary nearest to the cumulative target k T / n. A unit is never cut,
    so a batch is over or under its share by up to half a unit, and the next batch, aiming at the next cumulative
    target, makes up for it: the mean is exactly T / n, within batch_tokens / (2 n) of `batch_tokens` (1% at 50
    batches), and models whose units differ (streams, blocks) but hold the same T get the same number of steps.
    Only when units are so large that fewer than n exist does a batch hold one unit and the mean exceed
    `batch_tokens`. Deterministic: it depends on the counts and `batch_tokens` only.

    Args:
        lexical: Lexical (content-token) targets of each unit, in batch order; markers and padding not counted.
        batch_tokens: Lexical tokens wanted per batch.

    Returns:
        The exclusive end index of each batch's units, increasing, the last one `len(lexical)` ([] for no units).
    """
    counts = np.asarray(lexical, dtype=np.int64).reshape(-1)
    units = len(counts)
    if units == 0:
        return []
    total = int(counts.sum())
    n = min(units, max(1, math.floor(total / max(1, batch_tokens) + 0.5)))
    if n == 1:
        return [units]
    before = np.concatenate([[0], np.cumsum(counts)])  # (units + 1,) lexical tokens before each boundary
    k = np.arange(1, n)
    targets = k * (total / n)  # (n - 1,) cumulative target at the end of batch k
    after = np.searchsorted(before, targets, side="left")  # first boundary at or past the target
    below = before[np.maximum(after - 1, 0)]
    above = before[np.minimum(after, units)]
    ends = np.where(targets - below <= above - targets, after - 1, after)  # the nearer one; a tie closes early
    # Each batch takes at least one unit and leaves one for each later batch: ends - k nondecreasing in [0, units - n].
    ends = np.maximum.accumulate(np.clip(ends - k, 0, units - n)) + k
    return [*(int(e) for e in ends), units]


@dataclass(frozen=True)
class Vocab:
    """A base vocabulary with the four specials appended after it.

    Attributes:
        base_size: Size of the tokenizer's own vocabulary (50257 for GPT-2 BPE).
    """

    base_size: int

    @property
    def pad_id(self) -> int:
        return self.base_size

    @property
    def bos_id(self) -> int:
        return self.base_size + 1

    @property
    def eos_id(self) -> int:
        return self.base_size + 2

    @property
    def eod_id(self) -> int:
        return self.base_size + 3

    @property
    def size(self) -> int:
        """Embedding rows needed: base vocabulary plus the specials."""
        return self.base_size + len(SPECIAL_TOKENS)

    def is_special(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of positions holding a special token."""
        return token_ids >= self.base_size


@dataclass
class Batch:
    """One optimisation step's worth of data, in whatever layout the adapter needs.

    Attributes:
        tensors: Named arrays (numpy or torch); moved to the device by `to`.
        lexical_tokens: Count of content-token targets (the unit of token budgets and tokens/s).
        sentences: Count of sentences whose tokens are in the batch (for sentences/s).
        computed_slots: Token slots the model computes (padding included), for efficiency figures.
    """

    tensors: dict[str, Any]
    lexical_tokens: int
    sentences: int
    computed_slots: int = 0
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        moved = {}
        for key, value in self.tensors.items():
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
            moved[key] = value
        return dataclasses.replace(self, tensors=moved)


@dataclass
class LossParts:
    """What `Adapter.loss` returns.

    Attributes:
        loss: The weighted training loss to back-propagate (a scalar tensor).
        lexical_nll_sum: Sum of NLL over content-token targets only (detached scalar tensor).
        lexical_tokens: Number of content-token targets in the batch.
    """

    loss: torch.Tensor
    lexical_nll_sum: torch.Tensor
    lexical_tokens: int


@dataclass
class MemoryReads:
    """How much of a sentence memory a layout of documents reads (a count of the layout, not of the weights).

    Attributes:
        slots: Memory slots read, summed over every sentence (unit) of the layout.
        sentences: Sentences (units) in the layout.
        full: Sentences that read a full memory (every slot in use).
    """

    slots: int = 0
    sentences: int = 0
    full: int = 0

    @property
    def per_sentence(self) -> float:
        """Mean memory slots read per sentence."""
        return self.slots / max(self.sentences, 1)

    @property
    def full_fraction(self) -> float:
        """Share of sentences that read a full memory."""
        return self.full / max(self.sentences, 1)

    def __add__(self, other: MemoryReads) -> MemoryReads:
        return MemoryReads(self.slots + other.slots, self.sentences + other.sentences, self.full + other.full)


@dataclass(frozen=True)
class EffectiveContext:
    """How much preceding text a model can draw on when it predicts a token, in tokens.

    Attributes:
        tokens: A token window's length, or a sentence memory's span (slots x tokens per sentence).
        kind: "window" (a fixed window of tokens, GPT-2) or "memory" (a memory of sentence vectors, TG).
    """

    tokens: float
    kind: str


@dataclass
class Sampler:
    """How generation picks the next token from its logits.

    Attributes:
        temperature: 0 = greedy (argmax); otherwise sample from softmax(logits / temperature).
        top_k: Sample among the k most likely tokens only (0: all).
        generator: The random stream (seeded for reproducible samples); draws happen on the CPU, so a seed
            gives the same text on any device up to floating-point differences in the logits.
    """

    temperature: float = 0.0
    top_k: int = 0
    generator: torch.Generator | None = None

    @classmethod
    def seeded(cls, temperature: float = 0.0, top_k: int = 0, seed: int = 0) -> Sampler:
        return cls(temperature, top_k, torch.Generator().manual_seed(seed))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def pick(self, logits: torch.Tensor) -> int:
        """The chosen index of a 1-D logits vector (masked entries are -inf)."""
        logits = logits.detach().float()
        if self.greedy:
            return int(logits.argmax())
        if 0 < self.top_k < logits.numel():
            kth = torch.topk(logits, self.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits / self.temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=self.generator))


class Adapter(ABC):
    """The contract between tgbench and one architecture.

    Subclasses set `name`, `description` and `config_class` (a dataclass whose fields are the
    model's settings; it must have `width`, `layers` and `heads`), and implement the abstract
    methods. An adapter instance holds one config and is otherwise stateless.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type]
    # True when the model predicts sentence ends itself and `sample` returns its sentences (TG, GPT-2 +
    # boundaries); False: `tgbench sample` splits the text with the run's splitter for display.
    sentence_boundaries: ClassVar[bool] = False
    # Controls a grid can ask for (`controls = ["no-memory"]`): name -> the config options that turn this model
    # into its control twin. "no-memory": nothing of earlier sentences or segments reaches the current one (no
    # memory, no cache, no seeding), so twin minus model is what the model's memory is worth.
    controls: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Any | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.config_class(**overrides)
        elif not isinstance(config, self.config_class) and issubclass(self.config_class, type(config)):
            # A base-family config (e.g. GPT2Config for the gist adapter) gets this adapter's defaults.
            config = self.config_class(**dataclasses.asdict(config), **overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config

    # -- building -------------------------------------------------------------------------
    @abstractmethod
    def build(self, vocab: Vocab) -> nn.Module:
        """Return a freshly initialised model for `self.config` over `vocab`."""

    # -- training -------------------------------------------------------------------------
    @abstractmethod
    def batches(
        self,
        documents: Sequence[Document],
        vocab: Vocab,
        *,
        batch_tokens: int,
        epoch: int,
        rng: np.random.Generator,
    ) -> list[Batch]:
        """Lay the training documents out as this architecture consumes them, for one epoch.

        Args:
            documents: The training subset in the order every model sees it this epoch.
            vocab: Special-token ids.
            batch_tokens: Lexical tokens per batch, on average over the epoch (markers and padding not counted):
                `batch_ends` groups units so, and every built-in adapter uses it.
            epoch: 0-based epoch (curricula depend on it).
            rng: Seeded generator for any shuffling the adapter does.

        Returns:
            The epoch's batches in order. Must be deterministic given the arguments, so a
            resumed run rebuilds the same list and skips to its position.
        """

    def count_batches(
        self,
        documents: Sequence[Document],
        vocab: Vocab,
        *,
        batch_tokens: int,
        epoch: int,
        rng: np.random.Generator,
    ) -> int:
        """How many batches `batches` returns for the same arguments (the trainer's LR schedule needs it).

        The default builds the batches and counts them; adapters override it with a count that builds
        no tensors, so each epoch's batches are built once, when it is trained.
        """
        return len(self.batches(documents, vocab, batch_tokens=batch_tokens, epoch=epoch, rng=rng))

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        """Forward one batch (already on the device) and return the loss parts."""

    def data_config(self, data: Any) -> Any:
        """The data settings this model trains and is scored on, given the run's (a `DataConfig`).

        The default keeps them. A model whose units have their own cap (TG's `max_sentence_tokens`)
        lowers the corpus's sentence cap to it, so its sentences are re-split by the data pipeline's
        rule rather than chopped afterwards.
        """
        return data

    def train_flops(self, model: nn.Module, batch: Batch) -> float | None:
        """Training FLOPs (forward + backward) of `batch` as `loss` and its backward compute it, counted
        analytically from the batch's shapes (`Batch.tensors`, `Batch.meta`); None (the default) when the
        adapter does not count them.

        A FLOP is one multiply or one add: a matmul of (m, k) by (k, n) is 2 m k n (2 x its multiply-adds,
        `matmul_flops`, the unit of torch's FlopCounterMode). Counted: every matmul-like product on the rows it
        is actually computed on: projections and feed-forward layers; both attention products (scores q k^T and
        the weighted sum of values) on the grid the attention kernel computes (a causal square counts in full,
        as SDPA computes it, not the half a causal mask keeps); padding rows that are computed; memory reads
        (cross-attention to memory slots, memory or cached rows placed before a segment), projections of
        what is written to a memory, cached keys and values attended to; boundary tokens; the output layer on
        the rows it is computed on. Not counted: elementwise ops, norms, softmax, the loss, embedding lookups,
        gathers and scatters. The backward is taken as 2 x the forward for every matmul (the gradients of both
        operands), so the result is `TRAIN_FLOPS_PER_FORWARD` (3) x the forward count, plus any forward the
        backward runs again (activation checkpointing).

        The trainer sums it over every batch a run trains on (summary.json's `train_flops`); an adapter that
        returns None gets a measured estimate instead (`tgbench.training.flops`).
        """
        return None

    # -- evaluation -----------------------------------------------------------------------
    @abstractmethod
    def score(self, model: nn.Module, documents: Sequence[Document], vocab: Vocab) -> list[torch.Tensor]:
        """Log-probability of every content token of every document, in order.

        This is the single scoring path: lexical perplexity, the reversal probe and every
        lm-eval request use it, so all architectures are measured on the same tokens. The first
        content token of a document is predicted from the architecture's start-of-document state.

        Returns:
            One float32 CPU tensor per document, of length = number of content tokens.
        """

    @abstractmethod
    def generate(
        self,
        model: nn.Module,
        prompt: Document,
        vocab: Vocab,
        *,
        max_new_tokens: int,
        stop: Sequence[Sequence[int]] = (),
    ) -> list[int]:
        """Greedy continuation of `prompt` (sentences of content ids); returns new content ids."""

    def sample(
        self,
        model: nn.Module,
        prompt: Document,
        vocab: Vocab,
        *,
        max_new_tokens: int,
        sampler: Sampler,
        max_sentences: int = 0,
    ) -> list[list[int]]:
        """A continuation of `prompt`, token by token as `sampler` picks them, as the sentences it makes.

        Adapters whose models mark sentence ends (TG's [EOS], GPT-2 + boundaries) return one list per
        sentence: the first continues the prompt's last sentence (it is empty when the model closes that
        sentence at once), each later one is a sentence the model started, the last may be unfinished.
        Generation stops after `max_new_tokens` content tokens, after `max_sentences` finished sentences
        (0: no limit) or at a predicted end of document.

        The default, for adapters that do not override it, is the greedy fallback: `generate` whatever the
        sampler says (temperature and top-k are ignored), returned as one list. `sampling_supported` tells
        the two apart; `tgbench sample` says when the fallback was used.

        Args:
            model: The model, in eval mode.
            prompt: Sentences of content ids.
            vocab: Special-token ids.
            max_new_tokens: Most content tokens to generate.
            sampler: How each token is chosen (`Sampler.pick` on the content-token logits).
            max_sentences: Stop after this many finished sentences (0: no limit).
        """
        return [list(self.generate(model, prompt, vocab, max_new_tokens=max_new_tokens))]

    @classmethod
    def sampling_supported(cls) -> bool:
        """Whether this adapter samples itself (else `sample` is the greedy fallback through `generate`)."""
        return cls.sample is not Adapter.sample

    # -- what the model can see -------------------------------------------------------------
    def memory_reads(self, documents: Sequence[Document], vocab: Vocab, *, epoch: int | None = None
                     ) -> MemoryReads | None:
        """Memory slots the model reads when `documents` are laid out for training in `epoch` (0-based), or
        for scoring when `epoch` is None. None (the default) for models without a sentence memory."""
        return None

    def effective_context(self, mean_sentence_tokens: float) -> EffectiveContext | None:
        """The most preceding text the model can draw on, given the corpus's mean tokens per sentence.

        None (the default) when the adapter does not say.
        """
        return None

    def n_params(self, model: nn.Module) -> int:
        """Non-embedding parameters (Kaplan convention): everything but token/position tables.

        The tied LM head shares the token table and so is not counted either.
        """
        embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
