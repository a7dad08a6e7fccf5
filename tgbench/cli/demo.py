"""`tgbench demo`, the default job (`make demo`): the demo grid, its evaluation, the fits and the report."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def run_demo(out: Path, preset: str = "demo", progress: bool = True) -> Path:
    """Train the `demo` grid, evaluate every run on the built-in tasks (ppl, reversal), fit, write the report.

    Every stage skips what is already done, so an interrupted demo continues where it stopped.

    Returns:
        The path of the report.
    """
    from tgbench.evaluation.evaluate import eval_run, grid_runs
    from tgbench.plan.validate import load_grid
    from tgbench.registry import BUILTIN_TASKS, get_task
    from tgbench.report.page import write_report
    from tgbench.results.table import write_results
    from tgbench.tasks.stats.fits import write_fits
    from tgbench.training.allocator import cpu_usage, runs_usage, usage_line, usage_since
    from tgbench.training.executor import run_grid

    started = time.perf_counter()
    own, children = cpu_usage(), cpu_usage(resource.RUSAGE_CHILDREN)
    grid = load_grid(preset=preset)
    console.rule(f"[bold]1/4 training the '{preset}' grid into {out}")
    run_grid(grid, out, progress=progress)
    tasks = [get_task(name) for name in BUILTIN_TASKS]
    console.rule(f"[bold]2/4 evaluating every run ({', '.join(t.name for t in tasks)})")
    corpora: dict = {}  # one corpus load for every run
    for task in tasks:
        for run_dir in grid_runs(out):
            status, path, _ = eval_run(run_dir, task, corpora=corpora, progress=False)
            console.print(f"  {task.name:9s} {run_dir.name}: {status}", soft_wrap=True)
    console.rule("[bold]3/4 fitting scaling laws")
    frame = write_results(out)
    _print_results(frame)
    fits = write_fits(out)  # the grid's reference against its baselines (grid.toml)
    console.print(f"  {fits}", soft_wrap=True)
    console.rule("[bold]4/4 writing the report")
    report = write_report(out)
    minutes = (time.perf_counter() - started) / 60
    console.print(f"\n[bold green]done[/bold green] in {minutes:.1f} min. Results: {out / 'results.csv'}, "
                  f"{fits.name}; report: [bold]{report}[/bold]")
    usage = runs_usage(out)
    if usage is not None:
        console.print(f"training, summed over {usage['runs']} runs: {usage_line(usage)}", soft_wrap=True)
    spent = usage_since(own)  # the demo's process and its --jobs workers (joined children), evaluation included
    for key, value in usage_since(children, resource.RUSAGE_CHILDREN).items():
        if key != "system_fraction":
            spent[key] += value
    console.print(f"the whole demo: {usage_line(spent)}", soft_wrap=True)
    return report


def _print_results(frame) -> None:
    """Every run's lexical perplexities (validation: best checkpoint; test: the whole test split)."""
    from rich.table import Table

    from tgbench.core.console import print_table

    table = Table(title="lexical perplexity per run (lower is better)")
    for column in ("run", "params", "tokens", "val PPL", "test PPL"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for row in frame.sort_values(["label", "width", "tokens"]).itertuples():
        table.add_row(row.run_id, f"{row.n_params:,.0f}", f"{row.tokens:,}", f"{row.best_val_ppl:.1f}",
                      f"{row.test_ppl:.1f}")
    print_table(table, console)


def demo_command(
    out: Annotated[Path | None, typer.Option(help="Where the runs go (default: runs/<preset>).")] = None,
    preset: Annotated[str, typer.Option(help="The grid to run end to end: demo (12 min on 2 cores, measured), "
                                             "cpu-study (29 min, measured) or cpu-params (the N axis: 32 min, "
                                             "measured), 2-seed tuning sweeps included; "
                                             "any preset works.",
                                        show_default=True)] = "demo",
) -> None:
    """The default job on the embedded corpus: train the grid, evaluate, fit, report."""
    run_demo(out or Path("runs") / preset, preset=preset)
