"""The vocabulary of results.csv: its fixed columns, the ``<task>.<metric>`` columns, and how a column is read.

Every number tgbench compares passes through results.csv, so what a column means is defined once, here:

- `Metric`: one column's schema (name, direction, display format, aggregation, label, unit). Tasks declare
  their metrics with it (`tgbench.task` re-exports it); `COLUMNS` describes the fixed columns the same way,
  and the report formats and colours every column from these schemas.
- `RESULT_COLUMNS`: the fixed columns, in order; a task's metric `m` adds the column ``<task>.m``.
- `done_rows` and `fit_loss`: which runs count (status "done") and which loss they are compared on (the
  test loss, else the best validation loss).

This module imports nothing of tgbench, so contracts, tables, statistics and the report can all use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Metric:
    """One column's schema: a number a task reports, or a fixed column of results.csv.

    Attributes:
        name: Key in the task's results and the ``<task>.<name>`` column of results.csv (a fixed column: its
            name).
        higher_is_better: The metric's direction; None for numbers that are not scores (counts, sizes).
        fmt: Format spec of its display (".3f", ".1%"), "d" for integers, "si" for 1.2M-style counts, "text"
            for strings.
        aggregation: How the task combines items into this number (lm-eval's aggregation name, e.g.
            "mean", "perplexity"); across seeds the report shows the mean and the min-max.
        label: Display name (default: `name`).
        unit: Display unit ("nats/token").
    """

    name: str
    higher_is_better: bool | None = None
    fmt: str = ".4g"
    aggregation: str = "mean"
    label: str = ""
    unit: str = ""

    @property
    def direction(self) -> str:
        return {True: "higher is better", False: "lower is better"}.get(self.higher_is_better, "")

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def numeric(self) -> bool:
        return self.fmt != "text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Metric:
        known = {k: raw[k] for k in ("name", "higher_is_better", "fmt", "aggregation", "label", "unit") if k in raw}
        return cls(**{k: (v if k == "higher_is_better" else str(v)) for k, v in known.items()})


# Column names that more than one module reads.
TEST_LOSS = "test_loss"
VAL_LOSS = "best_val_loss"
TEST_PPL = "test_ppl"
DONE = "done"
PRIMARY_TASK = "ppl"  # the task whose lexical loss is test_loss (the fits and the verdict)
MEMORY_TRAIN = "memory_slots_train"
# tokens_seen / steps: batch_tokens on average whatever the adapter (markers and padding never count), so models of
# one budget train the same number of optimizer steps; a run that does not is visible here.
LEXICAL_PER_STEP = "lexical_tokens_per_step"

COMPUTE_COLUMNS = ("train_flops", "flops_per_token", "train_seconds", "flops_method", "flops_6nd", "flops_per_s",
                   "matmul_peak_flops", "peak_fraction")

RESULT_COLUMNS = [
    "run_id", "adapter", "variant", "label", "width", "layers", "heads", "n_params", "tokens", "seed", "status",
    "steps", "tokens_seen", LEXICAL_PER_STEP, VAL_LOSS, "best_val_ppl", TEST_LOSS, TEST_PPL, "tokens_per_s",
    "sentences_per_s", "peak_memory_mb", "config_hash", "lr", "lr_source", "max_grad_norm", "clipped_fraction",
    # Memory slots a sentence-memory model read per sentence in training (summary.json; evaluation: the ppl task).
    MEMORY_TRAIN,
    # What training cost (summary.json): counted or measured FLOPs of the batches trained on, per lexical token,
    # how they were obtained, the training loop's wall seconds, 6 x all parameters x tokens for reference, and the
    # achieved FLOP/s against the matmul peak measured in the process that trained.
    *COMPUTE_COLUMNS,
    # the replicate design (the verdict reads seed_scheme) and the runs' flags (tgbench.results.flags)
    "data_seed", "init_seed", "seed_scheme", "flags",
    # the label of the model a control twin removes the memory of (grid `controls`; "" for every other run)
    "control_of",
    # an isoFLOP grid's compute budget (training FLOPs) each run's tokens were solved for; empty on token budgets
    "compute_budget",
]


def task_column(task: str, metric: str) -> str:
    """The results.csv column of one task metric."""
    return f"{task}.{metric}"


def split_task_column(column: str) -> tuple[str, str] | None:
    """(task, metric) of a ``<task>.<metric>`` column, None for the other columns."""
    task, dot, metric = str(column).partition(".")
    return (task, metric) if dot and task and metric else None


MEMORY_TEST = task_column(PRIMARY_TASK, "memory_slots_per_sentence")  # memory slots read per sentence, scoring

# How the report shows the fixed columns (and the ppl task's memory reads beside the training ones).
COLUMNS: dict[str, Metric] = {m.name: m for m in (
    Metric("run_id", fmt="text", label="run"),
    Metric("label", fmt="text", label="model"),
    Metric("width", fmt="d"),
    Metric("layers", fmt="d"),
    Metric("n_params", fmt="si", label="params", unit="non-emb."),
    Metric("tokens", fmt="si", label="D", unit="tokens"),
    Metric("seed", fmt="d"),
    Metric("status", fmt="text"),
    Metric("steps", fmt="d"),
    Metric(LEXICAL_PER_STEP, fmt=",.0f", label="tokens/step", unit="lexical, training"),
    Metric(VAL_LOSS, False, ".3f", label="best val loss", unit="nats/token"),
    Metric(TEST_LOSS, False, ".3f", label="test loss", unit="nats/token"),
    Metric(TEST_PPL, False, ".2f", label="test PPL", unit="lexical"),
    Metric("tokens_per_s", True, ",.0f", label="tokens/s", unit="training"),
    Metric("sentences_per_s", True, ",.1f", label="sentences/s", unit="training"),
    Metric("peak_memory_mb", False, ",.0f", label="peak memory", unit="MB"),
    Metric("lr", fmt=".3g", label="LR", unit="peak"),
    Metric("lr_source", fmt="text", label="LR from"),
    Metric("max_grad_norm", fmt=".3g", label="max grad norm", unit="before clipping"),
    Metric("clipped_fraction", fmt=".0%", label="clipped", unit="of steps"),
    Metric("flags", fmt="text", unit="tgbench/results/flags.py"),
    Metric(MEMORY_TRAIN, fmt=".2f", label="memory read", unit="slots/sentence, training"),
    Metric("train_flops", fmt="si", label="training FLOPs", unit="forward + backward"),
    Metric("compute_budget", fmt="si", label="compute budget", unit="FLOPs, isoFLOP grid"),
    Metric("flops_per_token", fmt="si", label="FLOPs/token", unit="per lexical training token"),
    Metric("train_seconds", fmt=",.0f", label="training time", unit="s, evaluation excluded"),
    Metric("flops_method", fmt="text", label="FLOPs from", unit="counted or measured"),
    Metric("flops_6nd", fmt="si", label="6ND", unit="FLOPs, all parameters"),
    Metric("flops_per_s", fmt="si", label="FLOP/s", unit="achieved in training"),
    Metric("matmul_peak_flops", fmt="si", label="matmul peak", unit="FLOP/s, one device, measured"),
    Metric("peak_fraction", fmt=".2f", label="of peak", unit="achieved / matmul peak"),
    Metric(MEMORY_TEST, fmt=".2f", label="memory read", unit="slots/sentence, test"),
)}


def lexical_tokens_per_step(tokens_seen: Any, steps: Any) -> float | None:
    """tokens_seen / steps of one run (None when either is missing or no step was taken)."""
    try:
        tokens, count = float(tokens_seen), float(steps)
    except (TypeError, ValueError):
        return None
    return tokens / count if count > 0 and np.isfinite(tokens) and np.isfinite(count) else None


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
