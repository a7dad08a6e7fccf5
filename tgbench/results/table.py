"""The results table of a grid: one row per run, built from the run's own files.

`results.csv` is the one place where runs become comparable numbers. This module owns its columns, how a
row is read from a run directory, what a run's label is (adapter, or adapter/variant), which runs count
(status "done"), and which loss the fits and the report use (the test loss, else the best validation
loss). The grid writes the table; the fits (tasks/stats/fits.py) and the report read it.

Columns: the run's settings and training summary (`RESULT_COLUMNS`), then ``<task>.<metric>`` for every
task that ran on any run (one per metric of its ``eval/<task>.json``). ``test_loss`` / ``test_ppl`` are the
primary numbers: the ``ppl`` task's lexical loss and perplexity (also in ``ppl.lexical_loss``).
"""


from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tgbench.core.errors import UserError
from tgbench.core.files import read_json, write_text
from tgbench.plan.comparison import comparison, label_of  # noqa: F401 (the one definition; the fits import it from here)
from tgbench.plan.config import GRID_FILE, SCHEME_PER_BUDGET, SCHEME_SHARED
from tgbench.registry import BUILTIN_TASKS, task_class
from tgbench.results.columns import (
    COMPUTE_COLUMNS,
    DONE,
    LEXICAL_PER_STEP,
    MEMORY_TRAIN,
    PRIMARY_TASK,
    RESULT_COLUMNS,
    TEST_LOSS,
    TEST_PPL,
    VAL_LOSS,
    Metric,
    fit_loss,
    lexical_tokens_per_step,
    split_task_column,
    task_column,
)
from tgbench.results.flags import curve_flags, join_flags, split_flags, table_flags
from tgbench.task import metric_schema, metric_values
from tgbench.training.advice import undertraining_flags
from tgbench.training.rundir import RunDir, list_runs


def task_order(tasks: Iterable[str]) -> list[str]:
    """Tasks in reading order: the built-ins in their registry order, then the rest alphabetically."""

    builtin = list(BUILTIN_TASKS)
    return sorted(set(tasks), key=lambda t: (builtin.index(t) if t in builtin else len(builtin), t))


def eval_files(run: RunDir) -> dict[str, dict[str, Any]]:
    """task -> the parsed ``eval/<task>.json`` of one run (files without lm-eval-shaped results are skipped)."""
    out = {}
    if not run.eval_dir.is_dir():
        return out
    for path in sorted(run.eval_dir.glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("results"), dict):
            out[path.stem] = data
    return out


def task_results(data: dict[str, Any]) -> dict[str, float]:
    """The metric values of one ``eval/<task>.json`` (its ``results[task]``, see `metric_values`; only the
    metrics of its schema when it records one)."""
    results = data.get("results") or {}
    name = data.get("task")
    entry = results.get(name) if name in results else next(iter(results.values()), {})
    values = metric_values(entry if isinstance(entry, dict) else {})
    if isinstance(data.get("metrics"), list):
        names = {m.get("name") for m in data["metrics"] if isinstance(m, dict)}
        values = {k: v for k, v in values.items() if k in names}
    return values


