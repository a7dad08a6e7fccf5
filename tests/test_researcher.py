"""What a researcher comparing their own architecture hit, each checked through the CLI where the
CLI is involved: a plug-in's exception fails its own run only, undertrained grid runs are flagged, ...

The grids are tiny (one width, one budget, GPT-2 at width 16) on a plain-text corpus written into tmp_path
(`bpe-300`, `blingfire`, the encoded cache built once here so the subprocesses only read it).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from corpora import word_documents, write_plain

from tgbench.data import DataConfig, load_corpus
from tgbench.plan.config import to_toml
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.training.executor import run_grid

CLI = [sys.executable, "-m", "tgbench.cli"]
HERE = Path(__file__).resolve().parent
RAISING_ADAPTER = f"{HERE / 'fixtures_raising_adapter.py'}:RaisingGPT2Adapter"
TRAIN = {"epochs": 1, "batch_tokens": 64, "log_every": 2, "checkpoint_every": 4, "eval_tokens": 300,
         "device": "cpu", "threads": 1}


def squash(text: str) -> str:
    """Output without whitespace (rich wraps long lines at the terminal width)."""
    return "".join(text.split())


@dataclasses.dataclass
class Workspace:
    root: Path
    data: DataConfig
    env: dict[str, str]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("researcher")
    corpus = write_plain(root / "corpus.txt", word_documents(80, 0))
    data = DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire", cache_dir=str(root / "cache"),
                      valid_fraction=0.1, test_fraction=0.1)
    load_corpus(data, progress=False)
    env = {**os.environ, "TGBENCH_CACHE_DIR": str(root / "cache"), "COLUMNS": "400"}
    return Workspace(root=root, data=data, env=env)


def grid_raw(ws: Workspace, name: str, models: list[dict], **overrides) -> dict:
    raw = {"name": name, "widths": [16], "layers": 1, "head_dim": 8, "budgets": [800],
           "models": models, "data": dataclasses.asdict(ws.data), "train": dict(TRAIN)}
    raw.update(overrides)
    return raw


def cli(ws: Workspace, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=ws.env, cwd=cwd or ws.root, capture_output=True, text=True,
                          timeout=300)


# -- 3. a plug-in's exception in a grid --------------------------------------------------------------
def train_raising_grid(ws: Workspace, jobs: int) -> tuple[subprocess.CompletedProcess, Path, list[str]]:
    """The plug-in that raises at its second step beside gpt2, through `tgbench train-grid --jobs N`."""
    raw = grid_raw(ws, "raising", [{"adapter": RAISING_ADAPTER, "variant": "bad", "options": {"context": 32}},
                                   {"adapter": "gpt2", "options": {"context": 32}}])
    path = ws.root / "raising.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    ids = [spec.run_id for spec in expand(GridConfig.from_dict(raw))]
    out = ws.root / f"raising-grid-{jobs}"
    done = cli(ws, "train-grid", str(path), "--out", str(out), "--no-progress", "--jobs", str(jobs))
    return done, out, ids


@pytest.fixture(scope="module")
def raising_grid(ws) -> tuple[subprocess.CompletedProcess, Path, list[str]]:
    return train_raising_grid(ws, jobs=1)


def test_a_plugin_exception_fails_its_run_and_the_grid_goes_on(raising_grid):
    check_plugin_failure(*raising_grid)


def test_a_plugin_exception_in_a_worker_fails_its_run_and_the_grid_goes_on(ws):
    done, out, ids = train_raising_grid(ws, jobs=2)
    check_plugin_failure(done, out, ids)
    assert "is undertrained" in (out / ids[1] / "worker.log").read_text()  # the worker's log warns too


def check_plugin_failure(done: subprocess.CompletedProcess, out: Path, ids: list[str]) -> None:
    bad_id, gpt2_id = ids
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed  # finished, but a run failed
    assert "internal error" not in printed and "please report" not in printed
    flat = squash(printed)
    # the user's error: the adapter's file and line, without --debug; the failed run named at the end
    assert squash("plug-in code raised IndexError: Target 383 is out of bounds") in flat
    assert squash("fixtures_raising_adapter.py:") in flat
    assert squash(f"1 run(s) failed: {bad_id}") in flat
    assert "fixtures_raising_adapter.py:" in (out / bad_id / "FAILED").read_text()
    assert (out / gpt2_id / "DONE").exists()  # the other model trained
    results = pd.read_csv(out / "results.csv").set_index("run_id")
    assert results.loc[bad_id, "status"] == "failed" and results.loc[gpt2_id, "status"] == "done"


# -- 2. undertrained runs in a grid ----------------------------------------------------------------
def test_undertrained_grid_runs_are_warned_about_and_flagged(raising_grid):
    done, out, (_, gpt2_id) = raising_grid
    flat = squash(done.stdout + done.stderr)
    # 800 tokens at 64 per step: ~12 steps; the grid's log says so
    assert squash(f"run {gpt2_id} is undertrained: only") in flat
    results = pd.read_csv(out / "results.csv").set_index("run_id")
    assert "few-steps" in str(results.loc[gpt2_id, "flags"])
    from tgbench.report.page import render_report

    html = render_report(out)
    assert "few-steps" in html


# -- 1. compare: pooling only what measures the same thing -------------------------------------------
LSTM = str(HERE.parent / "examples" / "lstm_adapter.py") + ":LSTMAdapter"


def two_model_grid(ws: Workspace, name: str, lstm_train: dict | None = None) -> Path:
    """gpt2 and the example LSTM plug-in; `lstm_train` overrides the LSTM's training settings."""
    lstm = {"adapter": LSTM, "options": {"context": 32}, **({"train": lstm_train} if lstm_train else {})}
    raw = grid_raw(ws, name, [{"adapter": "gpt2", "options": {"context": 32}}, lstm], reference="gpt2")
    raw["train"]["lr"] = 3e-3
    out = ws.root / name
    # trained in this process (the CLI's compare is what these tests run as a subprocess)
    frame = run_grid(GridConfig.from_dict(raw), out, progress=False, jobs=1)
    assert set(frame["status"]) == {"done"}
    return out


