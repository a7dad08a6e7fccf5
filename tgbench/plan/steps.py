"""Optimizer steps: how many a run takes, the one definition the trainer and the checks before training share.

A run's epoch `e` lays out its training subset in `epoch_documents` order, the adapter groups it into batches of
`batch_tokens` lexical tokens on average (`tgbench.adapter.batch_ends`), and a step takes `grad_accumulation`
(x world size) of them (`steps_in_epoch`). `epoch_steps` counts them as the trainer does, without building
tensors (`Adapter.count_batches`).

`grid_steps` gives the steps of every model and budget of a grid: counted on the encoded corpus when it is
cached (the runs' real subsets, every epoch), else estimated as round(tokens / batch_tokens) per epoch, which is
what every built-in adapter gives whenever its units (token blocks, sentence streams) are not larger than a batch.
`step_warnings` names the budgets whose models differ by more than `STEPS_TOLERANCE` in steps: at "equal data"
they would take different numbers of optimizer steps, a confound of every comparison between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tgbench.adapter import Adapter, Document, Vocab
from tgbench.core.errors import UserError
from tgbench.data.corpus import cached_corpus
from tgbench.plan.config import TrainConfig
from tgbench.plan.expand import RunSpec, expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.layout import COUNT_LIMIT, batch_rng, epoch_documents, steps_in_epoch
from tgbench.registry import build_adapter

STEPS_TOLERANCE = 0.03  # models of one budget whose steps differ by more are warned about


def epoch_steps(adapter: Adapter, train_docs: Sequence[Document], vocab: Vocab, train: TrainConfig,
                batches_per_step: int = 1) -> list[int]:
    """Optimizer steps of each epoch of a run over `train_docs` (its training subset), as the trainer takes them."""
    seed = train.data_order_seed
    return [steps_in_epoch(adapter.count_batches(epoch_documents(train_docs, seed, epoch), vocab,
                                                 batch_tokens=train.batch_tokens, epoch=epoch,
                                                 rng=batch_rng(seed, epoch)), batches_per_step)
            for epoch in range(train.epochs)]


@dataclass
class ModelSteps:
    """The optimizer steps of one model at one budget, over its runs (replicates, widths).

    Attributes:
        label: The model's label.
        tokens: The budget D (lexical tokens).
        batch_tokens, epochs: The model's training settings.
        steps: Steps of each run (all epochs); min and max are what a table shows.
        lexical: Lexical tokens the runs train on (all epochs), for tokens per step; 0 when unknown.
        counted: True when the steps were counted on the encoded corpus, False when estimated.
        why: Why they were estimated ("" when counted).
    """

    label: str
    tokens: int
    batch_tokens: int
    epochs: int
    steps: list[int]
    lexical: int = 0
    counted: bool = True
    why: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.steps)) if self.steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Lexical tokens per optimizer step (the budget's when the steps are estimated)."""
        lexical = self.lexical or self.tokens * self.epochs * len(self.steps)
        return lexical / max(1, sum(self.steps))


def _batching_key(spec: RunSpec) -> tuple:
    """What decides a run's batches: not its width, depth or learning rate (no built-in adapter's batching
    depends on them), so the runs of one replicate at several widths are counted once."""
    options = {k: v for k, v in spec.config.model_options.items() if k not in ("width", "layers", "heads")}
    train = spec.config.train
    return (spec.adapter, repr(sorted(options.items())), repr(spec.config.data), spec.tokens, train.data_order_seed,
            train.batch_tokens, train.epochs, train.grad_accumulation)


def _estimate(tokens: int, train: TrainConfig) -> int:
    """round(tokens / batch_tokens) batches per epoch (`batch_ends` with units no larger than a batch)."""
    if tokens <= 0:
        return 0
    per_epoch = max(1, math.floor(tokens / train.batch_tokens + 0.5))
    return steps_in_epoch(per_epoch, train.grad_accumulation) * train.epochs


