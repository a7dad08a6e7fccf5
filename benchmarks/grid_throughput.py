"""Grid throughput: the demo grid's first budget trained one run at a time (all cores) and two at once.

The grid is the `demo` preset restricted to its smallest budget (TG and GPT-2, width 128 x 4 layers,
2 seeds: 4 runs of 2 epochs), without its tuning sweep (the runs train at the grid's learning rate).
Each contender trains those 4 runs into a fresh directory through `tgbench.plan.grid.run_grid`, exactly as
`tgbench train-grid` does:

- `jobs1`: one run after another in this process, each with every core (`train.threads = cores`);
- `jobs2`: two runs at once in worker processes (`--jobs 2`), each with `cores // 2` threads; worker
  start-up (a fresh interpreter, imports, the corpus read from its cache) is part of its time.

Figures per contender: wall time of the whole grid, and training throughput summed over runs (the
lexical training tokens of every run / wall time). `ratio_jobs2_vs_jobs1` is jobs1's wall time over
jobs2's (runs per hour, two at once against one at a time), median over repetitions in which the two
alternate. Each run's own median tokens/s (summary.json) is reported too, with every run's getrusage from its
summary.json (CPU time, the kernel's share, minor page faults), and the jobs1 runs' tokens/s against the
training-throughput benchmark's step at the demo preset's own settings (its batch tokens, every core): the two
should agree within 10% (`--no-check` skips it).

Run: `python -m benchmarks.grid_throughput [--quick] [--repeats 1]`; `--quick` trains toy models on a tiny
generated corpus (a smoke test; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import alternate, emit, median, print_table
from tgbench.core.files import read_json
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.validate import load_grid
from tgbench.training.allocator import runs_usage, usage_line
from tgbench.training.executor import run_grid
from tgbench.training.pool import cpu_cores

QUICK_WORDS = ["red", "blue", "tree", "house", "river", "sings", "walks", "quickly", "old", "the", "a", "cat"]


def quick_corpus(path: Path, n_docs: int = 120) -> Path:
    """A tiny plain-text corpus (documents of 3-6 sentences, blank lines between them)."""
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(n_docs):
        sentences = [" ".join(rng.choice(QUICK_WORDS, int(rng.integers(4, 9)))).capitalize() + "."
                     for _ in range(int(rng.integers(3, 7)))]
        docs.append(" ".join(sentences))
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def demo_first_budget(quick: bool, workdir: Path) -> GridConfig:
    """The demo preset at its smallest budget (or toy sizes on a generated corpus when quick)."""
    grid = load_grid(preset="demo")
    # The runs alone: the preset's learning-rate sweep is more runs of the same kind, not what is compared.
    grid = dataclasses.replace(grid, budgets=[min(grid.budgets)], tune=None)
    if quick:
        corpus = quick_corpus(workdir / "corpus.txt")
        data = dataclasses.replace(grid.data, corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire",
                                   cache_dir=str(workdir / "cache"), valid_fraction=0.1, test_fraction=0.1)
        train = dataclasses.replace(grid.train, batch_tokens=128, eval_tokens=300, eval_every=0, epochs=1)
        models = [dataclasses.replace(m, options={**m.options, **({"context": 64} if "context" in m.options else {}),
                                                  **({"stream_start": 4, "memory_slots": 4} if m.adapter == "tg"
                                                     else {})})
                  for m in grid.models]
        grid = dataclasses.replace(grid, widths=[16], layers=1, head_dim=8, budgets=[600], data=data, train=train,
                                   models=models)
    return grid


def train_once(grid: GridConfig, jobs: int, root: Path) -> dict[str, Any]:
    """Train the whole grid into a fresh directory with `jobs` runs at once; its wall time and token counts."""
    out = Path(tempfile.mkdtemp(prefix=f"jobs{jobs}-", dir=root))
    threads = cpu_cores() if jobs == 1 else 0  # jobs > 1: the executor divides the cores
    grid = dataclasses.replace(grid, train=dataclasses.replace(grid.train, threads=threads, jobs=jobs))
    started = time.perf_counter()
    frame = run_grid(grid, out, progress=False, jobs=jobs)
    seconds = time.perf_counter() - started
    summaries = [read_json(out / spec.run_id / "summary.json") for spec in expand(grid)]
    record = {"jobs": jobs, "seconds": seconds, "runs": len(frame), "done": int((frame["status"] == "done").sum()),
              "training_tokens": sum(int(s.get("tokens", 0)) for s in summaries),
              "run_models": [s.get("adapter") for s in summaries],
              "run_tokens_per_s": [s.get("tokens_per_s") for s in summaries],
              "run_peak_memory_mb": [s.get("peak_memory_mb") for s in summaries],
              "cpu_usage": runs_usage(out)}  # every run's getrusage, in whichever process (jobs2: its worker)
    record["tokens_per_s"] = record["training_tokens"] / seconds
    shutil.rmtree(out, ignore_errors=True)
    return record


def trainer_vs_benchmark(samples: list[dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The jobs1 runs' own median tokens/s (summary.json, `tgbench train-grid` at every core) against the
    training-throughput benchmark's step at the same preset (`demo`: its sizes and batch tokens), same threads.

    The two should agree within 10% when the benchmark measures what the trainer runs.
    """
    import torch

    from benchmarks import train_throughput

    torch.set_num_threads(cpu_cores())  # as the jobs1 runs (train.threads = cores)
    bench = train_throughput.main(quick=quick, models=("tg", "gpt2"), preset="demo")
    check: dict[str, Any] = {"preset": "demo", "benchmark_batch_tokens": bench["batch_tokens"]}
    for model in ("tg", "gpt2"):
        runs = [tps for s in samples for name, tps in zip(s["run_models"], s["run_tokens_per_s"], strict=True)
                if name == model and tps]
        trainer = sum(runs) / len(runs) if runs else float("nan")
        check[f"trainer_tokens_per_s_{model}"] = trainer
        check[f"benchmark_tokens_per_s_{model}"] = bench[f"tokens_per_s_{model}"]
        check[f"ratio_trainer_vs_benchmark_{model}"] = trainer / bench[f"tokens_per_s_{model}"]
    check["within_10_percent"] = all(abs(check[f"ratio_trainer_vs_benchmark_{m}"] - 1) <= 0.10 for m in ("tg", "gpt2"))
    return check


