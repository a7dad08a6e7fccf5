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
tokenizers) and the training settings of `TRAIN_SETTINGS` (LR, batch, epochs, schedule, optimiser; compared as
each grid's set of values, since a tuned grid may pick an LR per size) and, for a plug-in, the adapter's code
(its file's sha256). The error names the setting and each grid's value; ``--by-grid`` keeps each grid's runs
under their own labels (``tg@A``, ``tg@B``) instead, and its verdicts then also compare each label across grids
(``tg@A`` vs ``tg@B``). A run found in several grids (the same label and config hash: the same settings, seeds
and budget) is counted once, from the first grid that has it; ``compare.toml`` lists those left out.
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
from tgbench.plan.comparison import grid_comparison, label_of
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


# Training settings a label's runs must share across grids to be pooled (budget, seeds and size vary by design).
TRAIN_SETTINGS = ("lr", "batch_tokens", "epochs", "warmup_fraction", "min_lr_fraction", "weight_decay", "beta1",
                  "beta2", "grad_clip", "grad_accumulation", "dtype")
ADAPTER_CODE = "adapter code (sha256)"


def training_settings(run: RunDir) -> dict[str, Any]:
    """The run's training settings that pooled runs must share (`TRAIN_SETTINGS`), and a plug-in's code hash.

    Built-in adapters are left out of the code check: their code is tgbench's, and grids trained by two versions
    of tgbench are meant to be comparable.
    """
    train = dataclasses.asdict(run.read_config().train)
    out: dict[str, Any] = {f"train.{k}": train[k] for k in TRAIN_SETTINGS if k in train}
    code = run.read_meta().get("adapter_code")
    if isinstance(code, dict) and code.get("origin") == "plug-in" and code.get("sha256") not in (None, "unknown"):
        out[ADAPTER_CODE] = str(code["sha256"])[:12]
    return out


def drop_duplicate_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one row per (label, config hash): the same run found in two grids is one measurement, not two.

    Returns:
        The table without the later copies, and the pooled run ids left out (``<grid>:<run_id>``).
    """
    if "config_hash" not in frame.columns:
        return frame, []
    hashes = frame["config_hash"].astype(str)
    known = ~frame["config_hash"].isna() & (hashes != "")
    duplicate = known & pd.DataFrame({"label": frame["label"], "hash": hashes}).duplicated()
    return frame[~duplicate].reset_index(drop=True), [str(r) for r in frame.loc[duplicate, "run_id"]]


def check_pooling(frame: pd.DataFrame, runs: dict[str, RunDir]) -> None:
    """Refuse to pool, under one label, runs whose data, tokenizer or training settings differ (module docstring).

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
        _check_training(str(label), rows, runs)


def _check_training(label: str, rows: pd.DataFrame, runs: dict[str, RunDir]) -> None:
    """Each grid's set of values of every training setting must be the same for the label's runs."""
    per_grid: dict[str, dict[str, set[str]]] = {}  # setting -> grid -> values
    for run_id, grid in zip(rows["run_id"], rows["grid"], strict=True):
        run = runs.get(str(run_id))
        if run is None or not run.config_path.exists():
            continue
        for key, value in training_settings(run).items():
            per_grid.setdefault(key, {}).setdefault(str(grid), set()).add(repr(value))
    for key, grids in per_grid.items():
        if len(grids) > 1 and len({frozenset(v) for v in grids.values()}) > 1:
            shown = "; ".join(f"{', '.join(sorted(values))} in {grid}" for grid, values in grids.items())
            raise UserError(
                f"label '{label}' would pool runs trained with different {key}: {shown}",
                f"train both grids with the same {key} (the pooled fit would mix two training recipes), or keep "
                "each grid's runs under their own labels with --by-grid (its verdicts compare them across grids)")


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


def comparison_pairs_by_grid(grid: dict[str, Any], pooled: pd.DataFrame, names: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of a --by-grid comparison: the combined grid's own (the first grid's reference against its
    baselines), then every label against itself in each later grid (``gru@A`` vs ``gru@B``)."""
    labels = [str(x) for x in dict.fromkeys(pooled["label"])]
    pairs = list(grid_comparison(grid, labels).pairs)
    first = names[0]
    for label in labels:
        base, _, where = label.rpartition("@")
        if where != first:
            continue
        for other in names[1:]:
            if f"{base}@{other}" in labels and (label, f"{base}@{other}") not in pairs:
                pairs.append((label, f"{base}@{other}"))
    return pairs


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
    duplicates: list[str] = []
    if not by_grid:  # under label@grid a run seen in two grids belongs to two labels: both stay
        pooled, duplicates = drop_duplicate_runs(pooled)
    check_pooling(pooled, runs)
    out = Path(out) if out is not None else default_out(dirs, names)
    out.mkdir(parents=True, exist_ok=True)
    grid = combined_grid([s.grid for s in sources], names, dirs, by_grid)
    first = [c for c in ("grid", *RESULT_COLUMNS) if c in pooled.columns]
    pooled = pooled[first + [c for c in pooled.columns if c not in first]]
    write_text(out / GRID_FILE, to_toml(grid))
    write_text(out / "compare.toml", to_toml({"by_grid": by_grid, "duplicates": duplicates, "grids": [
        {"name": n, "path": str(d.resolve())} for n, d in zip(names, dirs, strict=True)]}))
    write_text(out / "results.csv", pooled.to_csv(index=False))
    pairs = comparison_pairs_by_grid(grid, pooled, names) if by_grid else None
    try:
        # the combined grid.toml names the comparison; --by-grid adds each label against itself across grids
        write_fits(out, pairs=pairs, n_resamples=resamples, seed=seed)
    except ValueError as err:
        raise UserError(f"cannot fit the pooled runs: {err}", "check the grids' results.csv") from err
    files = load_grid_files(out)
    files.runs = runs  # the loss curves read each run's own metrics.jsonl
    files.tasks = tasks
    return files


def pooling_summary(comparison_dir: Path) -> list[str]:
    """What a comparison pooled, for the CLI: each label's runs and the grids they came from, and the runs
    counted once because another grid holds the same run (so no silent mixing, no silent double count)."""
    import tomllib

    meta = tomllib.loads((Path(comparison_dir) / "compare.toml").read_text(encoding="utf-8"))
    frame = pd.read_csv(Path(comparison_dir) / "results.csv")
    how = "kept apart by grid (label@grid)" if meta.get("by_grid") else "pooled by label"
    lines = [f"{len(meta.get('grids', []))} grids {how} in {comparison_dir} (results.csv, fits.json):"]
    for label, rows in frame.groupby("label", sort=False):
        counts = rows["grid"].astype(str).value_counts(sort=False)
        lines.append(f"  {label}: {len(rows)} runs ({', '.join(f'{n} from {g}' for g, n in counts.items())})")
    duplicates = meta.get("duplicates") or []
    if duplicates:
        lines.append(f"  {len(duplicates)} run(s) found in more than one grid (same label and config hash) counted "
                     f"once: left out {', '.join(duplicates)}")
    return lines
