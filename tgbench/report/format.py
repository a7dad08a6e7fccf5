"""How the report shows numbers: one formatter for every cell, plot label and sentence of the page.

A value is shown through its column's schema (`tgbench.results.columns.Metric.fmt`): a format spec such as
".3f", "si" for 1.2M-style counts, "d" for integers, "text" for strings. An empty cell (None, NaN, a
non-number) shows as "missing", never as 0 or "nan".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tgbench.report.plots import fmt_si
from tgbench.results.columns import COLUMNS


def num(value: Any) -> float | None:
    """A finite float, or None for empty cells, NaN and non-numbers."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None (None when none are)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of positive values (a perplexity summary: exp of the mean log-loss), None when none."""
    kept = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(kept)))) if kept else None


def fmt_number(value: Any, spec: str = ".4g") -> str:
    """Display text of a value under a format spec ("si" for 1.2M-style counts, "d" for integers, "text");
    "missing" for empty cells."""
    if spec == "text":
        return "missing" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    number = num(value)
    if number is None:
        return "missing"
    if spec == "si":
        return fmt_si(number)
    if spec == "d":
        return f"{int(round(number)):d}"
    if spec.endswith("f") and abs(number) >= 1e5:  # e.g. the word perplexity of an untrained model
        spec = ",.0f"
    return format(number, spec)


def fmt_value(value: Any, key: str = "", fmt: str | None = None) -> str:
    """Display text of one value of results.csv column `key` (or under an explicit format)."""
    return fmt_number(value, fmt or (COLUMNS[key].fmt if key in COLUMNS else ".4g"))


def fmt_times(value: float | None) -> str:
    """A multiplier: 1.25x ("missing" when there is none)."""
    return "missing" if value is None else f"{value:.2f}\u00d7"


def fmt_g(value: Any) -> str:
    """A fitted parameter: 4 significant digits."""
    number = num(value)
    return "missing" if number is None else f"{number:.4g}"