def collect_row(run_dir: Path, variant: str | None = None) -> dict[str, Any]:
    """One results row from a run directory's files (missing files give empty cells).

    Args:
        run_dir: The run directory.
        variant: The variant when the run's files do not record one (runs from before tgbench 0.2).
    """
    run = RunDir(run_dir)
    run.check_is_run()
    config = run.read_config()
    meta = run.read_meta()
    summary = read_json(run.summary_path)
    evals = {task: task_results(data) for task, data in eval_files(run).items()}
    ppl = evals.get(PRIMARY_TASK, {})
    options = config.model_options
    variant = str(meta.get("variant", variant or ""))
    row = {
        "run_id": run.path.name, "adapter": config.model, "variant": variant,
        "label": str(meta.get("label") or label_of(config.model, variant)),
        "control_of": str(meta.get("control_of", "")),
        # an isoFLOP grid's training FLOPs per run, which its tokens were solved for (empty on a token-budget grid)
        "compute_budget": meta.get("compute_budget"),
        "width": options.get("width"), "layers": options.get("layers"), "heads": options.get("heads"),
        "n_params": meta.get("n_params"), "tokens": config.train.tokens, "seed": config.train.seed,
        "status": run.status(), "steps": summary.get("steps"), "tokens_seen": summary.get("tokens"),
        LEXICAL_PER_STEP: lexical_tokens_per_step(summary.get("tokens"), summary.get("steps")),
        VAL_LOSS: summary.get("best_val_loss"), "best_val_ppl": summary.get("best_val_ppl"),
        TEST_LOSS: ppl.get("lexical_loss"), TEST_PPL: ppl.get("lexical_ppl"),
        "tokens_per_s": summary.get("tokens_per_s"), "sentences_per_s": summary.get("sentences_per_s"),
        "peak_memory_mb": summary.get("peak_memory_mb"), "config_hash": config.hash(),
        "lr": config.train.lr, "lr_source": meta.get("lr_source"),
        "max_grad_norm": summary.get("max_grad_norm"), "clipped_fraction": summary.get("clipped_fraction"),
        MEMORY_TRAIN: summary.get("memory_slots_per_sentence"),
        **{column: summary.get(column) for column in COMPUTE_COLUMNS},
        "data_seed": config.train.data_order_seed, "init_seed": config.train.initialisation_seed,
        # grids set both seeds per (budget, replicate); a run that leaves them to `seed` shares it across budgets
        "seed_scheme": (SCHEME_PER_BUDGET if config.train.data_seed >= 0 and config.train.init_seed >= 0
                        else SCHEME_SHARED),
        "flags": join_flags(curve_flags(run.read_metrics()), undertraining_flags(summary or {})),
    }
    for task in task_order(evals):
        for metric, value in evals[task].items():
            row[task_column(task, metric)] = value
    return row


@dataclass
class TaskInfo:
    """What the runs' ``eval/<task>.json`` files say about one task: its metrics (name, direction, format),
    what it measures, and how it was found (`tgbench.registry.task_class` finds its own report section)."""

    name: str
    metrics: list[Metric]
    description: str = ""
    reference: str = ""


def task_schemas(grid_dir: Path) -> dict[str, TaskInfo]:
    """Every task evaluated on some run of the grid, in reading order, as its result files describe it.
    Files written before the schema was recorded take it from the registered task's class."""

    found: dict[str, TaskInfo] = {}
    for run_dir in list_runs(grid_dir):
        for task, data in eval_files(RunDir(run_dir)).items():
            if task in found and "metrics" not in data:
                continue
            reference = str(data.get("task_reference") or "")
            schema = metric_schema(data)
            if "metrics" not in data and (cls := task_class(task, reference)) is not None:
                schema = list(cls.metrics)
            found[task] = TaskInfo(task, schema, str(data.get("description") or ""), reference)
    return {task: found[task] for task in task_order(found)}


def check_grid_dir(grid_dir: Path, command: str) -> None:
    """Refuse what holds no results: a missing or empty directory, or one another tool wrote.

    Raises:
        UserError: naming the directory (and `command`, the command that was given it).
    """
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise UserError(f"grid directory '{grid_dir}' does not exist",
                        "give the --out directory of `tgbench train-grid` (or a run directory)")
    if (grid_dir / "config.toml").exists():
        RunDir(grid_dir).check_is_run()
    if not list_runs(grid_dir) and not (grid_dir / "results.csv").is_file():
        raise UserError(f"'{grid_dir}' holds no runs (no run directory with a config.toml, no results.csv): "
                        f"nothing to {command}",
                        "give the --out directory of `tgbench train-grid`, or train into it first")


def build_results(grid_dir: Path, variants: dict[str, str] | None = None, skip_broken: bool = False) -> pd.DataFrame:
    """The results table of a grid, from its run directories.

    Args:
        grid_dir: The grid directory.
        variants: run_id -> variant for runs whose files do not record it.
        skip_broken: Leave out a run directory that cannot be read instead of raising (the report).
    """
    variants = variants or {}
    rows = []
    for run_dir in list_runs(grid_dir):
        try:
            rows.append(collect_row(run_dir, variants.get(run_dir.name)))
        except Exception:  # noqa: BLE001 - a broken run dir is shown by its absence in the report
            if not skip_broken:
                raise
    return with_table_flags(pd.DataFrame(rows, columns=RESULT_COLUMNS + task_columns(rows)))


