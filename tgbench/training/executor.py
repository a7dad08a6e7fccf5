"""Running a grid: its learning-rate sweep first, then every run, then results.csv; locally or on Slurm.

`run_grid` is `tgbench train-grid`; `run_tune` is `tgbench tune`. Every list of runs goes through
`execute_specs`, which trains them one at a time in this process or N at a time in worker processes
(`tgbench.training.pool`), or submits one Slurm job per run through submitit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tgbench.core.errors import UserError, unknown_name
from tgbench.core.files import make_dir, write_text
from tgbench.data import load_corpus
from tgbench.plan.config import (
    GRID_FILE,
    to_toml,
)
from tgbench.plan.expand import RunSpec, expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.tune import (
    TuneResult,
    collect,
    extension_specs,
    sweep_specs,
    tuned_entries,
    warn_unused_tune,
    write_tune,
)
from tgbench.plan.validate import check_data
from tgbench.results.table import write_results
from tgbench.training.board import _Board
from tgbench.training.pool import execute, resolve_jobs
from tgbench.training.tracking import check_loggers, make_trackers
from tgbench.training.trainer import train_spec


def _slurm_entry(spec: RunSpec, grid_dir: str) -> str:  # spec.loggers travel with the spec
    return train_spec(spec, Path(grid_dir), progress=False)


def run_grid(grid: GridConfig, out: Path, *, executor: str = "local", progress: bool = True,
             slurm: dict[str, Any] | None = None, jobs: int | None = None,
             loggers: Sequence[str] = ()) -> pd.DataFrame:
    """Run every run of the grid into `out` and regenerate `results.csv`.

    A grid with a [tune] table first trains its learning-rate sweep (`out/tune/`, through the same executor, with
    the extensions its rule asks for: `tune_stage`), writes `tune.json`, and then trains every model at its
    chosen learning rate.

    Args:
        grid: The grid.
        out: Grid directory (`grid.toml`, one directory per run, `results.csv`).
        executor: "local" (on this machine: one run after another, or `jobs` at once) or "slurm" (one
            submitit job per run; "slurm-local" uses submitit's local executor, for testing).
        progress: Show the live table on a terminal; when stdout is not one, a timestamped line per run start
            and finish with the count done/total, and the final table.
        slurm: submitit parameters (partition, timeout_min, gpus_per_node, ...).
        jobs: Runs at once on this machine (see `tgbench.training.workers`); None = the grid's `train.jobs`
            (0 there = the GPU count with CUDA, else 1).
        loggers: Trackers of every run besides metrics.jsonl ("tensorboard", "wandb"; see tgbench.training.tracking).
    """
    check_data(grid.data)  # before any directory is made or run trained
    if executor not in ("local", "slurm", "slurm-local"):
        raise unknown_name("executor", executor, ("local", "slurm", "slurm-local"))
    make_dir(out)
    make_trackers(loggers, plain_lines=False)  # a missing tensorboard / wandb fails before the first run
    write_text(out / GRID_FILE, to_toml(grid.to_dict()))
    stage = {"executor": executor, "progress": progress, "slurm": slurm, "jobs": jobs, "loggers": loggers,
             "corpus": []}  # the corpus is loaded once, by the first stage that needs it
    lr_for = None
    if grid.tune is not None:
        lr_for = tune_stage(grid, out, **stage).lr_for
    else:
        warn_unused_tune(out)
    specs = expand(grid, lr_for, encode=True)  # an isoFLOP grid counts its FLOPs on the encoded corpus
    execute_specs(specs, out, grid, **stage)
    return write_results(out, {spec.run_id: spec.variant for spec in specs})


def tune_stage(grid: GridConfig, out: Path, **stage: Any) -> TuneResult:
    """The tuning sweep, then the extensions its rule asks for, then tune.json.

    The loop is sweep -> collect -> extension runs -> collect: each round trains every seed of the LRs the rule
    asks for beyond a sweep's edge (`plan.tune.extension_specs`) and chooses again, until no group asks (the
    rule stops at `max_extensions` per group). A round that would ask for the same runs again (they did not
    finish) ends the loop, and `write_tune` says which runs are missing.

    Args:
        grid: The grid (its [tune] table, or the default sweep).
        out: Grid directory.
        stage: execute_specs's keyword arguments (executor, progress, slurm, jobs, loggers, corpus).
    """
    execute_specs(sweep_specs(grid), out, grid, title="tuning sweep", **stage)
    asked: list[str] = []
    while specs := extension_specs(grid, collect(grid, out)):
        if [s.run_id for s in specs] == asked:
            break
        asked = [s.run_id for s in specs]
        execute_specs(specs, out, grid, title="tuning sweep: extension beyond the edge", **stage)
    return write_tune(grid, out)


def execute_specs(specs: list[RunSpec], out: Path, grid: GridConfig, *, executor: str = "local",
                  progress: bool = True, slurm: dict[str, Any] | None = None, jobs: int | None = None,
                  loggers: Sequence[str] = (), corpus: list | None = None, title: str = "grid") -> None:
    """Train `specs` into `out`: every stage of a grid (the tuning sweep, the grid) goes through here.

    Args:
        specs: The runs.
        out: Grid directory; each run goes to `out / spec.run_id`.
        grid: Their grid (its data settings, its `train.jobs`).
        executor: local | slurm | slurm-local.
        progress: Show the live table.
        slurm: submitit parameters.
        jobs: Runs at once on this machine (None = the grid's `train.jobs`).
        loggers: Trackers of every run besides metrics.jsonl.
        corpus: A one-element cache of the loaded corpus shared between stages (filled when empty).
        title: The live table's title.
    """

    specs = [dataclasses.replace(spec, loggers=tuple(check_loggers(loggers))) for spec in specs]
    if executor in ("slurm", "slurm-local"):
        _run_submitit(specs, out, executor, slurm or {})
        return
    jobs = resolve_jobs(grid.train.jobs if jobs is None else jobs, specs)
    # One process: the corpus is loaded once for every run of every stage. Workers read it from the cache
    # execute() fills.
    corpus = corpus if corpus is not None else []
    if jobs == 1 and not corpus:
        corpus.append(load_corpus(grid.data, progress=progress))
    board = _Board(specs, out, jobs, title)
    with board.live(progress):
        execute(specs, out, jobs=jobs, board=board, corpus=corpus[0] if jobs == 1 else None, progress=progress)
    board.print_final(progress)


def _run_submitit(specs: list[RunSpec], out: Path, executor: str, params: dict[str, Any]) -> None:
    import submitit

    folder = out / "slurm"
    if executor == "slurm-local":
        ex = submitit.LocalExecutor(folder=folder)
        params = {k: v for k, v in params.items() if k in ("timeout_min",)}
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(**({"timeout_min": 24 * 60} | params))
    jobs = [ex.submit(_slurm_entry, spec, str(out)) for spec in specs]
    for job in jobs:
        job.result()


def run_tune(grid: GridConfig, out: Path, *, executor: str = "local", progress: bool = True,
             slurm: dict[str, Any] | None = None, jobs: int | None = None) -> TuneResult:
    """`tgbench tune`: train the sweep (the default one for a grid without [tune]) with its extensions, and write
    tune.json."""

    check_data(grid.data)
    if not tuned_entries(grid):
        raise UserError("every model of the grid sets its own train.lr: there is nothing to tune",
                        "remove lr from a [[models]] train table")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / GRID_FILE).exists():
        write_text(out / GRID_FILE, to_toml(grid.to_dict()))
    return tune_stage(grid, out, executor=executor, progress=progress, slurm=slurm, jobs=jobs)
