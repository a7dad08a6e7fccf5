"""The one table of runs the report draws, wherever it draws one: the page's Runs section and every task's.

A `Table` is rendered data: column headers (label, unit, direction) and rows of cells (display text, sort key,
CSS classes). `runs_table` builds one from results.csv rows and the schemas of the columns to show
(`tgbench.results.columns.Metric`): every value formatted by its schema, the best finished value of each scored
column marked, rows in reading order (the reference first, then by D, width and seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tgbench.plan.comparison import ordered_labels
from tgbench.report.format import fmt_number, num
from tgbench.results.columns import DONE, Metric
from tgbench.results.flags import split_flags


@dataclass
class Table:
    """A rendered table: column headers and rows of display cells ({text, sort, classes})."""

    columns: list[dict[str, Any]]
    rows: list[list[dict[str, str]]]
    title: str = ""
    note: str = ""


def cell(value: Any, spec: str, classes: Sequence[str] = ()) -> dict[str, str]:
    """One display cell: the text under `spec`, a sort key (the number, else the text; "" when missing)."""
    text = fmt_number(value, spec)
    number = num(value) if spec != "text" else None
    sort = "" if text in ("missing", "") else (repr(number) if number is not None else str(value))
    return {"text": text, "sort": sort, "classes": " ".join(["missing", *classes] if text == "missing" else classes)}


def runs_table(rows: pd.DataFrame, columns: Sequence[tuple[str, Metric]], order: Sequence[str] = (), *,
               title: str = "", note: str = "") -> Table:
    """One row per run of `rows`, one column per (results.csv column, its schema) of `columns`.

    Args:
        rows: The runs (results.csv rows); columns missing from it show as "missing".
        columns: (column name, schema) pairs, in display order.
        order: The grid's label order (the reference first); other labels follow alphabetically.
        title: The table's heading.
        note: A line under it.
    """
    rows = rows.assign(**{key: None for key, _ in columns if key not in rows.columns})  # e.g. no ppl yet
    finished = rows["status"].astype(str) == DONE if "status" in rows.columns else pd.Series(True, rows.index)
    best = {}
    for key, metric in columns:
        values = [v for v in (num(x) for x in rows.loc[finished, key]) if v is not None]
        if values and metric.higher_is_better is not None:
            best[key] = max(values) if metric.higher_is_better else min(values)
    rank = {label: i for i, label in enumerate(ordered_labels(rows["label"], order))}
    ranked = rows.assign(_rank=[rank.get(str(label), len(rank)) for label in rows["label"]])
    body = []
    for index, row in ranked.sort_values(["_rank", "label", "tokens", "width", "seed"], na_position="last").iterrows():
        cells = []
        for key, metric in columns:
            value = row[key]
            if key == "flags":  # "spike;cook" reads as "spike; cook"
                value = "; ".join(split_flags(value))
            classes = []
            if key in best and num(value) == best[key] and finished[index]:
                classes.append("best")
            if key == "status":
                classes.append(f"status-{value}")
            cells.append(cell(value, metric.fmt, classes))
        body.append(cells)
    headers = [{"key": key, "label": metric.display, "unit": metric.unit, "numeric": metric.numeric,
                "direction": metric.direction} for key, metric in columns]
    return Table(headers, body, title, note)
