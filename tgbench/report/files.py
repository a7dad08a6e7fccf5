"""What the report reads from a grid directory, parsed once: grid.toml, results.csv, fits.json, run dirs, tasks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tgbench.plan.comparison import Comparison, grid_comparison
from tgbench.plan.config import read_grid_file
from tgbench.plan.expand import grid_variants
from tgbench.results.table import (
    TaskInfo,
    read_results,
    task_schemas,
)
from tgbench.training.rundir import RunDir, list_runs


# -- reading the grid directory -----------------------------------------------------------------------------
@dataclass
class GridFiles:
    """Everything the report reads, already parsed; absent files are empty values, never errors."""

    path: Path
    grid: dict[str, Any]
    results: pd.DataFrame
    fits: dict[str, Any] | None
    fits_error: str
    runs: dict[str, RunDir]
    tasks: dict[str, TaskInfo] = field(default_factory=dict)  # every task that ran, with its metrics
    comparison: Comparison | None = None  # the grid's reference and baselines over the labels with runs

    def __post_init__(self) -> None:
        if self.comparison is None:
            self.comparison = grid_comparison(self.grid, self.results["label"] if "label" in self.results else [])

    def ordered(self, labels: Iterable[Any]) -> list[str]:
        """Labels in reading order: the reference, then the grid's order, then the rest alphabetically."""
        present = {str(x) for x in labels}
        return [lab for lab in self.comparison.labels if lab in present] + sorted(
            present - set(self.comparison.labels))


def read_json_file(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, "missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"unreadable ({err})"
    return (data, "") if isinstance(data, dict) else (None, "not a JSON object")


def load_grid_files(grid_dir: Path) -> GridFiles:
    """Parse grid.toml, results.csv (rebuilt in memory from the run dirs when absent) and fits.json."""
    grid_dir = Path(grid_dir)
    grid = read_grid_file(grid_dir)
    runs = {d.name: RunDir(d) for d in list_runs(grid_dir)}
    results = read_results(grid_dir, grid_variants(grid))
    fits, fits_error = read_json_file(grid_dir / "fits.json")
    return GridFiles(grid_dir, grid, results, fits, fits_error, runs, task_schemas(grid_dir))
