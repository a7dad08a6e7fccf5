"""`tgbench train-grid`, `tgbench tune`, `tgbench validate`: grids of runs, their LR sweeps, their checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tgbench.cli.flags import LoggerOpt, parse_assignments
from tgbench.core.console import print_table

console = Console()

ConfigArg = Annotated[Path | None, typer.Argument(help="Grid TOML file.")]
PresetOpt = Annotated[str | None, typer.Option(help="A shipped grid: smoke, demo, cpu-study, paper-data, ...")]
OutOpt = Annotated[Path | None, typer.Option(help="Grid directory.", show_default="runs/<grid name>")]
ExecutorOpt = Annotated[str, typer.Option(help="local | slurm | slurm-local")]


def train_grid_command(
    config: ConfigArg = None,
    preset: PresetOpt = None,
    out: OutOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the runs, a compute estimate and the optimizer steps of every model.")] = False,
    executor: ExecutorOpt = "local",
    progress: Annotated[bool, typer.Option(
        help="Show the live table on a terminal; a timestamped line per run start/finish when stdout is a file.")
    ] = True,
    logger: LoggerOpt = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Grid setting KEY=VALUE over the file (repeatable), by dotted key: "
                      "train.warmup_fraction=0.05, data.tokenizer=bpe-4096, seeds=[0,1]; recorded in grid.toml "
                      "and every run's config.toml.")] = None,
    jobs: Annotated[int | None, typer.Option(
        help="Runs at once on this machine, each in its own process: on CPU each gets cores / N threads, with "
             "CUDA each its own GPU.", show_default="the grid's train.jobs; 0 = the GPU count, else 1")] = None,
) -> None:
    """Train every run of a grid (skips DONE runs, resumes interrupted ones, reruns failed ones)."""
    from tgbench.plan.validate import load_grid
    from tgbench.training.allocator import runs_usage, usage_line
    from tgbench.training.executor import run_grid

    grid = load_grid(config, preset, settings=parse_assignments(set_))
    if dry_run:
        _print_dry_run(grid)
        return
    target = out or Path("runs") / grid.name
    frame = run_grid(grid, target, executor=executor, progress=progress, jobs=jobs, loggers=logger or ())
    counts = frame["status"].value_counts().to_dict()
    console.print(f"grid '{grid.name}' in {target}: {counts}; results: {target / 'results.csv'}")
    usage = runs_usage(target)
    if usage is not None:
        console.print(f"training, summed over {usage['runs']} runs: {usage_line(usage)}", soft_wrap=True)
    if counts.get("failed"):
        failed = frame.loc[frame["status"] == "failed", "run_id"].astype(str).tolist()
        # the other runs trained; name the failed ones so the exit status is not the only sign
        console.print(f"[bold red]{len(failed)} run(s) failed:[/bold red] {escape(', '.join(failed))}; each run's "
                      f"reason is in {escape(str(target))}/<run>/FAILED; fix it and rerun the same command (finished "
                      "runs are skipped)", soft_wrap=True)
        raise typer.Exit(1)


def _print_dry_run(grid) -> None:
    """The runs a grid would train, their parameters and compute, and the context-parity checks."""
    import torch

    from tgbench.plan.compute import dry_run_summary, dry_run_table, fmt_duration, fmt_flops
    from tgbench.plan.tune import most_extension_runs

    rows = dry_run_table(grid)
    sweep = [r for r in rows if r["stage"] == "tune"]
    extra = most_extension_runs(grid) if sweep else 0
    title = f"grid '{grid.name}': {len(rows) - len(sweep)} runs" + (
        f" after a tuning sweep of {len(sweep)}" if sweep else "") + (
        f" (and up to {extra} more if a choice sits at the sweep's edge)" if extra else "")
    table = Table(title=title)
    for column in ("stage", "run_id", "n_params", "tokens", "epochs", "lr", "compute", "CPU time"):
        table.add_column(column, justify="left" if column in ("stage", "run_id") else "right")
    for row in rows:
        table.add_row(row["stage"], row["run_id"], f"{row['n_params']:,}", f"{row['tokens']:,}",
                      str(row["epochs"]), row["lr"], fmt_flops(row["flops"]), fmt_duration(row["cpu_seconds"]))
    print_table(table, console)
    console.print(dry_run_summary(rows), soft_wrap=True)
    if torch.cuda.is_available():
        console.print(f"a GPU ({torch.cuda.get_device_name(0)}) is available: on it the grid runs far "
                      "faster; its time is not estimated", soft_wrap=True)
    print_isoflop(grid)
    print_steps(grid)
    print_parity(grid)


def print_isoflop(grid) -> None:
    """An isoFLOP grid's solved token budgets: per compute budget, the tokens each model (and width) gets, the
    FLOPs they cost, and how far apart the budget's runs are in FLOPs. Nothing for a token-budget grid."""
    from tgbench.plan.compute import fmt_flops
    from tgbench.plan.expand import expand
    from tgbench.plan.isoflop import compute_spread, isoflop_rows

    if not grid.compute_budgets:
        return
    rows = isoflop_rows(expand(grid))
    table = Table(title="isoFLOP: lexical tokens per model and compute budget (min-max over replicates)")
    for column in ("compute budget", "model", "width", "tokens", "training FLOPs", "how"):
        table.add_column(column, justify="left" if column in ("model", "how") else "right")
    for row in rows:
        low, high = min(row["tokens"]), max(row["tokens"])
        table.add_row(fmt_flops(row["compute"]), row["model"], str(row["width"]),
                      f"{low:,}" if low == high else f"{low:,}-{high:,}",
                      f"{fmt_flops(min(row['flops']))}-{fmt_flops(max(row['flops']))}" if row["exact"]
                      else "not counted", row["how"])
    print_table(table, console)
    if not all(row["exact"] for row in rows):
        console.print("note: tokens not counted on the encoded corpus are estimates (6 N per token before the corpus "
                      "is encoded; a prefix's FLOPs per token for runs too large to lay out); train-grid counts "
                      "them", soft_wrap=True, markup=False)
    spread = compute_spread(rows)
    if spread:
        console.print("equal compute: the runs of each compute budget are within "
                      + ", ".join(f"{s:.1%} ({fmt_flops(c)})" for c, s in sorted(spread.items()))
                      + " of each other in counted training FLOPs", soft_wrap=True, markup=False)