@pytest.fixture(scope="module")
def grids(ws) -> tuple[Path, Path]:
    """Grid A (both models at LR 3e-3) and grid B (the LSTM at LR 1e-2, gpt2 exactly as in A)."""
    return two_model_grid(ws, "A"), two_model_grid(ws, "B", {"lr": 1e-2})


def test_compare_refuses_to_pool_runs_trained_at_other_learning_rates(ws, grids):
    a, b = grids
    done = cli(ws, "compare", str(a), str(b), "--out", str(ws.root / "cmp-ab"))
    printed = squash(done.stdout + done.stderr)
    assert done.returncode == 2, printed
    assert squash("label 'lstm' would pool runs trained with different train.lr: 0.003 in A; 0.01 in B") in printed
    assert "--by-grid" in printed


def test_compare_counts_a_run_found_in_two_grids_once_and_shows_each_grids_tuning(ws, grids):
    import shutil

    a, _ = grids
    copy = ws.root / "A-copy"
    if not copy.exists():
        shutil.copytree(a, copy)
        # a real sweep's tune.json in the copy: the comparison shows each grid's own tuning
        shutil.copy(HERE.parent / "reports" / "cpu-peers" / "tune.json", copy / "tune.json")
    out = ws.root / "cmp-copy"
    done = cli(ws, "compare", str(a), str(copy), "--out", str(out))
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 and set(results["grid"]) == {"A"}  # each run once, from the first grid
    assert squash("2 run(s) found in more than one grid (same label and config hash) counted once") in squash(printed)
    assert squash("gpt2: 1 runs (1 from A)") in squash(printed)
    html = (out / "report.html").read_text()
    assert "No tune.json in this grid directory" not in html
    assert "grid A-copy" in html and "LR sweep at width" in html and "Grid A has no tune.json" in html


