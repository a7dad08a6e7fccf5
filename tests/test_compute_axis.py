"""The compute and size axes of the verdict: pairs at equal training FLOPs (interpolated in log-log within B's
measured range, or direct on an isoFLOP grid), pairs at equal width, and fits.json's ``by_axis`` and k_C.

The truths are synthetic tables with a known loss per token and a known cost per token, run through
`table_verdicts` / `fit_grid`, the code `tgbench fit` runs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tgbench.cli.app import app
from tgbench.tasks.stats.fits import fit_grid, summary_lines, table_verdicts
from tgbench.tasks.stats.paired import compute_pairs, size_pairs

BUDGETS = (100_000, 200_000, 400_000, 800_000)
ALPHA_D = 0.2  # L(D) = 6 (4e4 / D)^0.2 + noise


def loss_at(tokens: float) -> float:
    return 6.0 * (4e4 / tokens) ** ALPHA_D


def table(rng: np.random.Generator, *, cost_a: float, cost_b: float = 1.0, delta: float = 0.0, sd: float = 0.01,
          replicates: int = 3, budgets=BUDGETS, iso: bool = False) -> pd.DataFrame:
    """Models a and b with L_a(D) = L(D) + delta, L_b(D) = L(D); training FLOPs = cost x 1e6 x D (x 1.01 noise).

    With ``iso``, `budgets` are compute budgets: each model's tokens are solved from its cost, and the table has
    a ``compute_budget`` column as an isoFLOP grid writes it.
    """
    rows = []
    for x in budgets:
        for r in range(replicates):
            for label, cost, shift in (("a", cost_a, delta), ("b", cost_b, 0.0)):
                tokens = x / (cost * 1e6) if iso else x
                flops = cost * 1e6 * tokens * (1.0 + 0.01 * rng.standard_normal())
                loss = loss_at(tokens) + shift + sd * rng.standard_normal()
                row = {"run_id": f"{label}-{x}-s{r}", "adapter": label, "variant": "", "width": 64, "layers": 2,
                       "n_params": 1000, "tokens": tokens, "seed": r, "status": "done", "best_val_loss": loss,
                       "test_loss": loss, "seed_scheme": "per-budget", "train_flops": flops}
                if iso:
                    row["compute_budget"] = x
                rows.append(row)
    return pd.DataFrame(rows)


def rows_of(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(label=df["adapter"], loss=df["test_loss"])


def verdict_on(df: pd.DataFrame, axis: str) -> dict:
    return table_verdicts(df, axis=axis, leave_one_out=False, with_power=False)["verdicts"][0]


def test_interpolation_is_exact_on_a_power_law_and_never_extrapolates():
    """B's loss is a power law in C, so log-log interpolation between its runs is exact: with no noise, the pairs'
    differences are exactly A's loss minus B's law at A's compute; A's runs beyond B's largest compute are
    left out."""
    df = table(np.random.default_rng(0), cost_a=1.5, sd=0.0)
    df["train_flops"] = np.where(df["adapter"] == "a", 1.5e6, 1e6) * df["tokens"]  # no FLOP noise
    pairs, group, how = compute_pairs(rows_of(df), "a", "b")
    assert how == "interpolated" and group == "width=64,layers=2"
    # A's 800k run costs 1.2e12, beyond B's 8e11: 3 budgets x 3 replicates remain
    assert sorted(set(pairs.x)) == pytest.approx([1.5e11, 3e11, 6e11])
    assert len(pairs) == 9
    for x, d in zip(pairs.x, pairs.d, strict=True):
        tokens_a = x / 1.5e6
        expected = loss_at(tokens_a) - loss_at(x / 1e6)  # B at A's compute trained x / 1e6 tokens
        assert d == pytest.approx(expected, abs=1e-9)


def test_equal_data_and_equal_compute_disagree_for_a_costlier_model():
    """Same loss per token, 1.5x the FLOPs per token: not distinguishable at equal data, B better at equal
    compute (B reaches A's loss with two thirds of A's compute: k_C about 1.5^(-1) ... below 1)."""
    df = table(np.random.default_rng(1), cost_a=1.5)
    assert verdict_on(df, "tokens")["class"] == "not distinguishable"
    at_compute = verdict_on(df, "flops")
    assert at_compute["class"].startswith("b better"), at_compute["class"]
    assert at_compute["delta_mean"] > 0.1


def test_an_advantage_per_token_that_its_cost_cancels():
    """A is better per token by exactly what B gains from A's extra compute: better at equal data, and at equal
    compute the test sees no difference."""
    cost = 1.3
    delta = lambda tokens: loss_at(tokens * cost) - loss_at(tokens)  # noqa: E731
    rng = np.random.default_rng(2)
    df = table(rng, cost_a=cost)
    a = df["adapter"] == "a"
    df.loc[a, "test_loss"] = df.loc[a, "test_loss"] + df.loc[a, "tokens"].map(delta)
    df["best_val_loss"] = df["test_loss"]
    assert verdict_on(df, "tokens")["class"].startswith("a better")
    assert verdict_on(df, "flops")["class"] == "not distinguishable"


def test_isoflop_grid_pairs_directly_by_compute_budget():
    df = table(np.random.default_rng(3), cost_a=1.5, iso=True, budgets=(1.5e11, 3e11, 6e11))
    pairs, group, how = compute_pairs(rows_of(df), "a", "b")
    assert how == "direct" and len(pairs) == 9
    assert sorted(set(pairs.x)) == pytest.approx([1.5e11, 3e11, 6e11])
    # A trained 1/1.5 of B's tokens at every compute budget: B is better by the law's gap
    assert verdict_on(df, "flops")["class"].startswith("b better")


def test_without_train_flops_there_is_no_compute_verdict_and_a_note():
    df = table(np.random.default_rng(4), cost_a=1.0).drop(columns=["train_flops"])
    out = table_verdicts(df, leave_one_out=False, with_power=False)
    assert set(out["by_axis"]) == {"tokens"}
    with pytest.raises(Exception, match="flops"):
        table_verdicts(df, axis="bogus", leave_one_out=False, with_power=False)


def test_size_pairs_take_the_budget_with_most_widths():
    rng = np.random.default_rng(5)
    parts = []
    for width, n in ((64, 1e5), (128, 4e5), (192, 9e5)):
        part = table(rng, cost_a=1.0, budgets=(100_000,)).assign(width=width, n_params=n)
        part.loc[part["adapter"] == "a", "n_params"] = n * 1.04
        part["run_id"] = part["run_id"] + f"-w{width}"
        parts.append(part)
    df = pd.concat(parts + [table(rng, cost_a=1.0, budgets=(200_000,))], ignore_index=True)
    pairs, group = size_pairs(rows_of(df), "a", "b")
    assert group == "tokens=100000,layers=2"
    assert sorted(set(pairs.x)) == pytest.approx([1.04e5, 4.16e5, 9.36e5])  # A's N at each width
    assert verdict_on(df, "params")["class"] == "not distinguishable"


def test_fit_grid_writes_every_axis_and_k_c():
    df = table(np.random.default_rng(6), cost_a=1.5)
    fits = fit_grid(df, n_resamples=50, axis="flops")
    assert fits["axis"] == "flops" and set(fits["by_axis"]) == {"tokens", "flops"}
    assert fits["verdicts"] == fits["by_axis"]["flops"]["verdicts"]
    k_c = fits["multipliers"]["compute"]["a"]["b"]["width=64,layers=2"]["interpolated"]
    # B reaches A's loss with A's tokens, i.e. 1/1.5 of A's compute
    values = [p["value"] for p in k_c["points"] if p["status"] == "ok"]
    assert len(values) >= 2 and np.median(values) == pytest.approx(1 / 1.5, rel=0.05)
    assert all(p["ci_low"] <= p["value"] <= p["ci_high"] for p in k_c["points"] if p["status"] == "ok")
    m_d = fits["multipliers"]["data"]["a"]["b"]["width=64,layers=2"]["interpolated"]
    assert np.median([p["value"] for p in m_d["points"] if p["status"] == "ok"]) == pytest.approx(1.0, rel=0.05)
    text = "\n".join(summary_lines(fits))
    assert "k_C" in text and "at equal data a vs b" in text
    json.dumps(fits, allow_nan=False)


def test_cli_fit_axis_flops_writes_equal_compute_verdicts(tmp_path):
    table(np.random.default_rng(7), cost_a=1.5).to_csv(tmp_path / "results.csv", index=False)
    result = CliRunner().invoke(app, ["fit", str(tmp_path), "--axis", "flops", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert fits["axis"] == "flops" and fits["verdicts"][0]["axis"] == "flops"
    assert "compute" in fits["multipliers"]
    bad = CliRunner().invoke(app, ["fit", str(tmp_path), "--axis", "time"])
    assert bad.exit_code != 0 and "use one of tokens, flops, params" in str(bad.exception)
    assert math.isfinite(fits["verdicts"][0]["delta_mean"])


def test_report_shows_equal_compute_beside_equal_data_and_loss_vs_flops(tmp_path):
    df = table(np.random.default_rng(8), cost_a=1.5)
    df = df.assign(label=df["adapter"], flops_per_token=df["train_flops"] / df["tokens"], train_seconds=10.0,
                   flops_per_s=df["train_flops"] / 10.0, matmul_peak_flops=5e10,
                   peak_fraction=df["train_flops"] / 10.0 / 5e10, tokens_per_s=1000.0, sentences_per_s=50.0,
                   peak_memory_mb=100.0)
    df.to_csv(tmp_path / "results.csv", index=False)
    runner = CliRunner()
    assert runner.invoke(app, ["fit", str(tmp_path), "--resamples", "20"]).exit_code == 0
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert "<strong>At equal data:</strong>" in html
    assert "<strong>At equal compute:</strong> <span class=\"pill behind\">b better" in html
    assert "Compute multiplier k_C" in html
    assert "Lexical test loss vs training compute" in html and "Pareto front" in html
    assert "training FLOPs / token" in html and "of matmul peak" in html
