"""Scaling-law fits: parameter recovery on synthetic data, multipliers, failures, bootstrap and fits.json."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from tgbench.tasks.stats.bootstrap import multiplier
from tgbench.tasks.stats.fits import fit_grid, write_fits
from tgbench.tasks.stats.laws import fit_joint, fit_power_law

X = np.geomspace(1e7, 5e7, 5)  # token budgets


def _noisy(y, scale=1e-5, seed=0):
    return y * np.exp(np.random.default_rng(seed).normal(0.0, scale, np.shape(y)))


def _close(got: dict, want: dict, rtol=0.05):
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=rtol), (k, got, want)


def test_kaplan_recovers_parameters():
    fit = fit_power_law(X, _noisy((8.8e13 / X) ** 0.08), "kaplan")
    assert fit.converged and fit.reason == ""
    _close(fit.params, {"x_c": 8.8e13, "alpha": 0.08})
    assert fit.predict(X) == pytest.approx((8.8e13 / X) ** 0.08, rel=1e-4)
    assert fit.inverse(fit.predict(X)) == pytest.approx(X, rel=1e-6)


def test_saturating_recovers_parameters():
    x = np.geomspace(1e6, 1e8, 6)
    fit = fit_power_law(x, _noisy(1.7 + 400 * x ** -0.35), "saturating")
    assert fit.converged
    _close(fit.params, {"E": 1.7, "A": 400.0, "alpha": 0.35})


def test_joint_recovers_parameters():
    n, d = (a.ravel() for a in np.meshgrid([1e6, 4e6, 1.6e7], [1e7, 3e7, 1e8]))
    truth = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
    loss = truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]
    fit = fit_joint(n, d, _noisy(loss))
    assert fit.converged and fit.form == "joint"
    _close(fit.params, truth)
    assert fit.predict(np.stack([n, d], axis=1)) == pytest.approx(loss, rel=1e-3)


@pytest.mark.parametrize("form", ["kaplan", "saturating"])
def test_multiplier_recovers_known_shift(form):
    # B(x) = A(x / 1.3): B needs 1.3x the data to reach A's loss
    curve = (lambda x: (8.8e13 / x) ** 0.08) if form == "kaplan" else (lambda x: 1.7 + 400 * x ** -0.35)
    fit_a = fit_power_law(X, curve(X), form)
    fit_b = fit_power_law(X, curve(X / 1.3), form)
    points = multiplier(fit_a, fit_b, X, (X.min(), X.max()))
    assert [p["status"] for p in points] == ["ok"] * len(X)
    assert [p["multiplier"] for p in points] == pytest.approx([1.3] * len(X), rel=0.05)
    # 1.3 x max(X) lies beyond B's measured budgets, 1.3 x min(X) inside them
    assert points[-1]["extrapolated"] and not points[0]["extrapolated"]


def test_not_reachable_below_asymptote():
    fit_a = fit_power_law(X, 1.0 + 40 * X ** -0.35, "saturating")  # between 1.0 and 1.15
    fit_b = fit_power_law(X, 2.0 + 400 * X ** -0.35, "saturating")  # never below 2.0
    assert fit_b.params["E"] == pytest.approx(2.0, rel=0.01)
    points = multiplier(fit_a, fit_b, X, (X.min(), X.max()))
    assert all(p["status"] == "not reachable" and p["multiplier"] is None for p in points)
    assert np.isnan(fit_b.inverse(1.5))


def test_extrapolation_flag_follows_b_range():
    fit = fit_power_law(X, (8.8e13 / X) ** 0.08)
    inside = multiplier(fit, fit, [2e7], (1e7, 5e7))[0]
    outside = multiplier(fit, fit, [2e7], (3e7, 5e7))[0]
    assert inside["multiplier"] == pytest.approx(1.0) and not inside["extrapolated"]
    assert outside["extrapolated"]


def test_too_few_points_is_an_explicit_failure():
    fit = fit_power_law([1e7, 2e7, 1e7, 2e7], [3.0, 2.9, 3.01, 2.91], "saturating")
    assert not fit.converged and "3 parameters" in fit.reason and fit.params == {}
    assert np.isnan(fit.predict([1e7])).all()
    d = fit.to_dict()
    assert d["converged"] is False and d["reason"]
    json.dumps(d, allow_nan=False)
    good = fit_power_law(X, (8.8e13 / X) ** 0.08)
    assert [p["status"] for p in multiplier(good, fit, X, (1e7, 2e7))] == ["fit failed"] * len(X)


def test_loss_rising_with_x_does_not_converge():
    fit = fit_power_law(X, 2.0 + 1e-9 * X, "kaplan")  # alpha would have to be negative
    assert not fit.converged and "alpha" in fit.reason


@pytest.mark.parametrize(
    ("x", "loss", "needle"),
    [
        ([1e7, 2e7, 4e7], [3.0, -0.5, 2.8], "-0.5"),
        ([1e7, np.nan, 4e7], [3.0, 2.9, 2.8], "nan"),
        ([0.0, 2e7, 4e7], [3.0, 2.9, 2.8], "0.0"),
        ([1e7, 1e7, 1e7], [3.0, 2.9, 2.8], "10000000.0"),
    ],
)
def test_bad_data_raises_naming_the_value(x, loss, needle):
    with pytest.raises(ValueError) as err:
        fit_power_law(x, loss)
    assert needle in str(err.value)


def _results(adapters=(("tg", 1.0), ("gpt2", 1.3)), widths=((48, 3.4e5),), budgets=(1e7, 2e7, 4e7, 8e7),
             seeds=(0, 1), noise=3e-3) -> pd.DataFrame:
    """A results table whose losses follow L = 1 + 200 (N/s)^-0.3 + 300 (D/s)^-0.3, s = the adapter's shift."""
    rng = np.random.default_rng(0)
    rows = []
    for adapter, shift in adapters:
        for width, n in widths:
            for d in budgets:
                for seed in seeds:
                    loss = (1.0 + 200 * (n / shift) ** -0.3 + 300 * (d / shift) ** -0.3) * np.exp(rng.normal(0, noise))
                    rows.append({"run_id": f"{adapter}-{width}-{d:.0f}-{seed}", "adapter": adapter, "variant": "",
                                 "width": width, "layers": 4, "n_params": n, "tokens": d, "seed": seed,
                                 "status": "done", "best_val_loss": loss * 1.01, "test_loss": loss})
    return pd.DataFrame(rows)


