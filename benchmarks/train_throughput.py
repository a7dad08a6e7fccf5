"""Training throughput: TG, GPT-2, GPT-2 + boundaries, the peers RMT and TXL, and `transformers.GPT2LMHeadModel`.

All of them train at the demo's size (width 128, 4 layers, 4 heads, GPT-2 context 256,
bpe-8192, 2048 lexical tokens per batch, dropout 0) on real batches of the embedded corpus. A step
is what `tgbench/training/trainer.py` does: forward through `adapter.loss`, backward, gradient clipping,
AdamW step, zero_grad. The transformers reference (`attn_implementation="sdpa"`, its default, so
both GPT-2s use fused attention) trains on exactly the packed blocks of our GPT-2 with the same
loss (logits -> cross-entropy over non-pad targets). The peers `rmt` and `txl` take TG's options (the
same width, depth, dropout and streams) with their own memory defaults (docs/choices.md).

Figures are lexical tokens/s (content-token targets per second), median over repetitions in which
the contenders alternate. Training FLOP/s is counted with `torch.utils.flop_counter` on one batch
and reported as a fraction of the float32 matmul peak measured in the same run.

Run: `python -m benchmarks.train_throughput [--quick] [--device auto]`.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import (
    PRESET,
    alternate,
    autocast,
    build_model,
    emit,
    load_setup,
    make_adapter,
    make_optimizer,
    matmul_peak_flops,
    median,
    print_table,
    timed,
)
from tgbench.adapter import Adapter, Batch, LossParts
from tgbench.models.gpt2 import IGNORE, GPT2Adapter
from tgbench.training.allocator import cpu_usage, usage_line, usage_since

CONTENDERS = ("tg", "gpt2", "gpt2-boundary", "transformers", "rmt", "txl")
PEERS = ("rmt", "txl")  # segment-recurrent peers on TG's streams: TG's options, their own memory defaults


class TransformersGPT2Adapter(GPT2Adapter):
    """Our GPT-2 batches, the reference `GPT2LMHeadModel` as the model (the loss computed as ours)."""

    name = "transformers-gpt2"

    def build(self, vocab):
        from transformers import GPT2Config as HFConfig
        from transformers import GPT2LMHeadModel

        c = self.config
        hf = HFConfig(vocab_size=vocab.size, n_positions=c.context, n_embd=c.width, n_layer=c.layers, n_head=c.n_heads,
                      resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.attention_dropout,
                      bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, attn_implementation="sdpa")
        return GPT2LMHeadModel(hf)

    def loss(self, model, batch: Batch, epoch: int) -> LossParts:
        targets = batch.tensors["targets"]  # (B, T)
        logits = model(input_ids=batch.tensors["inputs"]).logits  # (B, T, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                              reduction="none").view_as(targets)  # (B, T)
        return LossParts(loss=nll.sum() / (targets != IGNORE).sum().clamp(min=1),
                         lexical_nll_sum=nll[batch.tensors["lexical"]].sum().detach(),
                         lexical_tokens=batch.lexical_tokens)


def peer_options(name: str, tg_options: dict[str, Any]) -> dict[str, Any]:
    """TG's options that the peer's config also has (width, layers, heads, dropout, streams)."""
    import dataclasses

    from tgbench.registry import get_adapter_class

    fields = {f.name for f in dataclasses.fields(get_adapter_class(name).config_class)}
    return {k: v for k, v in tg_options.items() if k in fields}


class Trainer:
    """One contender: a model, its optimiser and an endless cycle over its batches (already on the device)."""

    def __init__(self, adapter: Adapter, setup, batches: list[Batch]) -> None:
        self.adapter = adapter
        self.device = setup.device
        self.model = build_model(adapter, setup.vocab, setup.device)
        self.optimizer = make_optimizer(self.model)
        self.batches = [b.to(setup.device) for b in batches]
        self.cycle = itertools.cycle(self.batches)

    def step(self, batch: Batch) -> None:
        with autocast(self.device):
            parts = self.adapter.loss(self.model, batch, 0)
        parts.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, n_steps: int) -> tuple[float, int]:
        """Seconds and lexical tokens of the next `n_steps` batches."""
        chosen = [next(self.cycle) for _ in range(n_steps)]
        seconds = timed(lambda: [self.step(b) for b in chosen], self.device)
        return seconds, sum(b.lexical_tokens for b in chosen)

    def flops_per_step(self) -> tuple[float, int]:
        """Counted FLOPs (forward + backward) of the first batch, and its lexical tokens."""
        from torch.utils.flop_counter import FlopCounterMode

        batch = self.batches[0]
        counter = FlopCounterMode(display=False)
        with counter, autocast(self.device):
            self.adapter.loss(self.model, batch, 0).loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return float(counter.get_total_flops()), batch.lexical_tokens


def main(quick: bool = False, device: str = "auto", repeats: int = 0, steps: int = 0,
         models: tuple[str, ...] = CONTENDERS, preset: str = PRESET) -> dict[str, Any]:
    """Run the benchmark, print a table and the final JSON line; returns the figures.

    Args:
        quick: Toy sizes (smoke test).
        device: "auto", "cpu" or "cuda".
        repeats: Alternating repetitions (0 = 7, or 2 when quick).
        steps: Training steps per contender per repetition (0 = 3, or 1 when quick).
        models: Contenders to run (a subset of CONTENDERS; the ratios need tg, gpt2 and transformers).
        preset: The preset whose model sizes and batch tokens are measured (cpu-study: the demo's size at 2048
            tokens per batch; `demo` for the demo's own 1024, what `grid_throughput` compares with its runs).
    """
    process_start = cpu_usage()
    setup = load_setup(quick=quick, device=device, preset=preset)
    repeats = repeats or (2 if quick else 7)
    steps = steps or (1 if quick else 3)
    n_batches = steps * (repeats + 1)
    adapters = {
        "tg": make_adapter("tg", setup.options["tg"]),
        "gpt2": make_adapter("gpt2", setup.options["gpt2"]),
        # a preset without GPT-2 + boundaries (demo) measures it at GPT-2's options
        "gpt2-boundary": make_adapter("gpt2-boundary", setup.options.get("gpt2-boundary", setup.options["gpt2"])),
        "transformers": TransformersGPT2Adapter(**setup.options["gpt2"]),
        **{name: make_adapter(name, peer_options(name, setup.options["tg"])) for name in PEERS},
    }
    all_batches = {name: a.batches(setup.train, setup.vocab, batch_tokens=setup.batch_tokens, epoch=0,
                                   rng=np.random.default_rng([0, 0, 1]))  # the trainer's epoch-0 generator
                   for name, a in adapters.items() if name in models or name == "tg"}
    tg_batches = all_batches["tg"]
    trainers = {name: Trainer(a, setup, all_batches[name][:n_batches]) for name, a in adapters.items()
                if name in models}

    for trainer in trainers.values():  # warm-up: first-call allocations, autotuning, lazy inits
        trainer.run(steps)
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in trainers}
    usage = {name: {"cpu_user_s": 0.0, "cpu_system_s": 0.0, "minor_page_faults": 0} for name in trainers}

    def contender(name: str):
        def go() -> float:
            start = cpu_usage()  # the contenders run one at a time: this process's usage is theirs
            seconds, tokens = trainers[name].run(steps)
            spent = usage_since(start)
            for key in usage[name]:
                usage[name][key] += spent[key]
            samples[name].append((seconds, tokens))
            return seconds
        return go

    alternate({name: contender(name) for name in trainers}, repeats)
    tps = {name: median([tok / sec for sec, tok in samples[name]]) for name in trainers}
    tps = {name: tps.get(name, float("nan")) for name in CONTENDERS}

    peak = matmul_peak_flops(setup.device)
    flops = {}
    for name in CONTENDERS:
        flops[name] = float("nan")
        if name in trainers:
            total, tokens = trainers[name].flops_per_step()
            flops[name] = total / max(tokens, 1) * tps[name]  # FLOP/s at the measured tokens/s

    lexical = sum(b.lexical_tokens for b in tg_batches)
    computed = sum(b.computed_slots for b in tg_batches)
    grid = sum(b.meta["grid_slots"] for b in tg_batches)
    result: dict[str, Any] = {
        "benchmark": "train_throughput",
        "quick": quick,
        "device": str(setup.device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "steps_per_repeat": steps,
        "batch_tokens": setup.batch_tokens,
        "options": setup.options,
        "data": setup.describe,
        "transformers_attn_implementation": "sdpa",
        **{f"tokens_per_s_{name.replace('-', '_')}": tps[name] for name in CONTENDERS},
        "ratio_gpt2_vs_transformers": tps["gpt2"] / tps["transformers"],
        "ratio_tg_vs_gpt2": tps["tg"] / tps["gpt2"],
        "ratio_gpt2_boundary_vs_gpt2": tps["gpt2-boundary"] / tps["gpt2"],
        **{f"ratio_{name}_vs_gpt2": tps[name] / tps["gpt2"] for name in PEERS},
        "tg_padding_efficiency": lexical / computed,
        "tg_grid_efficiency": lexical / grid,
        "matmul_peak_flops": peak,
        **{f"flops_fraction_{name.replace('-', '_')}": flops[name] / peak for name in CONTENDERS},
        **{f"flops_per_s_{name.replace('-', '_')}": flops[name] for name in CONTENDERS},
        **{f"flops_per_token_{name.replace('-', '_')}": flops[name] / tps[name] for name in CONTENDERS},
        # TG's achieved FLOP/s against GPT-2's, and what bounds its tokens/s ratio
        "ratio_tg_vs_gpt2_flops_per_s": flops["tg"] / flops["gpt2"],
        "ratio_tg_vs_gpt2_flops_per_token": flops["tg"] / tps["tg"] / (flops["gpt2"] / tps["gpt2"]),
        "malloc": allocator_mode(),
        **{f"system_fraction_{name.replace('-', '_')}": _fraction(usage[name]) for name in trainers},
        **{f"minor_page_faults_per_step_{name.replace('-', '_')}": usage[name]["minor_page_faults"]
           / (repeats * steps) for name in trainers},
        "cpu_usage_timed_steps": usage,
        "cpu_usage_process": usage_since(process_start),
    }
    rows = [(name, tps[name], tps[name] / tps["gpt2"], flops[name] / 1e9, flops[name] / peak) for name in trainers]
    print_table(f"training throughput on {setup.device} ({repeats} x {steps} steps, median)",
                ["model", "lexical tokens/s", "vs gpt2", "GFLOP/s", "of matmul peak"], rows)
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s; TG padding efficiency (lexical / computed rows): "
          f"{result['tg_padding_efficiency']:.3f}")
    if "tg" in trainers and "gpt2" in trainers:
        print(f"TG / GPT-2: achieved FLOP/s {result['ratio_tg_vs_gpt2_flops_per_s']:.3f}, tokens/s "
              f"{result['ratio_tg_vs_gpt2']:.3f}, counted FLOPs per lexical token "
              f"{result['ratio_tg_vs_gpt2_flops_per_token']:.3f} "
              "(tokens/s ratio = FLOP/s ratio / FLOPs-per-token ratio)")
    print(f"preset {preset}: {setup.batch_tokens} lexical tokens per batch, {torch.get_num_threads()} threads, "
          f"malloc {result['malloc']}")
    print_table("CPU time of the timed steps (getrusage)", ["model", "system / CPU time", "minor page faults per step"],
                [(name, _fraction(usage[name]), usage[name]["minor_page_faults"] / (repeats * steps))
                 for name in trainers])
    print(f"the whole benchmark process: {usage_line(result['cpu_usage_process'])}")
    return emit(result)


def _fraction(usage: dict[str, float]) -> float:
    """System time over all CPU time (nan without CPU time)."""
    total = usage["cpu_user_s"] + usage["cpu_system_s"]
    return usage["cpu_system_s"] / total if total > 0 else float("nan")


def allocator_mode() -> str:
    """"kept" when glibc keeps freed buffers (tgbench.training.allocator), else "default"."""
    from tgbench.training.allocator import keep_freed_memory

    return "kept" if keep_freed_memory() else "default"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--models", default=",".join(CONTENDERS), help="comma-separated subset of contenders")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--preset", default=PRESET, help="preset whose sizes and batch tokens are measured")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    main(quick=args.quick, device=args.device, repeats=args.repeats, steps=args.steps,
         models=tuple(args.models.split(",")), preset=args.preset)


if __name__ == "__main__":
    cli()
