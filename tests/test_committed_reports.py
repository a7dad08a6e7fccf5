"""The committed reports: each reports/<name>/ re-fits and re-renders from its own files to what is committed.

A folder holds a finished grid's results.csv and tune.json, the fits.json that `tgbench fit` writes from them,
the report.html that `tgbench report` renders from those three files, and a screenshot of the page's top.
`make reports` regenerates fits, pages and screenshots; a failure here means the code no longer computes what
reports/ and the README say, so regenerate them (and the README's figures) or find the change that moved them.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgbench.cli.app import app

REPORTS = Path(__file__).parents[1] / "reports"
NAMES = ["demo", "cpu-study", "cpu-long", "cpu-peers", "cpu-params"]
INPUTS = ["results.csv", "tune.json"]


def mismatches(committed, refit, where: str = "") -> list[str]:
    """Where two JSON values differ: floats up to rounding (rel 1e-6), everything else exactly."""
    if isinstance(committed, dict) and isinstance(refit, dict):
        if committed.keys() != refit.keys():
            return [f"{where}: keys {sorted(committed.keys() ^ refit.keys())}"]
        return [m for key in committed for m in mismatches(committed[key], refit[key], f"{where}.{key}")]
    if isinstance(committed, list) and isinstance(refit, list):
        if len(committed) != len(refit):
            return [f"{where}: {len(committed)} items against {len(refit)}"]
        pairs = enumerate(zip(committed, refit, strict=True))
        return [m for i, (a, b) in pairs for m in mismatches(a, b, f"{where}[{i}]")]
    if isinstance(committed, float) and isinstance(refit, (int, float)):
        same = math.isclose(committed, refit, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(committed) and
                                                                               math.isnan(refit))
        return [] if same else [f"{where}: {committed!r} against {refit!r}"]
    return [] if committed == refit else [f"{where}: {committed!r} against {refit!r}"]


def copy_folder(name: str, into: Path, files: list[str]) -> Path:
    folder = into / name
    folder.mkdir()
    for file in files:
        shutil.copy(REPORTS / name / file, folder / file)
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_folder_holds_raw_numbers_fits_page_and_screenshot(name):
    folder = REPORTS / name
    for file in [*INPUTS, "fits.json", "report.html", "report.png"]:
        assert (folder / file).is_file(), f"reports/{name}/{file} is missing"
    assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fits = json.loads((folder / "fits.json").read_text())
    assert fits["verdicts"], "a committed report with no verdict"
    assert all(v["class"] and v["sentence"] for v in fits["verdicts"])


@pytest.mark.parametrize("name", NAMES)
def test_refit_from_results_csv_gives_the_committed_fits(name, tmp_path):
    folder = copy_folder(name, tmp_path, INPUTS)
    result = CliRunner().invoke(app, ["fit", str(folder)])
    assert result.exit_code == 0, result.output
    committed = json.loads((REPORTS / name / "fits.json").read_text())
    refit = json.loads((folder / "fits.json").read_text())
    assert [(v["a"], v["b"], v["class"], v["sentence"]) for v in refit["verdicts"]] == \
        [(v["a"], v["b"], v["class"], v["sentence"]) for v in committed["verdicts"]]
    assert mismatches(committed, refit) == []


@pytest.mark.parametrize("name", NAMES)
def test_rerender_from_its_files_gives_the_committed_page(name, tmp_path):
    folder = copy_folder(name, tmp_path, [*INPUTS, "fits.json"])
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    page = (folder / "report.html").read_text().replace(str(folder), f"reports/{name}")
    committed = (REPORTS / name / "report.html").read_text()
    assert page == committed, f"reports/{name}/report.html is not what `tgbench report` renders now: `make reports`"
