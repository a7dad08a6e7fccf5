"""Rough edges a newcomer hit, each through the real `tgbench` executable in a subprocess: stale
results tables, silently lost runs, two writers of one run directory, misleading errors. User errors are one
`error:` line and one `fix:` line, exit 2, no traceback.
"""

from __future__ import annotations

import os
import re
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
    environment = {**os.environ, "TGBENCH_CACHE_DIR": str(root / "cache"), "COLUMNS": "80",
                   "PYTHONPATH": str(root)}  # module:Class adapters written by the tests import from here
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


def tg_many(env, cases: dict[str, list]) -> dict[str, tuple[int, str]]:
    """Start every case at once (each costs a Python start-up); name -> (exit code, output)."""
    processes = {name: subprocess.Popen([TGBENCH, *map(str, args)], env=env["env"], cwd=env["root"], text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for name, args in cases.items()}
    return {name: (p.wait(timeout=300), p.stdout.read()) for name, p in processes.items()}


TG = """
    [[models]]
    adapter = "tg"
    options = { dropout = 0.0, attention_dropout = 0.0, memory_slots = 4 }
"""


@pytest.fixture(scope="module")
def grid(env):
    """A two-run grid (TG and GPT-2), trained in one process (not evaluated); its output is `grid.output`."""
    out = env["root"] / "stale"
    code, output = tg(env, "train-grid", grid_toml(env, "stale", GPT2 + TG), "--out", out, "--no-progress")
    assert code == 0, output
    (out / "train-grid.log").write_text(output)
    return out


# -- 1. a results table written before an evaluation is never rendered --------------------------------------
def test_eval_and_report_rebuild_a_stale_results_table(env, grid):
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
from tgbench.training.rundir import run_lock
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


# -- 5. exceptions from an adapter's own code ---------------------------------------------------------------
RAISING_ADAPTER = """
from tgbench.models.gpt2 import GPT2Adapter


class LossRaises(GPT2Adapter):
    name = "loss-raises"

    def loss(self, model, batch, epoch):
        raise ValueError("a bug in the adapter")
"""


def test_an_adapter_that_raises_or_fails_to_import_is_a_user_error_naming_its_file_and_line(env):
    root = env["root"]
    (root / "raising.py").write_text(RAISING_ADAPTER)
    (root / "unimportable.py").write_text("import json\n\nraise RuntimeError('broken at import')\n")
    (root / "badsyntax.py").write_text("class X(:\n    pass\n")
    (root / "pkg_adapter").mkdir(exist_ok=True)
    (root / "pkg_adapter" / "__init__.py").write_text("import no_such_dependency_xyz\n")
    args = [*TINY, "--corpus", env["corpus"]]
    outcomes = tg_many(env, {
        "loss": ["train", *args, "--model", f"{root / 'raising.py'}:LossRaises", "--out", "r-loss"],
        "import": ["train", *args, "--model", f"{root / 'unimportable.py'}:X", "--out", "r-import"],
        "syntax": ["validate", grid_toml(env, "syntax", GPT2.replace('"gpt2"', f'"{root / "badsyntax.py"}:X"'))],
        "module": ["train", *args, "--model", "pkg_adapter:X", "--out", "r-module"],
        "debug-after": ["train", *args, "--model", f"{root / 'raising.py'}:LossRaises", "--out", "r-debug",
                        "--debug"],
    })
    assert_one_line_error(*outcomes["loss"], "ValueError: a bug in the adapter", f"{root / 'raising.py'}:9",
                          "in loss", "plug-in code raised", "fix the code at that line")
    assert_one_line_error(*outcomes["import"], "failed to import", "broken at import",
                          f"{root / 'unimportable.py'}:3")
    assert_one_line_error(*outcomes["syntax"], "failed to import", "SyntaxError", f"{root / 'badsyntax.py'}:1")
    assert_one_line_error(*outcomes["module"], "module 'pkg_adapter' failed to import", "no_such_dependency_xyz",
                          "__init__.py:1")
    code, output = outcomes["debug-after"]  # --debug after the subcommand shows the traceback
    assert code != 0 and "Traceback" in output and 'raising.py", line 9, in loss' in output, output


# -- 6. output paths that cannot be written ---------------------------------------------------------------
def test_unwritable_output_paths_are_errors_naming_the_path(env, grid):
    root = env["root"]
    (root / "a-file.md").write_text("not a directory\n")
    (root / "a-dir").mkdir(exist_ok=True)
    outcomes = tg_many(env, {
        "file-in-way": ["train", *TINY, "--corpus", env["corpus"], "--out", root / "a-file.md" / "run"],
        "proc": ["train", *TINY, "--corpus", env["corpus"], "--out", "/proc/tgbench-run"],
        "grid-proc": ["train-grid", grid_toml(env, "proc", GPT2), "--out", "/proc/tgbench-grid", "--no-progress"],
        "report-dir": ["report", grid, "-o", root / "a-dir"],
        "report-file-in-way": ["report", grid, "-o", root / "a-file.md" / "report.html"],
    })
    assert_one_line_error(*outcomes["file-in-way"], f"cannot write '{root / 'a-file.md' / 'run'}'", "a file is in")
    assert_one_line_error(*outcomes["proc"], "cannot write '/proc/tgbench-run'")
    assert_one_line_error(*outcomes["grid-proc"], "cannot write '/proc/tgbench-grid'")
    assert_one_line_error(*outcomes["report-dir"], f"-o '{root / 'a-dir'}' is a directory",
                          str(root / "a-dir" / "report.html"))
    assert_one_line_error(*outcomes["report-file-in-way"], f"cannot write '{root / 'a-file.md' / 'report.html'}'")


# -- 7. empty and foreign inputs ----------------------------------------------------------------------------
def test_empty_and_foreign_directories_are_errors_and_a_run_directory_gets_a_one_run_report(env, grid):
    import shutil

    root = env["root"]
    (root / "empty").mkdir(exist_ok=True)
    foreign = root / "foreign"
    foreign.mkdir(exist_ok=True)
    (foreign / "config.toml").write_text('[server]\nport = 8080\n')
    garbage = root / "garbage"
    garbage.mkdir(exist_ok=True)
    (garbage / "config.toml").write_bytes(bytes(range(256)) * 4)
    other_tool = root / "other-tool"
    other_tool.mkdir(exist_ok=True)
    (other_tool / "notes.txt").write_text("someone else's files\n")
    bad_csv = root / "bad-csv"
    bad_csv.mkdir(exist_ok=True)
    (bad_csv / "results.csv").write_bytes(b"\xff\xfe\x00" * 300)
    run = Path(shutil.copytree(next(p for p in grid.iterdir() if (p / "DONE").exists()), root / "one-run"))
    outcomes = tg_many(env, {
        "report-empty": ["report", root / "empty"],
        "fit-empty": ["fit", root / "empty"],
        "eval-foreign": ["eval", "--task", "ppl", "--run", foreign],
        "eval-garbage": ["eval", "--task", "ppl", "--run", garbage],
        "report-foreign": ["report", foreign],
        "train-foreign": ["train", *TINY, "--corpus", env["corpus"], "--out", foreign],
        "train-other-tool": ["train", *TINY, "--corpus", env["corpus"], "--out", other_tool],
        "fit-bad-csv": ["fit", bad_csv],
        "report-run": ["report", run],
    })
    for case in ("report-empty", "fit-empty"):
        assert_one_line_error(*outcomes[case], f"'{root / 'empty'}' holds no runs")
    for case, path in (("eval-foreign", foreign), ("eval-garbage", garbage), ("report-foreign", foreign),
                       ("train-foreign", foreign)):
        assert_one_line_error(*outcomes[case], f"not a tgbench run: {path}")
    assert_one_line_error(*outcomes["train-other-tool"], f"'{other_tool}' is not empty", "notes.txt")
    assert_one_line_error(*outcomes["fit-bad-csv"], str(bad_csv / "results.csv"))
    assert (foreign / "config.toml").read_text() == '[server]\nport = 8080\n'
    assert sorted(p.name for p in other_tool.iterdir()) == ["notes.txt"]
    code, output = outcomes["report-run"]
    assert code == 0, output
    page = (run / "report.html").read_text()
    assert "1 run, 1 done" in " ".join(page.split()) and "gpt2 vs gpt2" not in page


# -- 3. changed adapter code is noticed ---------------------------------------------------------------------
PLUGIN = """
from tgbench.models.gpt2 import GPT2Adapter


class Plugin(GPT2Adapter):
    name = "plugin"
"""


def test_a_changed_plug_in_adapter_is_not_taken_for_a_done_run(env):
    import tomllib

    root = env["root"]
    source = root / "plugin.py"
    source.write_text(PLUGIN)
    model = f"{source}:Plugin"
    args = ["train", *TINY, "--corpus", env["corpus"], "--model", model, "--out", root / "plugin-run"]
    assert tg(env, *args)[0] == 0
    code, output = tg(env, *args)
    assert code == 0 and "already DONE" in output, output
    source.write_text(PLUGIN + "    # a bug fixed\n")
    code, output = tg(env, *args)
    assert_one_line_error(code, output, "the adapter's code changed", str(source), "--resume never")
    code, output = tg(env, *args, "--resume", "never")
    assert code == 0 and "already DONE" not in output, output
    import hashlib

    meta = tomllib.loads((root / "plugin-run" / "config.toml").read_text())["meta"]
    assert meta["adapter_code"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    # a grid retrains the run whose adapter changed, instead of skipping it
    path = grid_toml(env, "plugin-grid", GPT2.replace('"gpt2"', f'"{model}"'))
    assert tg(env, "train-grid", path, "--out", root / "plugin-grid", "--no-progress")[0] == 0
    source.write_text(PLUGIN + "    # another fix\n")
    code, output = tg(env, "train-grid", path, "--out", root / "plugin-grid", "--no-progress")
    assert code == 0 and "the adapter's code changed" in output and "retraining it" in output, output
    (run,) = [p for p in (root / "plugin-grid").iterdir() if (p / "DONE").exists()]
    meta = tomllib.loads((run / "config.toml").read_text())["meta"]
    assert meta["adapter_code"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


# -- 9. per-run peak memory -----------------------------------------------------------------------------------
def test_peak_memory_is_each_runs_own_not_the_process_maximum(grid):
    results = pd.read_csv(grid / "results.csv")
    peaks = results["peak_memory_mb"].tolist()
    assert len(peaks) == 2 and all(0 <= p < 200 for p in peaks), peaks  # the process itself holds > 300 MB
    assert peaks[0] != peaks[1], peaks


# -- 10. runs that cannot learn are warned about ------------------------------------------------------------
def test_a_run_with_few_steps_that_ends_untrained_is_warned_about(env, grid):
    code, output = tg(env, "train", *TINY, "--corpus", env["corpus"], "--out", env["root"] / "few-steps")
    flat = " ".join(output.split())
    assert code == 0, output
    assert re.search(r"warning: this run takes only \d optimizer steps", flat) and "--batch-tokens" in flat, output
    assert "near (or above) this corpus's unigram perplexity" in flat and "--lr" in flat, output
    grid_output = (grid / "train-grid.log").read_text()
    # a grid warns per run as well, and flags the run in results.csv (a researcher's tiny grid is not always on purpose)
    assert re.search(r"warning: run \S+ is undertrained: only \d+ optimizer steps", grid_output), grid_output


def test_the_untrained_warning_does_not_fire_on_a_run_that_learned(capsys):
    import math

    import numpy as np

    from tgbench.plan.config import TrainConfig
    from tgbench.training.advice import unigram_loss, warn_if_few_steps, warn_if_untrained

    docs = [[np.array([0, 0, 0, 1])], [np.array([0, 1, 2])]]
    assert math.isclose(unigram_loss(docs, [[np.array([0])]], 4), -math.log(5 / 11))  # add-one: 5, 3, 2, 1
    assert not warn_if_untrained(math.log(100), math.log(400), 500, TrainConfig())
    assert warn_if_untrained(math.log(390), math.log(400), 500, TrainConfig())
    assert not warn_if_few_steps(100, TrainConfig()) and warn_if_few_steps(13, TrainConfig())


# -- 8. documents without punctuation, and files that are not text -------------------------------------------
def test_long_unpunctuated_documents_are_kept_and_binary_files_refused(env):
    import numpy as np

    root = env["root"]
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta river stone garden city music light".split()
    unpunctuated = [" ".join(rng.choice(words, 400)) for _ in range(300)]  # 400 words, no sentence boundary
    write_plain(root / "unpunctuated.txt", unpunctuated)
    write_plain(root / "one-sentence.txt", [f"Document {i} has one short sentence." for i in range(300)])
    (root / "binary.txt").write_bytes(bytes(rng.integers(0, 256, 200_000, dtype=np.uint8)))
    stats = ["data", "stats", "--tokenizer", "bpe-300", "--splitter", "blingfire"]
    outcomes = tg_many(env, {
        "unpunctuated": [*stats[:2], root / "unpunctuated.txt", *stats[2:]],
        "one-sentence": [*stats[:2], root / "one-sentence.txt", *stats[2:]],
        "binary": [*stats[:2], root / "binary.txt", *stats[2:]],
    })
    code, output = outcomes["unpunctuated"]
    assert code == 0, output
    train_row = next(line for line in output.splitlines() if "train" in line and "│" in line)
    cells = [c.strip() for c in train_row.split("│") if c.strip()]
    assert int(cells[1].replace(",", "")) > 30 and cells[7] == "0", output  # documents kept, none dropped
    assert_one_line_error(*outcomes["one-sentence"], "dropped by the rule", "at least 2 sentences",
                          "min_document_sentences = 1")
    assert "larger corpus" not in outcomes["one-sentence"][1]
    assert_one_line_error(*outcomes["binary"], f"corpus file '{root / 'binary.txt'}' is not text")


# -- 11. the smaller ones ---------------------------------------------------------------------------------
def test_smaller_rough_edges_through_the_cli(env):
    import stat
    import tomllib

    root = env["root"]
    typed = grid_toml(env, "typed", GPT2, budgets='["1k"]')
    outcomes = tg_many(env, {
        "version": ["--version"],
        "tokens-1e5": ["train", *TINY, "--corpus", env["corpus"], "--tokens", "4e2", "--out", "r-1e5"],
        "tokens-bad": ["train", *TINY, "--corpus", env["corpus"], "--tokens", "1.5k1", "--out", "r-bad"],
        "typed": ["validate", typed],
        "dry-run": ["train-grid", "--preset", "demo", "--dry-run"],
    })
    import tgbench

    code, output = outcomes["version"]
    assert code == 0 and output.strip() == f"tgbench {tgbench.__version__}", output
    code, output = outcomes["tokens-1e5"]
    assert code == 0, output
    assert tomllib.loads((root / "r-1e5" / "config.toml").read_text())["train"]["tokens"] == 400
    # checkpoints are readable by the group, like every other file of the run
    for path in (root / "r-1e5" / "checkpoints").iterdir():
        assert path.stat().st_mode & stat.S_IRGRP == (root / "r-1e5" / "config.toml").stat().st_mode & stat.S_IRGRP
    assert (root / "r-1e5" / "checkpoints" / "best.safetensors").stat().st_mode & stat.S_IRGRP
    assert_one_line_error(*outcomes["tokens-bad"], "--tokens", "'1.5k1'", "not a number of tokens")
    assert_one_line_error(*outcomes["typed"], "budgets", "must be a list of integers", "a list of str")
    code, output = outcomes["dry-run"]
    flat = " ".join(output.split())
    assert code == 0 and "0.0000" not in output and "TFLOP" in flat, output
    assert re.search(r"on this machine's CPU ~\d+ (s|min|h) one run at a time", flat), output


def test_lm_eval_cli_uses_tgbench_batching_and_device_defaults(env, grid):
    import torch

    run = next(p for p in grid.iterdir() if (p / "DONE").exists())
    done = subprocess.run([str(BIN / "tgbench-lm-eval"), "--model", "tgbench", "--model_args", f"run={run}",
                           "--tasks", "tg_ppl", "--limit", "3"], env=env["env"], capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "batch_size: 32" in output, output  # lm-eval's default of 1 made it ~10x slower than tgbench eval
    if not torch.cuda.is_available():
        assert "cuda" not in output.lower(), output


@pytest.mark.slow
def test_an_unknown_eval_task_names_lm_eval_and_include_path(env, grid):
    run = next(p for p in grid.iterdir() if (p / "DONE").exists())
    code, output = tg(env, "eval", "--task", "no_such_task_xyz", "--run", run, timeout=900)
    assert_one_line_error(code, output, "unknown task 'no_such_task_xyz'", "lm-eval", "--include-path")


def test_tick_labels_tell_close_ticks_apart_and_legends_list_only_what_is_drawn():
    from tgbench.report.plots import Series, legend_entries, tick_labels

    assert tick_labels([10_000, 10_050, 10_100]) == ["10k", "10.05k", "10.1k"]
    assert tick_labels([1_000, 10_000, 100_000]) == ["1k", "10k", "100k"]
    drawn = Series("tg", "#000", line=[(1, 2), (2, 1)])
    nothing = Series("gpt2", "#111", line=[(1, 2)])  # one point of a line draws nothing
    training_only = [Series("lstm", "#222", line=[]), Series("lstm", "#222", line=[(1, 2), (3, 1)], dashed=True,
                                                             legend=False)]
    entries = legend_entries([drawn, nothing, *training_only])
    assert [(e.name, e.dashed) for e in entries] == [("tg", False), ("lstm", True)]


def test_the_live_runs_table_scrolls_with_the_running_run(tmp_path):
    from tgbench.plan.expand import expand
    from tgbench.plan.grid import GridConfig
    from tgbench.training.board import _Board

    grid = GridConfig.from_dict({"widths": [16, 32, 48, 64], "budgets": [100, 200, 300, 400, 500],
                                 "models": [{"adapter": "gpt2"}]})
    board = _Board(expand(grid), tmp_path)
    ids = [s.run_id for s in board.specs]
    for run_id in ids[:12]:
        board.state[run_id] = "done"
    board.state[ids[12]] = "running"
    shown = [s.run_id for s in board.visible(6)]
    assert len(shown) == 6 and ids[12] in shown and ids[0] not in shown
    table = board.table(rows=6)
    assert table.row_count == 6 and "of 20" in table.caption and "12 done" in table.caption
    assert board.table().row_count == 20


# -- 12. the sizes the docs quote are the ones a command prints ---------------------------------------------
@pytest.mark.slow
def test_preset_comments_and_readme_quote_the_sizes_data_stats_prints():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([TGBENCH, "data", "stats", "--tokenizer", "bpe-8192"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if cells and cells[0] in ("train", "valid", "test") and cells[0] not in rows:
            rows[cells[0]] = (cells[1], cells[3])  # documents, lexical tokens
    readme = (root / "README.md").read_text()
    docs = " / ".join(rows[s][0] for s in ("train", "valid", "test"))
    tokens = " / ".join(rows[s][1] for s in ("train", "valid", "test"))
    assert f"{docs} documents and {tokens} lexical tokens" in " ".join(readme.split())
    train_tokens = int(rows["train"][1].replace(",", ""))
    demo = " ".join((root / "tgbench/plan/presets/demo.toml").read_text().replace("#", " ").split())
    assert f"{rows['train'][0]} training documents and {rows['train'][1]} lexical training tokens" in demo
    study = " ".join((root / "tgbench/plan/presets/cpu-study.toml").read_text().replace("#", " ").split())
    assert f"800k is {round(100 * 800_000 / train_tokens)}% of the {rows['train'][1]}-token training split" in study