def test_compare_by_grid_compares_each_label_across_grids(ws, grids):
    a, b = grids
    out = ws.root / "cmp-by-grid"
    done = cli(ws, "compare", str(a), str(b), "--by-grid", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    fits = __import__("json").loads((out / "fits.json").read_text())
    pairs = [tuple(p) for p in fits["pairs"]]
    assert ("gpt2@A", "lstm@A") in pairs and ("lstm@A", "lstm@B") in pairs and ("gpt2@A", "gpt2@B") in pairs
    verdict = next(v for v in fits["verdicts"] if (v["a"], v["b"]) == ("lstm@A", "lstm@B"))
    assert verdict["sentence"]  # the old and the new LSTM, compared
    html = (out / "report.html").read_text()
    assert "lstm@A" in html and "lstm@B" in html


# -- 4. typos and references in a grid file ----------------------------------------------------------
def test_a_misspelt_adapter_is_named_before_the_baselines_it_breaks(ws):
    raw = grid_raw(ws, "typo", [{"adapter": "tg"}, {"adapter": "gtp2"}], baselines=["tg", "gpt2"])
    (ws.root / "typo.toml").write_text(to_toml(raw), encoding="utf-8")
    done = cli(ws, "train-grid", "typo.toml", "--dry-run")
    printed = squash(done.stdout + done.stderr)
    assert done.returncode == 2, printed
    assert squash("models[1]: unknown adapter 'gtp2'") in printed and squash("did you mean 'gpt2'") in printed
    assert "didyoumean'gtp2'" not in printed


def test_the_reference_may_be_given_as_the_models_adapter_string():
    raw = {"name": "ref", "widths": [16], "budgets": [800], "reference": LSTM, "baselines": ["gpt2"],
           "models": [{"adapter": "gpt2"}, {"adapter": LSTM}]}
    grid = GridConfig.from_dict(raw)
    assert grid.reference == "lstm" and grid.comparison.pairs == [("lstm", "gpt2")]


# -- 5. Ctrl-C while the workers start -----------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_ctrl_c_during_worker_start_up_prints_no_tracebacks_and_claims_no_checkpoint(ws):
    import signal
    import time

    raw = grid_raw(ws, "startup", [{"adapter": "gpt2", "options": {"context": 32}},
                                   {"adapter": "gpt2", "variant": "b", "options": {"context": 32}}])
    (ws.root / "startup.toml").write_text(to_toml(raw), encoding="utf-8")
    out = ws.root / "startup-grid"
    # a terminal's Ctrl-C goes to the whole foreground process group: the CLI and the workers it spawns
    process = subprocess.Popen([*CLI, "train-grid", "startup.toml", "--out", str(out), "--no-progress",
                                "--jobs", "2"], env=ws.env, cwd=ws.root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(_children(process.pid)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # the workers are importing torch and tgbench
    assert not any((out / r / "worker.log").exists() for r in ("gpt2-w16-l1-D800-s0",)), "too late: started"
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    printed = stdout + stderr
    assert process.returncode == 130, printed
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed
    flat = squash(printed)
    for run in out.iterdir() if out.exists() else []:
        if not (run / "checkpoints").exists():
            assert squash(f"{run}/checkpoints") not in flat  # never claims a checkpoint that is not there
    assert "interrupted" in printed


# -- 6. a user's lm-eval task: its data and settings are part of the results' key ------------------------
def rolling_task(root: Path, texts: list[str]) -> Path:
    """An lm-eval task over a local JSONL file: rolling log-likelihood of `texts`."""
    import json

    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    path = root / "my_rolling.yaml"
    path.write_text(
        "task: my_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'texts.jsonl'}\ntest_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n'
        "  - metric: word_perplexity\n    aggregation: weighted_perplexity\n    higher_is_better: false\n"
        "metadata:\n  version: 1\n")
    return path


@pytest.mark.slow  # three lm-eval evaluations (~45 s)
def test_shrinking_a_tasks_data_recomputes_its_results(ws, raising_grid):
    import json

    _, out, (_, gpt2_id) = raising_grid
    run = out / gpt2_id
    texts = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang a song .", "we ate the bread ."]
    task = rolling_task(ws.root, texts)
    first = cli(ws, "eval", "--run", str(run), "--task", str(task))
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads((run / "eval" / "my_rolling.json").read_text())["n_samples"]["my_rolling"]["effective"] == 4
    rolling_task(ws.root, texts[:2])  # the user shrinks the task's data
    second = cli(ws, "eval", "--run", str(run), "--task", str(task))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipped" not in second.stdout
    assert json.loads((run / "eval" / "my_rolling.json").read_text())["n_samples"]["my_rolling"]["effective"] == 2
    third = cli(ws, "eval", "--run", str(run), "--task", str(task))  # unchanged: skipped, and says why
    assert "skipped" in third.stdout and squash("--force recomputes them") in squash(third.stdout)


# -- 10. per-document results --------------------------------------------------------------------------
def test_ppl_writes_each_documents_nll_and_load_results_returns_them(ws, raising_grid):
    import json

    import tgbench

    _, out, (_, gpt2_id) = raising_grid
    done = cli(ws, "eval", "--runs", str(out), "--task", "ppl", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads((out / gpt2_id / "eval" / "ppl.json").read_text())
    docs = saved["by_document"]
    assert len(docs) == saved["n_samples"]["ppl"]["effective"] > 1
    assert [d["doc_id"] for d in docs] == list(range(len(docs)))
    # the documents add up to the aggregate: the same tokens, the same loss
    assert sum(d["tokens"] for d in docs) == saved["results"]["ppl"]["tokens"]
    loss = sum(d["lexical_nll"] for d in docs) / sum(d["tokens"] for d in docs)
    assert loss == pytest.approx(saved["results"]["ppl"]["lexical_loss"], rel=1e-9)

    table = tgbench.load_results(out, documents=True)
    rows = table[table["run_id"] == gpt2_id]
    assert len(rows) == len(docs) and set(table["run_id"]) == {gpt2_id}  # the failed run has no documents
    assert rows["doc_lexical_nll"].tolist() == [d["lexical_nll"] for d in docs]
    assert (rows["doc_lexical_loss"] * rows["doc_tokens"]).tolist() == pytest.approx(rows["doc_lexical_nll"].tolist())
    assert rows["label"].iloc[0] == "gpt2" and "config.train.lr" in rows.columns


# -- 7. the report's wording ---------------------------------------------------------------------------
def test_a_fit_with_lack_of_fit_is_not_shown_as_ok():
    from tgbench.report.sections import fits_table

    lof = {"F": 9.0, "df1": 1, "df2": 3, "p_value": 0.01,
           "sentence": "the power law does not describe these points; read the per-budget differences"}
    fits = {"axes": {"data": {"gru": {"width=16": {"kaplan": {"converged": True, "params": {"E": 1.0},
                                                                 "lack_of_fit": lof}}},
                              "tg": {"width=16": {"kaplan": {"converged": True, "params": {"E": 1.0}}}}}}}
    rows = {r["label"]: r for r in fits_table(fits)}
    assert rows["gru"]["status"] == "converged, lack of fit" and rows["gru"]["status_class"] == "status-pending"
    assert rows["tg"]["status"] == "ok" and rows["tg"]["status_class"] == "status-done"


def test_the_report_names_its_throughput_baseline_adapter_code_and_a_small_test_split(ws, grids):
    a, _ = grids
    evaluated = cli(ws, "eval", "--runs", str(a), "--task", "ppl")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    done = cli(ws, "report", str(a), "--output", str(ws.root / "a.html"))
    assert done.returncode == 0, done.stdout + done.stderr
    html = (ws.root / "a.html").read_text()
    assert "tokens/s relative to lstm (the first baseline)" in html and "tokens/s vs" not in html
    assert "adapter code" in html and "lstm_adapter.py, plug-in) sha256" in html
    assert "Warning: the test split is small" in html
    context = html[html.index("What each model can see"):]
    assert ">none<" not in context[:context.index("</table>")]


# -- 8. the CLI's wording ------------------------------------------------------------------------------
def test_dry_run_time_counts_each_runs_fixed_cost(ws):
    """6ND alone said "~1 s" for tiny runs that took about 50 s each; every run now costs its overhead too."""
    from tgbench.plan.compute import RUN_OVERHEAD_SECONDS

    path = ws.root / "dry.toml"
    path.write_text(to_toml(grid_raw(ws, "dry", [{"adapter": "gpt2", "options": {"context": 32}}])), encoding="utf-8")
    done = cli(ws, "train-grid", str(path), "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if "gpt2-w16-l1-D800-s0" in line]
    assert rows and all(" 0 s" not in row for row in rows), done.stdout
    assert squash(f"plus ~{RUN_OVERHEAD_SECONDS:.0f} s per run for start-up") in squash(done.stdout)


def test_data_stats_prints_the_cache_key_on_its_own_line(ws):
    done = cli(ws, "data", "stats", str(ws.data.corpus), "--tokenizer", "bpe-300", "--splitter", "blingfire")
    assert done.returncode == 0, done.stdout + done.stderr
    import re

    keys = [line for line in done.stdout.splitlines() if "cache key" in line]
    assert len(keys) == 1 and re.fullmatch(r"cache key: [0-9a-f]{16}", keys[0]), keys


def test_an_lm_eval_task_outside_a_git_repository_prints_no_git_error(ws, raising_grid):
    _, out, (_, gpt2_id) = raising_grid
    where = ws.root / "lm-eval-quiet"  # under tmp: no git repository above it
    where.mkdir()
    task = rolling_task(where, ["the cat sat on the mat .", "a dog ran in the park ."])
    done = cli(ws, "eval", "--run", str(out / gpt2_id), "--task", str(task), cwd=where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not a git repository" not in done.stdout + done.stderr


def test_the_multiplier_line_says_in_words_what_the_ratio_is():
    import json

    from tgbench.tasks.stats.fits import summary_lines

    fits = json.loads((HERE.parent / "reports" / "cpu-peers" / "fits.json").read_text())
    lines = [line for line in summary_lines(fits) if line.startswith("m_D gpt2 over tg")]
    assert lines and all("the training tokens gpt2 needs to reach tg's loss, as a multiple of tg's at tg's D" in line
                         and "(above 1: tg needs less)" in line and "D = 80,000: " in line for line in lines), lines


def test_influence_is_named_once_per_pair_and_needs_no_private_abbreviation():
    """The leave-one-out run list was printed twice and flagged '(cook)' unexplained: each pair now names its
    flagged runs once, in words, and Cook's distance only spelled out (reports/cpu-peers is re-rendered from its
    files by test_committed_reports, so its page is what `tgbench report` writes)."""
    import re

    html = (HERE.parent / "reports" / "cpu-peers" / "report.html").read_text()
    flagged = re.findall(r"flagged runs, kept: ([^;<]+)", html)
    assert flagged and len(flagged) == len(set(flagged))
    assert "(cook)" not in html and "cook," not in html
