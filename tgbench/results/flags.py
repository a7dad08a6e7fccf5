"""Flags on runs: never silent drops. A flagged run stays in every table and fit; the flag says why to look.

Per run, from its metrics.jsonl (``curve_flags``):

- ``spike``: a Hampel filter on the training lexical loss (Pearson 2002): a logged value above the rolling
  median of its window (``HAMPEL_HALF_WINDOW`` points either side) by more than ``HAMPEL_K`` x 1.4826 x MAD
  of the window, and by at least ``SPIKE_MIN_RELATIVE`` of the median (so that a flat, quiet curve whose MAD
  is ~0 does not flag rounding noise).
- ``diverged``: a non-finite training or validation loss, or a validation loss above its running minimum by
  more than ``DIVERGENCE_MARGIN`` nats.

Per run, against the other runs of the results table (``table_flags``):

- ``cell-outlier``: the run's loss deviates from the median of its cell (same label, width, layers, budget)
  by more than ``CELL_OUTLIER_K`` robust SDs (1.4826 x the median absolute deviation from cell medians, over
  every cell of the label with at least 3 runs, leaving out the zero of a run that is its cell's median) and
  by at least ``CELL_OUTLIER_MIN`` nats. Cells with fewer than 3 runs have no median to stand out from and are
  not judged. Measured on Gaussian seed noise (3 budgets, tests/test_flags.py): 0.5% of clean runs flagged;
  a run 10 SDs off is flagged in 88% of tables with 3 seeds per cell, 99% with 5.
- ``cook``: Cook's distance above 4 / n (Cook 1977) on the Kaplan fit of its data axis (least squares of
  log L on log D over the label's runs at one width and depth, at least 3 distinct budgets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

HAMPEL_HALF_WINDOW = 3
HAMPEL_K = 3.0
SPIKE_MIN_RELATIVE = 0.02
DIVERGENCE_MARGIN = 0.1  # nats above the running minimum of the validation loss
CELL_OUTLIER_K = 4.0
CELL_OUTLIER_MIN = 0.02  # nats
MAD_TO_SD = 1.4826
FLAG_ORDER = ("diverged", "spike", "cell-outlier", "cook")


def hampel_spikes(values: Sequence[float], half_window: int = HAMPEL_HALF_WINDOW, k: float = HAMPEL_K,
                  min_relative: float = SPIKE_MIN_RELATIVE) -> np.ndarray:
    """Indices of upward Hampel outliers of a curve (module docstring); non-finite values are skipped."""
    y = np.asarray(values, dtype=float)
    finite = np.flatnonzero(np.isfinite(y))
    z = y[finite]
    out = []
    for i in range(z.size):
        window = z[max(0, i - half_window): i + half_window + 1]
        if window.size < 2 * half_window + 1:
            continue  # the curve's ends: not a full window (the first steps fall fast)
        median = float(np.median(window))
        mad = float(np.median(np.abs(window - median)))
        if z[i] - median > max(k * MAD_TO_SD * mad, min_relative * abs(median)):
            out.append(int(finite[i]))
    return np.asarray(out, dtype=int)


def curve_flags(records: Iterable[Mapping]) -> list[str]:
    """``spike`` / ``diverged`` from a run's metrics.jsonl records (module docstring)."""
    train, val = [], []
    for r in records:
        if "train_lexical_loss" in r:
            train.append(_as_float(r["train_lexical_loss"]))
        if "val_loss" in r:
            val.append(_as_float(r["val_loss"]))
    flags = []
    values = np.asarray(train + val, dtype=float)
    diverged = bool(values.size and not np.all(np.isfinite(values)))
    finite_val = np.asarray([v for v in val if math.isfinite(v)])
    if finite_val.size:
        running_min = np.minimum.accumulate(finite_val)
        diverged |= bool(np.any(finite_val - running_min > DIVERGENCE_MARGIN))
    if diverged:
        flags.append("diverged")
    if hampel_spikes(train).size:
        flags.append("spike")
    return flags


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def cooks_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cook's distance of every point of the least-squares line of log y on log x (NaN when undefined)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    n, p = lx.size, 2
    design = np.column_stack([np.ones(n), lx])
    if n <= p or np.unique(lx).size < 2:
        return np.full(n, np.nan)
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - design @ coef
    hat = np.einsum("ij,jk,ik->i", design, np.linalg.inv(design.T @ design), design)
    mse = float(resid @ resid) / (n - p)
    if mse <= 0:
        return np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return resid ** 2 / (p * mse) * hat / (1 - hat) ** 2


def table_flags(rows: pd.DataFrame) -> dict[str, list[str]]:
    """run_id -> ``cell-outlier`` / ``cook`` flags from usable runs (columns run_id, label, width, layers,
    tokens, loss; module docstring)."""
    flags: dict[str, list[str]] = {}
    frame = rows[np.isfinite(pd.to_numeric(rows["loss"], errors="coerce").to_numpy(dtype=float))]
    for _, g in frame.groupby("label", sort=True):
        cells = [c for _, c in g.groupby(["width", "layers", "tokens"], sort=True) if len(c) >= 3]
        if cells:
            devs = [c["loss"].to_numpy(dtype=float) - float(np.median(c["loss"].to_numpy(dtype=float)))
                    for c in cells]
            # a cell with an odd number of runs has one exactly at its median: leave those zeros out of the scale
            pooled = np.abs(np.concatenate(devs))
            scale = MAD_TO_SD * float(np.median(pooled[pooled > 0])) if np.any(pooled > 0) else 0.0
            for c, dev in zip(cells, devs, strict=True):
                for run, d in zip(c["run_id"], dev, strict=True):
                    if abs(d) > max(CELL_OUTLIER_K * scale, CELL_OUTLIER_MIN):
                        flags.setdefault(str(run), []).append("cell-outlier")
        for _, axis in g.groupby(["width", "layers"], sort=True):
            x = pd.to_numeric(axis["tokens"], errors="coerce").to_numpy(dtype=float)
            y = axis["loss"].to_numpy(dtype=float)
            if np.unique(x).size < 3 or not (np.all(x > 0) and np.all(y > 0)):
                continue
            cook = cooks_distance(x, y)
            for run, value in zip(axis["run_id"], cook, strict=True):
                if np.isfinite(value) and value > 4.0 / len(axis):
                    flags.setdefault(str(run), []).append("cook")
    return flags


def join_flags(*groups: Iterable[str]) -> str:
    """One results.csv ``flags`` cell: distinct flags in FLAG_ORDER, ";"-separated ("" for none)."""
    seen = {f.strip() for group in groups for f in group if f and f.strip()}
    ordered = [f for f in FLAG_ORDER if f in seen] + sorted(seen - set(FLAG_ORDER))
    return ";".join(ordered)


def split_flags(cell) -> list[str]:
    """The flags of a results.csv ``flags`` cell."""
    if not isinstance(cell, str):
        return []
    return [f for f in (part.strip() for part in cell.split(";")) if f]
