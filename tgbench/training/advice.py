"""Warnings a single run deserves before or after it trains: too large for a CPU, too few optimizer steps to
learn, an end near the corpus's unigram perplexity (each names the flag that fixes it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from tgbench.adapter import Document
from tgbench.core.console import print_warning
from tgbench.plan.compute import cpu_seconds, training_flops

LARGE_RUN_HOURS = 1.0


def warn_if_large(model: torch.nn.Module, tokens: int, device: torch.device) -> float:
    """Print a warning when a CPU run would take hours (e.g. a bare `tgbench train --model tg`: 12 x 768).

    The estimate is 6 x parameters (embeddings included: the tied output layer costs as much as
    its matrix) x training tokens, at the CPU rate measured by the benchmarks.

    Returns:
        The estimated hours (0 on a GPU).
    """
    if device.type != "cpu":
        return 0.0
    flops = training_flops(sum(p.numel() for p in model.parameters()), tokens)
    hours = cpu_seconds(flops) / 3600
    if hours > LARGE_RUN_HOURS:

        print_warning(f"this run is large for a CPU: ~{flops / 1e15:.2f} PFLOP, roughly {hours:.0f} hours on "
                      f"{torch.get_num_threads()} threads", "for a quick run try --width 128 --layers 4 --tokenizer "
                      "bpe-8192 --tokens 300k --lr 3e-3 --batch-tokens 2048, or train on a GPU (--device cuda)")
    return hours


FEW_STEPS = 100  # below this many optimiser steps a run is warned about (it barely learns)


NEAR_UNIGRAM = 0.8  # a validation PPL above this fraction of the unigram PPL is warned about


def undertraining_flags(summary: dict) -> list[str]:
    """The flags of a finished run that trained too little, from its summary.json: ``few-steps`` (fewer than
    ``FEW_STEPS`` optimiser steps) and ``near-unigram`` (best validation PPL above ``NEAR_UNIGRAM`` x the
    corpus's unigram PPL). The same tests as the warnings of `warn_if_few_steps` and `warn_if_untrained`.

    Args:
        summary: A run's summary.json (``steps``, ``best_val_ppl``, ``unigram_val_ppl``; missing ones pass).

    Returns:
        The flags, in that order ([] for a run that trained enough, or whose summary lacks the figures).
    """
    flags = []
    steps = summary.get("steps")
    if isinstance(steps, int | float) and steps < FEW_STEPS:
        flags.append("few-steps")
    ppl, unigram = summary.get("best_val_ppl"), summary.get("unigram_val_ppl")
    if isinstance(ppl, int | float) and isinstance(unigram, int | float) and math.isfinite(unigram) \
            and ppl >= NEAR_UNIGRAM * unigram:
        flags.append("near-unigram")
    return flags


def undertraining_note(run_id: str, summary: dict) -> str | None:
    """One line for a grid's log naming what an undertrained run lacked, and the grid settings that fix it."""
    flags = undertraining_flags(summary)
    if not flags:
        return None
    parts = []
    if "few-steps" in flags:
        parts.append(f"only {summary['steps']} optimizer steps (under ~{FEW_STEPS} a model barely learns)")
    if "near-unigram" in flags:
        parts.append(f"validation PPL {summary['best_val_ppl']:.0f} is near (or above) the unigram PPL "
                     f"{summary['unigram_val_ppl']:.0f}")
    return (f"run {run_id} is undertrained: {'; '.join(parts)}; flagged {', '.join(flags)} in results.csv "
            "(fix: lower train.batch_tokens, raise the budgets or train.epochs, or tune the LR with tgbench tune)")


def warn_if_few_steps(total_steps: int, tc) -> bool:
    """Warn when a run has too few optimiser steps to learn (a bare `tgbench train --tokens 50000`: 13)."""
    if total_steps >= FEW_STEPS:
        return False

    print_warning(f"this run takes only {total_steps} optimizer steps ({tc.batch_tokens:,} tokens per step, "
                  f"{tc.epochs} epoch(s)); under ~{FEW_STEPS} steps a model barely learns",
                  f"lower --batch-tokens (now {tc.batch_tokens}), raise --tokens or --epochs, and try a higher --lr "
                  f"(now {tc.lr:g}; the demo preset trains small models with --lr 3e-3 --batch-tokens 2048)")
    return True


def unigram_loss(train_docs: Sequence[Document], valid_docs: Sequence[Document], vocab_size: int) -> float:
    """Lexical NLL of the validation documents under the training split's add-one unigram distribution."""
    train_ids = [s for d in train_docs for s in d]
    valid_ids = [s for d in valid_docs for s in d]
    if not valid_ids:
        return math.nan
    counts = np.bincount(np.concatenate(train_ids), minlength=vocab_size).astype(np.float64) + 1.0 \
        if train_ids else np.ones(vocab_size)
    logp = np.log(counts / counts.sum())
    tokens = np.concatenate(valid_ids)
    return float(-logp[np.clip(tokens, 0, len(logp) - 1)].mean())


def warn_if_untrained(best_val_loss: float | None, unigram: float, steps: int, tc) -> bool:
    """Warn when a run ends near the unigram perplexity (it learned little more than word frequencies)."""
    if best_val_loss is None or not math.isfinite(unigram) or best_val_loss < unigram + math.log(NEAR_UNIGRAM):
        return False

    print_warning(f"validation perplexity {math.exp(min(best_val_loss, 50)):.0f} is near (or above) this corpus's "
                  f"unigram perplexity {math.exp(unigram):.0f}: the model learned little beyond word frequencies",
                  f"raise --lr (now {tc.lr:g}) or lower --batch-tokens (now {tc.batch_tokens}) for more than the "
                  f"{steps} steps this run took")
    return True
