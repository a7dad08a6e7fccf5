"""Where one training step's time goes: TG and GPT-2 at the demo size under `torch.profiler`.

The step is the throughput benchmark's (`benchmarks.train_throughput.Trainer`: the trainer's loss,
backward, gradient clipping, AdamW built by `tgbench.training.optim.make_optimizer`), at width 128 x 4 layers,
bpe-8192, 2048 lexical tokens per step, on real batches of the embedded corpus, with 1 and with 2
threads. For each it prints the most expensive operators (self CPU time) and a JSON line with every
contender's share of self CPU time per category: matrix products, the loss's softmax, attention,
the optimiser, and everything else (small ops, copies, allocation).

Run: `python -m benchmarks.profile_step [--quick] [--steps 4] [--threads 1,2]`.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from benchmarks.common import emit, load_setup, make_adapter
from benchmarks.train_throughput import Trainer

CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "loss_softmax": ("aten::_softmax", "aten::_log_softmax", "aten::logsumexp", "aten::exp", "aten::exp_"),
    "attention": ("aten::_scaled_dot_product",),
    "optimizer": ("aten::_foreach_", "aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::sqrt"),
}


def category(op: str) -> str:
    for name, prefixes in CATEGORIES.items():
        if op.startswith(prefixes):
            return name
    return "other"


def profile_one(trainer: Trainer, steps: int) -> tuple[dict[str, float], str]:
    """Shares of self CPU time per category over `steps` steps, and the top-operator table."""
    from torch.profiler import ProfilerActivity, profile

    trainer.run(1)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.run(steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for event in events:
        shares[category(event.key)] += event.self_cpu_time_total / total
    shares["ms_per_step"] = total / 1e3 / steps
    return shares, events.table(sort_by="self_cpu_time_total", row_limit=12)


def main(quick: bool = False, steps: int = 4, threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    setup = load_setup(quick=quick, device="cpu", train_tokens=60_000)
    result: dict[str, Any] = {"benchmark": "profile_step", "quick": quick, "steps": steps,
                              "batch_tokens": setup.batch_tokens, "options": setup.options, "profiles": {}}
    previous = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            for name in ("tg", "gpt2"):
                adapter = make_adapter(name, setup.options[name])
                batches = adapter.batches(setup.train, setup.vocab, batch_tokens=setup.batch_tokens, epoch=0,
                                          rng=np.random.default_rng([0, 0, 1]))[: steps + 1]
                shares, table = profile_one(Trainer(adapter, setup, batches), steps)
                result["profiles"][f"{name}_threads{n}"] = shares
                print(f"\n{name}, {n} thread(s): " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()
                                                             if k != "ms_per_step")
                      + f"; {shares['ms_per_step']:.0f} ms of CPU time per step")
                print(table)
    finally:
        torch.set_num_threads(previous)
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    main(quick=args.quick, steps=args.steps, threads=tuple(int(t) for t in args.threads.split(",")))


if __name__ == "__main__":
    cli()
