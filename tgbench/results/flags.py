"""Flags on runs: never silent drops. A flagged run stays in every table and fit; the flag says why to look.

Per run, from its metrics.jsonl (``curve_flags``):

- ``spike``: a Hampel filter on the training lexical loss (Pearson 2002): a logged value above the rolling
  median of its window (``HAMPEL_HALF_WINDOW`` points either side) by more than ``HAMPEL_K`` x 1.4826 x MAD
  of the window, and by at least ``SPIKE_MIN_RELATIVE`` of the median (so that a flat, quiet curve whose MAD
  is ~0 does not flag rounding noise).
- ``diverged``: a non-finite training or validation loss, or a validation loss above its running minimum by
  more than ``DIVERGENCE_MARGIN`` nats.

Per run, from its summary.json (``tgbench.training.advice.undertraining_flags``, the tests behind the warnings
of a single `tgbench train`):

- ``few-steps``: fewer than ``advice.FEW_STEPS`` optimiser steps.
- ``near-unigram``: best validation PPL above ``advice.NEAR_UNIGRAM`` x the corpus's unigram PPL.

Per run, against the other runs of the results table (``table_flags``):

- ``cell-outlier``: the run's loss deviates from the median of its cell (same label, width, layers, budget)
  by more than ``CELL_OUTLIER_K`` robust SDs (1.4826 x the median absolute deviation from cell medians, over
  every cell of the label with at least 3 runs, leaving out the zero of a run that is its cell's median) and
  by at least ``CELL_OUTLIER_MIN`` nats. Cells with fewer than 3 runs have no median to stand out from and are
  not judged. Measured on Gaussian seed noise (3 budgets, tests/test_flags.py): 0.5% of clean runs flagged;
  a run 10 SDs off is flagged in 88% of tables with 3 seeds per cell, 99% with 5.
Cook's distance belongs to the verdict's own fit (`tgbench.tasks.stats.verdicts`: ``influential``), not to a
run: earlier versions flagged ``cook`` on each model's Kaplan fit, which the verdict never used, and it marked
about 70% of clean synthetic tables. Cells written with it read without it (`RETIRED`).
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
FLAG_ORDER = ("diverged", "near-unigram", "few-steps", "spike", "cell-outlier")
RETIRED = ("cook",)  # flags earlier versions wrote into results.csv and no longer mean anything


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


def table_flags(rows: pd.DataFrame) -> dict[str, list[str]]:
    """run_id -> ``cell-outlier`` flags from usable runs (columns run_id, label, width, layers, tokens, loss;
    module docstring)."""
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
    return [f for f in (part.strip() for part in cell.split(";")) if f and f not in RETIRED]
