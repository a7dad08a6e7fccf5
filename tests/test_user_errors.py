"""What a new user meets, through the real `tgbench` and `tgbench-lm-eval` executables: every bad input is
one `error:` line naming the value and one `fix:` line, exit 2, no traceback, nothing written; output stays
readable in an 80-column log (tables are not cut, errors are not wrapped, help shows its defaults).

The subprocesses are started together by one fixture (each costs a Python start-up) and checked by the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from corpora import word_documents, write_plain

from tgbench.data import DataConfig, load_corpus

BIN = Path(sys.executable).parent
DATA = ["--tokenizer", "bpe-300", "--splitter", "blingfire"]
TINY = ["--width", "16", "--layers", "1", "--tokens", "400", "--batch-tokens", "200", "--device", "cpu",
        "--no-progress", *DATA]

BROKEN_ADAPTER = '''
from tgbench.models.gpt2 import GPT2Adapter


class DroppingAdapter(GPT2Adapter):
    """Breaks the contract: scores every content token but the last."""

    name = "dropping"

    def score(self, model, documents, vocab):
        return [s[:-1] for s in super().score(model, documents, vocab)]
'''

HUB_TASK = '''
task: tgbench_hub_probe
dataset_path: tgbench-tests/no-such-dataset
output_type: loglikelihood
test_split: test
doc_to_text: "{{text}}"
doc_to_target: " x"
metric_list:
  - metric: acc
metadata:
  version: 1
'''


def grid_file(path: Path, corpus: Path, **overrides: str) -> Path:
    data = {"corpus": f'"{corpus}"', "tokenizer": '"bpe-300"', "splitter": '"blingfire"', **overrides}
    options = overrides.pop("options", "{ dropout = 0.0 }")
    text = textwrap.dedent(f"""
        name = "g"
        widths = [16]
        layers = 1
        budgets = [400]
        [data]
        {chr(10).join(f"{k} = {v}" for k, v in data.items() if k != "options")}
        [[models]]
        adapter = "tg"
        options = {options}
    """)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Start every case as a subprocess (COLUMNS=80, a log, not a terminal); returns name -> (code, output)."""
    root = tmp_path_factory.mktemp("user-errors")
    corpus = write_plain(root / "corpus.txt", word_documents(120))
    env = {**os.environ, "TGBENCH_CACHE_DIR": str(root / "cache"), "COLUMNS": "80", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    os.environ["TGBENCH_CACHE_DIR"] = env["TGBENCH_CACHE_DIR"]
    try:
        load_corpus(DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire"), progress=False)
    finally:
        del os.environ["TGBENCH_CACHE_DIR"]
    (root / "broken.py").write_text(BROKEN_ADAPTER)
    (root / "hub_task.yaml").write_text(HUB_TASK)
    (root / "typed.toml").write_text('model = "tg"\n[model_options]\nwidth = "wide"\n')
    (root / "lr.toml").write_text('model = "gpt2"\n[train]\nlr = "fast"\n')
    (root / "options.toml").write_text('model = "gpt2"\nmodel_options = 3\n')
    # A trained run whose adapter mis-scores (training never calls the contract check).
    setup = subprocess.run([str(BIN / "tgbench"), "train", "--model", f"{root / 'broken.py'}:DroppingAdapter",
                            "--corpus", str(corpus), *TINY, "--out", str(root / "broken-run")],
                           env=env, capture_output=True, text=True, cwd=root)
    assert setup.returncode == 0, setup.stdout + setup.stderr

    tg = [str(BIN / "tgbench")]
    cases = {
        "width-abc": tg + ["train", "--corpus", str(corpus), *TINY, "--width", "abc", "--out", "r-abc"],
        "set-maybe": tg + ["train", "--model", "tg", "--corpus", str(corpus), *TINY, "--set", "detach_memory=maybe",
                           "--out", "r-maybe"],
        "typed-run-config": tg + ["train", "--config", "typed.toml", "--out", "r-typed"],
        "lr-run-config": tg + ["train", "--config", "lr.toml", "--out", "r-lr"],
        "options-run-config": tg + ["train", "--config", "options.toml", "--out", "r-options"],
        "huge-bpe": tg + ["train", "--corpus", str(corpus), *TINY, "--tokenizer", "bpe-10000000", "--out", "r-bpe"],
        "gpt2-width-128": tg + ["train", "--model", "gpt2", "--corpus", str(corpus), *TINY, "--width", "128",
                                "--out", "r-gpt2"],
        "validate-tokenizer": tg + ["validate", str(grid_file(root / "v1.toml", corpus, tokenizer='"bpe"'))],
        "validate-splitter": tg + ["validate", str(grid_file(root / "v2.toml", corpus, splitter='"nltk"'))],
        "validate-corpus": tg + ["validate", str(grid_file(root / "v3.toml", root / "missing.txt"))],
        "validate-option": tg + ["validate", str(grid_file(root / "v4.toml", corpus,
                                                           options="{ detach_memory = \"maybe\" }"))],
        "validate-ok": tg + ["validate", str(grid_file(root / "v5.toml", corpus))],
        "lm-eval-missing-run": [str(BIN / "tgbench-lm-eval"), "--model", "tgbench", "--model_args",
                                f"run={root / 'nope'}", "--tasks", "tg_reversal"],
        "lm-eval-task-typo": [str(BIN / "tgbench-lm-eval"), "--model", "tgbench", "--model_args",
                              f"run={root / 'broken-run'}", "--tasks", "tg_reversl"],
        "mis-scoring": tg + ["eval", "--task", "ppl", "--run", str(root / "broken-run")],
        "hub-dataset": tg + ["eval", "--task", str(root / "hub_task.yaml"), "--run", str(root / "broken-run")],
        "dry-run-80": tg + ["train-grid", "--preset", "paper-ablations", "--dry-run"],
        "help-80": tg + ["train", "--help"],
        "offline-not-forced": [sys.executable, "-c", "import os, tgbench, tgbench.evaluation.evaluate; "
                               "print('forced' if os.environ.get('HF_HUB_OFFLINE') else 'free')"],
    }
    free_env = {k: v for k, v in env.items() if not k.startswith("HF_")}
    processes = {name: subprocess.Popen(args, env=free_env if name == "offline-not-forced" else env, cwd=root,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name, args in cases.items()}
    results = {name: (p.wait(timeout=300), p.stdout.read()) for name, p in processes.items()}
    results["root"] = root
    return results


def assert_one_line_error(code: int, output: str, *named: str) -> None:
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    fixes = [line for line in lines if line.startswith("fix:")]
    assert len(errors) == 1 and len(fixes) == 1, output  # one line each, never wrapped at 80 columns
    assert "Traceback" not in output and "internal error" not in output, output
    for text in named:
        assert text in errors[0] + fixes[0], (text, output)


@pytest.mark.parametrize(("case", "named"), [
    ("width-abc", ["--width", "'abc'"]),
    ("set-maybe", ["detach_memory", "'maybe'", "true or false"]),
    ("typed-run-config", ["width", "'wide'"]),
    ("lr-run-config", ["train.lr", "'fast'"]),
    ("options-run-config", ["model_options"]),
    ("huge-bpe", ["bpe-10000000", "bpe-262144"]),
    ("validate-tokenizer", ["tokenizer 'bpe'"]),
    ("validate-splitter", ["splitter 'nltk'"]),
    ("validate-corpus", ["missing.txt"]),
    ("validate-option", ["detach_memory", "'maybe'"]),
    ("lm-eval-missing-run", ["run=", "nope", "not a tgbench run"]),
    ("lm-eval-task-typo", ["tg_reversl", "tg_reversal"]),
    ("mis-scoring", ["dropping", "scored", "score()"]),
    ("hub-dataset", ["tgbench-tests/no-such-dataset", "HF_HOME"]),
])
def test_bad_input_is_one_error_line_with_a_fix(outcomes, case, named):
    code, output = outcomes[case]
    assert_one_line_error(code, output, *named)


def test_nothing_was_written_by_a_refused_train(outcomes):
    for name in ("r-abc", "r-maybe", "r-typed", "r-lr", "r-options", "r-bpe"):
        assert not (outcomes["root"] / name).exists(), name


def test_one_head_rule_lets_gpt2_train_at_width_128(outcomes):
    import tomllib

    code, output = outcomes["gpt2-width-128"]
    assert code == 0, output
    recorded = tomllib.loads((outcomes["root"] / "r-gpt2" / "config.toml").read_text())["model_options"]
    assert recorded["heads"] == 2  # ceil(128 / 64), the rule TG uses too


def test_a_good_grid_validates(outcomes):
    code, output = outcomes["validate-ok"]
    assert code == 0 and "ok" in output, output


def test_tables_keep_run_ids_whole_at_80_columns(outcomes):
    from tgbench.plan.expand import expand
    from tgbench.plan.validate import load_grid

    code, output = outcomes["dry-run-80"]
    assert code == 0, output
    for spec in expand(load_grid(preset="paper-ablations")):
        assert spec.run_id in output, spec.run_id
    assert "…" not in output


def test_help_shows_defaults_at_80_columns(outcomes):
    code, output = outcomes["help-80"]
    assert code == 0
    flat = " ".join(output.split())
    for default in ("(gpt2)", "(768)", "(embedded)", "(syntok)", "(2.5e-4)", "(4096)"):
        assert default in flat, (default, output)


def test_importing_tgbench_leaves_the_hub_settings_alone(outcomes):
    code, output = outcomes["offline-not-forced"]
    assert code == 0 and output.strip() == "free", output


def test_a_run_too_large_for_the_cpu_is_warned_about(capsys):
    import torch

    from tgbench.adapter import Vocab
    from tgbench.models.tg import TGAdapter
    from tgbench.training.advice import warn_if_large

    with torch.device("meta"):
        paper_size = TGAdapter().build(Vocab(50257))  # a bare `tgbench train --model tg`: 12 x 768
        tiny = TGAdapter(width=32, layers=2).build(Vocab(50257))
    hours = warn_if_large(paper_size, 904_412, torch.device("cpu"))
    output = " ".join(capsys.readouterr().err.split())
    assert hours > 1 and "warning: this run is large for a CPU" in output and "--width 128" in output
    assert warn_if_large(tiny, 904_412, torch.device("cpu")) < 1
    assert "warning" not in capsys.readouterr().err
    assert warn_if_large(paper_size, 904_412, torch.device("meta")) == 0.0  # only CPUs are warned about


@pytest.mark.slow
def test_lm_eval_task_typo_outside_tgbench_is_one_error_line(outcomes):
    done = subprocess.run([str(BIN / "tgbench-lm-eval"), "--model", "tgbench", "--model_args",
                           f"run={outcomes['root'] / 'broken-run'}", "--tasks", "hellaswg"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, timeout=600)
    assert_one_line_error(done.returncode, done.stdout + done.stderr, "hellaswg")