def test_bootstrap_interval_contains_truth_and_is_deterministic():
    # only the data axis: each adapter's budgets shift by the same factor, so m_D = 1.3 at every budget
    # a huge N makes the parameter term negligible; 2 seeds x 4 budgets = 8 rows per adapter
    df = _results(widths=((48, 1e12),))
    first = fit_grid(df, n_resamples=20, seed=1)
    # the losses follow the saturating form (E = 1 + a negligible N term), so its intervals must cover m = 1.3
    mult = first["multipliers"]["data"]["tg"]["gpt2"]["width=48,layers=4"]["saturating"]
    assert mult["n_resamples"] == 20 and 0.0 <= mult["failed_fraction"] < 0.5
    for p in mult["points"]:
        assert p["status"] == "ok"
        assert p["ci_low"] <= 1.3 <= p["ci_high"]
        assert p["ci_low"] < p["value"] < p["ci_high"]
    fit = first["axes"]["data"]["tg"]["width=48,layers=4"]["kaplan"]
    assert fit["intervals"]["alpha"][0] < fit["params"]["alpha"] < fit["intervals"]["alpha"][1]
    assert fit_grid(df, n_resamples=20, seed=1) == first
    assert fit_grid(df, n_resamples=20, seed=2)["multipliers"] != first["multipliers"]


def test_fit_grid_two_adapters_is_json_and_fast():
    df = _results(widths=((48, 3.4e5), (96, 1.3e6), (192, 5.3e6)), budgets=(1e7, 2e7, 5e7))
    df.loc[0, "test_loss"] = np.nan  # falls back to best_val_loss for that run
    df.loc[1, "status"] = "failed"
    start = time.perf_counter()
    fits = fit_grid(df, n_resamples=5, seed=0)
    elapsed = time.perf_counter() - start
    text = json.dumps(fits, allow_nan=False)
    assert elapsed < 10.0, elapsed
    assert json.loads(text) == fits
    assert fits["loss_column"] == "mixed" and fits["pairs"] == [["tg", "gpt2"]] and fits["reference"] == "tg"
    assert {p["loss_source"] for p in fits["points"] if p["run_id"] == df.loc[0, "run_id"]} == {"best_val_loss"}
    assert df.loc[1, "run_id"] not in {p["run_id"] for p in fits["points"]}
    assert set(fits["axes"]["data"]["tg"]) == {"width=48,layers=4", "width=96,layers=4", "width=192,layers=4"}
    assert set(fits["axes"]["params"]["gpt2"]) == {"tokens=10000000.0", "tokens=20000000.0", "tokens=50000000.0"}
    for axis in ("data", "params"):
        assert len(fits["multipliers"][axis]["tg"]["gpt2"]) == 3
        for by_form in fits["multipliers"][axis]["tg"]["gpt2"].values():
            lo, hi = by_form["kaplan"]["range"]
            assert 1.0 < lo <= hi  # gpt2 is the shifted (worse) adapter
    assert fits["joint"]["tg"]["converged"] and fits["joint"]["tg"]["form"] == "joint"


def test_fit_grid_records_bad_group_and_continues():
    df = _results(widths=((48, 1e12),))
    df.loc[df.index[-1], "test_loss"] = -1.0  # the last row is a gpt2 run
    fits = fit_grid(df, n_resamples=0)
    bad = fits["axes"]["data"]["gpt2"]["width=48,layers=4"]["kaplan"]
    assert bad["converged"] is False and "-1.0" in bad["reason"]
    assert fits["axes"]["data"]["tg"]["width=48,layers=4"]["kaplan"]["converged"]
    assert any("bad data" in n for n in fits["notes"])


