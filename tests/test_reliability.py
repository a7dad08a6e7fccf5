"""Faults a days-long grid must survive, each one really done: SIGKILL, SIGINT/SIGTERM, damaged files,
a loss that turns NaN, a full disk, and bit-for-bit determinism.

The kill and signal tests run the `tgbench` CLI in real subprocesses on a tiny plain-text corpus written
into tmp_path (trained `bpe-300` tokenizer, `blingfire` splitter, `TGBENCH_CACHE_DIR` in tmp_path, one
torch thread). Runs are compared on every metrics field except the timing ones (tokens/s, sentences/s and
peak memory measure the machine, not the run), and on every tensor of the final checkpoint.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from corpora import word_documents, write_plain
from safetensors.torch import load_file

from tgbench.core.errors import Interrupted, TrainingFailed, UserError
from tgbench.core.files import write_json
from tgbench.data import DataConfig, Split, load_corpus
from tgbench.evaluation.loaded import load_run
from tgbench.models.gpt2 import GPT2Adapter
from tgbench.plan.config import RunConfig, TrainConfig, to_toml
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.training import checkpoints as checkpoint_files
from tgbench.training import rundir
from tgbench.training.checkpoints import latest_good_checkpoint, read_checkpoint, save_checkpoint
from tgbench.training.executor import run_grid
from tgbench.training.rundir import RunDir
from tgbench.training.trainer import train

CLI = [sys.executable, "-m", "tgbench.cli"]
TIMING = ("tokens_per_s", "sentences_per_s", "peak_memory_mb", "train_seconds", "flops_per_s", "matmul_peak_flops",
          "peak_fraction", "wall_s_this_session", "time", "cpu_user_s", "cpu_system_s", "minor_page_faults",
          "system_fraction")
NAN_ADAPTER = f"{Path(__file__).resolve().parent / 'fixtures_nan_adapter.py'}:NaNGPT2Adapter"
TINY_GPT2 = {"width": 16, "layers": 1, "heads": 2, "context": 32, "dropout": 0.1, "attention_dropout": 0.1}


# -- helpers -----------------------------------------------------------------------------------
def write_corpus(path: Path, n_docs: int = 80, seed: int = 0) -> Path:
    """Plain text: documents of 3-6 sentences separated by blank lines."""
    return write_plain(path, word_documents(n_docs, seed))


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields."""
    return [without_timing(r) for r in RunDir(run_dir).read_metrics()]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(ours: Path, theirs: Path) -> None:
    a, b = tensors(ours), tensors(theirs)
    assert sorted(a) == sorted(b)
    for key in b:
        assert torch.equal(a[key], b[key]), key


def last_step(metrics: Path) -> int:
    """The highest step logged so far (a line torn by a concurrent write is ignored)."""
    step = -1
    if metrics.exists():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                step = max(step, json.loads(line).get("step", -1))
            except json.JSONDecodeError:
                pass
    return step


def squash(text: str) -> str:
    """Text without whitespace: Rich wraps long lines (and paths) at the console width."""
    return re.sub(r"\s+", "", text)


