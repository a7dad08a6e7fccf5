"""One report over several grids: `tgbench report A B ...` (or `tgbench compare A B ...`).

The grids' runs are pooled by label into a comparison directory that is itself a grid directory without run
directories: ``grid.toml`` (the grids' models, the first grid's reference and baselines), ``results.csv``
(every run's row, read through `tgbench.results.table`, with ``grid``, the grid it came from, its run id prefixed
``<grid>:`` and ``source_dir``, its directory), ``fits.json`` (fitted on the pooled table, as `tgbench fit`
does), ``compare.toml`` (the sources) and ``report.html``. `tgbench report DIR`, `tgbench fit DIR` and
`tgbench.load_results(DIR)` work on it as on any grid.

Pooling is what makes two grids one picture (grid A trained budgets 1-3, grid B budgets 4-5 of the same
models), so pooling runs that do not measure the same thing is refused: runs under one label must share
every data setting (corpus, tokenizer, splitter, splits, sentence caps; loss per token means nothing across
tokenizers). The error names the setting and each grid's value; ``--by-grid`` keeps each grid's runs under
their own labels (``tg@A``, ``tg@B``) instead.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tgbench.core.errors import UserError
from tgbench.core.files import write_text
from tgbench.plan.comparison import label_of
from tgbench.plan.config import GRID_FILE, to_toml
from tgbench.report.files import load_grid_files
from tgbench.results.columns import RESULT_COLUMNS
from tgbench.tasks.stats.fits import write_fits
from tgbench.training.rundir import RunDir

# Data settings that do not change what a run measures (where and how fast the corpus is encoded).
VOLATILE_DATA = ("cache_dir", "workers")


def grid_names(grid_dirs: Sequence[Path], grids: Sequence[dict[str, Any]]) -> list[str]:
    """A short distinct name per grid: its grid.toml name, else its directory name (then the path)."""
    names = [str(g.get("name") or Path(d).name) for d, g in zip(grid_dirs, grids, strict=True)]
    if len(set(names)) < len(names):
        names = [Path(d).name for d in grid_dirs]
    if len(set(names)) < len(names):
        names = [str(Path(d)) for d in grid_dirs]
    if len(set(names)) < len(names):
        raise UserError("the same grid directory is given twice", "name each grid directory once")
    return [re.sub(r"[^A-Za-z0-9_.-]+", "-", n).strip("-") or f"grid{i}" for i, n in enumerate(names)]


def data_settings(run: RunDir) -> dict[str, Any]:
    """The run's data settings that change what it measures (config.toml's [data] minus the volatile keys)."""
    data = dataclasses.asdict(run.read_config().data)
    return {k: v for k, v in data.items() if k not in VOLATILE_DATA}


def check_pooling(frame: pd.DataFrame, runs: dict[str, RunDir]) -> None:
    """Refuse to pool, under one label, runs whose data or tokenizer settings differ.

    Args:
        frame: The pooled table (``label``, ``grid``, ``run_id``).
        runs: run_id -> its run directory.

    Raises:
        UserError: naming the label, the first differing setting and each grid's value.
    """
    for label, rows in frame.groupby("label", sort=False):
        seen: dict[str, dict[Any, list[str]]] = {}  # setting -> value -> grids
        for run_id, grid in zip(rows["run_id"], rows["grid"], strict=True):
            run = runs.get(str(run_id))
            if run is None or not run.config_path.exists():
                continue
            for key, value in data_settings(run).items():
                grids = seen.setdefault(key, {}).setdefault(repr(value), [])
                if grid not in grids:
                    grids.append(grid)
        for key, values in seen.items():
            if len(values) > 1:
                shown = "; ".join(f"{value} in {', '.join(grids)}" for value, grids in values.items())
                raise UserError(
                    f"label '{label}' would pool runs with different data.{key}: {shown}",
                    "compare grids trained on the same data, or keep each grid's runs under their own labels "
                    "with --by-grid")


def _relabelled_models(grid: dict[str, Any], name: str, by_grid: bool) -> list[dict[str, Any]]:

    out = []
    for model in grid.get("models") or []:
        if not isinstance(model, dict):
            continue
        label = str(model.get("label") or label_of(model.get("adapter", ""), model.get("variant")))
        out.append({**model, "label": f"{label}@{name}" if by_grid else label})
    return out


def combined_grid(grids: Sequence[dict[str, Any]], names: Sequence[str], dirs: Sequence[Path],
                  by_grid: bool) -> dict[str, Any]:
    """The comparison's grid.toml: the first grid's settings, every grid's models (each label once)."""
    first = dict(grids[0]) if grids else {}
    models: list[dict[str, Any]] = []
    for grid, name in zip(grids, names, strict=True):
        for model in _relabelled_models(grid, name, by_grid):
            if model["label"] not in {m["label"] for m in models}:
                models.append(model)
    reference = str(first.get("reference") or "")
    baselines = [str(b) for b in first.get("baselines") or []]
    if by_grid:
        reference = f"{reference}@{names[0]}" if reference else ""
        baselines = [f"{b}@{names[0]}" for b in baselines]
    sources = ", ".join(f"{name} ({d})" for name, d in zip(names, dirs, strict=True))
    out = {**first, "name": " + ".join(names), "models": models,
           "description": f"Runs of {len(names)} grids pooled by label"
                          + (" (each grid's runs under their own labels, label@grid)" if by_grid else "")
                          + f": {sources}."}
    out.pop("reference", None)
    out.pop("baselines", None)
    if reference:
        out["reference"] = reference
    if baselines:
        out["baselines"] = baselines
    return out


