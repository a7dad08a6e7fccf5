"""`tgbench fit`, `tgbench report` (and `compare`): the statistics and the page of one or several grids."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tgbench.core.console import one_line
from tgbench.core.errors import UserError

console = Console()


def fit_command(
    grid_dir: Annotated[Path, typer.Argument(help="Grid directory (holds results.csv or run dirs).")],
    pair: Annotated[list[str] | None, typer.Option(
        help="A,B: how much more data/params B needs to reach A's loss; repeat for several pairs "
             "(default: the grid file's reference against each of its baselines).")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples per fitted group (0 for no intervals).",
                                           show_default=True)] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.", show_default=True)] = 0,
    form: Annotated[str, typer.Option(help="Fit form the report draws (kaplan, saturating or a registered one).",
                                      show_default=True)] = "kaplan",
    axis: Annotated[str, typer.Option(help="Whose verdicts lead: tokens (equal data), flops (equal training "
                                           "compute), params (equal size), or auto: params for a grid of one "
                                           "budget and several widths, else tokens; every measured axis is fitted.",
                                      show_default=True)] = "auto",
) -> None:
    """Fit scaling laws, multipliers and the verdict of every pair; writes fits.json and prints them."""
    import json

    from tgbench.results.table import check_grid_dir, refresh_results
    from tgbench.tasks.stats.bootstrap import check_resamples
    from tgbench.tasks.stats.fits import summary_lines, write_fits

    check_resamples(resamples)
    pairs = None
    if pair:
        pairs = []
        for text in pair:
            parts = [p.strip() for p in text.split(",")]
            if len(parts) != 2 or not all(parts):
                raise UserError(f"--pair {text!r} is not two labels A,B", "write it as --pair tg,gpt2")
            pairs.append(tuple(parts))
    check_grid_dir(grid_dir, "fit")
    refresh_results(grid_dir)  # a directory holding only a results.csv (a committed report's) is fitted as it is
    _check_csv(grid_dir / "results.csv")
    try:  # without --pair: the grid file's reference against its baselines
        path = write_fits(grid_dir, pairs=pairs, n_resamples=resamples, seed=seed, form=form, axis=axis)
    except ValueError as err:
        raise UserError(f"cannot fit {grid_dir}: {err}", "check results.csv for missing or bad losses") from err
    fits = json.loads(path.read_text())
    for line in summary_lines(fits):
        console.print(line, soft_wrap=True, markup=False)
    compared = ", ".join(f"{a} vs {b}" for a, b in fits.get("pairs", [])) or "no pairs"
    console.print(f"fits written to {path} ({compared})", soft_wrap=True, markup=False)


def _check_csv(path: Path) -> None:
    """A results table that cannot be read is an error naming it (not a pandas traceback)."""
    import pandas as pd

    try:
        pd.read_csv(path, nrows=1)
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"'{path}' is not a results table ({type(err).__name__}: {one_line(err)})",
                        "delete it and rerun `tgbench fit` beside the run directories, which rebuilds it") from err


def report_command(
    grid_dirs: Annotated[list[Path], typer.Argument(
        help="Grid directory (grid.toml, results.csv, fits.json, runs); several: one report over all of them.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="HTML file to write (default: GRID_DIR/report.html, or OUT/report.html).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="With several grids: the comparison directory (pooled results.csv, fits.json, report).",
        show_default="compare-A-B beside the first grid")] = None,
    by_grid: Annotated[bool, typer.Option(
        "--by-grid", help="With several grids: keep each grid's runs under their own labels (tg@A, tg@B) "
                          "instead of pooling them by label.")] = False,
    resamples: Annotated[int, typer.Option(help="With several grids: bootstrap resamples of the pooled fits.",
                                           show_default=True)] = 200,
    logger: Annotated[list[str] | None, typer.Option(
        "--logger", help="wandb: also log the report (with results.csv and fits.json) as a W&B artifact.")] = None,
) -> None:
    """Render a grid's results as one self-contained HTML file (verdict, plots, tables, provenance).

    Given several grid directories, their runs are pooled by label (each keeps its grid of origin) into one
    comparison directory, fitted together and reported as one grid; runs whose data or tokenizer settings
    differ are never pooled under one label (the error names the setting; --by-grid keeps them apart).
    """
    from tgbench.training.tracking import check_loggers

    loggers = check_loggers(logger or ())
    if len(grid_dirs) == 1:
        from tgbench.report.page import write_report

        path, where = write_report(grid_dirs[0], output), grid_dirs[0]
    else:
        from tgbench.core.files import write_text
        from tgbench.report.page import render_report
        from tgbench.results.pooling import pooling_summary, write_comparison
        from tgbench.tasks.stats.bootstrap import check_resamples

        check_resamples(resamples)
        files = write_comparison(grid_dirs, out, by_grid=by_grid, resamples=resamples)
        path, where = Path(output) if output is not None else files.path / "report.html", files.path
        write_text(path, render_report(files))
        for line in pooling_summary(files.path):
            console.print(line, soft_wrap=True, markup=False)
    console.print(f"report written to {path}", soft_wrap=True)
    if "wandb" in loggers:
        from tgbench.training.tracking import log_report_to_wandb

        log_report_to_wandb(path, where)
