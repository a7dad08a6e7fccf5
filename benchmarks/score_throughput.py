"""Scoring throughput: `adapter.score` on the test split for TG and GPT-2 (lexical tokens/s).

`score` is the single evaluation path (perplexity, reversal probe, lm-eval), so its speed is what
every evaluation pays. Models are freshly initialised at the demo's size (speed does
not depend on the weights); both score the same test documents, alternating, median over repetitions.

Run: `python -m benchmarks.score_throughput [--quick] [--device auto]`.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import (
    alternate,
    autocast,
    build_model,
    emit,
    load_setup,
    make_adapter,
    median,
    print_table,
    timed,
)

CONTENDERS = ("tg", "gpt2", "gpt2-boundary")


def main(quick: bool = False, device: str = "auto", repeats: int = 0, max_tokens: int = 20_000) -> dict[str, Any]:
    """Score the test split with each contender; print a table and the final JSON line.

    Args:
        quick: Toy sizes (smoke test).
        device: "auto", "cpu" or "cuda".
        repeats: Alternating repetitions (0 = 3, or 1 when quick).
        max_tokens: Lexical tokens of test documents scored per repetition (whole documents, file order).
    """
    setup = load_setup(quick=quick, device=device)
    repeats = repeats or (1 if quick else 3)
    documents, tokens = [], 0
    for doc in setup.test:
        if tokens >= max_tokens:
            break
        documents.append(doc)
        tokens += sum(len(s) for s in doc)
    adapters = {name: make_adapter(name, setup.options[name]) for name in CONTENDERS}
    models = {name: build_model(a, setup.vocab, setup.device).eval() for name, a in adapters.items()}

    def contender(name: str):
        def go() -> float:
            with autocast(setup.device):
                return timed(lambda: adapters[name].score(models[name], documents, setup.vocab), setup.device)
        return go

    for name in CONTENDERS:  # warm-up, and a check that every contender scores every token
        with autocast(setup.device):
            scored = adapters[name].score(models[name], documents[:4], setup.vocab)
        assert [len(s) for s in scored] == [sum(len(x) for x in d) for d in documents[:4]], name
    times = alternate({name: contender(name) for name in CONTENDERS}, repeats)
    tps = {name: tokens / median(times[name]) for name in CONTENDERS}
    result = {
        "benchmark": "score_throughput",
        "quick": quick,
        "device": str(setup.device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "documents": len(documents),
        "lexical_tokens": tokens,
        "options": setup.options,
        "data": setup.describe,
        **{f"tokens_per_s_{name.replace('-', '_')}": tps[name] for name in CONTENDERS},
        "ratio_tg_vs_gpt2": tps["tg"] / tps["gpt2"],
        "ratio_gpt2_boundary_vs_gpt2": tps["gpt2-boundary"] / tps["gpt2"],
    }
    print_table(f"scoring throughput on {setup.device} ({len(documents)} test documents, {tokens:,} lexical tokens, "
                f"median of {repeats})", ["model", "lexical tokens/s", "vs gpt2"],
                [(name, tps[name], tps[name] / tps["gpt2"]) for name in CONTENDERS])
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=20_000)
    args = parser.parse_args()
    main(quick=args.quick, device=args.device, repeats=args.repeats, max_tokens=args.max_tokens)


if __name__ == "__main__":
    cli()
