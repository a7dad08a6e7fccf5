"""Results in Python (`tgbench.load_results`, `tgbench.load_fits`, the docs' notebook example) and one report
over several grids (`tgbench report A B`, `tgbench compare`), on tiny trained grids."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_runs import run_main, train_tiny_grid

import tgbench
from tgbench.core.errors import UserError
from tgbench.training.rundir import RunDir

DOCS = Path(__file__).resolve().parent.parent / "docs" / "python.md"


@pytest.fixture(scope="module")
def grids(tmp_path_factory) -> Path:
    """A: TG and GPT-2 at budgets 400 and 800; B: the same models at 1600; C: GPT-2 on another tokenizer."""
    root = tmp_path_factory.mktemp("grids")
    train_tiny_grid(root, root / "A", name="A", budgets=(400, 800))
    train_tiny_grid(root, root / "B", name="B", budgets=(1600,))
    train_tiny_grid(root, root / "C", name="C", budgets=(400,), tokenizer="bpe-400", models=("gpt2",))
    return root


def test_load_results_has_every_run_metric_label_flag_and_setting(grids, monkeypatch, capsys):
    code, output = run_main(["eval", "--task", "ppl", "--runs", grids / "A"], monkeypatch, capsys)
    assert code == 0, output
    frame = tgbench.load_results(grids / "A")
    assert sorted(frame["run_id"]) == sorted(d.name for d in (grids / "A").iterdir() if (d / "DONE").exists())
    assert set(frame["label"]) == {"tg", "gpt2"} and (frame["grid"] == "A").all()
    assert {"flags", "loss", "loss_is_val", "n_params", "status", "on_data_axis", "on_param_axis"} <= set(frame)
    assert frame["on_data_axis"].all() and not frame["on_param_axis"].any()  # one width, two budgets
    for _, row in frame.iterrows():
        run = RunDir(grids / "A" / row["run_id"])
        ppl = json.loads((run.eval_dir / "ppl.json").read_text())["results"]["ppl"]
        assert row["ppl.lexical_loss"] == pytest.approx(ppl["lexical_loss"]) == pytest.approx(row["loss"])
        config = run.read_config()
        assert row["config.train.lr"] == config.train.lr and row["config.data.tokenizer"] == "bpe-300"
        assert row["config.model_options.width"] == 16 and row["config.model"] == row["adapter"]
        assert row["config.train.tokens"] == row["tokens"]
    assert "config.train.lr" not in tgbench.load_results(grids / "A", configs=False)
    with pytest.raises(UserError, match="does not exist"):
        tgbench.load_results(grids / "nowhere")
    with pytest.raises(UserError, match="fits.json") as caught:
        tgbench.load_fits(grids / "B")
    assert "tgbench fit" in caught.value.fix


def test_report_over_two_grids_pools_runs_by_label_and_keeps_their_grid(grids, monkeypatch, capsys):
    out = grids / "AB"
    code, output = run_main(["report", grids / "A", grids / "B", "--out", out, "--resamples", "20"], monkeypatch,
                            capsys)
    assert code == 0, output
    assert (out / "report.html").is_file() and (out / "fits.json").is_file() and (out / "compare.toml").is_file()
    pooled = tgbench.load_results(out)
    assert sorted(pooled["run_id"]) == sorted([f"A:{r}" for r in tgbench.load_results(grids / "A")["run_id"]]
                                              + [f"B:{r}" for r in tgbench.load_results(grids / "B")["run_id"]])
    assert dict(pooled.groupby("grid").size()) == {"A": 4, "B": 2}
    assert set(pooled["label"]) == {"tg", "gpt2"}  # pooled by label
    assert pooled["config.data.tokenizer"].eq("bpe-300").all()  # settings read from the source run dirs
    fits = tgbench.load_fits(out)
    tg = fits.fit("tg", "data")
    assert sorted(tg["x"]) == [400, 800, 1600]  # one data-scaling fit over both grids' budgets
    assert fits.predict("tg", [400, 1600]).shape == (2,)
    html = (out / "report.html").read_text()
    assert "B:tg-w16-l1-D1600-s0" in html and "Runs of 2 grids pooled by label" in html
    # the comparison directory is a grid directory: report and fit work on it alone
    code, output = run_main(["fit", out, "--resamples", "0"], monkeypatch, capsys)
    assert code == 0, output
    code, output = run_main(["report", out], monkeypatch, capsys)
    assert code == 0 and "report written" in output, output


def test_pooling_runs_of_different_tokenizers_under_one_label_is_an_error(grids, monkeypatch, capsys):
    code, output = run_main(["compare", grids / "A", grids / "C", "--out", grids / "AC"], monkeypatch, capsys)
    assert code == 2, output
    text = " ".join(output.split())
    assert "label 'gpt2' would pool runs with different data.tokenizer: 'bpe-300' in A; 'bpe-400' in C" in text
    assert "--by-grid" in text and "Traceback" not in output
    assert not (grids / "AC" / "report.html").exists()
    code, output = run_main(["compare", grids / "A", grids / "C", "--out", grids / "AC", "--by-grid",
                             "--resamples", "0"], monkeypatch, capsys)
    assert code == 0, output
    labels = set(pd.read_csv(grids / "AC" / "results.csv")["label"])
    assert labels == {"tg@A", "gpt2@A", "gpt2@C"}


def test_the_docs_notebook_example_redraws_the_data_scaling_plot(grids, monkeypatch):
    """The five-line example of docs/python.md, run as written with a recording stand-in for matplotlib."""
    from tgbench.results.pooling import write_comparison

    out = write_comparison([grids / "A", grids / "B"], grids / "AB-notebook", resamples=0).path
    block = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    calls: list[tuple[str, tuple]] = []
    pyplot = types.ModuleType("matplotlib.pyplot")
    for name in ("scatter", "plot", "xscale", "yscale", "xlabel", "ylabel", "legend", "show"):
        setattr(pyplot, name, lambda *args, _name=name, **kwargs: calls.append((_name, args, kwargs)))
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    exec(block.replace('"runs/demo"', repr(str(out))), {})  # noqa: S102 - the docs' own example
    scatters = {c[2]["label"]: c[1] for c in calls if c[0] == "scatter"}
    assert set(scatters) == {"tg", "gpt2"}
    results = tgbench.load_results(out)
    tg = results[results["label"] == "tg"]
    assert sorted(scatters["tg"][0]) == sorted(tg["tokens"]) and sorted(scatters["tg"][1]) == sorted(tg["loss"])
    curves = [c[1] for c in calls if c[0] == "plot"]
    assert len(curves) == 2 and all(np.isfinite(ys).all() for _, ys in curves)
    assert ("xscale", ("log",), {}) in calls and ("yscale", ("log",), {}) in calls
