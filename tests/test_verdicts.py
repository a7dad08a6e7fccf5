"""The verdict's decision rule, tested for its error rates on synthetic truths.

Every simulated table goes through ``table_verdicts``, the function ``fit_grid`` (and so ``tgbench fit``)
computes its ``verdicts`` with; one table of each kind also goes through ``tgbench fit`` itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tgbench.plan.comparison import comparison_pairs
from tgbench.tasks.stats.fits import fit_grid, table_verdicts
from tgbench.tasks.stats.verdicts import (
    DEPENDS,
    NOT_DISTINGUISHABLE,
    class_average,
    class_every,
    sign_flip_p,
    verdict_classes,
)

DATA = Path(__file__).parent / "data"
BUDGETS = (200_000, 400_000, 800_000)


def synthetic_table(rng: np.random.Generator, *, delta=lambda x: 0.0, replicates: int = 3, sd: float = 0.03,
                    shared_fraction: float = 0.5, scheme: str = "shared", budgets=BUDGETS) -> pd.DataFrame:
    """A results table of models a and b with a known truth: L_a(x) = L_b(x) + delta(x) (nats).

    Each run's loss is the truth plus a seed effect of the model's replicate, shared by every budget (variance
    ``shared_fraction`` sd^2, as when smaller budgets are prefixes of the same seeded order) plus its own noise.
    """
    rows = []
    shared = rng.normal(0.0, sd * np.sqrt(shared_fraction), size=(2, replicates))
    for x in budgets:
        base = (4e4 / x) ** 0.2 * 6.0
        for r in range(replicates):
            for m, label in enumerate(("a", "b")):
                loss = base + (delta(x) if label == "a" else 0.0) + shared[m, r] + \
                    rng.normal(0.0, sd * np.sqrt(1 - shared_fraction))
                rows.append({"run_id": f"{label}-D{x}-s{r}", "adapter": label, "variant": "", "width": 64,
                             "layers": 2, "n_params": 1000 * (m + 1), "tokens": x, "seed": r, "status": "done",
                             "best_val_loss": loss, "test_loss": loss, "seed_scheme": scheme})
    return pd.DataFrame(rows)


def class_rates(n_grids: int, seed: int, **kwargs) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for _ in range(n_grids):
        verdict = table_verdicts(synthetic_table(rng, **kwargs), leave_one_out=False, with_power=False)["verdicts"][0]
        counts[verdict["class"]] = counts.get(verdict["class"], 0) + 1
    return {k: v / n_grids for k, v in counts.items()}


def better_rate(rates: dict[str, float]) -> float:
    return sum(rates.get(c, 0.0) for c in (class_every("a"), class_average("a"), class_every("b"),
                                           class_average("b")))


# ---------------------------------------------------------------------------------------------------------
# (a) size: A = B, seed effects shared across budgets


def test_size_with_shared_seed_effects():
    rates = class_rates(250, seed=1)
    assert better_rate(rates) <= 0.07, rates


@pytest.mark.slow
def test_size_with_shared_seed_effects_many_grids():
    for kwargs in ({}, {"replicates": 5}, {"shared_fraction": 0.9}, {"shared_fraction": 0.0, "scheme": "per-budget"}):
        rates = class_rates(2000, seed=2, **kwargs)
        assert better_rate(rates) <= 0.07, (kwargs, rates)


# ---------------------------------------------------------------------------------------------------------
# (b) power against a crossing: A worse at small budgets, better at large ones


def crossing(slope: float):
    return lambda x: -slope * np.log2(x / 400_000)


def test_crossing_is_depends_on_budget():
    rates = class_rates(100, seed=3, delta=crossing(0.06), shared_fraction=0.0, scheme="per-budget")
    assert rates.get(DEPENDS, 0.0) >= 0.8, rates


@pytest.mark.slow
def test_crossing_is_depends_on_budget_many_grids():
    rates = class_rates(2000, seed=4, delta=crossing(0.06), shared_fraction=0.0, scheme="per-budget")
    assert rates.get(DEPENDS, 0.0) >= 0.8, rates
    # seeds shared across budgets: one slope per replicate, df = replicates - 1, so 5 replicates here
    rates = class_rates(2000, seed=5, delta=crossing(0.06), replicates=5)
    assert rates.get(DEPENDS, 0.0) >= 0.8, rates


def test_constant_advantage_is_better_at_every_budget():
    rates = class_rates(40, seed=6, delta=lambda x: -0.1, shared_fraction=0.0, scheme="per-budget", sd=0.02,
                        replicates=5)
    assert rates.get(class_every("a"), 0.0) >= 0.8, rates


# ---------------------------------------------------------------------------------------------------------
# (d) one outlier run: sensitive_to names it


def test_outlier_run_is_named_by_sensitive_to():
    table = synthetic_table(np.random.default_rng(7), delta=lambda x: -0.1, shared_fraction=0.0,
                            scheme="per-budget", sd=0.02, replicates=5)
    clean = fit_grid(table, n_resamples=0)["verdicts"][0]
    assert clean["class"] == class_every("a") and clean["sensitive_to"] == []
    outlier = "a-D400000-s1"
    table.loc[table["run_id"] == outlier, ["best_val_loss", "test_loss"]] += 0.6
    verdict = fit_grid(table, n_resamples=0)["verdicts"][0]
    assert verdict["class"] != class_every("a")
    # removing a run removes its pair, so its partner (same budget and replicate) is named too
    assert set(verdict["sensitive_to"]) == {outlier, "b-D400000-s1"}


# ---------------------------------------------------------------------------------------------------------
# the fits.json schema and the pieces


def test_verdict_schema_and_only_measured_budgets():
    table = synthetic_table(np.random.default_rng(8), delta=lambda x: -0.05)
    table = table[~((table["adapter"] == "b") & (table["tokens"] == 800_000))]  # b never ran the largest budget
    fits = fit_grid(table, n_resamples=0)
    verdict = fits["verdicts"][0]
    assert {"a", "b", "class", "delta_mean", "delta_ci", "p_value", "interaction_p", "per_budget",
            "sensitive_to"} <= set(verdict)
    assert verdict["class"] in verdict_classes("a", "b")
    assert [p["x"] for p in verdict["per_budget"]] == [200_000, 400_000]
    assert all({"x", "delta_mean", "delta_ci", "p_value", "n"} <= set(p) for p in verdict["per_budget"])
    power = fits["power"][0]
    assert power["a"] == "a" and power["min_detectable_delta"] > 0 and power["replicates_needed"] >= 2
    assert fits["design"]["seed_scheme"] == "shared"
    json.dumps(fits, allow_nan=False)


def test_sign_flip_p_is_exact():
    assert sign_flip_p(np.array([-1.0, -2.0, -3.0])) == pytest.approx(0.25)  # the smallest with 3 replicates
    assert sign_flip_p(np.array([1.0, -1.0])) == pytest.approx(1.0)


def test_default_pairs_reference_and_baselines():
    assert comparison_pairs(["gpt2", "tg", "lstm"]) == [("tg", "gpt2"), ("tg", "lstm")]
    assert comparison_pairs(["lstm", "gpt2"]) == [("lstm", "gpt2")]
    assert comparison_pairs(["tg", "gpt2", "lstm"], reference="lstm", baselines=["gpt2"]) == [("lstm", "gpt2")]


def test_table_without_seed_scheme_is_analysed_as_shared():
    table = synthetic_table(np.random.default_rng(9)).drop(columns="seed_scheme")
    fits = fit_grid(table, n_resamples=0)
    assert fits["design"]["seed_scheme"] == "shared" and "assumed" in fits["design"]["source"]
    assert fits["verdicts"][0]["unit"] == "replicate"


# ---------------------------------------------------------------------------------------------------------
# the committed cpu-study report, re-fitted from its runs table


def test_cpu_study_refit_from_its_results_table(tmp_path):
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    shutil.copy(DATA / "cpu-study-results.csv", tmp_path / "results.csv")  # nothing else in the directory
    result = CliRunner().invoke(app, ["fit", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fits = json.loads((tmp_path / "fits.json").read_text())
    classes = {(v["a"], v["b"]): v for v in fits["verdicts"]}
    boundary = classes[("tg", "gpt2-boundary")]
    assert boundary["class"] == DEPENDS
    assert boundary["per_budget"][0]["delta_mean"] > 0 > boundary["per_budget"][-1]["delta_mean"]
    gpt2 = classes[("tg", "gpt2")]
    assert gpt2["n_lower"] == 9 and gpt2["class"] == NOT_DISTINGUISHABLE  # 3 replicates: p = 0.09
    assert "gpt2-w128-l4-D800000-s2" in gpt2["sensitive_to"]
    assert "depends on budget" in result.output and "power tg vs gpt2" in result.output
    assert len(pd.read_csv(tmp_path / "results.csv")) == 27  # the table was fitted as it is, not rebuilt


def test_one_replicate_power_entry_has_a_sentence_for_tgbench_fit():
    from tgbench.tasks.stats.fits import summary_lines
    from tgbench.tasks.stats.verdicts import power_analysis

    result = {"pooled": {"sd": None, "mean": 0.05}, "n_units": 1, "unit": "replicate",
              "per_budget": [{"n": 1}, {"n": 1}]}
    power = power_analysis(result, "per-budget", "tg", "rmt")
    assert "no seed variance" in power["sentence"]
    assert summary_lines({"power": [power]}) == [f"power {power['sentence']}"]