def print_steps(grid) -> None:
    """The optimizer steps of every model and budget (counted on the cached corpus, else estimated), and a warning
    for each budget whose models differ by more than 3% in steps."""
    from tgbench.plan.steps import STEPS_TOLERANCE, estimate_reasons, grid_steps, step_warnings, steps_table

    rows = grid_steps(grid)
    table = Table(title="optimizer steps per model and budget (all epochs; min-max over runs)")
    headers = {"model": "model", "tokens": "D", "batch_tokens": "batch_tokens", "epochs": "epochs",
               "steps": "steps", "tokens/step": "lexical tokens/step", "how": "steps"}
    cells = steps_table(rows)
    for key, header in headers.items():
        table.add_column("how" if key == "how" else header, justify="left" if key in ("model", "how") else "right")
    for cell in cells:
        table.add_row(*(cell[key] for key in headers))
    print_table(table, console)
    reasons = estimate_reasons(rows)
    if reasons:
        console.print("note: estimated steps are round(D / batch_tokens) per epoch, what every built-in adapter "
                      f"takes when its batch units fit a batch; not counted because {'; '.join(reasons)}",
                      soft_wrap=True, markup=False)
    warnings = step_warnings(rows)
    for line in warnings:
        console.print("[yellow]warning:[/yellow] " + escape(line), soft_wrap=True)
    if grid.compute_budgets:  # one D per model: the equal-steps check compares models of one D, of which there are none
        console.print("isoFLOP grid: the models of a compute budget train different tokens and steps by design (equal "
                      "compute, not equal data)", soft_wrap=True, markup=False)
    elif rows and not warnings:
        console.print(f"equal steps{' (as estimated)' if reasons else ''}: at every budget the models' steps are "
                      f"within {STEPS_TOLERANCE:.0%} of each other", soft_wrap=True, markup=False)


