"""Several runs at once (`train-grid --jobs N`): the same numbers as one at a time, skips, failures, Ctrl-C.

Every test trains real tiny runs in real worker processes (multiprocessing's spawn), so each one pays a few
seconds of worker start-up (a fresh interpreter importing torch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_grid import tiny_grid

from tgbench.core.errors import UserError
from tgbench.plan.config import to_toml
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.validate import load_grid
from tgbench.training.executor import run_grid
from tgbench.training.pool import Slot, cpu_cores, execute, plan_slots, resolve_jobs, spec_to_dict
from tgbench.training.rundir import RunDir
from tgbench.training.workers import spec_from_dict

TIMING = ("tokens_per_s", "sentences_per_s", "peak_memory_mb", "wall_s_this_session", "time")
NAN_ADAPTER = f"{Path(__file__).resolve().parent / 'fixtures_nan_adapter.py'}:NaNGPT2Adapter"


def two_run_grid(tmp_path: Path, **train) -> dict:
    """TG and GPT-2 at one width and budget, one thread per run (so "alone" and "in a worker" are comparable)."""
    raw = tiny_grid(tmp_path, widths=[8], budgets=[600])
    raw["train"].update({"threads": 1, **train})
    return raw


def records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunDir(run_dir).read_metrics()]


def model_tensors(run_dir: Path, name: str = "latest") -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run_dir / "checkpoints" / f"{name}.safetensors")).items()
            if k.startswith("model.")}


def test_jobs_2_trains_the_same_numbers_as_each_run_alone_then_skips_done_runs(tmp_path):
    grid = GridConfig.from_dict(two_run_grid(tmp_path))
    alone = run_grid(grid, tmp_path / "alone", progress=False, jobs=1)
    together = run_grid(grid, tmp_path / "together", progress=False, jobs=2)
    assert set(together["status"]) == {"done"} and len(together) == 2
    for spec in expand(grid):
        a, b = tmp_path / "alone" / spec.run_id, tmp_path / "together" / spec.run_id
        assert records(a) == records(b), spec.run_id
        for name in ("latest", "best"):
            theirs = model_tensors(b, name)
            for key, tensor in model_tensors(a, name).items():
                assert torch.equal(tensor, theirs[key]), (spec.run_id, key)
        summary = json.loads((b / "summary.json").read_text())
        assert summary["best_val_loss"] == json.loads((a / "summary.json").read_text())["best_val_loss"]
        assert math.isfinite(summary["peak_memory_mb"]) and summary["peak_memory_mb"] > 0  # the worker's own
        assert summary["cpu_user_s"] > 0 and summary["minor_page_faults"] > 0  # the worker's own getrusage
        assert "starts run" in (b / "worker.log").read_text()  # trained in a worker, not in this process
    pd.testing.assert_series_equal(alone["best_val_loss"], together["best_val_loss"])
    assert (tmp_path / "together" / "results.csv").exists()

    stamps = {d.name: (d / "DONE").stat().st_mtime_ns for d in (tmp_path / "together").iterdir() if d.is_dir()}
    statuses = execute(expand(grid), tmp_path / "together", jobs=2)
    assert set(statuses.values()) == {"skipped"}  # no worker started for a DONE run
    again = {d.name: (d / "DONE").stat().st_mtime_ns for d in (tmp_path / "together").iterdir() if d.is_dir()}
    assert again == stamps


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_others_and_is_rerun(tmp_path):
    raw = two_run_grid(tmp_path)
    raw["models"] = [raw["models"][1], {"adapter": NAN_ADAPTER, "variant": "nan",
                                         "options": {"context": 64, "nan_at_step": 2}}]
    path = tmp_path / "grid.toml"
    path.write_text(to_toml(raw))
    grid = load_grid(path)
    frame = run_grid(grid, tmp_path / "runs", progress=False, jobs=2).fillna({"variant": ""}).set_index("variant")
    assert frame.loc["", "status"] == "done" and frame.loc["nan", "status"] == "failed"
    failed = next(s for s in expand(grid) if s.variant == "nan")
    first = (tmp_path / "runs" / failed.run_id / "FAILED").stat().st_mtime_ns
    statuses = execute(expand(grid), tmp_path / "runs", jobs=2)
    assert statuses[failed.run_id] == "failed" and list(statuses.values()).count("skipped") == 1
    assert (tmp_path / "runs" / failed.run_id / "FAILED").stat().st_mtime_ns > first  # trained again


@pytest.mark.slow
def test_a_user_error_in_a_worker_is_one_error_naming_the_run(tmp_path):
    grid = GridConfig.from_dict(two_run_grid(tmp_path))
    spec = expand(grid)[0]
    broken = dataclasses.replace(spec, config=dataclasses.replace(spec.config, model="no-such-adapter"))
    with pytest.raises(UserError) as err:
        execute([broken], tmp_path / "runs", jobs=2)
    assert spec.run_id in err.value.message and "no-such-adapter" in err.value.message
    assert "no-such-adapter" in (tmp_path / "runs" / spec.run_id / "worker.log").read_text()


def test_slots_divide_the_cores_and_jobs_are_not_part_of_the_config_hash(tmp_path):
    grid = GridConfig.from_dict(two_run_grid(tmp_path, jobs=2))
    specs = expand(grid)
    assert grid.train.jobs == 2 and specs[0].config.train.jobs == 2
    plain = expand(GridConfig.from_dict(two_run_grid(tmp_path)))
    assert specs[0].config.hash() == plain[0].config.hash()
    slots = plan_slots(2, specs)
    assert [s.index for s in slots] == [0, 1]
    assert all(s.threads == max(1, cpu_cores() // 2) for s in slots)
    if not torch.cuda.is_available():
        assert all(s.gpu is None for s in slots) and resolve_jobs(0, specs) == 1
    assert all(spec_from_dict(spec_to_dict(s)) == s for s in specs)  # what crosses to a worker is plain data
    assert plan_slots(1, specs) == [Slot(0, 0, None)]  # one job: in this process, the run's own threads
    assert resolve_jobs(3, specs) == 3
    with pytest.raises(UserError):
        resolve_jobs(-1, specs)
    with pytest.raises(UserError):
        GridConfig.from_dict(two_run_grid(tmp_path, jobs=-2))


@pytest.mark.slow
def test_ctrl_c_checkpoints_every_running_run_and_the_rerun_finishes_with_the_same_numbers(tmp_path):
    raw = two_run_grid(tmp_path, epochs=5, log_every=1, checkpoint_every=1000)
    raw["budgets"] = [1200]
    path = tmp_path / "grid.toml"
    path.write_text(to_toml(raw))
    grid = load_grid(path)
    run_grid(grid, tmp_path / "reference", progress=False, jobs=1)  # also fills the corpus cache
    specs = expand(grid)
    env = {**os.environ, "COLUMNS": "400"}
    cli = [sys.executable, "-m", "tgbench.cli", "train-grid", str(path), "--out", str(tmp_path / "runs"),
           "--jobs", "2", "--no-progress"]
    with open(tmp_path / "cli.log", "w") as log:
        proc = subprocess.Popen(cli, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    metrics = [RunDir(tmp_path / "runs" / s.run_id).metrics_path for s in specs]
    while not all(m.exists() and len(m.read_text().splitlines()) >= 2 for m in metrics):
        assert proc.poll() is None, (tmp_path / "cli.log").read_text()
        assert time.monotonic() < deadline, "both runs did not log within 180 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # to the parent only: it forwards the signal to its workers
    assert proc.wait(timeout=120) == 130
    output = " ".join((tmp_path / "cli.log").read_text().split())
    assert "interrupted: signal 2; checkpoint written in" in output
    cut = [s for s in specs if not RunDir(tmp_path / "runs" / s.run_id).done]
    assert cut  # at least one run was still training (on a loaded machine the other may have finished)
    for spec in cut:
        assert (RunDir(tmp_path / "runs" / spec.run_id).checkpoints / "latest.json").exists(), spec.run_id
        assert spec.run_id in output.replace(" ", "")
    frame = run_grid(grid, tmp_path / "runs", progress=False, jobs=2)
    assert set(frame["status"]) == {"done"}
    for spec in specs:
        assert records(tmp_path / "runs" / spec.run_id) == records(tmp_path / "reference" / spec.run_id)
        assert "resuming" in (tmp_path / "runs" / spec.run_id / "worker.log").read_text()


def test_with_gpus_each_worker_gets_its_own_and_the_default_is_one_run_per_gpu(tmp_path, monkeypatch):
    import tgbench.training.pool as pool

    monkeypatch.setattr(pool, "visible_gpus", lambda: ["4", "6"])  # as CUDA_VISIBLE_DEVICES=4,6 lists them
    specs = expand(GridConfig.from_dict(two_run_grid(tmp_path)))
    assert resolve_jobs(0, specs) == 2
    assert [s.gpu for s in plan_slots(2, specs)] == ["4", "6"]
    assert [s.gpu for s in plan_slots(3, specs)] == ["4", "6", "4"]  # more jobs than GPUs: round-robin
    pinned = [dataclasses.replace(s, config=dataclasses.replace(
        s.config, train=dataclasses.replace(s.config.train, device="cpu"))) for s in specs]
    assert resolve_jobs(0, pinned) == 1 and all(s.gpu is None for s in plan_slots(2, pinned))
