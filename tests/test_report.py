"""The HTML report: sections, verdict logic, missing pieces, escaping, and self-containment."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from report_fixture import FAILED_MESSAGE, HOSTILE, cached_grid, write_synthetic_grid

from tgbench.report.files import GridFiles, load_grid_files
from tgbench.report.page import render_report, write_report
from tgbench.report.plots import Series, log_ticks, plot
from tgbench.report.sections import RUN_COLUMNS
from tgbench.report.tables import runs_table
from tgbench.report.verdict import multiplier_summary, pair_verdict, verdicts
from tgbench.results.columns import COLUMNS, RESULT_COLUMNS

SECTIONS = ("verdict", "scaling", "curves", "task-ppl", "task-reversal", "runs", "ablations", "fits", "throughput",
            "provenance")


@pytest.fixture
def grid_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(cached_grid(), tmp_path / "grid"))


@pytest.fixture(scope="module")
def html() -> str:
    return render_report(cached_grid())


def _section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"section {name} missing"
    return match.group(1)


def test_every_section_and_plot_present(html):
    for name in SECTIONS:
        _section(html, name)
    # 2 scaling + 2 multiplier + 5 training-curve cells + 2 ppl plots (word PPL, bits/byte)
    # + 4 reversal plots (NLL x 2, margin, error rate)
    assert html.count("<svg") == 17  # 15 plots and a verdict plot per pair
    assert "0.5 = chance" in html
    assert html.count("no data to plot yet") == 0
    runs = _section(html, "runs")
    assert runs.count("<tr>") == 1 + 30  # header + 3 models x 5 cells x 2 seeds


def test_verdict_shows_multipliers_paper_and_ppl_cells(html):
    verdict = _section(html, "verdict")
    assert "tg vs gpt2" in verdict and "tg vs gpt2-boundary" in verdict
    assert re.search(r"\d\.\d\d\u00d7", verdict), "no multiplier value"
    assert "95% CI" in verdict
    assert "paper: 1.05\u00d7 &ndash; 1.08\u00d7" in verdict
    assert "paper: 1.33\u00d7 &ndash; 1.42\u00d7" in verdict
    assert "23.2 vs 24.0" in verdict
    # the fixture gives tg 1.3x effective parameters; 2 replicates per budget: too few for every budget alone
    fits = json.loads((cached_grid() / "fits.json").read_text())
    for entry in fits["verdicts"]:
        assert f'data-class="{entry["class"]}"' in verdict
        assert entry["sentence"].replace("'", "&#39;") in verdict  # rendered, not recomputed
    assert 'data-class="tg better on average"' in verdict
    assert "tg lower at 3 of 3 budgets" in verdict
    assert "Power: tg vs gpt2:" in verdict
    assert "every test behind the class" in verdict and "Holm p" in verdict
    # every pair against tg is fitted by default: no "missing" multiplier card
    assert "big missing" not in verdict


def test_failed_and_missing_runs_are_shown(html):
    runs = _section(html, "runs")
    assert 'class="status-failed"' in runs
    assert FAILED_MESSAGE in runs
    missing = _section(html, "provenance")
    assert "gpt2-boundary-w256-l4-D2000000-s0</code>: ppl evaluation missing" in missing
    assert "gpt2-boundary-w256-l4-D8000000-s1</code>: failed" in missing
    assert ">missing</td>" in runs  # the failed run's empty cells


def test_ablation_table_lists_paper_values_even_without_runs(html):
    ablations = _section(html, "ablations")
    for value in ("29.8", "35.0", "45.8", "30.2", "29.4", "30.5", "+0.4-0.7", "tg/detach", "tg/half-length"):
        assert value in ablations
    assert ablations.count("not run") == 10  # every variant but plain tg


def test_best_value_in_column_is_highlighted(grid_copy):
    files = load_grid_files(grid_copy)
    table = runs_table(files.results, [(key, COLUMNS[key]) for key in RUN_COLUMNS])
    index = [c["key"] for c in table.columns].index("test_loss")
    best = [row[index] for row in table.rows if "best" in row[index]["classes"]]
    done = files.results[files.results["status"] == "done"]
    assert len(best) == 1 and best[0]["text"] == f"{done['test_loss'].min():.3f}"
    index = [c["key"] for c in table.columns].index("tokens_per_s")  # higher is better
    best = [row[index] for row in table.rows if "best" in row[index]["classes"]]
    assert float(best[0]["sort"]) == pytest.approx(done["tokens_per_s"].max())


def test_hostile_strings_are_escaped(tmp_path):
    grid = write_synthetic_grid(tmp_path / "grid", hostile=True, fits=False)
    html = render_report(grid)
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # only the page's own sorting script
    assert "corpus &lt;script&gt;" in _section(html, "provenance")


def test_without_fits_json(grid_copy):
    (grid_copy / "fits.json").unlink()
    html = render_report(grid_copy)
    verdict = _section(html, "verdict")
    assert "missing" in verdict and "fits.json is missing" in verdict
    assert "No fits: fits.json missing" in _section(html, "fits")
    assert html.count("<svg") == 15  # plots still drawn, without fitted curves; no verdict plot without fits.json


def test_failed_fits_render_as_fit_failed(grid_copy):
    fits = json.loads((grid_copy / "fits.json").read_text())
    for by_a in fits["multipliers"].values():
        for forms in (f for by_b in by_a.values() for groups in by_b.values() for f in groups.values()):
            for mult in forms.values():
                mult["range"] = None
                for p in mult["points"]:
                    p.update(value=None, ci_low=None, ci_high=None, status="fit failed")
    for labels in fits["axes"].values():
        for groups in labels.values():
            for forms in groups.values():
                for fit in forms.values():
                    fit.update(converged=False, params={}, intervals={}, reason="alpha ran into its bound")
    (grid_copy / "fits.json").write_text(json.dumps(fits))
    html = render_report(grid_copy)
    assert "fit failed" in _section(html, "verdict")
    assert "fit failed: alpha ran into its bound" in _section(html, "fits")


def test_unreadable_fits_json(grid_copy):
    (grid_copy / "fits.json").write_text("{not json")
    assert "fits.json unreadable" in _section(render_report(grid_copy), "fits")


def test_empty_grid_gives_a_clear_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    html = render_report(empty)
    assert "This grid has no runs yet" in html
    # a grid file but no runs: the expected runs are listed as missing
    shutil.copy(cached_grid() / "grid.toml", empty / "grid.toml")
    html = render_report(empty)
    assert "This grid has no runs yet" in html
    assert "tg-w256-l4-D8000000-s1</code>: missing (not started)" in html


def test_results_csv_rebuilt_in_memory_without_writing(grid_copy):
    (grid_copy / "results.csv").unlink()
    html = render_report(grid_copy)
    assert not (grid_copy / "results.csv").exists()
    assert _section(html, "runs").count("<tr>") == 31


def test_output_is_one_self_contained_file(grid_copy, tmp_path):
    before = set(grid_copy.iterdir())
    out = write_report(grid_copy)
    plots = {grid_copy / "verdict-tg-vs-gpt2.svg", grid_copy / "verdict-tg-vs-gpt2-boundary.svg"}
    assert out == grid_copy / "report.html" and set(grid_copy.iterdir()) - before == {out, *plots}
    assert all(p.read_text().startswith("<svg") and "<style>" in p.read_text() for p in plots)  # pastable alone
    html = out.read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', html, re.I)
    assert "@import" not in html and "url(" not in html
    # the only absolute URL is the SVG namespace, which is an identifier, not a resource
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    custom = write_report(grid_copy, tmp_path / "elsewhere" / "r.html")
    assert custom.read_text() == html


def test_report_command_writes_the_file(grid_copy, tmp_path):
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    result = CliRunner().invoke(app, ["report", str(grid_copy), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.html").read_text().startswith("<!DOCTYPE html>")


# -- verdict rendering ------------------------------------------------------------------------------------
def _fits_with(points: list[tuple[float, float, float]], verdict: dict | None = None) -> dict:
    pts = [{"x": 1e6 * (i + 1), "value": v, "ci_low": lo, "ci_high": hi, "status": "ok",
            "extrapolated": False} for i, (v, lo, hi) in enumerate(points)]
    groups = {"width=8,layers=2": {"kaplan": {"points": pts}}}
    return {"version": 3, "pairs": [["tg", "gpt2"]], "multipliers": {"data": {"tg": {"gpt2": groups}}},
            "verdicts": [verdict] if verdict else []}


def test_multiplier_summary_renders_points_without_classifying():
    summary = multiplier_summary(_fits_with([(1.07, 1.02, 1.1), (1.03, 0.97, 1.1)]), "data", "tg", "gpt2")
    assert summary["range"] == (1.03, 1.07) and "class" not in summary
    assert multiplier_summary(_fits_with([(1.0, 0.9, 1.1)]), "params", "tg", "gpt2")["status"] == "missing"
    assert multiplier_summary(_fits_with([(1.0, 0.9, 1.1)]), "data", "tg", "gpt2/boundary")["status"] == "missing"


def _frame(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    records = []
    for label, tokens, seed, ppl in rows:
        record = dict.fromkeys(RESULT_COLUMNS)
        record.update(run_id=f"{label}-{tokens}-{seed}", adapter=label, variant="", label=label, width=8,
                      layers=2, tokens=tokens, seed=seed, status="done", test_ppl=ppl, flags="")
        records.append(record)
    return pd.DataFrame(records)


def test_pair_verdict_is_read_from_fits_json():
    rows = [("tg", 1, 0, 20.0), ("tg", 1, 1, 20.5), ("gpt2", 1, 0, 21.0), ("gpt2", 1, 1, 21.4)]
    frame = _frame(rows)
    frame.loc[0, "flags"] = "cell-outlier"
    entry = {"a": "tg", "b": "gpt2", "class": "gpt2 better on average", "sentence": "as fits.json says",
             "delta_mean": 0.1, "delta_ci": [0.05, 0.15], "p_value": 0.01, "interaction_p": None,
             "per_budget": [{"x": 1, "delta_mean": 0.1, "delta_ci": [0.05, 0.15], "p_value": 0.01,
                             "sign_flip_p": 0.5, "n": 2, "ppl_a": 20.2, "ppl_b": 21.2, "ppl_rel": -0.05}],
             "influential": [{"run_a": "tg-1-0", "run_b": "gpt2-1-0", "x": 1, "moves": "pooled"}],
             "details": ["each (budget, replicate) has its own seeds"], "runs": ["tg-1-0", "gpt2-1-0"]}
    v = pair_verdict(GridFiles(Path("."), {}, frame, _fits_with([(1.07, 1.02, 1.1)], entry), "present", {}),
                     "tg", "gpt2")
    assert v["class"] == "gpt2 better on average" and v["pill"] == "behind" and v["sentence"] == "as fits.json says"
    assert v["flagged"] == [{"run": "tg-1-0", "flags": "cell-outlier"}] and v["influential"][0]["run_a"] == "tg-1-0"
    assert v["details"] == ["each (budget, replicate) has its own seeds"]
    assert "gpt2 better on average" in str(v["forest"]) and "pooled" in str(v["forest"])  # the verdict at a glance
    missing = pair_verdict(GridFiles(Path("."), {}, frame, None, "missing", {}), "tg", "gpt2")
    assert missing["class"] == "" and "fits.json is missing" in missing["sentence"]


def test_verdicts_cover_every_fitted_pair():
    rows = [("tg", 1, 0, 20.0), ("gpt2", 1, 0, 21.0), ("gpt2/boundary", 1, 0, 21.0)]
    fits = {**_fits_with([(1.07, 1.02, 1.1)]), "pairs": [["tg", "gpt2"], ["tg", "gpt2/boundary"]]}
    pairs = [(v["a"], v["b"]) for v in verdicts(GridFiles(Path("."), {}, _frame(rows), fits, "present", {}))]
    assert pairs == [("tg", "gpt2"), ("tg", "gpt2/boundary")]


@pytest.mark.parametrize(("rate", "seeds", "expected"), [(0.5, 1, True), (0.52, 1, True), (0.56, 1, False),
                                                         (0.52, 3, False), (0.1, 2, False)])
def test_reversal_error_at_chance(rate, seeds, expected):
    from tgbench.tasks.tg_reversal.task import at_chance as _at_chance

    assert _at_chance(rate, seeds) is expected


# -- plots ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lo", "hi"), [(2e6, 8e6), (150.0, 3.2e7), (3.4, 4.1), (0.9, 1.3)])
def test_log_ticks_inside_range(lo, hi):
    ticks = log_ticks(lo, hi)
    assert len(ticks) >= 2 and all(lo <= t <= hi for t in ticks) and ticks == sorted(ticks)


def test_plot_escapes_text_and_handles_no_data():
    svg = plot([Series("<b>x</b>", "#000", [(1.0, 2.0), (10.0, 3.0)])], title="a & b", xlabel="x", ylabel="y")
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "a &amp; b" in svg
    assert svg.count("<circle") == 2
    empty = plot([Series("s", "#000", [(0.0, float("nan"))])], title="t", xlabel="x", ylabel="y")
    assert "no data to plot yet" in empty


def test_grid_where_nothing_finished(grid_copy):
    for run in grid_copy.iterdir():
        if (run / "DONE").exists():
            (run / "DONE").unlink()
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / "latest.json").write_text("{}")  # looks interrupted
    (grid_copy / "results.csv").unlink()
    (grid_copy / "fits.json").unlink()
    html = render_report(grid_copy)
    assert "No finished, evaluated runs of both tg and gpt2 yet" in html
    assert html.count("no data to plot yet") == 4  # scaling and multiplier plots; training curves still drawn
    assert "Reversal evaluation missing for every finished run" in html
    assert "tg-w256-l4-D8000000-s1</code>: interrupted" in _section(html, "provenance")
    assert html.count('class="status-interrupted"') == 29


def test_an_axis_the_grid_does_not_have_is_not_measured_not_missing():
    rows = [(label, tokens, seed, 20.0 + seed) for label in ("tg", "gpt2") for tokens in (1, 2, 3) for seed in (0, 1)]
    v = pair_verdict(GridFiles(Path("."), {}, _frame(rows), _fits_with([(1.07, 1.02, 1.1)]), "present", {}),
                     "tg", "gpt2")
    assert v["multipliers"]["params"]["status"] == "not measured"
    assert "fewer than 3 sizes at one budget" in v["multipliers"]["params"]["note"]
    assert v["multipliers"]["data"]["status"] == "ok"


def test_a_new_page_block_is_one_function_and_one_registration(grid_copy, monkeypatch):
    from tgbench.report import sections
    from tgbench.report.task_sections import Section

    def extra(page):
        return sections.PageSection("extra", "Extra", "task", {"sec": Section("extra", "An extra block",
                                                                            notes=["hello from a plug-in block"])})

    monkeypatch.setattr(sections, "SECTIONS", [*sections.SECTIONS, extra])
    html = render_report(grid_copy)
    assert '<a href="#extra">Extra</a>' in html and "hello from a plug-in block" in html
    assert html.index('id="provenance"') < html.index('id="extra"')  # blocks come in registration order
