"""The results table of a grid: one row per run, built from the run's own files.

`results.csv` is the one place where runs become comparable numbers. This module owns its columns, how a
row is read from a run directory, what a run's label is (adapter, or adapter/variant), which runs count
(status "done"), and which loss the fits and the report use (the test loss, else the best validation
loss). The grid writes the table; the fits (tasks/scaling.py) and the report read it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tgbench.runs import RunDir, read_json, write_text

# metric names that more than one module reads
TEST_LOSS = "test_loss"
VAL_LOSS = "best_val_loss"
TEST_PPL = "test_ppl"
DONE = "done"

RESULT_COLUMNS = [
    "run_id", "adapter", "variant", "label", "width", "layers", "heads", "n_params", "tokens", "seed", "status",
    "steps", "tokens_seen", VAL_LOSS, "best_val_ppl", TEST_LOSS, TEST_PPL, "word_perplexity",
    "bits_per_byte", "tokens_per_s", "sentences_per_s", "peak_memory_mb", "config_hash",
    "lr", "lr_source", "max_grad_norm", "clipped_fraction",
]
REVERSAL_KEYS = [f"{c}_{m}" for c in ("normal", "reversed") for m in ("target_nll", "distractor_nll", "margin",
                                                                        "error_rate")]
ALL_COLUMNS = RESULT_COLUMNS + [f"reversal_{k}" for k in REVERSAL_KEYS]
LABEL_ORDER = {"tg": 0, "gpt2": 1}  # reading order: tg first, then gpt2, then the rest alphabetically


def label_of(adapter: Any, variant: Any) -> str:
    """A run's label: its adapter, or adapter/variant for a named option set (e.g. tg/no-memory)."""
    if variant is None or (isinstance(variant, float) and math.isnan(variant)) or str(variant).strip() == "":
        return str(adapter)
    return f"{adapter}/{variant}"


def ordered_labels(labels: Iterable[Any]) -> list[str]:
    """Distinct labels in reading order: tg first, then gpt2, then the rest alphabetically."""
    return sorted({str(x) for x in labels}, key=lambda lab: (LABEL_ORDER.get(lab, 2), lab))


def done_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of finished runs."""
    return frame[frame["status"].astype(str) == DONE]


def fit_loss(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The loss each run is compared on: its test loss, else its best validation loss (and which one it is).

    Returns:
        (loss, source): the loss (NaN when a run has neither), and "test_loss" / "best_val_loss" / "" per row.
    """
    val = pd.to_numeric(frame[VAL_LOSS], errors="coerce") if VAL_LOSS in frame.columns else pd.Series(
        np.nan, index=frame.index)
    test = pd.to_numeric(frame[TEST_LOSS], errors="coerce") if TEST_LOSS in frame.columns else pd.Series(
        np.nan, index=frame.index)
    loss = test.where(test.notna(), val)
    source = pd.Series(np.where(test.notna(), TEST_LOSS, np.where(val.notna(), VAL_LOSS, "")), index=frame.index)
    return loss, source


def collect_row(run_dir: Path, variant: str | None = None) -> dict[str, Any]:
    """One results row from a run directory's files (missing files give empty cells).

    Args:
        run_dir: The run directory.
        variant: The variant when the run's files do not record one (runs from before tgbench 0.2).
    """
    run = RunDir(run_dir)
    config = run.read_config()
    meta = run.read_meta()
    summary = read_json(run.summary_path)
    ppl = read_json(run.eval_dir / "ppl.json").get("results", {}).get("tg_ppl", {})
    reversal = read_json(run.eval_dir / "reversal.json").get("results", {}).get("tg_reversal", {})
    options = config.model_options
    variant = str(meta.get("variant", variant or ""))
    row = {
        "run_id": run.path.name, "adapter": config.model, "variant": variant,
        "label": str(meta.get("label") or label_of(config.model, variant)),
        "width": options.get("width"), "layers": options.get("layers"), "heads": options.get("heads"),
        "n_params": meta.get("n_params"), "tokens": config.train.tokens, "seed": config.train.seed,
        "status": run.status(), "steps": summary.get("steps"), "tokens_seen": summary.get("tokens"),
        VAL_LOSS: summary.get("best_val_loss"), "best_val_ppl": summary.get("best_val_ppl"),
        TEST_LOSS: ppl.get("lexical_loss"), TEST_PPL: ppl.get("lexical_ppl"),
        "word_perplexity": ppl.get("word_perplexity"), "bits_per_byte": ppl.get("bits_per_byte"),
        "tokens_per_s": summary.get("tokens_per_s"), "sentences_per_s": summary.get("sentences_per_s"),
        "peak_memory_mb": summary.get("peak_memory_mb"), "config_hash": config.hash(),
        "lr": config.train.lr, "lr_source": meta.get("lr_source"),
        "max_grad_norm": summary.get("max_grad_norm"), "clipped_fraction": summary.get("clipped_fraction"),
    }
    for key in REVERSAL_KEYS:
        row[f"reversal_{key}"] = reversal.get(key)
    return row


