"""isoFLOP grids: each model's token budget solved from its counted training FLOPs, so that every model of a
compute budget trains with the same compute.

A grid with `compute_budgets = [1e12, 3e12]` gives budgets in training FLOPs (forward + backward, counted as the
trainer counts them: `tgbench.training.flops`). For each run, `solve_tokens` finds the lexical-token budget D whose
batches cost the compute budget C: it lays out the run's own training subset (its data-order seed, every epoch)
into the adapter's batches, sums their FLOPs with the trainer's own counter (`BatchFlops`: the adapter's
`train_flops`, else a measured forward), and corrects D by C / FLOPs(D) until they agree within
`SOLVE_TOLERANCE`. Counting the real batches rather than a per-token rate takes in what a rate misses: padding
rows, memory reads, boundary tokens and the step a grad-accumulation remainder drops.

Runs over `COUNT_LIMIT` lexical tokens x epochs are not laid out in full: their FLOPs per budget token are counted
on a prefix of that size and D is C over that rate. Before the corpus is encoded (`--dry-run`, `validate` on a
fresh machine) D is estimated from 6 N (N with embeddings) per token and marked so; training always counts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from tgbench.adapter import Vocab
from tgbench.core.errors import UserError
from tgbench.data.corpus import cached_corpus, load_corpus
from tgbench.data.tokenizer import base_vocab_size
from tgbench.plan.grid import compute_slug
from tgbench.plan.layout import COUNT_LIMIT, batch_rng, epoch_documents, steps_in_epoch
from tgbench.registry import build_adapter

# The trainer's own counter (it imports only the adapter contract), so that what is solved here is what the
# trainer counts: the one import of plan/ from training/.
from tgbench.training.flops import BatchFlops

EQUAL_TOLERANCE = 0.02  # a run further than this from its compute budget is an error (the grid's promise)
SOLVE_TOLERANCE = 0.005  # |FLOPs(D) / C - 1| that ends the search (the grid's promise is 2% across models)
PROBE_TOKENS = 100_000  # the first count, whose FLOPs per token give the first D
MAX_ROUNDS = 8  # corrections of D by C / FLOPs(D)
MAX_BISECTIONS = 16  # then halvings of the bracket: whole documents and whole batches make FLOPs(D) a step function
COUNTED, MEASURED = "counted", "measured"  # every batch laid out: by the adapter's count, or FlopCounterMode
SAMPLED, ESTIMATED = "counted on a prefix", "estimated (6N per token)"


@dataclass(frozen=True)
class Solved:
    """One run's solved token budget.

    Attributes:
        tokens: The lexical-token budget D the run trains with.
        flops: Its training FLOPs (all epochs) as counted (or estimated, see `how`).
        steps: Its optimizer steps (all epochs); 0 when estimated.
        how: COUNTED (every batch of the run, by the adapter's `train_flops`), MEASURED (every batch, some by
            FlopCounterMode: a plug-in without `train_flops`), SAMPLED (a prefix's FLOPs per token) or ESTIMATED
            (6 N per token, the corpus not encoded yet).
    """

    tokens: int
    flops: float
    steps: int
    how: str

    @property
    def exact(self) -> bool:
        """Whether `flops` is the run's own batches' count (what the trainer will record), not a rate's."""
        return self.how in (COUNTED, MEASURED)


_SOLVED: dict[tuple, Solved] = {}  # expand() runs several times per command (validate, steps, dry run, executor)


def solve_tokens(spec: Any, compute: float, encode: bool = False) -> Solved:
    """The lexical-token budget with which `spec`'s run trains `compute` FLOPs.

    Args:
        spec: The run (`tgbench.plan.expand.RunSpec`); its `train.tokens` is ignored.
        compute: The compute budget C in training FLOPs.
        encode: Encode the corpus when it is not cached (training); False estimates instead (dry run, validate).

    Raises:
        UserError: when C needs more tokens than the training split holds, or gives less than one optimizer step.
    """
    config = spec.config
    train = dataclasses.replace(config.train, tokens=0, lr=1.0)  # neither decides the FLOPs of a token
    key = (config.model, repr(sorted(config.model_options.items())), repr(config.data), repr(train), compute)
    if key not in _SOLVED:
        _SOLVED[key] = _solve(spec, compute, encode)
    solved = _SOLVED[key]
    if encode and solved.how == ESTIMATED:  # an estimate made before the corpus was encoded is not trained on
        _SOLVED[key] = solved = _solve(spec, compute, encode)
    return solved


def _solve(spec: Any, compute: float, encode: bool) -> Solved:
    config = spec.config
    adapter = build_adapter(config)
    data = adapter.data_config(config.data)
    corpus = load_corpus(data, progress=False) if encode else cached_corpus(data)
    train = config.train
    if corpus is None:
        with torch.device("meta"):
            total = sum(p.numel() for p in adapter.build(Vocab(base_vocab_size(data.tokenizer))).parameters())
        tokens = max(1, round(compute / (6.0 * total * train.epochs)))  # 6 N per token, as plan.compute's 6ND
        return Solved(tokens, compute, 0, ESTIMATED)
    split, vocab = corpus.splits["train"], corpus.vocab
    counter = _Counter(adapter, vocab, split, train)
    available = split.lexical_tokens
    probe = min(available, max(train.batch_tokens * train.grad_accumulation * 8, PROBE_TOKENS))
    flops, steps, _ = counter(probe)
    tokens = max(1, round(probe * compute / max(flops, 1.0)))
    if tokens * train.epochs > COUNT_LIMIT:
        # too large to lay out in full: the FLOPs per budget token of the largest prefix counted, scaled
        probe = min(available, COUNT_LIMIT // train.epochs)
        flops, steps, _ = counter(probe)
        tokens = math.ceil(compute / (flops / probe))
        _check_available(spec, compute, tokens, available)
        return Solved(tokens, compute, 0, SAMPLED)
    tried: dict[int, tuple[float, int]] = {}  # tokens -> (FLOPs, steps)

    def count(t: int) -> float:
        _check_available(spec, compute, t, available)
        tried[t] = counter(t)[:2]
        return tried[t][0]

    for _ in range(MAX_ROUNDS):  # secant-like: D x C / FLOPs(D), exact for a constant cost per token
        flops = count(tokens)
        if abs(flops / compute - 1) <= SOLVE_TOLERANCE or flops == 0:
            break
        tokens = max(1, round(tokens * compute / flops))
        if tokens in tried:
            break
    # FLOPs(D) grows in steps (whole documents, whole batches): bisect between the closest D below and above C
    for _ in range(MAX_BISECTIONS):
        below = max((t for t, (f, _) in tried.items() if f < compute), default=None)
        above = min((t for t, (f, _) in tried.items() if f >= compute), default=None)
        if below is None or above is None or above - below <= 1 or \
                min(abs(f / compute - 1) for f, _ in tried.values()) <= SOLVE_TOLERANCE:
            break
        count((below + above) // 2)
    tokens = min(tried, key=lambda t: abs(tried[t][0] / compute - 1))
    flops, steps = tried[tokens]
    where = f"compute budget {_flops(compute)} for {spec.label} (width {spec.width})"
    smallest = (tried[1][0] if 1 in tried else count(1)) if flops > compute else 0.0  # one document: the least
    if steps == 0 or smallest > compute * (1 + EQUAL_TOLERANCE):
        raise UserError(
            f"{where} is too small: its smallest run (a budget of {tokens:,} lexical tokens, {steps} optimizer "
            f"step(s) of batch_tokens = {train.batch_tokens:,}) costs {_flops(max(flops, smallest))}",
            f"raise that compute budget to at least {_flops(max(smallest, flops) * 20)} (a run of 20 such "
            "steps or more), or lower train.batch_tokens")
    if abs(flops / compute - 1) > EQUAL_TOLERANCE:
        raise UserError(
            f"{where} cannot be met within {EQUAL_TOLERANCE:.0%}: the closest run ({tokens:,} lexical tokens) costs "
            f"{_flops(flops)}, as whole documents and batches come in steps that large",
            "raise that compute budget, or use a corpus of shorter documents or a smaller train.batch_tokens")
    return Solved(tokens, flops, steps, MEASURED if counter.flops.method == MEASURED else COUNTED)


def _check_available(spec: Any, compute: float, tokens: int, available: int) -> None:
    if tokens > available:
        raise UserError(
            f"compute budget {_flops(compute)} needs a subset of {tokens:,} lexical tokens "
            f"({spec.config.train.epochs} epoch(s)) for {spec.label} (width {spec.width}), more than the training "
            f"split's {available:,}",
            "lower that compute budget, raise train.epochs, or use a larger corpus")


class _Counter:
    """FLOPs(D): the training FLOPs, steps and lexical tokens of a run's batches at budget D, as the trainer
    takes them (the run's subset and order, every epoch, a grad-accumulation remainder dropped)."""

    def __init__(self, adapter: Any, vocab: Any, split: Any, train: Any) -> None:
        self.adapter, self.vocab, self.split, self.train = adapter, vocab, split, train
        model = adapter.build(vocab)  # a real model: a plug-in without train_flops is measured on it
        self.flops = BatchFlops(adapter, model)
        self.seen: dict[int, tuple[float, int, int]] = {}

    def __call__(self, tokens: int) -> tuple[float, int, int]:
        if tokens in self.seen:
            return self.seen[tokens]
        train, seed = self.train, self.train.data_order_seed
        docs = self.split.documents(self.split.subset(tokens, seed))
        flops, steps, lexical = 0.0, 0, 0
        for epoch in range(train.epochs):
            batches = self.adapter.batches(epoch_documents(docs, seed, epoch), self.vocab,
                                           batch_tokens=train.batch_tokens, epoch=epoch, rng=batch_rng(seed, epoch))
            taken = steps_in_epoch(len(batches), train.grad_accumulation)
            used = batches[:taken * train.grad_accumulation] if train.grad_accumulation > 1 else batches
            steps += taken
            for batch in used:
                flops += self.flops(batch, epoch)
                lexical += batch.lexical_tokens
        self.seen[tokens] = (flops, steps, lexical)
        return self.seen[tokens]


def isoflop_rows(specs: list[Any]) -> list[dict[str, Any]]:
    """What `--dry-run` and `validate` show of an isoFLOP grid: per compute budget and model, the tokens each
    replicate's run gets and the FLOPs they cost, with the spread of the FLOPs across the budget's models."""
    rows: dict[tuple[float, str, int], dict[str, Any]] = {}
    for spec in specs:
        compute = spec.meta.get("compute_budget")
        if compute is None:
            continue
        solved = spec.solved
        row = rows.setdefault((compute, spec.label, spec.width),
                              {"compute": compute, "model": spec.label, "width": spec.width, "tokens": [], "flops": [],
                               "how": solved.how, "exact": True})
        row["tokens"].append(solved.tokens)
        row["flops"].append(solved.flops)
        if not solved.exact:
            row["how"], row["exact"] = solved.how, False
    return list(rows.values())


def compute_spread(rows: list[dict[str, Any]]) -> dict[float, float]:
    """compute budget -> max / min - 1 of the counted FLOPs of its runs (every model, width and replicate; rows
    whose FLOPs are estimates are left out)."""
    out: dict[float, list[float]] = {}
    for row in (r for r in rows if r["exact"]):
        out.setdefault(row["compute"], []).extend(row["flops"])
    return {c: max(f) / min(f) - 1 for c, f in out.items() if f and min(f) > 0}


def _flops(flops: float) -> str:
    """FLOPs as a grid file writes a compute budget (3e8, 1.2e12), so a message names the value as given."""
    return compute_slug(flops) + " FLOPs"
