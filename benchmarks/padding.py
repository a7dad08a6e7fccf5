"""Padding efficiency of TG's batches: real token slots / computed token slots.

Three figures over one epoch of the demo's largest training subset (200k lexical tokens):

- `tg_padding_efficiency` (the target figure): lexical tokens / packed rows. Token-wise layers (LN,
  projections, SwiGLU, LM head) run on packed rows, so these are the slots actually computed; the
  only overhead is `[BOS]`/`[EOS]` rows.
- `tg_grid_efficiency`: lexical tokens / attention-grid slots (B_t x longest sentence of step t,
  summed over steps): the padding only attention pays.
- `naive_66_efficiency`: lexical tokens / (sentences x 66), what fixed padding of every sentence to
  66 slots (the paper's [BOS] + 64 + [EOS]) would give.

GPT-2's packed blocks are given for comparison. No timing: the figures are exact counts.

Run: `python -m benchmarks.padding [--quick]`.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.common import emit, load_setup, make_adapter, print_table

NAIVE_SLOTS = 66  # [BOS] + 64 tokens + [EOS]


def main(quick: bool = False, device: str = "auto") -> dict[str, Any]:
    """Count slots of one epoch of TG and GPT-2 batches; print a table and the final JSON line."""
    setup = load_setup(quick=quick, device=device)
    rng = lambda: np.random.default_rng([0, 0, 1])  # noqa: E731  the trainer's epoch-0 generator
    tg = make_adapter("tg", setup.options["tg"])
    tg_batches = tg.batches(setup.train, setup.vocab, batch_tokens=setup.batch_tokens, epoch=0, rng=rng())
    gpt2 = make_adapter("gpt2", setup.options["gpt2"])
    gpt2_batches = gpt2.batches(setup.train, setup.vocab, batch_tokens=setup.batch_tokens, epoch=0, rng=rng())

    lexical = sum(b.lexical_tokens for b in tg_batches)
    rows = sum(b.computed_slots for b in tg_batches)
    grid = sum(b.meta["grid_slots"] for b in tg_batches)
    sentences = sum(b.sentences for b in tg_batches)
    steps = sum(len(b.meta["steps"]) for b in tg_batches)
    streams = sum(b.meta["streams"] for b in tg_batches)
    gpt2_lexical = sum(b.lexical_tokens for b in gpt2_batches)
    gpt2_slots = sum(b.computed_slots for b in gpt2_batches)
    result = {
        "benchmark": "padding",
        "quick": quick,
        "data": setup.describe,
        "documents": len(setup.train),
        "tg_batches": len(tg_batches),
        "tg_sentences": sentences,
        "tg_lexical_tokens": lexical,
        "tg_computed_slots": rows,
        "tg_grid_slots": grid,
        "tg_padding_efficiency": lexical / rows,
        "tg_grid_efficiency": lexical / grid,
        "naive_66_efficiency": lexical / (sentences * NAIVE_SLOTS),
        "tg_mean_streams_per_batch": streams / len(tg_batches),
        "tg_mean_steps_per_batch": steps / len(tg_batches),
        "tg_mean_streams_per_step": sentences / steps,
        "gpt2_padding_efficiency": gpt2_lexical / gpt2_slots,
    }
    print_table(f"padding efficiency (lexical tokens / slots) over {len(tg_batches)} TG batches", ["layout", "slots",
                "efficiency"], [
        ("TG packed rows (target figure)", rows, result["tg_padding_efficiency"]),
        ("TG attention grid", grid, result["tg_grid_efficiency"]),
        (f"naive: every sentence padded to {NAIVE_SLOTS}", sentences * NAIVE_SLOTS, result["naive_66_efficiency"]),
        ("GPT-2 packed blocks", gpt2_slots, result["gpt2_padding_efficiency"]),
    ])
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(quick=args.quick)


if __name__ == "__main__":
    cli()
