"""The parameter axis end to end: a size grid (one budget, several widths) fitted by `tgbench fit`, m_N at the
measured sizes, the verdicts along N, the Kaplan L(N) fit with its lack-of-fit test, the parameter gap at equal
width; the cpu-params preset; a report whose grid lacks an axis says which preset measures it instead of an empty
plot.

The truths are synthetic results tables with a known loss per size, run through the code `tgbench fit` runs.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tgbench.cli.app import app
from tgbench.plan.compute import dry_run_table
from tgbench.plan.expand import expand
from tgbench.plan.tune import sweep_specs
from tgbench.plan.validate import load_grid
from tgbench.report.figures import missing_axes
from tgbench.report.page import render_report
from tgbench.tasks.stats.fits import fit_grid, summary_lines
from tgbench.tasks.stats.paired import auto_axis, size_gap_sentence, size_gaps

WIDTHS = (64, 96, 128, 192)
N_B = {64: 200_064, 96: 447_552, 128: 793_344, 192: 1_779_840}  # GPT-2's non-embedding N at 4 layers (dry-run)
GAP = 1.027  # TG has about 2.7% more at one width
BUDGET = 100_000
ALPHA_N = 0.08


def loss_b(n: float, curved: bool = False) -> float:
    """B's loss at N: a power law (or, curved, a law that bends in log-log)."""
    base = 6.0 * (1e5 / n) ** ALPHA_N
    return base + 0.08 * np.log(n / 4e5) ** 2 if curved else base  # still falling, bent


def size_table(rng: np.random.Generator, *, m_n: float = 1.4, sd: float = 0.003, replicates: int = 3,
               curved: bool = False, budgets=(BUDGET,)) -> pd.DataFrame:
    """Models a (N_a = 1.027 x N_b at a width) and b; a reaches at N what b reaches with m_n x N."""
    rows = []
    for tokens in budgets:
        for width in WIDTHS:
            for r in range(replicates):
                for label, n, loss in (("a", N_B[width] * GAP, loss_b(m_n * N_B[width] * GAP, curved)),
                                       ("b", N_B[width], loss_b(N_B[width], curved))):
                    y = loss * (BUDGET / tokens) ** 0.1 * np.exp(sd * rng.standard_normal())  # L falls with D
                    rows.append({"run_id": f"{label}-w{width}-D{tokens}-s{r}", "adapter": label, "variant": "",
                                 "width": width, "layers": 4, "n_params": n, "tokens": tokens, "seed": r,
                                 "status": "done", "best_val_loss": y, "test_loss": y,
                                 "seed_scheme": "per-budget"})
    return pd.DataFrame(rows)


def test_auto_axis_is_size_for_one_budget_and_several_widths():
    rng = np.random.default_rng(0)
    assert auto_axis(size_table(rng)) == "params"
    assert auto_axis(size_table(rng, budgets=(BUDGET, 2 * BUDGET))) == "tokens"
    one_width = size_table(rng)
    assert auto_axis(one_width[one_width["width"] == 128]) == "tokens"


def test_fit_on_a_size_grid_writes_m_n_per_measured_size_and_the_verdicts_along_n():
    fits = fit_grid(size_table(np.random.default_rng(1)), n_resamples=0)
    assert fits["axis"] == "params"
    verdict = fits["verdicts"][0]
    assert verdict["axis"] == "params" and verdict["class"] == "a better at every measured size"
    assert [p["x"] for p in verdict["per_budget"]] == pytest.approx([N_B[w] * GAP for w in WIDTHS])
    m_n = fits["multipliers"]["params"]["a"]["b"][f"tokens={BUDGET}"]["interpolated"]
    points = {round(p["x"]): p for p in m_n["points"]}
    assert sorted(points) == [round(N_B[w] * GAP) for w in WIDTHS]  # one point per measured size of A
    ok = [p for p in m_n["points"] if p["status"] == "ok"]
    # A's loss at its largest size is below every loss B measured: no value there, nothing extrapolated
    assert points[round(N_B[192] * GAP)]["status"] == "outside B's range"
    assert len(ok) == 3
    for p in ok:  # B needs 1.4 x A's N; piecewise-linear interpolation of a power law in log-log is exact
        assert p["value"] == pytest.approx(1.4, rel=0.03)
        assert p["ci_low"] < 1.4 < p["ci_high"] and p["ci_low"] > 1.0
    kaplan = fits["axes"]["params"]["a"][f"tokens={BUDGET}"]["kaplan"]
    assert kaplan["converged"] and kaplan["params"]["alpha"] == pytest.approx(ALPHA_N, rel=0.15)
    lof = kaplan["lack_of_fit"]
    assert (lof["df1"], lof["df2"]) == (2, 8) and lof["p_value"] > 0.01  # a power-law truth fits
    assert not any(n.startswith("lack of fit, params axis") for n in fits["notes"])
    text = "\n".join(summary_lines(fits))
    assert f"m_N b over a (tokens={BUDGET}, interpolated)" in text
    assert "N of a and b: at equal width a has 2.7% more non-embedding parameters than b" in text
    assert "verdict at equal data a vs b" in text  # the other axis is still reported, behind the size axis
    json.dumps(fits, allow_nan=False)


