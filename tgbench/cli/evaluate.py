"""`tgbench eval` and `tgbench export`: plain Typer command functions (the CLI module registers them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tgbench.core.console import print_table
from tgbench.core.errors import UserError

console = Console()

SUMMARY_COLUMNS = 4  # metrics shown in the summary table (every metric is in the JSON and in results.csv)


def eval_command(
    task: Annotated[str, typer.Option(
        help="ppl | reversal (aliases tg_ppl, tg_reversal), a plug-in task (name, module:Class or "
             "path/to/file.py:Class), any lm-eval task name, or a task YAML path.")],
    run: Annotated[Path | None, typer.Option(help="One run directory.")] = None,
    runs: Annotated[Path | None, typer.Option(
        help="A grid directory: every subdirectory holding config.toml and DONE is evaluated.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best | latest")] = "best",
    include_path: Annotated[list[Path] | None, typer.Option(
        "--include-path", help="Extra lm-eval task folder (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option(
        help="Test documents (ppl), father/son pairs (reversal) or lm-eval's per-task limit.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Recompute even when eval/TASK.json is current.")] = False,
) -> None:
    """Evaluate a run (or every run of a grid) and write lm-eval-shaped results to <run>/eval/TASK.json."""
    from tgbench.evaluation.evaluate import eval_run, grid_runs
    from tgbench.registry import get_task
    from tgbench.task import metric_values

    if (run is None) == (runs is None):
        raise UserError("give exactly one of --run and --runs", "tgbench eval --task ppl --run runs/single")
    if checkpoint not in ("best", "latest"):
        raise UserError(f"checkpoint '{checkpoint}' is not known", "use --checkpoint best or --checkpoint latest")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit {limit} must be positive", "omit --limit to evaluate everything")
    run_dirs = [run] if run is not None else grid_runs(runs)
    if not run_dirs:
        raise UserError(f"no finished runs (config.toml and DONE) under '{runs}'", "train the grid first")
    the_task = get_task(task, include_path or ())
    table = Table(title=f"eval {the_task.name}")
    table.add_column("run")
    table.add_column("status")
    columns: tuple[str, ...] = ()
    corpora: dict = {}
    rows = []
    for run_dir in run_dirs:
        status, path, results = eval_run(run_dir, the_task, checkpoint=checkpoint,
                                         include_paths=include_path or (), limit=limit, device=device, force=force,
                                         corpora=corpora)
        if results is None:
            import json

            results = json.loads(path.read_text(encoding="utf-8"))
        metrics = metric_values(results.get("results", {}).get(the_task.name, {}))
        scored = [m.name for m in the_task.metrics if m.higher_is_better is not None and m.name in metrics]
        columns = tuple(scored or metrics)[:SUMMARY_COLUMNS]
        rows.append((str(run_dir), status, [metrics.get(k) for k in columns]))
        console.print(f"{status}: {path}")
    for column in columns:
        table.add_column(column, justify="right")
    for run_dir, status, values in rows:
        table.add_row(run_dir, status, *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in values])
    print_table(table, console)
    if any(status == "skipped" for _, status, _ in rows):
        console.print("skipped: results of the same checkpoint, task version, task definition and --limit are "
                      "already written; --force recomputes them", soft_wrap=True, markup=False)
    grid_dir = runs if runs is not None else run.parent
    if runs is not None or (grid_dir / "results.csv").exists():
        from tgbench.results.table import refresh_results

        try:
            if refresh_results(grid_dir):
                console.print(f"results table updated: {grid_dir / 'results.csv'}", soft_wrap=True)
        except UserError as err:  # the evaluation is written; only the table beside it could not be rebuilt
            console.print(f"results table not updated: {err.message}", soft_wrap=True, markup=False)


def export_command(
    run: Annotated[Path, typer.Option(help="A GPT-2 run directory.")],
    hf: Annotated[Path, typer.Option(help="Output directory for the Hugging Face checkpoint.")],
    checkpoint: Annotated[str, typer.Option(help="best | latest")] = "best",
) -> None:
    """Export a GPT-2 run as a Hugging Face checkpoint (GPT2LMHeadModel + tokenizer files)."""
    from tgbench.evaluation.export import export_hf

    out = export_hf(run, hf, checkpoint=checkpoint)
    console.print(f"exported {run} ({checkpoint}) to {out}")