def print_parity(grid) -> None:
    """Context-parity warnings of a grid (a GPT-2 that sees less history than TG's memory), or why none were checked."""
    from tgbench.plan.validate import parity_notes

    for kind, line in parity_notes(grid):
        prefix = {"warning": "[yellow]warning:[/yellow] ", "note": "note: "}.get(kind, "")
        console.print(prefix + escape(line), soft_wrap=True)


def tune_command(
    config: ConfigArg = None,
    preset: PresetOpt = None,
    out: OutOpt = None,
    executor: ExecutorOpt = "local",
    jobs: Annotated[int | None, typer.Option(
        help="Sweep runs at once on this machine.", show_default="the grid's train.jobs")] = None,
    progress: Annotated[bool, typer.Option(help="Show the live table.")] = True,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Grid setting KEY=VALUE over the file (repeatable), e.g. tune.lrs=[1e-3,2e-3,4e-3].")] = None,
) -> None:
    """Train a grid's learning-rate sweep and write tune.json (a grid without [tune] gets its LR x 1/4 .. 4).

    Every model (every width when the grid has several; every budget with per_budget = true) trains at every
    LR and seed of the sweep; the chosen LR is the lowest mean validation loss. Resumable: DONE runs are skipped.
    """
    from tgbench.plan.validate import load_grid
    from tgbench.training.executor import run_tune

    grid = load_grid(config, preset, settings=parse_assignments(set_))
    target = out or Path("runs") / grid.name
    result = run_tune(grid, target, executor=executor, progress=progress, jobs=jobs)
    table = Table(title=f"learning rates chosen for '{grid.name}'")
    for column in ("model", "width", "D", "chosen LR", "mean val loss", "seed SD", "LRs added", "excluded"):
        table.add_column(column, justify="left" if column in ("model", "excluded") else "right")
    for choice in result.choices:
        best = next(p for p in choice.curve() if p["lr"] == choice.chosen)
        edge = {"low": " (smallest tried)", "high": " (largest tried)"}.get(choice.edge, "")
        excluded = [f"{lr:.3g}" for lr in choice.lrs if choice.excluded(lr)]
        table.add_row(choice.group.label, str(choice.group.width), f"{choice.group.budget:,}",
                      f"{choice.chosen:.3g}{edge}", f"{best['mean']:.4f}",
                      "-" if best["sd"] is None else f"{best['sd']:.4f}",
                      ", ".join(f"{e.lr:.3g}" for e in choice.extensions) or "-", ", ".join(excluded) or "-")
    print_table(table, console)
    console.print(f"tune.json: {target / 'tune.json'}", soft_wrap=True)
    if grid.tune is None:
        console.print("this grid has no [tune] table: train-grid trains at its own LR unless you add one",
                      soft_wrap=True, markup=False)


def validate_command(config: Annotated[Path, typer.Argument(help="Grid or run TOML file to check.")]) -> None:
    """Check a grid (or run) file without running it; names any bad key or value.

    Checks every key and type, every model option against its adapter, the splitter and tokenizer
    names and that a corpus path exists (a hub corpus is not contacted). Prints the optimizer steps of every
    model and budget and warns when the models of one budget differ by more than 3% in steps, or when a GPT-2 of
    the grid has a shorter context than TG's memory span on the corpus (both read from the corpus cache).
    """
    from tgbench.plan.config import load_run_config, read_toml
    from tgbench.plan.expand import expand
    from tgbench.plan.tune import most_extension_runs, sweep_specs
    from tgbench.plan.validate import check_data, load_grid
    from tgbench.registry import resolved

    raw = read_toml(config)
    if "models" in raw:
        grid = load_grid(config)
        check_data(grid.data)
        sweep = f" after a tuning sweep of {len(sweep_specs(grid))} runs" if grid.tune is not None else ""
        if grid.tune is not None and most_extension_runs(grid):
            sweep += f" (up to {most_extension_runs(grid)} more if a choice sits at the sweep's edge)"
        console.print(f"[green]ok[/green]: grid '{grid.name}' with {len(expand(grid))} runs{sweep}")
        print_isoflop(grid)
        print_steps(grid)
        print_parity(grid)
    else:
        run_config = resolved(load_run_config(config))
        check_data(run_config.data)
        console.print(f"[green]ok[/green]: run config for '{run_config.model}'")