def test_a_curved_l_of_n_fails_the_lack_of_fit_test_and_says_so():
    fits = fit_grid(size_table(np.random.default_rng(2), curved=True, sd=0.002), n_resamples=0)
    lof = fits["axes"]["params"]["b"][f"tokens={BUDGET}"]["kaplan"]["lack_of_fit"]
    assert lof["p_value"] < 0.05 and "does not describe" in lof["sentence"]
    assert any(n.startswith(f"lack of fit, params axis b tokens={BUDGET} kaplan") for n in fits["notes"])


def test_b_better_along_n_is_the_mirror_class():
    fits = fit_grid(size_table(np.random.default_rng(3), m_n=0.7), n_resamples=0)
    assert fits["verdicts"][0]["class"] == "b better at every measured size"


def test_size_gap_of_tg_over_gpt2():
    rows = pd.DataFrame({"label": ["tg", "gpt2", "tg", "gpt2", "tg"], "width": [128, 128, 64, 64, 96],
                         "layers": [4] * 5, "n_params": [814_658, 793_344, 202_498, 200_064, 457_378]})
    gaps = size_gaps(rows, "tg", "gpt2")
    assert [g["width"] for g in gaps] == [64, 128]  # 96 has no gpt2 run
    assert gaps[1]["ratio"] == pytest.approx(814_658 / 793_344)
    one = size_gap_sentence(gaps[1:], "tg", "gpt2")
    assert one.startswith("at equal width tg has 2.7% more non-embedding parameters than gpt2 (128 x 4: 814,658")
    assert "1.2-2.7% more" in size_gap_sentence(gaps, "tg", "gpt2")
    assert "fewer" in size_gap_sentence(size_gaps(rows, "gpt2", "tg"), "gpt2", "tg")
    assert size_gap_sentence([], "tg", "gpt2") == ""


def test_cli_fit_defaults_to_the_size_axis_on_a_size_grid(tmp_path):
    size_table(np.random.default_rng(4)).to_csv(tmp_path / "results.csv", index=False)
    result = CliRunner().invoke(app, ["fit", str(tmp_path), "--resamples", "0"])
    assert result.exit_code == 0, result.output
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert fits["axis"] == "params" and fits["verdicts"][0]["class"] == "a better at every measured size"
    assert "m_N b over a" in result.output
    forced = CliRunner().invoke(app, ["fit", str(tmp_path), "--resamples", "0", "--axis", "tokens"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "fits.json").read_text())["axis"] == "tokens"


def test_cpu_params_preset_plans_four_widths_tuned_per_width():
    grid = load_grid(preset="cpu-params")
    specs = expand(grid)
    assert sorted({s.width for s in specs}) == list(WIDTHS)
    assert {s.tokens for s in specs} == {BUDGET}
    assert len(specs) == 2 * len(WIDTHS) * 3  # TG and GPT-2, 3 replicates
    sweep = sweep_specs(grid)
    assert sorted({s.width for s in sweep}) == list(WIDTHS)  # every width tuned on its own
    assert {s.tokens for s in sweep} == {BUDGET}  # at the grid's one budget
    assert len(sweep) == 2 * len(WIDTHS) * 3 * 2  # 3 LRs x 2 seeds per model and width
    # N as the paper counts it (non-embedding): TG about 2.7% above GPT-2 at 128 x 4
    rows = {(r["label"], r["width"]): r["n_params"] for r in dry_run_table(grid) if r["stage"] == "grid"}
    assert rows[("tg", 128)] / rows[("gpt2", 128)] == pytest.approx(1.027, abs=0.002)
    assert all(rows[("tg", w)] > rows[("tg", v)] for v, w in zip(WIDTHS, WIDTHS[1:], strict=False))