def grid_variants(grid: dict[str, Any]) -> dict[str, str]:
    """run_id -> variant from a grid file's content ({} when it cannot be expanded)."""
    from tgbench.errors import UserError
    from tgbench.grid import GridConfig, expand

    try:
        return {s.run_id: s.variant for s in expand(GridConfig.from_dict(grid))}
    except (UserError, TypeError, ValueError, KeyError):
        return {}


def run_dirs(grid_dir: Path) -> list[Path]:
    """The run directories of a grid (subdirectories holding a config.toml), sorted by name."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        return []
    return [d for d in sorted(grid_dir.iterdir()) if d.is_dir() and (d / "config.toml").exists()]


def build_results(grid_dir: Path, variants: dict[str, str] | None = None, skip_broken: bool = False) -> pd.DataFrame:
    """The results table of a grid, from its run directories.

    Args:
        grid_dir: The grid directory.
        variants: run_id -> variant for runs whose files do not record it.
        skip_broken: Leave out a run directory that cannot be read instead of raising (the report).
    """
    variants = variants or {}
    rows = []
    for run_dir in run_dirs(grid_dir):
        try:
            rows.append(collect_row(run_dir, variants.get(run_dir.name)))
        except Exception:  # noqa: BLE001 - a broken run dir is shown by its absence in the report
            if not skip_broken:
                raise
    return pd.DataFrame(rows, columns=ALL_COLUMNS)


def write_results(grid_dir: Path) -> pd.DataFrame:
    """Regenerate `results.csv` from the run directories of a grid (one row per run)."""
    import tomllib

    grid_dir = Path(grid_dir)
    grid_file = grid_dir / "grid.toml"
    variants = {}
    if grid_file.exists():
        try:
            variants = grid_variants(tomllib.loads(grid_file.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError):
            variants = {}
    frame = build_results(grid_dir, variants)
    write_text(grid_dir / "results.csv", frame.to_csv(index=False))
    return frame


# The files a results row is read from (collect_row); a newer one makes results.csv stale.
ROW_SOURCES = ("config.toml", "summary.json", "DONE", "FAILED")


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
    runs = run_dirs(grid_dir)
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
    return _mtime_ns(grid_dir / "grid.toml") > written


def refresh_results(grid_dir: Path) -> bool:
    """Rewrite results.csv when it is stale (see `results_stale`); `eval` and `report` call this, so a table
    written before an evaluation is never rendered. Returns whether it was rewritten."""
    if not results_stale(grid_dir) or not run_dirs(grid_dir):
        return False
    write_results(grid_dir)
    return True


def read_results(grid_dir: Path, grid: dict[str, Any]) -> pd.DataFrame:
    """results.csv when readable and current, else the table rebuilt in memory from the run directories; every
    column present, labels filled in, and `loss` / `loss_is_val` added (see `fit_loss`)."""
    csv = Path(grid_dir) / "results.csv"
    results = None
    if csv.is_file() and not results_stale(grid_dir):
        try:
            results = pd.read_csv(csv, dtype={"variant": str, "label": str, "run_id": str, "status": str,
                                              "lr_source": str},
                                  keep_default_na=False, na_values=[""])
        except (OSError, ValueError, pd.errors.EmptyDataError):
            results = None
    if results is None:
        results = build_results(grid_dir, grid_variants(grid), skip_broken=True)
    for column in ALL_COLUMNS:
        if column not in results.columns:
            results[column] = None
    results["variant"] = results["variant"].fillna("")
    results["label"] = [lab if isinstance(lab, str) and lab else label_of(a, v) for lab, a, v in
                        zip(results["label"], results["adapter"], results["variant"], strict=True)]
    loss, source = fit_loss(results)
    results["loss"] = [None if math.isnan(v) else float(v) for v in loss]
    results["loss_is_val"] = list(source == VAL_LOSS)
    return results