def grid_steps(grid: GridConfig, count_limit: int = COUNT_LIMIT) -> list[ModelSteps]:
    """The optimizer steps of every model at every budget of the grid's runs (the tuning sweep's aside).

    Counted as the trainer counts them (`epoch_steps` over each run's own subset) when the grid's corpus is
    encoded in the cache and a run has at most `count_limit` lexical tokens x epochs; else estimated as
    round(tokens / batch_tokens) per epoch. Nothing is encoded here.
    """
    corpora: dict[str, Any] = {}  # repr(DataConfig) -> the cached corpus, None, or why it cannot be read
    runs: dict[tuple, tuple[int, int, str]] = {}
    rows: dict[tuple[str, int], ModelSteps] = {}
    for spec in expand(grid):
        train = spec.config.train
        row = rows.setdefault((spec.label, spec.tokens),
                              ModelSteps(spec.label, spec.tokens, train.batch_tokens, train.epochs, []))
        key = _batching_key(spec)
        if key not in runs:
            runs[key] = _count(spec, corpora, count_limit)
        steps, lexical, why = runs[key]
        row.steps.append(steps)
        row.lexical += lexical
        if why:
            row.counted, row.why = False, why
    for row in rows.values():  # a model with some runs estimated shows the budget's tokens per step
        if not row.counted:
            row.lexical = 0
    order = {entry.label: index for index, entry in enumerate(grid.models)}
    return sorted(rows.values(), key=lambda r: (r.tokens, order.get(r.label, len(order))))


def _count(spec: RunSpec, corpora: dict[str, Any], count_limit: int) -> tuple[int, int, str]:
    """(steps, lexical tokens x epochs, "") of one run counted on the cached corpus, or (estimate, 0, why)."""
    train = spec.config.train
    adapter = build_adapter(spec.config)
    data = adapter.data_config(spec.config.data)
    if repr(data) not in corpora:
        try:
            corpora[repr(data)] = cached_corpus(data)
        except UserError as err:  # e.g. a preset's placeholder corpus path
            corpora[repr(data)] = err.message
    corpus = corpora[repr(data)]
    available = corpus.splits["train"].lexical_tokens if hasattr(corpus, "splits") else 0
    if corpus is None:
        why = f"corpus '{data.corpus}' is not encoded yet with these data settings"
    elif isinstance(corpus, str):
        why = corpus
    elif train.tokens > available:
        why = f"the budget {train.tokens:,} exceeds the training split's {available:,} lexical tokens"
    elif (train.tokens or available) * train.epochs > count_limit:
        why = f"runs over {count_limit:,} lexical tokens x epochs are not counted (slow)"
    else:
        split = corpus.splits["train"]
        docs = split.documents(split.subset(train.tokens, train.data_order_seed))
        steps = epoch_steps(adapter, docs, corpus.vocab, train, train.grad_accumulation)
        return sum(steps), sum(len(s) for d in docs for s in d) * train.epochs, ""
    return _estimate(train.tokens or available, train), 0, why


def step_warnings(rows: Sequence[ModelSteps], tolerance: float = STEPS_TOLERANCE) -> list[str]:
    """One line per budget whose models' mean steps differ by more than `tolerance` (max / min - 1)."""
    lines = []
    for tokens in sorted({r.tokens for r in rows}):
        at = [r for r in rows if r.tokens == tokens and r.steps]
        if len(at) < 2:
            continue
        low, high = min(at, key=lambda r: r.mean), max(at, key=lambda r: r.mean)
        if low.mean > 0 and high.mean / low.mean - 1 > tolerance:
            each = ", ".join(f"{r.label} {r.mean:,.0f} ({r.tokens_per_step:,.0f} tokens/step)" for r in at)
            lines.append(f"at D = {tokens:,} the models take different numbers of optimizer steps ({each}): "
                         f"{high.label} takes {high.mean / low.mean - 1:.0%} more than {low.label}, beyond "
                         f"{tolerance:.0%}; give them the same batch_tokens and batch units no larger than a batch "
                         "(GPT-2's context, TG's streams) or say in the grid file why it is intended")
    return lines


def steps_table(rows: Sequence[ModelSteps]) -> list[dict[str, Any]]:
    """The rows as table cells: model, D, batch_tokens, epochs, steps (min-max over runs), tokens per step, how."""
    out = []
    for r in rows:
        low, high = (min(r.steps), max(r.steps)) if r.steps else (0, 0)
        out.append({"model": r.label, "tokens": f"{r.tokens:,}", "batch_tokens": f"{r.batch_tokens:,}",
                    "epochs": str(r.epochs), "steps": f"{low:,}" if low == high else f"{low:,}-{high:,}",
                    "tokens/step": f"{r.tokens_per_step:,.0f}", "how": "counted" if r.counted else "estimated"})
    return out


def estimate_reasons(rows: Sequence[ModelSteps]) -> list[str]:
    """Why some steps are estimates, each reason once."""
    return list(dict.fromkeys(r.why for r in rows if not r.counted and r.why))