def test_cpu_params_dry_run_shows_runs_and_compute():
    result = CliRunner().invoke(app, ["train-grid", "--preset", "cpu-params", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "24 runs after a tuning sweep of 48" in result.output
    assert re.search(r"total compute ~\d+ TFLOP", result.output)
    assert "tg-w192-l4-D100000-s2" in result.output


def _scaling(html: str) -> str:
    return html[html.index('<section id="scaling">'):].split("</section>", 1)[0]


def _report_dir(tmp_path, frame: pd.DataFrame):
    frame.to_csv(tmp_path / "results.csv", index=False)
    result = CliRunner().invoke(app, ["fit", str(tmp_path), "--resamples", "0"])
    assert result.exit_code == 0, result.output
    return render_report(tmp_path)


def test_a_one_size_report_names_the_preset_that_measures_n_instead_of_an_empty_plot(tmp_path):
    frame = size_table(np.random.default_rng(5), budgets=(50_000, 100_000, 200_000))
    frame = frame[frame["width"] == 128]
    html = _report_dir(tmp_path, frame)
    assert "Lexical test loss vs N" not in html and "m_N: parameters needed" not in html
    assert "no data to plot yet" not in _scaling(html)  # (the synthetic runs have no training curves to draw)
    assert html.count('class="muted missing-axis"') == 1
    assert "this grid has one size (width 128, 4 layers), so no parameter axis" in html
    assert '<a href="../cpu-params/report.html">' in html and "reports/cpu-params/report.html" in html
    assert "Lexical test loss vs D" in html and "m_D: data needed" in html  # the axis it has is drawn
    assert "the cpu-params preset measures it" in html  # the m_N card says so too
    assert "2.7% more non-embedding parameters than b" in html  # the gap at the one width, beside m_N


def test_a_size_only_report_draws_n_and_names_the_preset_that_measures_d(tmp_path):
    html = _report_dir(tmp_path, size_table(np.random.default_rng(6)))
    assert "Lexical test loss vs N" in html and "m_N: parameters needed" in html
    assert "Lexical test loss vs D" not in html and "m_D: data needed" not in html
    assert "no data to plot yet" not in _scaling(html)
    assert "this grid has one budget (D = 100k tokens), so no data axis" in html
    assert '<a href="../demo/report.html">' in html
    assert "1.2-2.7% more non-embedding parameters than b" not in html  # synthetic: one ratio at every width
    assert "2.7% more non-embedding parameters than b" in html
    fits_part = html[html.index('<section id="fits">'):].split("</section>", 1)[0]
    assert "F(2, 8)" in fits_part  # the Kaplan L(N) fit's lack-of-fit test, in the fits table


def test_missing_axes_waits_for_unfinished_runs_of_a_grid_with_both_axes():
    frame = size_table(np.random.default_rng(7), budgets=(BUDGET, 2 * BUDGET)).assign(status="running")
    assert missing_axes(frame) == {}
    assert missing_axes(frame.iloc[:0]) == {}


def test_a_one_budget_size_grid_says_why_it_has_no_compute_verdict_or_k_c():
    """The committed cpu-params page (re-rendered from its files by test_committed_reports): every size has one
    budget, so there is no compute axis; the page says so instead of asking to rerun tgbench fit."""
    from pathlib import Path

    html = (Path(__file__).parents[1] / "reports" / "cpu-params" / "report.html").read_text()
    assert "rerun tgbench fit" not in html
    assert "a size trained at one budget has no range" in html
    assert "fewer than 3 budgets at one size, so no compute axis to fit" in html