class Launched:
    """A `tgbench` CLI subprocess, and a watcher thread that sends it `sig` once `metrics` logs `step`.

    The watcher runs beside the tests, so several processes can be started at once (the machine's cores
    overlap their start-up) and each is still signalled at the right step.
    """

    def __init__(self, ws: Workspace, args: list[str], name: str, metrics: Path | None = None,
                 step: int = 0, sig: int = signal.SIGKILL) -> None:
        self.ws, self.name, self.seen, self.error = ws, name, -1, None
        self.proc = ws.start(args, name)
        self.watcher = None
        if metrics is not None:
            self.watcher = threading.Thread(target=self._watch, args=(metrics, step, sig), daemon=True)
            self.watcher.start()

    def _watch(self, metrics: Path, step: int, sig: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = last_step(metrics)
            if seen >= step:
                self.seen = seen
                self.proc.send_signal(sig)
                return
            if self.proc.poll() is not None:
                self.error = f"{self.name} ended (exit {self.proc.returncode}) before step {step} was logged"
                return
            time.sleep(0.003)
        self.error = f"{self.name}: step {step} was not logged within {timeout} s"
        self.proc.kill()

    def wait(self, timeout: float = 300.0) -> int:
        """The exit status (negative: killed by that signal), once the process has ended."""
        code = self.proc.wait(timeout=timeout)
        if self.watcher is not None:
            self.watcher.join()
        assert self.error is None, self.error + "\n" + self.output()
        return code

    def output(self) -> str:
        return self.ws.output(self.name)


class Workspace(SimpleNamespace):
    """A tiny corpus, a warm corpus cache and the environment the CLI subprocesses run in."""

    def start(self, args: list[str], name: str) -> subprocess.Popen:
        with open(self.root / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(CLI + args, cwd=self.root, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT)

    def output(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(encoding="utf-8")

    def run(self, args: list[str], name: str, timeout: float = 300.0) -> tuple[int, str]:
        proc = self.start(args, name)
        return proc.wait(timeout=timeout), self.output(name)


def tiny_run_config(corpus: Path, **train_overrides) -> RunConfig:
    settings = dict(tokens=1500, epochs=2, batch_tokens=64, log_every=1, checkpoint_every=5, eval_every=7,
                    eval_tokens=300, seed=1, device="cpu", threads=1)
    settings.update(train_overrides)
    data = DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire")
    return RunConfig(model="gpt2", model_options=dict(TINY_GPT2), data=data, train=TrainConfig(**settings))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("reliability")
    corpus = write_corpus(root / "corpus.txt")
    config = tiny_run_config(corpus)
    # Encode once here so the subprocesses only read the cache (they would otherwise all train a BPE).
    load_corpus(dataclasses.replace(config.data, cache_dir=str(root / "cache")), progress=False)
    (root / "run.toml").write_text(to_toml(config.to_dict()), encoding="utf-8")
    env = {**os.environ, "TGBENCH_CACHE_DIR": str(root / "cache"), "COLUMNS": "400"}
    return Workspace(root=root, corpus=corpus, config=config, env=env)


def train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--config", "run.toml", "--out", str(out), "--no-progress", *extra]


# Between two checkpoints (every 5 steps) and not just before one, so the kill never races a checkpoint write.
KILL_STEP = random.Random(20250101).choice([s for s in range(6, 14) if s % 5 and (s + 1) % 5])


@pytest.fixture(scope="module")
def launched(ws) -> dict[str, Launched]:
    """Three CLI runs started together: SIGKILLed at KILL_STEP, and SIGINT and SIGTERM at step 3."""

    def launch(name: str, step: int | None = None, sig: int = signal.SIGKILL) -> Launched:
        out = ws.root / name
        metrics = out / "metrics.jsonl" if step is not None else None
        return Launched(ws, train_args(out), name, metrics, step or 0, sig)

    return {"killed": launch("killed", KILL_STEP), "SIGINT": launch("SIGINT", 3, signal.SIGINT),
            "SIGTERM": launch("SIGTERM", 3, signal.SIGTERM)}


@pytest.fixture(scope="module")
def reference(ws, launched) -> Path:
    """The uninterrupted run, trained in this process while the launched ones run (another process, so
    comparing with it also checks that results do not depend on the process)."""
    return train(ws.config, ws.root / "reference", progress=False).run_dir


# -- SIGKILL, then --resume auto ------------------------------------------------------------------
def test_sigkill_at_a_random_step_then_resume_auto_matches_an_uninterrupted_run(ws, launched, reference):
    every = ws.config.train.checkpoint_every
    killed = launched["killed"]
    assert killed.wait() == -signal.SIGKILL
    cut = ws.root / "killed"
    run = RunDir(cut)
    assert not run.done and not run.failed
    saved = latest_good_checkpoint(run.checkpoints).sidecar["state"]["step"]
    assert every <= saved <= killed.seen and saved % every == 0  # the steps after it are redone, not skipped

    code, out = ws.run(train_args(cut, "--resume", "auto"), "resumed")
    assert code == 0, out
    assert f"fromstep{saved}" in squash(out)
    assert records(cut) == records(reference)
    assert len(records(reference)) > 50  # every step is logged, plus the validation records
    for name in ("latest", "best"):
        file = f"checkpoints/{name}.safetensors"
        assert_same_tensors(cut / file, reference / file)
    summary = {k: v for k, v in json.loads((cut / "summary.json").read_text()).items() if k not in TIMING}
    assert summary == {k: v for k, v in json.loads((reference / "summary.json").read_text()).items()
                       if k not in TIMING}


# -- SIGINT and SIGTERM -------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_write_a_checkpoint_say_how_to_resume_and_exit_non_zero(ws, launched, sig):
    process = launched[sig.name]
    assert process.wait() == 130, process.output()
    message = squash(process.output())
    out = ws.root / sig.name
    assert f"interrupted:signal{int(sig)};checkpointwrittenin{squash(str(out))}/checkpoints" in message
    assert "fix:resumewiththesamecommand(--resumeauto)" in message and "Traceback" not in message
    docs = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text(encoding="utf-8")
    for quoted in ("interrupted: signal N; checkpoint written in RUN/checkpoints",
                   "fix: resume with the same command (--resume auto)"):  # the docs quote what is printed
        assert f"`{quoted}`" in docs
        assert squash(quoted.replace("signal N", f"signal {int(sig)}").replace("RUN", str(out))) in message
    run = RunDir(out)
    saved = read_checkpoint(run.checkpoints, "latest").sidecar["state"]["step"]
    assert saved >= process.seen  # written at the signal, not at the last periodic checkpoint (step 0 here)
    assert not run.done and not run.failed


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_gives_identical_metrics_in_two_fresh_runs(ws, reference, tmp_path):
    """A second fresh run with the same seed, in an empty corpus cache (so even the BPE tokenizer is trained
    again), writes the same metrics.jsonl on CPU, timing fields excluded (tokens/s, sentences/s and peak
    memory measure the machine), and the same checkpoint tensors."""
    data = dataclasses.replace(ws.config.data, cache_dir=str(tmp_path / "cache"))
    again = train(dataclasses.replace(ws.config, data=data), tmp_path / "again", progress=False).run_dir
    assert records(again) == records(reference)
    for name in ("latest", "best"):
        file = f"checkpoints/{name}.safetensors"
        assert_same_tensors(again / file, reference / file)


# -- a grid killed during its second run ----------------------------------------------------------
@pytest.mark.slow  # three runs and two CLI processes: ~20 s
def test_grid_killed_mid_run_and_rerun_matches_an_uninterrupted_grid(ws, tmp_path):
    raw = {
        "name": "killed", "widths": [8, 16, 24], "layers": 1, "head_dim": 8, "budgets": [1000],
        "models": [{"adapter": "gpt2", "options": {"context": 32, "dropout": 0.1, "attention_dropout": 0.1}}],
        "data": dataclasses.asdict(ws.config.data),
        "train": {"epochs": 1, "batch_tokens": 64, "log_every": 1, "checkpoint_every": 4, "eval_every": 5,
                  "eval_tokens": 300, "device": "cpu", "threads": 1},
    }
    (ws.root / "grid.toml").write_text(to_toml(raw), encoding="utf-8")
    grid = GridConfig.from_dict(raw)
    first, second, third = (spec.run_id for spec in expand(grid))
    cut = ws.root / "grid-killed"
    grid_args = ["train-grid", "grid.toml", "--out", str(cut), "--no-progress"]
    kill_step = random.Random(7).choice([5, 6, 9, 10])  # checkpoints at 4, 8, 12
    killed = Launched(ws, grid_args, "grid-killed", cut / second / "metrics.jsonl", kill_step)
    with pytest.MonkeyPatch.context() as patch:  # the uninterrupted grid, meanwhile, in this process
        patch.setenv("TGBENCH_CACHE_DIR", str(ws.root / "cache"))
        run_grid(grid, tmp_path / "reference", progress=False)
    assert killed.wait() == -signal.SIGKILL
    assert RunDir(cut / first).done and not RunDir(cut / second).done and not (cut / third).exists()
    untouched = {name: (cut / first / name).stat().st_mtime_ns for name in
                 ("DONE", "metrics.jsonl", "summary.json", "checkpoints/latest.safetensors")}
    metrics_before = (cut / first / "metrics.jsonl").read_bytes()

    code, out = ws.run(grid_args, "grid-rerun")
    assert code == 0, out
    assert "resuming" in out and squash(str(cut / second)) in squash(out)
    assert squash(str(cut / first)) not in squash(out)  # the DONE run was skipped, not resumed or retrained
    assert {name: (cut / first / name).stat().st_mtime_ns for name in untouched} == untouched
    assert (cut / first / "metrics.jsonl").read_bytes() == metrics_before

    reference = tmp_path / "reference"
    for run_id in (first, second, third):
        assert records(cut / run_id) == records(reference / run_id), run_id
        assert_same_tensors(cut / run_id / "checkpoints/latest.safetensors",
                            reference / run_id / "checkpoints/latest.safetensors")
    ours, theirs = (pd.read_csv(d / "results.csv").drop(columns=list(TIMING[:7])) for d in (cut, reference))
    assert (ours["status"] == "done").all() and len(ours) == 3
    pd.testing.assert_frame_equal(ours, theirs)


# -- damaged checkpoints and run files (in process, on the synthetic corpus) ---------------------
SMALL_GPT2 = {"width": 32, "layers": 2, "heads": 4, "context": 32, "dropout": 0.1, "attention_dropout": 0.1}


def small_config(**overrides) -> RunConfig:
    settings = dict(epochs=1, batch_tokens=64, lr=3e-3, log_every=2, checkpoint_every=4, eval_every=6, seed=3)
    settings.update(overrides)
    return RunConfig(model="gpt2", model_options=dict(SMALL_GPT2), train=TrainConfig(**settings))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The conftest corpus (rebuilt here, module-scoped), a reference run and a run interrupted at step 10."""
    from conftest import synthetic_documents  # the tests directory is on sys.path (rootdir conftest)

    from tgbench.adapter import Vocab

    rng = np.random.default_rng(0)
    splits = {name: Split.from_documents(synthetic_documents(rng, n, 40))
              for name, n in (("train", 60), ("valid", 8), ("test", 8))}
    corpus = SimpleNamespace(vocab=Vocab(base_size=40), key="synthetic", splits=splits)
    root = tmp_path_factory.mktemp("synthetic")
    reference = train(small_config(), root / "reference", corpus=corpus, progress=False)
    original = GPT2Adapter.loss
    calls = {"n": 0}

    def interrupting_loss(self, model, batch, epoch):
        calls["n"] += 1
        if calls["n"] == 10:  # latest is written at step 10, previous holds step 8
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GPT2Adapter, "loss", interrupting_loss)
        with pytest.raises(Interrupted):
            train(small_config(), root / "interrupted", corpus=corpus, progress=False)
    return SimpleNamespace(corpus=corpus, reference=reference.run_dir, interrupted=root / "interrupted")


def _garble_json(path: Path) -> None:
    path.write_text(path.read_text()[:40])  # torn mid-object


def _wrong_checksum(path: Path) -> None:
    sidecar = json.loads(path.read_text())
    sidecar["sha256"] = "0" * 64
    path.write_text(json.dumps(sidecar))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    path.write_bytes(bytes(data))


# case -> (file damaged, how, file the warning names: a checksum mismatch names the weights it disowns)
DAMAGE = {
    "latest sidecar is torn JSON": ("checkpoints/latest.json", _garble_json, "checkpoints/latest.json"),
    "latest sidecar has a wrong checksum": ("checkpoints/latest.json", _wrong_checksum,
                                            "checkpoints/latest.safetensors"),
    "latest weights have a flipped byte": ("checkpoints/latest.safetensors", _flip_a_byte,
                                           "checkpoints/latest.safetensors"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_latest_checkpoint_is_reported_and_resume_uses_previous(synthetic, tmp_path, capsys, case):
    name, damage, reported = DAMAGE[case]
    run_dir = Path(shutil.copytree(synthetic.interrupted, tmp_path / "run"))
    damage(run_dir / name)
    capsys.readouterr()
    result = train(small_config(), run_dir, corpus=synthetic.corpus, progress=False)
    err = squash(capsys.readouterr().err)
    assert "corruptedcheckpointskipped" in err and squash(str(run_dir / reported)) in err
    assert "fromstep8(checkpoint'previous')" in err
    assert result.status == "done"
    assert records(run_dir) == records(synthetic.reference)
    assert_same_tensors(run_dir / "checkpoints/latest.safetensors",
                        synthetic.reference / "checkpoints/latest.safetensors")


def test_with_every_checkpoint_damaged_the_run_starts_over_and_still_matches(synthetic, tmp_path, capsys):
    run_dir = Path(shutil.copytree(synthetic.interrupted, tmp_path / "run"))
    _flip_a_byte(run_dir / "checkpoints/latest.safetensors")
    _garble_json(run_dir / "checkpoints/previous.json")
    capsys.readouterr()
    train(small_config(), run_dir, corpus=synthetic.corpus, progress=False)
    err = squash(capsys.readouterr().err)
    assert squash(str(run_dir / "checkpoints/latest.safetensors")) in err
    assert squash(str(run_dir / "checkpoints/previous.json")) in err and "resuming" not in err
    assert records(run_dir) == records(synthetic.reference)


def test_a_torn_metrics_line_is_reported_and_dropped_on_resume(synthetic, tmp_path, capsys):
    run_dir = Path(shutil.copytree(synthetic.interrupted, tmp_path / "run"))
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 0, "step": 11, "train_lo')  # a kill in the middle of an append
    capsys.readouterr()
    train(small_config(), run_dir, corpus=synthetic.corpus, progress=False)
    err = squash(capsys.readouterr().err)
    assert "torn" in err and squash(str(run_dir / "metrics.jsonl")) in err
    assert records(run_dir) == records(synthetic.reference)
    text = (run_dir / "metrics.jsonl").read_text()
    assert all(json.loads(line) for line in text.splitlines())


def test_load_run_on_a_corrupted_best_checkpoint_names_the_file(synthetic, tmp_path):
    run_dir = Path(shutil.copytree(synthetic.reference, tmp_path / "run"))
    _flip_a_byte(run_dir / "checkpoints/best.safetensors")
    with pytest.raises(UserError) as caught:
        load_run(run_dir, "best", device="cpu", corpus=synthetic.corpus)
    assert str(run_dir / "checkpoints/best.safetensors") in caught.value.message
    assert "corrupted" in caught.value.message and "latest" in caught.value.fix
    assert load_run(run_dir, "latest", device="cpu", corpus=synthetic.corpus).checkpoint == "latest"


# -- a loss that becomes NaN ---------------------------------------------------------------------
def test_nan_loss_between_logs_never_reaches_a_checkpoint(synthetic, tmp_path):
    """Logging every 5 steps and checkpointing every 2: the NaN of step 3 must stop the run at the
    step-4 checkpoint, not be saved there and found only at the step-5 log."""
    config = dataclasses.replace(small_config(log_every=5, checkpoint_every=2), model=NAN_ADAPTER,
                                 model_options={**SMALL_GPT2, "nan_at_step": 3})
    with pytest.raises(TrainingFailed, match="nan at step 4"):
        train(config, tmp_path / "run", corpus=synthetic.corpus, progress=False)
    run = RunDir(tmp_path / "run")
    assert run.failed and not run.done
    good = latest_good_checkpoint(run.checkpoints)
    assert good.sidecar["state"]["step"] == 2
    assert all(torch.isfinite(t).all() for k, t in good.tensors.items() if k.startswith("model."))
    assert "error" in run.read_metrics()[-1]


def test_a_nan_run_fails_and_the_grid_goes_on(ws, tmp_path, monkeypatch, capsys):
    from tgbench.cli.app import main
    from tgbench.report.page import render_report

    raw = {
        "name": "nan", "widths": [16], "layers": 1, "head_dim": 8, "budgets": [800],
        "models": [{"adapter": NAN_ADAPTER, "variant": "nan", "options": {"context": 32, "nan_at_step": 4}},
                   {"adapter": "gpt2", "options": {"context": 32}}],
        "data": dataclasses.asdict(ws.config.data),
        "train": {"epochs": 1, "batch_tokens": 64, "log_every": 2, "checkpoint_every": 2, "eval_tokens": 300,
                  "device": "cpu"},
    }
    (tmp_path / "grid.toml").write_text(to_toml(raw), encoding="utf-8")
    nan_id, gpt2_id = (spec.run_id for spec in expand(GridConfig.from_dict(raw)))
    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(ws.root / "cache"))
    monkeypatch.setattr(sys, "argv", ["tgbench", "train-grid", str(tmp_path / "grid.toml"), "--out",
                                      str(tmp_path / "grid"), "--no-progress"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 1  # the grid finished, but says a run failed
    printed = squash(capsys.readouterr().err)
    assert "traininglossbecamenanatstep4" in printed and squash(nan_id) in printed

    grid = tmp_path / "grid"
    failed, done = RunDir(grid / nan_id), RunDir(grid / gpt2_id)
    assert failed.failed and not failed.done and done.done
    assert "training loss became nan at step 4" in (grid / nan_id / "FAILED").read_text()
    assert read_checkpoint(failed.checkpoints, "latest").sidecar["state"]["step"] == 2
    results = pd.read_csv(grid / "results.csv").set_index("run_id")
    assert results.loc[nan_id, "status"] == "failed" and results.loc[gpt2_id, "status"] == "done"
    assert np.isfinite(results.loc[gpt2_id, "best_val_loss"])
    html = render_report(grid)
    assert "training loss became nan at step 4" in html and nan_id in html


# -- a full disk -------------------------------------------------------------------------------
def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_disk_full_during_a_checkpoint_keeps_the_good_one(synthetic, tmp_path, monkeypatch):
    real_save = checkpoint_files.save_file
    calls = {"n": 0}

    def filling_save(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # latest@4, best@6, then latest@8 runs out of space half-way
            Path(filename).write_bytes(b"half a safetensors file")
            raise _enospc(filename)
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_files, "save_file", filling_save)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as caught:
        train(small_config(), run_dir, corpus=synthetic.corpus, progress=False)
    assert "disk full" in caught.value.message
    assert str(run_dir / "checkpoints/latest.safetensors") in caught.value.message
    assert "free disk space" in caught.value.fix
    checkpoints = run_dir / "checkpoints"
    assert not list(checkpoints.glob(".*tmp"))  # the half-written temp file is gone
    assert not (checkpoints / "latest.safetensors").exists()  # nothing partial took the good file's place
    assert read_checkpoint(checkpoints, "previous").sidecar["state"]["step"] == 4
    assert read_checkpoint(checkpoints, "best").sidecar["state"]["step"] == 6

    monkeypatch.setattr(checkpoint_files, "save_file", real_save)
    train(small_config(), run_dir, corpus=synthetic.corpus, progress=False)
    assert records(run_dir) == records(synthetic.reference)


def test_disk_full_never_replaces_a_good_checkpoint_or_json_file(tmp_path, monkeypatch):
    model = torch.nn.Linear(4, 3)
    save_checkpoint(tmp_path, "best", model, {"state": {"step": 1}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write_json(tmp_path / "summary.json", {"best_val_loss": 1.5})

    def full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")
        raise _enospc(filename)

    monkeypatch.setattr(checkpoint_files, "save_file", full)
    torch.nn.init.zeros_(model.weight)
    with pytest.raises(UserError, match="disk full while writing"):
        save_checkpoint(tmp_path, "best", model, {"state": {"step": 2}})
    real_write_bytes = Path.write_bytes

    def half_then_full(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        raise _enospc(self)

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(UserError, match="disk full while writing") as caught:
        write_json(tmp_path / "summary.json", {"best_val_loss": 0.5})
    monkeypatch.undo()
    assert str(tmp_path / "summary.json") in caught.value.message
    assert json.loads((tmp_path / "summary.json").read_text()) == {"best_val_loss": 1.5}
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "summary.json"} == before
    assert read_checkpoint(tmp_path, "best").sidecar["state"]["step"] == 1


def test_disk_full_while_appending_metrics_is_a_clear_error(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.append_metrics({"step": 1, "train_loss": 2.0})

    def no_space(fd):
        raise _enospc(run.metrics_path)

    monkeypatch.setattr(rundir.os, "fsync", no_space)
    with pytest.raises(UserError, match="disk full") as caught:
        run.append_metrics({"step": 2, "train_loss": 1.9})
    monkeypatch.undo()
    assert str(run.metrics_path) in caught.value.message
    assert run.read_metrics()[0] == {"step": 1, "train_loss": 2.0}


# -- security ----------------------------------------------------------------------------------
def test_no_unsafe_deserialisation_in_the_package():
    """Checkpoints are safetensors; any torch.load must be weights_only, and nothing unpickles."""
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for folder in ("tgbench", "models", "tasks"):
        for path in (root / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                unsafe_load = "torch.load(" in line and "weights_only=True" not in line
                if unsafe_load or re.search(r"\bpickle\.loads?\(|\byaml\.load\(|\bexec\(", line):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []


def test_config_values_are_data_never_code(tmp_path, monkeypatch, capsys):
    """Strings in a run config, --set values and a run directory's config.toml are never evaluated."""
    from tgbench.cli.app import main

    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    config = RunConfig(model=payload, model_options={"width": 16, "layers": 1, "heads": 2, "bias": payload})
    (tmp_path / "run.toml").write_text(to_toml(config.to_dict()), encoding="utf-8")
    for argv in (["validate", str(tmp_path / "run.toml")],
                 ["train", "--corpus", str(tmp_path / "nope.txt"), "--set", f"width={payload}",
                  "--out", str(tmp_path / "out")]):
        monkeypatch.setattr(sys, "argv", ["tgbench", *argv])
        with pytest.raises(SystemExit) as caught:
            main()
        assert caught.value.code == 2
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_report_escapes_hostile_run_directory_names_and_failure_messages(tmp_path):
    from report_fixture import write_synthetic_grid

    from tgbench.report.page import render_report
    from tgbench.results.table import write_results

    grid = write_synthetic_grid(tmp_path / "grid", fits=False)
    hostile_names = ["<script>alert(1)<", "<img src=x onerror=alert(1)>"]  # '/' cannot be in a file name
    done = sorted(d for d in grid.iterdir() if (d / "DONE").exists())
    for source, name in zip(done, hostile_names, strict=False):
        source.rename(grid / name)
    failed = next(d for d in grid.iterdir() if (d / "FAILED").exists())
    (failed / "FAILED").write_text("loss became nan <script>alert(2)</script>\n")
    write_results(grid)
    html = render_report(grid)
    for raw in (*hostile_names, "<script>alert(2)</script>"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # only the page's own sorting script