def with_table_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with each finished run's cell-outlier and Cook's-distance flags added to its ``flags``."""
    if frame.empty:
        return frame
    done = frame[frame["status"].astype(str) == DONE].copy()
    done["loss"], _ = fit_loss(done)
    extra = table_flags(done)
    frame = frame.copy()
    frame["flags"] = [join_flags(split_flags(cell), extra.get(str(run), []))
                      for run, cell in zip(frame["run_id"], frame["flags"], strict=True)]
    return frame


def task_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The ``<task>.<metric>`` columns of some rows: tasks in reading order, metrics in first-seen order."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        for column in row:
            if (parts := split_task_column(column)) and column not in seen.setdefault(parts[0], []):
                seen[parts[0]].append(column)
    return [column for task in task_order(seen) for column in seen[task]]


def write_results(grid_dir: Path, variants: dict[str, str] | None = None) -> pd.DataFrame:
    """Regenerate `results.csv` from the run directories of a grid (one row per run).

    Args:
        grid_dir: The grid directory.
        variants: run_id -> variant for runs whose files do not record it (`tgbench.plan.grid.grid_variants`).
    """
    grid_dir = Path(grid_dir)
    frame = build_results(grid_dir, variants)
    write_text(grid_dir / "results.csv", frame.to_csv(index=False))
    return frame


# The files a results row is read from (collect_row); a newer one makes results.csv stale.
ROW_SOURCES = ("config.toml", "summary.json", "DONE", "FAILED", "metrics.jsonl")


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def results_stale(grid_dir: Path) -> bool:
    """True when results.csv is missing, unreadable, lists other runs than the grid directory holds, or is
    older than a file its rows are read from (a run's config, summary, DONE/FAILED mark or eval/*.json).
    A results.csv without run directories beside it is taken as it is."""
    grid_dir = Path(grid_dir)
    csv = grid_dir / "results.csv"
    written = _mtime_ns(csv)
    if not written:
        return True
    runs = list_runs(grid_dir)
    if not runs:
        return False  # a results.csv without its run directories (copied on its own) is all there is
    try:
        listed = pd.read_csv(csv, usecols=["run_id"], dtype=str, keep_default_na=False)["run_id"]
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return True
    if sorted(listed) != sorted(d.name for d in runs):
        return True
    for run_dir in runs:
        sources = [run_dir / name for name in ROW_SOURCES] + list((run_dir / "eval").glob("*.json"))
        if any(_mtime_ns(path) > written for path in sources):
            return True
    return _mtime_ns(grid_dir / GRID_FILE) > written


def refresh_results(grid_dir: Path) -> bool:
    """Rewrite results.csv when it is stale (see `results_stale`); `eval` and `report` call this, so a table
    written before an evaluation is never rendered. Returns whether it was rewritten."""
    if not results_stale(grid_dir) or not list_runs(grid_dir):
        return False
    write_results(grid_dir)
    return True


def read_results(grid_dir: Path, variants: dict[str, str] | None = None) -> pd.DataFrame:
    """results.csv when readable and current, else the table rebuilt in memory from the run directories; every
    column present, labels filled in, and `loss` / `loss_is_val` added (see `fit_loss`)."""
    csv = Path(grid_dir) / "results.csv"
    results = None
    if csv.is_file() and not results_stale(grid_dir):
        try:
            results = pd.read_csv(csv, dtype={"variant": str, "label": str, "run_id": str, "status": str,
                                              "lr_source": str, "flops_method": str},
                                  keep_default_na=False, na_values=[""])
        except (OSError, ValueError, pd.errors.EmptyDataError):
            results = None
    if results is None:
        results = build_results(grid_dir, variants, skip_broken=True)
    for column in RESULT_COLUMNS:
        if column not in results.columns:
            results[column] = None
    if results[LEXICAL_PER_STEP].isna().all():  # a results.csv written before the column existed
        results[LEXICAL_PER_STEP] = [lexical_tokens_per_step(t, s)
                                     for t, s in zip(results["tokens_seen"], results["steps"], strict=True)]
    results["variant"] = results["variant"].fillna("")
    results["label"] = [lab if isinstance(lab, str) and lab else label_of(a, v) for lab, a, v in
                        zip(results["label"], results["adapter"], results["variant"], strict=True)]
    loss, source = fit_loss(results)
    results["loss"] = [None if math.isnan(v) else float(v) for v in loss]
    results["loss_is_val"] = list(source == VAL_LOSS)
    return results
