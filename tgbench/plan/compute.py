"""What a grid costs before it runs: parameter counts, training FLOPs and the wall time on this machine's CPU.

The one owner of compute estimates: `train-grid --dry-run` (`dry_run_table`, `dry_run_summary`) and the
trainer's warning about a run too large for a CPU (`tgbench.training.advice`) both read them here.

The estimate is 6 N D FLOPs with N counting every parameter, embeddings included (the tied output layer costs as
much as any matrix); attention is left out. The CPU rate is `CPU_FLOPS_PER_CORE`, measured on this project's
development machine, and every run adds `RUN_OVERHEAD_SECONDS` (start-up, validations, checkpoints, the final
evaluation), which is most of a small run's time.
"""

from __future__ import annotations

from typing import Any

import torch

from tgbench.adapter import Vocab
from tgbench.data.tokenizer import base_vocab_size
from tgbench.plan.expand import RunSpec, expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.tune import sweep_specs
from tgbench.registry import build_adapter

# Training speed on CPU in 6 N D FLOP/s per core (N with embeddings): the demo grid's runs measured 6.3k-8.3k
# lexical tokens/s at N = 1.87M on 2 cores (an earlier demo report), i.e. 35-46 GFLOP/s per core; the lower end.
CPU_FLOPS_PER_CORE = 35e9
# A run's cost beyond its training FLOPs: process and data start-up, periodic validation and checkpoints, the test
# evaluation. The committed cpu-peers grid (72 runs of 80-314 steps, 2 jobs on 2 cores) fits training seconds =
# 22.6 s per TFLOP + 19.9 s; a researcher's runs of 16-80 steps took about 50 s each where 6ND alone said 1 s.
RUN_OVERHEAD_SECONDS = 20.0


def training_flops(n_params_total: int, tokens: int) -> float:
    """6 N D: forward and backward FLOPs of `tokens` training tokens (attention ignored)."""
    return 6.0 * n_params_total * tokens


def cpu_seconds(flops: float, threads: int | None = None) -> float:
    """Estimated wall time of `flops` training FLOPs on this machine's CPU (`CPU_FLOPS_PER_CORE` per thread)."""
    return flops / (CPU_FLOPS_PER_CORE * (threads or torch.get_num_threads()))


def run_seconds(flops: float, threads: int | None = None) -> float:
    """Estimated wall time of one run: its training FLOPs (`cpu_seconds`) plus `RUN_OVERHEAD_SECONDS`."""
    return cpu_seconds(flops, threads) + RUN_OVERHEAD_SECONDS


def parameter_counts(spec: RunSpec) -> tuple[int, int]:
    """(non-embedding, all) parameters, counted on the meta device (no memory, no init cost)."""
    adapter = build_adapter(spec.config)
    with torch.device("meta"):
        model = adapter.build(Vocab(base_vocab_size(spec.config.data.tokenizer)))
    return adapter.n_params(model), sum(p.numel() for p in model.parameters())


def parameter_count(spec: RunSpec) -> int:
    """Non-embedding parameters, counted on the meta device (no memory, no init cost)."""
    return parameter_counts(spec)[0]


def dry_run_table(grid: GridConfig) -> list[dict[str, Any]]:
    """The runs to train, the tuning sweep's first, with parameter counts, a compute estimate and the wall time
    that makes on this machine's CPU, one run at a time (`cpu_seconds`).

    Each row's `stage` is "tune" or "grid"; `lr` is the run's peak LR, or "tuned" for a grid run whose LR the
    sweep will choose; `pflops` counts non-embedding parameters (as the paper's N), `flops` all of them.
    """
    counts: dict[tuple, tuple[int, int]] = {}
    rows = []
    sweep = sweep_specs(grid) if grid.tune is not None else []
    for stage, spec in [*(("tune", s) for s in sweep), *(("grid", s) for s in expand(grid))]:
        key = (spec.adapter, repr(sorted(spec.config.model_options.items())))
        if key not in counts:
            counts[key] = parameter_counts(spec)
        n, total = counts[key]
        tuned = stage == "grid" and grid.tune is not None and "lr" not in spec.meta["train_overrides"]
        epochs = spec.config.train.epochs
        flops = training_flops(total, spec.tokens * epochs)
        rows.append({"stage": stage, "run_id": spec.run_id, "label": spec.label, "width": spec.width,
                     "layers": spec.layers, "heads": spec.heads, "n_params": n, "tokens": spec.tokens,
                     "seed": spec.seed, "epochs": epochs, "lr": "tuned" if tuned else f"{spec.config.train.lr:.3g}",
                     "pflops": 6 * n * spec.tokens * epochs / 1e15, "total_params": total, "flops": flops,
                     "cpu_seconds": run_seconds(flops)})
    return rows


def dry_run_summary(rows: list[dict[str, Any]]) -> str:
    """The dry run's last line: total compute, the sweep's share, and the CPU time one run at a time."""
    sweep = [r for r in rows if r["stage"] == "tune"]
    total = sum(r["flops"] for r in rows)
    tuning = sum(r["flops"] for r in sweep)
    return (f"total compute ~{fmt_flops(total)} (6 N D, N with embeddings, attention ignored)"
            + (f", of which the tuning sweep ~{fmt_flops(tuning)} ({tuning / total:.0%})" if sweep else "")
            + f"; on this machine's CPU ~{fmt_duration(sum(r['cpu_seconds'] for r in rows))} one run at a time: "
            f"the compute at {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s per thread x {torch.get_num_threads()} threads, "
            f"plus ~{RUN_OVERHEAD_SECONDS:.0f} s per run for start-up, validations, checkpoints and the test "
            "evaluation")


def fmt_flops(flops: float) -> str:
    """FLOPs in the unit that keeps 3 significant digits readable: 412 GFLOP, 3.1 TFLOP, 2.4 PFLOP."""
    for scale, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"),
                        (1e3, "kFLOP")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def fmt_duration(seconds: float) -> str:
    """A wall time as 40 s, 12 min, 3.5 h or 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
