"""Multipliers whose intervals include lack of fit, the lack-of-fit F test, and fit forms as registered classes.

Coverage: truths that are not Kaplan power laws (quadratic in log-log, and saturating),
fitted with Kaplan by the code ``tgbench fit`` runs (``kaplan_multiplier``, which ``fit_grid`` calls). A is B
with k times the data, so the true multiplier is k at every budget.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tgbench.tasks.stats.fits import fit_grid
from tgbench.tasks.stats.laws import FIT_FORMS, FitForm, Kaplan, get_form
from tgbench.tasks.stats.multipliers import interpolated_multiplier, kaplan_multiplier, lack_of_fit

DATA = Path(__file__).parent / "data"
K = 1.3
MID = math.log(8e5)
TRUTHS = {
    "curved": lambda x: np.exp(1.8 - 0.08 * (np.log(x) - MID) + 0.02 * (np.log(x) - MID) ** 2),
    "saturating": lambda x: 2.0 + 600 * x ** -0.4,
}


def coverage(truth, n_grids: int, budgets: int, sd: float, seed: int, seeds: int = 3, which=kaplan_multiplier):
    rng = np.random.default_rng(seed)
    x = np.repeat(2e5 * 2.0 ** np.arange(budgets), seeds)
    cover, have = np.zeros(budgets), np.zeros(budgets)
    for _ in range(n_grids):
        ya = truth(K * x) * np.exp(rng.normal(0, sd, x.size))
        yb = truth(x) * np.exp(rng.normal(0, sd, x.size))
        for i, p in enumerate(which(x, ya, x, yb)["points"]):
            if p["ci_low"] is not None:
                have[i] += 1
                cover[i] += p["ci_low"] <= K <= p["ci_high"]
    return cover / np.maximum(have, 1), have


@pytest.mark.parametrize("truth", sorted(TRUTHS))
def test_kaplan_interval_covers_the_true_multiplier_of_a_curved_truth(truth):
    for budgets in (3, 5):
        rate, have = coverage(TRUTHS[truth], 150, budgets, 0.01, seed=budgets)
        assert have.min() == 150 and rate.min() >= 0.9, (truth, budgets, rate)


@pytest.mark.slow
@pytest.mark.parametrize("truth", sorted(TRUTHS))
def test_kaplan_interval_coverage_many_grids(truth):
    for budgets in (3, 4, 5):
        for sd in (0.003, 0.01, 0.03):
            rate, _ = coverage(TRUTHS[truth], 1000, budgets, sd, seed=budgets * 100 + int(sd * 1000))
            assert rate.min() >= 0.9, (truth, budgets, sd, rate)


def test_interpolated_multiplier_never_extrapolates_and_covers_with_precise_runs():
    rate, have = coverage(TRUTHS["curved"], 150, 5, 0.003, seed=11, which=interpolated_multiplier)
    assert have[-1] <= 8  # A at the largest budget is (almost always) below every loss B measured: no value
    assert rate[:-1].min() >= 0.9, rate


def test_lack_of_fit_f_test():
    x = np.repeat([1.0, 2.0, 4.0], 3)
    noise = np.tile([-0.01, 0.0, 0.01], 3)
    bent = np.array([0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0]) + noise
    line = np.polyval(np.polyfit(np.log(x), bent, 1), np.log(x))
    lof = lack_of_fit(x, bent, line, 2)
    ss_pe = 3 * 2 * 0.01 ** 2
    assert lof["df1"] == 1 and lof["df2"] == 6 and lof["ss_pe"] == pytest.approx(ss_pe)
    assert lof["F"] == pytest.approx((lof["ss_lof"] / 1) / (ss_pe / 6)) and lof["p_value"] < 0.05
    assert "does not describe these points" in lof["sentence"]
    assert lack_of_fit([1.0, 2.0, 4.0], [0.0, 0.1, 0.0], [0.0, 0.05, 0.05], 2) is None  # no replicates


def test_cpu_study_lack_of_fit_and_saturating_bound(tmp_path):
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    shutil.copy(DATA / "cpu-study-results.csv", tmp_path / "results.csv")
    assert CliRunner().invoke(app, ["fit", str(tmp_path)]).exit_code == 0
    fits = json.loads((tmp_path / "fits.json").read_text())
    boundary = fits["axes"]["data"]["gpt2-boundary"]["width=128,layers=4"]
    lof = boundary["kaplan"]["lack_of_fit"]
    assert (lof["df1"], lof["df2"]) == (1, 6) and lof["F"] == pytest.approx(21.7, abs=0.05)  # as the issue measured
    assert any("lack of fit, data axis gpt2-boundary" in n for n in fits["notes"])
    saturating = boundary["saturating"]
    assert saturating["status"] == "fit failed" and "E sits on its lower bound" in saturating["reason"]
    assert saturating["params"] == {}
    mult = fits["multipliers"]["data"]["tg"]["gpt2"]["width=128,layers=4"]
    assert mult["kaplan"]["interval_basis"] == "analytic" and mult["interpolated"]["points"][-1]["value"] is None


class ShiftedKaplan(FitForm):
    """L(x) = (x_c / x)^alpha + 1: a form added as one class (for the test)."""

    name = "shifted-kaplan"
    param_names = ("x_c", "alpha")

    def predict(self, params, x):
        return Kaplan().predict(params, x) + 1.0

    def inverse(self, params, loss):
        return Kaplan().inverse(params, np.asarray(loss, dtype=float) - 1.0)

    def fit(self, x, y, n_distinct, **options):
        out = Kaplan().fit(x, y - 1.0, n_distinct)
        out.form, out.y = self.name, list(y)
        return out


def test_a_new_fit_form_is_one_class(monkeypatch, tmp_path):
    monkeypatch.setitem(FIT_FORMS, ShiftedKaplan.name, ShiftedKaplan())
    rows = [{"run_id": f"{m}-{x}-{s}", "adapter": m, "variant": "", "width": 8, "layers": 2, "n_params": 100,
             "tokens": x, "seed": s, "status": "done", "best_val_loss": 1.0 + (3e5 / (x * (1.2 if m == "tg" else 1)))
             ** 0.1 * (1 + 0.002 * s)} for m in ("tg", "gpt2") for x in (1e5, 2e5, 4e5, 8e5) for s in (0, 1)]
    fits = fit_grid(pd.DataFrame(rows), n_resamples=20)
    fit = fits["axes"]["data"]["tg"]["width=8,layers=2"]["shifted-kaplan"]
    assert fit["status"] == "ok" and fit["params"]["alpha"] == pytest.approx(0.1, rel=0.05)
    points = fits["multipliers"]["data"]["tg"]["gpt2"]["width=8,layers=2"]["shifted-kaplan"]["points"]
    assert all(p["value"] == pytest.approx(1.2, rel=0.03) for p in points)
    assert get_form("shifted-kaplan").name == "shifted-kaplan"


def test_unknown_form_is_a_user_error(tmp_path, monkeypatch, capsys):
    import sys

    from tgbench.cli.app import main

    shutil.copy(DATA / "cpu-study-results.csv", tmp_path / "results.csv")
    monkeypatch.setattr(sys, "argv", ["tgbench", "fit", str(tmp_path), "--form", "kaplam"])
    with pytest.raises(SystemExit) as exit_:
        main()
    output = capsys.readouterr()
    assert exit_.value.code == 2 and "did you mean 'kaplan'" in output.out + output.err
    assert not (tmp_path / "fits.json").exists()
