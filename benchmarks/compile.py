"""`torch.compile` of the training step: TG and GPT-2, eager against compiled, side by side.

The step is the trainer's (`tgbench.training.trainer`): `adapter.loss` called through the trainer's loss module,
which `--compile` wraps in `torch.compile` (default mode, inductor); backward, gradient clipping,
AdamW step. Both contenders train at the demo's size (width 128, 4 layers) on real batches of the embedded corpus.
Compilation happens in the warm-up, whose time is reported separately; TG's batches change shape from
step to step (streams x sentence steps), so it recompiles for new shapes, and that cost is part of
its measured steps. Figures are lexical tokens/s, median over repetitions in which the contenders
alternate; the ratio compiled / eager is what the benchmark answers.

Run: `python -m benchmarks.compile [--quick] [--device auto]`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import alternate, autocast, emit, load_setup, make_adapter, median, print_table
from benchmarks.train_throughput import Trainer
from tgbench.adapter import Adapter, Batch
from tgbench.training.trainer import _LossModule

MODELS = ("tg", "gpt2")


class StepRunner(Trainer):
    """The throughput benchmark's contender, stepping through the trainer's loss module (maybe compiled)."""

    def __init__(self, adapter: Adapter, setup, batches: list[Batch], compiled: bool) -> None:
        super().__init__(adapter, setup, batches)
        module = _LossModule(adapter, self.model)
        self.step_module = torch.compile(module) if compiled else module

    def step(self, batch: Batch) -> None:
        with autocast(self.device):
            loss, _, _ = self.step_module(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def main(quick: bool = False, device: str = "auto", repeats: int = 0, steps: int = 0,
         models: tuple[str, ...] = MODELS) -> dict[str, Any]:
    """Run the benchmark, print a table and the final JSON line; returns the figures."""
    setup = load_setup(quick=quick, device=device)
    repeats = repeats or (2 if quick else 5)
    steps = steps or (1 if quick else 4)
    n_batches = 2  # two distinct batches, cycled: each shape compiles once (the second marks shapes dynamic)
    runners: dict[str, StepRunner] = {}
    warmup_s: dict[str, float] = {}
    for name in models:
        adapter = make_adapter(name, setup.options[name])
        batches = adapter.batches(setup.train, setup.vocab, batch_tokens=setup.batch_tokens, epoch=0,
                                  rng=np.random.default_rng([0, 0, 1]))[:n_batches]
        for compiled in (False, True):
            key = f"{name}{'-compiled' if compiled else ''}"
            runners[key] = StepRunner(adapter, setup, batches, compiled)
            started = time.perf_counter()
            runners[key].run(len(batches))  # warm-up: every distinct batch once (compiles each shape)
            warmup_s[key] = time.perf_counter() - started
    samples: dict[str, list[tuple[float, int]]] = {key: [] for key in runners}

    def contender(key: str):
        def go() -> float:
            seconds, tokens = runners[key].run(steps)
            samples[key].append((seconds, tokens))
            return seconds
        return go

    alternate({key: contender(key) for key in runners}, repeats)
    tps = {key: median([tok / sec for sec, tok in samples[key]]) for key in runners}
    result: dict[str, Any] = {
        "benchmark": "compile", "quick": quick, "device": str(setup.device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "repeats": repeats, "steps_per_repeat": steps,
        "batch_tokens": setup.batch_tokens, "options": {m: setup.options[m] for m in models}, "data": setup.describe,
        **{f"tokens_per_s_{k.replace('-', '_')}": v for k, v in tps.items()},
        **{f"warmup_s_{k.replace('-', '_')}": v for k, v in warmup_s.items()},
        **{f"ratio_compiled_vs_eager_{m}": tps[f"{m}-compiled"] / tps[m] for m in models},
    }
    rows = [(m, tps[m], tps[f"{m}-compiled"], tps[f"{m}-compiled"] / tps[m], warmup_s[m], warmup_s[f"{m}-compiled"])
            for m in models]
    print_table(f"torch.compile of the training step on {setup.device} ({repeats} x {steps} steps, median)",
                ["model", "eager tokens/s", "compiled tokens/s", "compiled / eager", "eager warm-up s",
                 "compiled warm-up s"], rows)
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    main(quick=args.quick, device=args.device, repeats=args.repeats, steps=args.steps,
         models=tuple(args.models.split(",")))


if __name__ == "__main__":
    cli()
