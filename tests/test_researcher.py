"""What a researcher comparing their own architecture hit (issue 36), each checked through the CLI where the
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
    data = DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire", cache_dir=str(root / "cache"))
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
@pytest.fixture(scope="module")
def raising_grid(ws) -> tuple[subprocess.CompletedProcess, Path, dict, list[str]]:
    raw = grid_raw(ws, "raising", [{"adapter": RAISING_ADAPTER, "variant": "bad", "options": {"context": 32}},
                                   {"adapter": "gpt2", "options": {"context": 32}}])
    path = ws.root / "raising.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    ids = [spec.run_id for spec in expand(GridConfig.from_dict(raw))]
    out = ws.root / "raising-grid"
    done = cli(ws, "train-grid", str(path), "--out", str(out), "--no-progress", "--jobs", "2")
    return done, out, raw, ids


def test_a_plugin_exception_fails_its_run_and_the_grid_goes_on(raising_grid):
    done, out, _, (bad_id, gpt2_id) = raising_grid
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
    done, out, _, (_, gpt2_id) = raising_grid
    flat = squash(done.stdout + done.stderr)
    # 800 tokens at 64 per step: ~12 steps; the grid's own log says so (the worker's log too)
    assert squash(f"run {gpt2_id} is undertrained: only") in flat
    assert "is undertrained" in (out / gpt2_id / "worker.log").read_text()
    results = pd.read_csv(out / "results.csv").set_index("run_id")
    assert "few-steps" in str(results.loc[gpt2_id, "flags"])
    from tgbench.report.page import render_report

    html = render_report(out)
    assert "few-steps" in html
