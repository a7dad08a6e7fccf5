"""A task's section of the report: what a task shows, built from results.csv's ``<task>.<metric>`` columns.

`generic_section` is every task's default (`Task.report_section`): a table with one row per finished run
and, for every scored metric, a plot against D (the data axis) or, without one, against N (the parameter
axis): seed means with seed min-max bars, "better" read from the metric's direction. Task sections are
secondary evidence: the verdict is on the lexical loss alone, and each section says so.

A task's `report_section` works with what this module provides: `TaskView` (the results table, the task's
metrics, the labels and colours), `Section` (what it returns), `generic_section`, `metric_plot`,
`evaluated_runs_table`, and the formatting helpers `num`, `mean`, `fmt_number` (`tgbench.report.format`).

This module sits below the rest of the report (the page and the tasks import it; it imports neither).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tgbench.report.format import fmt_number, mean, num  # noqa: F401 (what a task's section formats with)
from tgbench.report.plots import Series, fmt_si, plot
from tgbench.report.tables import Table
from tgbench.report.tables import runs_table as table_of_runs
from tgbench.results.columns import COLUMNS, Metric, done_rows, task_column

SECONDARY_NOTE = ("Secondary evidence: the verdict is on the lexical test loss alone; these numbers are not part "
                  "of it.")


# -- what a section is ------------------------------------------------------------------------------------
@dataclass
class Section:
    """One task's part of the report (the template draws every section the same way)."""

    task: str
    title: str
    description: str = ""
    plots: list[Any] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "task-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in self.task)


@dataclass
class TaskView:
    """What a task's section is drawn from: the results table and the task's metric schema.

    Attributes:
        task: The task name (its columns are ``<task>.<metric>``).
        metrics: Its metrics, in display order.
        frame: The whole results table (every run, every column).
        labels: Model labels in reading order (the reference first).
        palette: label -> colour.
        data_group: (width, layers) of the data axis, or None.
        param_tokens: The budget of the parameter axis, or None.
        description: What the task measures.
    """

    task: str
    metrics: list[Metric]
    frame: pd.DataFrame
    labels: list[str]
    palette: dict[str, str]
    data_group: tuple | None = None
    param_tokens: int | None = None
    description: str = ""

    def column(self, metric: str | Metric) -> str:
        return task_column(self.task, metric if isinstance(metric, str) else metric.name)

    @property
    def present(self) -> list[Metric]:
        """The metrics with a column in the table."""
        return [m for m in self.metrics if self.column(m) in self.frame.columns]

    def evaluated(self) -> pd.DataFrame:
        """Finished runs with at least one value of this task."""
        done = done_rows(self.frame)
        columns = [self.column(m) for m in self.present]
        if not columns or done.empty:
            return done.iloc[0:0]
        has = done[columns].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)
        return done[has]

    def data_axis(self) -> pd.DataFrame:
        """The evaluated runs on the data axis (all of them when the grid has no data axis)."""
        rows = self.evaluated()
        if self.data_group is None:
            return rows
        return rows[(rows["width"] == self.data_group[0]) & (rows["layers"] == self.data_group[1])]

    def ordered(self, labels: Iterable[Any]) -> list[str]:
        present = {str(x) for x in labels}
        return [lab for lab in self.labels if lab in present] + sorted(present - set(self.labels))


def axis_cells(frame: pd.DataFrame) -> tuple[tuple | None, int | None]:
    """The data-axis group (width, layers) and the parameter-axis budget with the most distinct x values."""
    done = done_rows(frame)
    best_data, best_params = None, None
    for key, g in done.groupby(["width", "layers"]):
        score = (g["tokens"].nunique(), key[0])
        if g["tokens"].nunique() >= 2 and (best_data is None or score > best_data[0]):
            best_data = (score, key)
    for tokens, g in done.groupby("tokens"):
        score = (g["width"].nunique(), tokens)
        if g["width"].nunique() >= 2 and (best_params is None or score > best_params[0]):
            best_params = (score, tokens)
    return (best_data[1] if best_data else None), (best_params[1] if best_params else None)