def default_out(grid_dirs: Sequence[Path], names: Sequence[str]) -> Path:
    """Where a comparison goes by default: beside the first grid, ``compare-<A>-<B>...``."""
    return Path(grid_dirs[0]).resolve().parent / ("compare-" + "-".join(names))


def write_comparison(grid_dirs: Sequence[Path], out: Path | None = None, *, by_grid: bool = False,
                     resamples: int = 200, seed: int = 0):
    """Pool several grids into the comparison directory `out` and return the report's files (GridFiles).

    Args:
        grid_dirs: Two or more grid directories.
        out: The comparison directory (default: `default_out`).
        by_grid: Keep each grid's runs under their own labels (``label@grid``) instead of pooling by label.
        resamples: Bootstrap resamples of the pooled fits.
        seed: Seed of the bootstrap.

    Raises:
        UserError: for a missing grid, a grid without runs, or runs that cannot be pooled (`check_pooling`).
    """

    dirs = [Path(d) for d in grid_dirs]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"grid directory '{d}' does not exist", "give the --out directories of train-grid")
    sources = [load_grid_files(d) for d in dirs]
    names = grid_names(dirs, [s.grid for s in sources])
    frames, runs, tasks = [], {}, {}
    for name, files, d in zip(names, sources, dirs, strict=True):
        if files.results.empty:
            raise UserError(f"grid '{d}' has no runs", "train it first (tgbench train-grid), or leave it out")
        frame = files.results.drop(columns=["loss", "loss_is_val", "grid"], errors="ignore").copy()
        frame.insert(0, "grid", name)
        run_ids = frame["run_id"].astype(str)
        known = frame["source_dir"] if "source_dir" in frame.columns else pd.Series("", index=frame.index)
        frame["source_dir"] = [str(files.runs[r].path.resolve()) if r in files.runs else
                               (k if isinstance(k, str) else "") for r, k in zip(run_ids, known, strict=True)]
        for run_id in frame["run_id"].astype(str):
            if run_id in files.runs:
                runs[f"{name}:{run_id}"] = files.runs[run_id]
        frame["run_id"] = [f"{name}:{r}" for r in frame["run_id"].astype(str)]
        if by_grid:
            frame["label"] = [f"{lab}@{name}" for lab in frame["label"]]
        frames.append(frame)
        for task, info in files.tasks.items():
            tasks.setdefault(task, info)
    pooled = pd.concat(frames, ignore_index=True)
    check_pooling(pooled, runs)
    out = Path(out) if out is not None else default_out(dirs, names)
    out.mkdir(parents=True, exist_ok=True)
    grid = combined_grid([s.grid for s in sources], names, dirs, by_grid)
    first = [c for c in ("grid", *RESULT_COLUMNS) if c in pooled.columns]
    pooled = pooled[first + [c for c in pooled.columns if c not in first]]
    write_text(out / GRID_FILE, to_toml(grid))
    write_text(out / "compare.toml", to_toml({"by_grid": by_grid, "grids": [
        {"name": n, "path": str(d.resolve())} for n, d in zip(names, dirs, strict=True)]}))
    write_text(out / "results.csv", pooled.to_csv(index=False))
    try:
        write_fits(out, n_resamples=resamples, seed=seed)  # the combined grid.toml names the comparison
    except ValueError as err:
        raise UserError(f"cannot fit the pooled runs: {err}", "check the grids' results.csv") from err
    files = load_grid_files(out)
    files.runs = runs  # the loss curves read each run's own metrics.jsonl
    files.tasks = tasks
    return files
