"""Rough edges a newcomer hit (issue 26), each through the real `tgbench` executable in a subprocess: stale
results tables, silently lost runs, two writers of one run directory, misleading errors. User errors are one
`error:` line and one `fix:` line, exit 2, no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from corpora import word_documents, write_plain

BIN = Path(sys.executable).parent
TGBENCH = str(BIN / "tgbench")
DATA = ["--tokenizer", "bpe-300", "--splitter", "blingfire"]
TINY = ["--model", "gpt2", "--width", "16", "--layers", "1", "--context", "32", "--tokens", "400",
        "--batch-tokens", "200", "--device", "cpu", "--no-progress", *DATA]


def assert_one_line_error(code: int, output: str, *named: str) -> None:
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    fixes = [line for line in lines if line.startswith("fix:")]
    assert len(errors) == 1 and len(fixes) == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    for text in named:
        assert text in errors[0] + fixes[0], (text, output)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A corpus with its cache, and the environment every subprocess runs in (COLUMNS=80, not a terminal)."""
    root = tmp_path_factory.mktemp("rough-edges")
    corpus = write_plain(root / "corpus.txt", word_documents(120))
    environment = {**os.environ, "TGBENCH_CACHE_DIR": str(root / "cache"), "COLUMNS": "80"}
    return {"root": root, "corpus": corpus, "env": environment}


def tg(env, *args, cwd=None, timeout=300) -> tuple[int, str]:
    done = subprocess.run([TGBENCH, *map(str, args)], env=env["env"], cwd=cwd or env["root"], capture_output=True,
                          text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def grid_toml(env, name: str, models: str, budgets: str = "[400]") -> Path:
    path = env["root"] / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        widths = [16]
        layers = 1
        budgets = {budgets}
        [data]
        corpus = "{env['corpus']}"
        tokenizer = "bpe-300"
        splitter = "blingfire"
        [train]
        batch_tokens = 200
        eval_tokens = 200
        device = "cpu"
    """) + textwrap.dedent(models))
    return path


GPT2 = """
    [[models]]
    adapter = "gpt2"
    options = { context = 32, dropout = 0.0 }
"""


# -- 1. a results table written before an evaluation is never rendered --------------------------------------
def test_eval_and_report_rebuild_a_stale_results_table(env):
    grid = env["root"] / "stale"
    code, output = tg(env, "train-grid", grid_toml(env, "stale", GPT2), "--out", grid, "--no-progress")
    assert code == 0, output
    before = pd.read_csv(grid / "results.csv")
    assert before["test_loss"].isna().all()
    stale_text = (grid / "results.csv").read_text()
    code, output = tg(env, "eval", "--task", "ppl", "--runs", grid)
    assert code == 0, output
    assert pd.read_csv(grid / "results.csv")["test_loss"].notna().all(), output  # eval rebuilt it
    # the table from before the evaluation, put back with an old date: report must not render it
    (grid / "results.csv").write_text(stale_text)
    old = time.time() - 3600
    os.utime(grid / "results.csv", (old, old))
    code, output = tg(env, "report", grid)
    assert code == 0, output
    assert pd.read_csv(grid / "results.csv")["test_loss"].notna().all()
    assert "no test evaluation" not in (grid / "report.html").read_text()


# -- 2. two [[models]] entries with one run id --------------------------------------------------------------
def test_duplicate_run_ids_are_an_error_asking_for_a_variant(env):
    models = GPT2 + GPT2.replace("context = 32", "context = 64")
    path = grid_toml(env, "dup", models)
    for args in (["validate", path], ["train-grid", path, "--dry-run"],
                 ["train-grid", path, "--out", env["root"] / "dup-grid", "--no-progress"]):
        code, output = tg(env, *args)
        assert_one_line_error(code, output, "models[0] and models[1]", "context", "variant =")
    assert not (env["root"] / "dup-grid").exists()
    code, output = tg(env, "validate", grid_toml(env, "seeds", GPT2, budgets="[400, 400]"))
    assert_one_line_error(code, output, "budgets", "400 more than once")


# -- 4. one writer per run directory ------------------------------------------------------------------------
HOLDER = """
import sys, time
from tgbench.runs import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_training_into_a_locked_run_directory_is_refused_and_a_stale_lock_taken_over(env):
    run = env["root"] / "locked"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env=env["env"])
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, output = tg(env, "train", *TINY, "--corpus", env["corpus"], "--out", run)
        assert_one_line_error(code, output, f"in use by process {holder.pid}", str(run), "another --out")
        assert not (run / "metrics.jsonl").exists() and not (run / "config.toml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the lock file stays behind, naming a dead process
        holder.wait()
    assert (run / "LOCK").read_text().split()[0] == str(holder.pid)
    code, output = tg(env, "train", *TINY, "--corpus", env["corpus"], "--out", run)
    assert code == 0, output
    assert f"took over the lock of process {holder.pid}" in " ".join(output.split())
    assert (run / "DONE").exists() and not (run / "LOCK").exists()