# -- the pieces of a section ------------------------------------------------------------------------------
def seed_points(g: pd.DataFrame, x_col: str, y_col: str) -> tuple[list[tuple[float, float]],
                                                                  list[tuple[float, float, float]]]:
    """Seed means (x, mean) and seed min-max bars (x, low, high) of one label's runs."""
    points, bars = [], []
    for x, gx in g.groupby(x_col):
        ys = [v for v in (num(v) for v in gx[y_col]) if v is not None]
        if ys:
            points.append((float(x), float(np.mean(ys))))
            if len(ys) > 1:
                bars.append((float(x), min(ys), max(ys)))
    return points, bars


def metric_plot(view: TaskView, metric: Metric, rows: pd.DataFrame | None = None, axis: str = "") -> Any:
    """One metric against D (data axis) or N (parameter axis), one series per label, seed bars."""
    axis = axis or ("data" if view.data_group is not None or view.param_tokens is None else "params")
    if rows is None:
        rows = view.data_axis() if axis == "data" else view.evaluated()
        if axis == "params" and view.param_tokens is not None:
            rows = rows[rows["tokens"] == view.param_tokens]
    x_col, xlabel, x_name = (("tokens", "training tokens D", "D") if axis == "data"
                             else ("n_params", "non-embedding parameters N", "N"))
    column = view.column(metric)
    series = []
    for label in view.ordered(rows["label"]):
        points, bars = seed_points(rows[rows["label"] == label], x_col, column)
        series.append(Series(label, view.palette.get(label, "#666666"), points, bars, points))
    where = ""
    if axis == "data" and view.data_group is not None:
        where = f" (width {view.data_group[0]}, {view.data_group[1]} layers)"
    elif axis == "params" and view.param_tokens is not None:
        where = f" (D = {fmt_si(view.param_tokens)} tokens)"
    better = f"; {metric.direction}" if metric.direction else ""
    unit = f" ({metric.unit})" if metric.unit else ""
    return plot(series, title=f"{view.task}: {metric.display} vs {x_name}{where}", xlabel=xlabel,
                ylabel=f"{metric.display}{unit}", xlog=True,
                note=f"points: seed mean, bars: seed min-max{better}")


def evaluated_runs_table(view: TaskView, metrics: Sequence[Metric] | None = None) -> Table:
    """One row per evaluated run: its model, size, budget, seed and every metric (best value marked)."""
    metrics = list(metrics if metrics is not None else view.present)
    columns = [(key, COLUMNS[key]) for key in ("run_id", "label", "width", "tokens", "seed")]
    return table_of_runs(view.evaluated(), [*columns, *((view.column(m), m) for m in metrics)], view.labels,
                             title="Every evaluated run",
                             note="Click a column to sort. Green: the best value of a scored column.")


runs_table = evaluated_runs_table  # the name task sections written for tgbench 0.1 call


def generic_section(view: TaskView, plotted: Sequence[str] | None = None, title: str = "") -> Section:
    """Every task's default section: each scored metric against D (or N) with seed bars, and the runs table.

    Args:
        view: The task's data.
        plotted: The metrics to plot (default: every metric with a direction).
        title: The section title (default: "Task: <name>").
    """
    present = view.present
    section = Section(view.task, title or f"Task: {view.task}", view.description, notes=[SECONDARY_NOTE])
    if view.evaluated().empty:
        section.notes.append(f"No finished run has a {view.task} evaluation yet (eval/{view.task}.json).")
        return section
    axis_ok = view.data_group is not None or view.param_tokens is not None
    for metric in present:
        wanted = metric.higher_is_better is not None if plotted is None else metric.name in plotted
        if wanted and axis_ok:
            section.plots.append(metric_plot(view, metric))
    if not axis_ok:
        section.notes.append("This grid has one size at one budget: no D or N axis to plot against.")
    section.tables.append(evaluated_runs_table(view, present))
    return section
