"""Run flags (tgbench/results/flags.py): each rule fires on what it is for and rarely on clean runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tgbench.results.flags import curve_flags, hampel_spikes, join_flags, split_flags, table_flags

DATA = Path(__file__).parent / "data"


def _curve(rng, n=60, spike_at=None):
    loss = 6.0 * np.exp(-np.arange(n) / 25) + 3.0 + rng.normal(0, 0.01, n)
    if spike_at is not None:
        loss[spike_at] += 1.0
    return loss


def test_hampel_finds_a_training_spike_and_not_a_clean_falling_curve():
    rng = np.random.default_rng(0)
    assert hampel_spikes(_curve(rng, spike_at=30)).tolist() == [30]
    clean = sum(hampel_spikes(_curve(rng)).size > 0 for _ in range(200))
    assert clean <= 10  # <= 5% of clean curves


def test_curve_flags_from_metrics_records():
    rng = np.random.default_rng(1)
    records = [{"step": i, "train_lexical_loss": float(v)} for i, v in enumerate(_curve(rng, spike_at=40))]
    assert curve_flags(records) == ["spike"]
    val = [{"step": 10, "val_loss": 4.0}, {"step": 20, "val_loss": 3.5}, {"step": 30, "val_loss": 3.7}]
    assert curve_flags(val) == ["diverged"]  # 0.2 nats above its running minimum
    assert curve_flags([{"val_loss": 4.0}, {"val_loss": 3.95}]) == []
    assert curve_flags([{"train_lexical_loss": math.nan}]) == ["diverged"]


def _table(rng, seeds=3, outlier=None):
    rows = []
    for t in (2e5, 4e5, 8e5):
        for s in range(seeds):
            rows.append({"run_id": f"a-D{t:.0f}-s{s}", "label": "a", "width": 64, "layers": 2, "tokens": t,
                         "loss": 6 * (4e4 / t) ** 0.2 + rng.normal(0, 0.03)})
    frame = pd.DataFrame(rows)
    if outlier is not None:
        frame.loc[frame["run_id"] == outlier, "loss"] += 0.3  # 10 seed SDs
    return frame


def test_cell_outlier_rate_on_clean_tables_and_detection():
    rng = np.random.default_rng(2)
    flagged = runs = found = 0
    for _ in range(150):
        frame = _table(rng)
        flagged += sum("cell-outlier" in f for f in table_flags(frame).values())
        runs += len(frame)
        found += "cell-outlier" in table_flags(_table(rng, outlier="a-D400000-s1")).get("a-D400000-s1", [])
    assert flagged / runs <= 0.02
    assert found / 150 >= 0.75


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-9)


def test_flags_cell_round_trip():
    assert join_flags(["cell-outlier", "spike"], ["spike", "x"]) == "spike;cell-outlier;x"
    assert split_flags("spike;cell-outlier") == ["spike", "cell-outlier"] and split_flags(float("nan")) == []
    assert split_flags("spike;cook") == ["spike"]  # a flag of earlier versions (Cook's distance on a Kaplan fit)


def test_cooks_distance_is_the_verdicts_influence_not_a_run_flag(tmp_path):
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    shutil.copy(DATA / "cpu-study-results.csv", tmp_path / "results.csv")
    assert CliRunner().invoke(app, ["fit", str(tmp_path)]).exit_code == 0
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert not any("cook" in flags for flags in fits["flags"].values())
    for verdict in fits["verdicts"]:
        assert all(entry["cooks_distance"] is not None for entry in verdict["influential"])