def test_fit_grid_missing_columns_raises():
    with pytest.raises(ValueError, match="tokens"):
        fit_grid(_results().drop(columns=["tokens"]))


def test_write_fits_atomically(tmp_path):
    _results(widths=((48, 1e12),)).to_csv(tmp_path / "results.csv", index=False)
    out = write_fits(tmp_path, n_resamples=5)
    assert out == tmp_path / "fits.json"
    fits = json.loads(out.read_text())
    assert fits["version"] == 4 and fits["multipliers"]["data"]["tg"]["gpt2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits.json", "results.csv"]


def _coverage(form: str, n_grids: int, budgets, seeds: int, noise: float = 0.03) -> dict[str, float]:
    """Share of synthetic grids whose 95% intervals cover the true alpha and the true multiplier m = 1.3.

    Each grid: adapters A and B on one data axis, B(x) = A(x / 1.3), multiplicative log-normal noise.
    """
    from tgbench.tasks.stats.bootstrap import bootstrap_fit, pair_multiplier

    truth = {"kaplan": lambda x: (8.8e13 / x) ** 0.08, "saturating": lambda x: 1.7 + 400 * x ** -0.35}[form]
    alpha_true = {"kaplan": 0.08, "saturating": 0.35}[form]
    x = np.repeat(np.asarray(budgets, dtype=float), seeds)
    rng = np.random.default_rng(123)
    hits = {"alpha": 0, "m": 0}
    for _ in range(n_grids):
        y_a = truth(x) * np.exp(rng.normal(0, noise, x.size))
        y_b = truth(x / 1.3) * np.exp(rng.normal(0, noise, x.size))
        fa = bootstrap_fit(x, y_a, form, 200, rng)
        fb = bootstrap_fit(x, y_b, form, 200, rng)
        lo, hi = fa.fit.intervals["alpha"]
        hits["alpha"] += lo <= alpha_true <= hi
        point = pair_multiplier(fa, fb, [float(np.median(budgets))], (min(budgets), max(budgets)))["points"][0]
        hits["m"] += point["ci_low"] is not None and point["ci_low"] <= 1.3 <= point["ci_high"]
    return {k: v / n_grids for k, v in hits.items()}


def test_interval_coverage_kaplan_two_seeds_three_percent_noise():
    # nominal 95% intervals must cover >= 90% with 3% noise and 2 seeds per cell
    coverage = _coverage("kaplan", 300, np.geomspace(1e7, 8e7, 4), seeds=2)
    assert coverage["alpha"] >= 0.90 and coverage["m"] >= 0.90, coverage


@pytest.mark.slow
def test_interval_coverage_saturating_and_one_seed():
    sat = _coverage("saturating", 200, np.geomspace(1e6, 1e8, 5), seeds=2)
    single = _coverage("kaplan", 300, np.geomspace(1e7, 8e7, 5), seeds=1)
    assert min(sat.values()) >= 0.90 and min(single.values()) >= 0.90, (sat, single)


def test_exactly_determined_fit_has_no_interval():
    df = _results(widths=((48, 1e12),), budgets=(1e7, 2e7, 4e7))
    fits = fit_grid(df, n_resamples=20)
    sat = fits["axes"]["data"]["tg"]["width=48,layers=4"]["saturating"]
    assert sat["status"] == "exactly determined, no interval" and not sat["intervals"]
    mult = fits["multipliers"]["data"]["tg"]["gpt2"]["width=48,layers=4"]["saturating"]
    assert all(p["ci_low"] is None for p in mult["points"]) and mult["interval_basis"] == "none"
    kap = fits["axes"]["data"]["tg"]["width=48,layers=4"]["kaplan"]
    assert kap["status"] == "ok" and kap["intervals"]["alpha"][0] < kap["intervals"]["alpha"][1]


def test_every_label_is_compared_with_tg_by_default():
    df = _results(adapters=(("gpt2", 1.3), ("tg", 1.0)), widths=((48, 1e12),))
    boundary = _results(adapters=(("gpt2", 1.2),), widths=((48, 1e12),)).assign(variant="boundary")
    fits = fit_grid(pd.concat([df, boundary], ignore_index=True), n_resamples=5)
    assert fits["reference"] == "tg" and fits["pairs"] == [["tg", "gpt2"], ["tg", "gpt2/boundary"]]
    assert set(fits["multipliers"]["data"]["tg"]) == {"gpt2", "gpt2/boundary"}


@pytest.mark.parametrize(("pairs", "needle"), [([("tg", "llama")], "llama"), ([("tg", "tg")], "itself"),
                                               (["tg"], "two labels")])
def test_bad_pairs_are_user_errors(pairs, needle):
    from tgbench.core.errors import UserError

    with pytest.raises(UserError, match=needle):
        fit_grid(_results(widths=((48, 1e12),)), pairs=pairs, n_resamples=0)


@pytest.mark.parametrize("n", [-1, 10**9, 2.5, "many"])
def test_bad_resamples_are_user_errors(n):
    from tgbench.core.errors import UserError

    with pytest.raises(UserError):
        fit_grid(_results(widths=((48, 1e12),)), n_resamples=n)
