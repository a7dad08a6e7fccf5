"""A grid of plug-ins end to end: examples/lstm_adapter.py against gpt2 with the LSTM as the grid's reference,
evaluated on the built-in ppl task, on an lm-eval YAML task over a local JSON file and on the example task of
docs/tasks.md (copied outside the package), each through `tgbench eval --task ... --runs GRID`; results.csv
and the report show them all, and the report treats the LSTM as the reference."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from corpora import write_family_corpus
from typer.testing import CliRunner

from tgbench.cli.app import app
from tgbench.plan.config import to_toml

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["Anna", "Tom", "Mary", "John", "Paul", "Emma"]
OPTIONS = {"dropout": 0.0, "attention_dropout": 0.0}


def grid_file(root: Path, **overrides) -> Path:
    write_family_corpus(root / "wiki.txt", NAMES, seed=0, n_docs=40, per_doc=(3, 5))
    raw = {
        "name": "plugins", "design": "axes", "widths": [16, 32], "layers": 1, "head_dim": 16,
        "budgets": [400, 800, 1600], "seeds": [0], "reference": "lstm",
        "data": {"corpus": str(root / "wiki.txt"), "tokenizer": "bpe-300", "splitter": "blingfire",
                 "cache_dir": str(root / "cache"), "valid_fraction": 0.1, "test_fraction": 0.1},
        "train": {"epochs": 1, "batch_tokens": 128, "lr": 3e-3, "eval_tokens": 300, "log_every": 2,
                  "checkpoint_every": 10, "device": "cpu"},
        "models": [
            {"adapter": "gpt2", "options": {"context": 64, **OPTIONS}},
            {"adapter": str(ROOT / "examples" / "lstm_adapter.py") + ":LSTMAdapter", "options": {"context": 64}},
        ],
    }
    raw.update(overrides)
    path = root / "grid.toml"
    path.write_text(to_toml(raw))
    return path


def rolling_task(root: Path) -> Path:
    """An lm-eval task over a local JSON file (no hub dataset): rolling log-likelihood of a few texts."""
    (root / "texts.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in (
        "The son of Anna is Tom. The father of Tom is Anna.", "Mary went to the market with John.",
        "Paul is the father of Emma. Emma went to the market with Paul.")) + "\n")
    path = root / "my_rolling.yaml"
    path.write_text(
        "task: my_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'texts.jsonl'}\ntest_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n'
        "  - metric: word_perplexity\n    aggregation: weighted_perplexity\n    higher_is_better: false\n"
        "  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n"
        "metadata:\n  version: 2\n")
    return path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"section {anchor} missing"
    return match.group(1)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin-grid")
    out = root / "grid"
    invoke("train-grid", str(grid_file(root)), "--out", str(out), "--no-progress")
    outside = root / "elsewhere"
    outside.mkdir()
    task_file = shutil.copy(ROOT / "examples" / "repeat_task.py", outside / "repeat_task.py")
    for task in ("ppl", str(rolling_task(root)), f"{task_file}:RepeatTask"):
        invoke("eval", "--task", task, "--runs", str(out), "--device", "cpu")
    invoke("fit", str(out), "--resamples", "20")
    invoke("report", str(out))
    return out


def test_every_task_that_ran_has_columns_in_results(grid):
    frame = pd.read_csv(grid / "results.csv")
    assert len(frame) == 8 and set(frame["status"]) == {"done"}
    for column in ("ppl.lexical_loss", "my_rolling.word_perplexity", "my_rolling.bits_per_byte",
                   "repeat.first_nll", "repeat.repeat_nll", "repeat.copy_gain"):
        assert frame[column].notna().all(), column
    assert (frame["repeat.copy_gain"] == frame["repeat.first_nll"] - frame["repeat.repeat_nll"]).all()
    saved = json.loads(next(grid.glob("gpt2-*")).joinpath("eval", "my_rolling.json").read_text())
    assert {m["name"]: m["higher_is_better"] for m in saved["metrics"]} == {"word_perplexity": False,
                                                                           "bits_per_byte": False}


def test_every_task_has_its_own_report_section(grid):
    html = (grid / "report.html").read_text()
    rolling = section(html, "task-my_rolling")
    assert "word_perplexity" in rolling and "lower is better" in rolling
    assert rolling.count("<svg") == 2  # one plot per scored metric, against D (the data axis)
    assert "the verdict is on the lexical test loss alone" in rolling
    repeat = section(html, "task-repeat")
    assert "copy gain" in repeat and "higher is better" in repeat and "read twice" in repeat
    assert repeat.count("<svg") == 3  # first NLL, second NLL, copy gain; items has no direction
    assert repeat.count("<tr>") == 1 + 8  # header + every run
    assert "task-repeat" in html.split("<nav>")[1].split("</nav>")[0]


def test_a_plugin_is_labelled_by_its_name_and_the_grid_names_the_reference(grid):
    frame = pd.read_csv(grid / "results.csv")
    assert set(frame["label"]) == {"lstm", "gpt2"}
    assert {d.name for d in grid.iterdir() if d.name.startswith("lstm-")} == {
        "lstm-w32-l1-D400-s0", "lstm-w32-l1-D800-s0", "lstm-w32-l1-D1600-s0", "lstm-w16-l1-D1600-s0"}
    fits = json.loads((grid / "fits.json").read_text())
    assert fits["pairs"] == [["lstm", "gpt2"]]
    invoke("fit", str(grid), "--pair", "gpt2,lstm", "--resamples", "0")  # labels work as --pair
    assert json.loads((grid / "fits.json").read_text())["pairs"] == [["gpt2", "lstm"]]
    invoke("fit", str(grid), "--resamples", "20")


def test_the_report_treats_the_reference_as_the_reference(grid):
    from tgbench.report.plots import PALETTE

    html = (grid / "report.html").read_text()
    verdict = section(html, "verdict")
    assert "<h3>lstm vs gpt2" in verdict and "gpt2 vs lstm" not in verdict
    assert "The reference is <code>lstm</code>, compared with gpt2" in verdict
    assert "Paper: Thought Gestalt vs GPT-2" not in html and "class=\"paper\"" not in verdict  # TG-only pieces
    assert 'id="ablations"' not in html  # no variants of the reference
    assert "Multipliers (lstm over gpt2)" in section(html, "scaling")
    assert "tokens/s relative to gpt2 (the first baseline)" in section(html, "throughput")
    runs = section(html, "runs")
    assert runs.index(">lstm<") < runs.index(">gpt2<")  # the reference's runs first
    # the reference takes the first colour in every plot, gpt2 the second
    scaling = section(html, "scaling")
    assert f'stroke="{PALETTE[0]}"' in scaling and f'stroke="{PALETTE[1]}"' in scaling
    legend = re.findall(r'<line x1="[\d.]+" x2="[\d.]+" y1="[\d.]+" y2="[\d.]+" stroke="(#[0-9A-F]+)" '
                        r'stroke-width="2"[^/]*/><text [^>]*class="plegend">([^<]+)</text>', scaling)
    assert ("#D55E00", "lstm") in legend and ("#0072B2", "gpt2") in legend