def main(quick: bool = False, repeats: int = 1, check: bool = True) -> dict[str, Any]:
    """Run the benchmark, print a table and the final JSON line; returns the figures.

    Args:
        quick: Toy sizes on a generated corpus (smoke test).
        repeats: Alternating repetitions of jobs1 and jobs2.
        check: Also measure the training-throughput benchmark at the demo preset's settings and compare it with
            the jobs1 runs' own tokens/s (`trainer_vs_benchmark`).
    """
    from tgbench.data import load_corpus

    root = Path(tempfile.mkdtemp(prefix="grid-throughput-"))
    try:
        grid = demo_first_budget(quick, root)
        load_corpus(grid.data, progress=False)  # the cache is warm before anything is timed
        samples: dict[str, list[dict[str, Any]]] = {"jobs1": [], "jobs2": []}

        def contender(name: str, jobs: int):
            def go() -> float:
                samples[name].append(train_once(grid, jobs, root))
                return samples[name][-1]["seconds"]
            return go

        alternate({"jobs1": contender("jobs1", 1), "jobs2": contender("jobs2", 2)}, repeats)
        agreement = trainer_vs_benchmark(samples["jobs1"], quick) if check else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = {name: median([s["seconds"] for s in runs]) for name, runs in samples.items()}
    tps = {name: median([s["tokens_per_s"] for s in runs]) for name, runs in samples.items()}
    result = {
        "benchmark": "grid_throughput", "quick": quick, "repeats": repeats, "cores": cpu_cores(),
        "grid": {"preset": "demo", "budget": grid.budgets[0], "widths": grid.widths, "layers": grid.layers,
                 "models": [m.label for m in grid.models], "seeds": grid.seeds, "epochs": grid.train.epochs,
                 "runs": len(expand(grid))},
        "wall_s_jobs1": wall["jobs1"], "wall_s_jobs2": wall["jobs2"],
        "tokens_per_s_jobs1": tps["jobs1"], "tokens_per_s_jobs2": tps["jobs2"],
        "ratio_jobs2_vs_jobs1": wall["jobs1"] / wall["jobs2"],
        **{f"system_fraction_{name}": _system_fraction(runs) for name, runs in samples.items()},
        **{f"minor_page_faults_{name}": median([s["cpu_usage"]["minor_page_faults"] for s in runs])
           for name, runs in samples.items()},
        "trainer_vs_benchmark": agreement,
        "samples": samples,
    }
    rows = [(name, len(expand(grid)), wall[name], tps[name], wall["jobs1"] / wall[name]) for name in samples]
    print_table(f"demo grid, first budget ({len(expand(grid))} runs), {cpu_cores()} cores, median of {repeats}",
                ["contender", "runs", "wall s", "training tokens/s (all runs)", "runs/hour vs jobs1"], rows)
    for name, runs in samples.items():
        print(f"{name}, the runs of its last repetition (their summary.json): {usage_line(runs[-1]['cpu_usage'])}")
    if agreement is not None:
        print_table("trainer (jobs1 runs' summary.json, mean) against the benchmark's step, demo preset "
                    f"({agreement['benchmark_batch_tokens']} tokens per batch, {cpu_cores()} threads)",
                    ["model", "trainer tokens/s", "benchmark tokens/s", "trainer / benchmark"],
                    [(m, agreement[f"trainer_tokens_per_s_{m}"], agreement[f"benchmark_tokens_per_s_{m}"],
                      agreement[f"ratio_trainer_vs_benchmark_{m}"]) for m in ("tg", "gpt2")])
        print(f"trainer and benchmark within 10%: {'yes' if agreement['within_10_percent'] else 'NO'}")
    return emit(result)


def _system_fraction(runs: list[dict[str, Any]]) -> float:
    """System time over all CPU time of the runs' training sessions, over every repetition."""
    user = sum(s["cpu_usage"]["cpu_user_s"] for s in runs if s["cpu_usage"])
    system = sum(s["cpu_usage"]["cpu_system_s"] for s in runs if s["cpu_usage"])
    return system / (user + system) if user + system > 0 else float("nan")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-check", action="store_true",
                        help="skip the benchmark-against-trainer comparison at the demo preset's settings")
    args = parser.parse_args()
    main(quick=args.quick, repeats=args.repeats, check=not args.no_check)


if __name__ == "__main__":
    cli()
