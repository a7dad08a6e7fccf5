"""Where a run's progress goes besides metrics.jsonl: plain log lines, TensorBoard, Weights & Biases.

`metrics.jsonl` (the ``csv`` logger, always on) is the source of truth: the results table, fits and report
read it and nothing else. The trackers here only mirror what the trainer writes there, as it is written:

- `ProgressLines`: timestamped plain lines for a log file or a cluster job's output (used when stdout is not
  a terminal, where a progress bar would print nothing useful until the end); `grid_line` is the one line a
  grid prints per run start and finish.
- `TensorBoardTracker` (``--logger tensorboard``): event files in ``<run>/tensorboard/`` (needs the
  ``tensorboard`` extra).
- `WandbTracker` (``--logger wandb``): a W&B run in offline mode unless ``WANDB_MODE`` says otherwise, the run's
  config as W&B config, every metrics record as logged, and the run's files (config, summary) as an artifact
  (needs the ``wandb`` extra). ``tgbench report --logger wandb`` uploads a grid's report the same way.

A tracker gets the events of one training session: `start`, `log` (every metrics record), `checkpoint`,
`finish` (the summary, once the run is DONE) and `close` (always, also after a failure or Ctrl-C).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tgbench.core.errors import UserError, unknown_name
from tgbench.plan.config import to_toml

LOGGERS = ("csv", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"


def timestamp(when: float | None = None) -> str:
    """Wall-clock time as ISO 8601 in UTC with milliseconds, e.g. 2026-12-02T05:30:12.123Z."""
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


@dataclass
class RunInfo:
    """What a tracker knows about the run when it starts.

    Attributes:
        run_dir: The run directory.
        config: The run's settings as a nested dict (`RunConfig.to_dict`).
        meta: Provenance written beside them in config.toml (n_params, label, ...).
        total_steps: Optimiser steps the run takes in all.
        start_step: The step this session starts from (> 0 when resuming).
    """

    run_dir: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    total_steps: int = 0
    start_step: int = 0

    @property
    def run_id(self) -> str:
        return self.run_dir.name


class Tracker:
    """A sink for one training session's events; every method does nothing by default."""

    def start(self, info: RunInfo) -> None:
        """The session starts (after a resume has restored its state)."""

    def log(self, record: dict[str, Any]) -> None:
        """One metrics record, as written to metrics.jsonl (a training window or a validation)."""

    def checkpoint(self, name: str, step: int) -> None:
        """Checkpoint `name` ("latest", "best") was written at `step`."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run is DONE; `summary` is summary.json's content."""

    def close(self, status: str) -> None:
        """The session ends ("done", "failed", "interrupted"); always called."""


# -- plain lines --------------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m05s, 2h07m."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nan" if isinstance(value, float) else "-"
    return format(value, spec)


class ProgressLines(Tracker):
    """Timestamped plain lines, one per event, for output that goes to a file.

    ETA is the remaining steps at this session's mean time per step so far.
    """

    def __init__(self, stream: IO[str] | None = None, clock=time.time) -> None:
        self.stream = stream
        self.clock = clock
        self.info: RunInfo | None = None
        self.started = 0.0

    def line(self, text: str) -> None:
        stream = self.stream or sys.stdout  # resolved late: a test or a caller may swap stdout
        stream.write(f"{timestamp(self.clock())} {text}\n")
        stream.flush()

    def start(self, info: RunInfo) -> None:
        self.info, self.started = info, self.clock()
        train, meta = info.config.get("train", {}), info.meta
        options = info.config.get("model_options", {})
        shape = " x ".join(f"{options[k]}" for k in ("width", "layers") if k in options)
        params = meta.get("n_params")
        resumed = f", resuming at step {info.start_step}" if info.start_step else ""
        self.line(
            f"run {info.run_id} start: model {info.config.get('model')}"
            + (f" ({shape})" if shape else "")
            + (f", {params:,} non-embedding params" if isinstance(params, int) else "")
            + f", tokens {train.get('tokens', 0):,} x {train.get('epochs', 1)} epoch(s), lr {train.get('lr')}"
            + f", seed {train.get('seed')}, {info.total_steps:,} steps planned{resumed}, device {meta.get('device')}"
        )

    def eta(self, step: int) -> float:
        info = self.info
        if info is None or step <= info.start_step:
            return math.nan
        per_step = (self.clock() - self.started) / (step - info.start_step)
        return per_step * max(info.total_steps - step, 0)

    def log(self, record: dict[str, Any]) -> None:
        total = self.info.total_steps if self.info else 0
        step = record.get("step", 0)
        if "error" in record:
            self.line(f"step {step:,}/{total:,} error: {record['error']}")
        elif "val_loss" in record:
            self.line(f"val step {step:,}/{total:,} tokens {record.get('tokens', 0):,} val_loss "
                      f"{_number(record['val_loss'], '.4f')} val_ppl {_number(record.get('val_ppl'), '.2f')}")
        elif "train_loss" in record:
            grad = f" grad_norm {_number(record['grad_norm'], '.3f')}" if "grad_norm" in record else ""
            self.line(f"step {step:,}/{total:,} tokens {record.get('tokens', 0):,} loss "
                      f"{_number(record.get('train_lexical_loss'), '.4f')} lr {_number(record.get('lr'), '.3e')}"
                      f" tok/s {_number(record.get('tokens_per_s'), ',.0f')}{grad} eta {duration(self.eta(step))}")

    def checkpoint(self, name: str, step: int) -> None:
        self.line(f"checkpoint {name} at step {step:,}")

    def finish(self, summary: dict[str, Any]) -> None:
        elapsed = self.clock() - self.started
        self.line(f"run {self.info.run_id if self.info else '?'} done: {summary.get('steps', 0):,} steps, "
                  f"{summary.get('tokens', 0):,} tokens, best val_loss {_number(summary.get('best_val_loss'), '.4f')}"
                  f" (ppl {_number(summary.get('best_val_ppl'), '.2f')}), {duration(elapsed)} this session")

    def close(self, status: str) -> None:
        if status != "done" and self.info is not None:
            self.line(f"run {self.info.run_id} {status}")


def grid_line(event: str, run_id: str, done: int, total: int, detail: str = "", stream: IO[str] | None = None,
              when: float | None = None) -> str:
    """One timestamped line of a grid's plain log: a run starts or finishes, with the count done/total.

    Args:
        event: "start" or the run's final status ("done", "skipped", "failed").
        run_id: The run.
        done: Runs finished so far (this one included when it has finished).
        total: Runs in the grid.
        detail: Anything to append (e.g. the run's best validation loss).
        stream: Where to write (stdout by default).
        when: The time to stamp (now by default).

    Returns:
        The line written (without its newline).
    """
    text = f"{timestamp(when)} [{done}/{total}] {run_id} {event}" + (f": {detail}" if detail else "")
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()
    return text


# -- TensorBoard --------------------------------------------------------------------------------------------
def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's numeric fields by TensorBoard tag: val_* under val/, everything else under train/."""
    out = {}
    for key, value in record.items():
        if key in ("step", "epoch", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key.removeprefix('train_')}"
        out[tag] = float(value)
    return out


def record_walltime(record: dict[str, Any]) -> float | None:
    """The record's `time` stamp as POSIX seconds (None when absent or unreadable)."""
    stamp = record.get("time")
    if not isinstance(stamp, str):
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class TensorBoardTracker(Tracker):
    """Event files in ``<run>/tensorboard/``; a resumed session drops events after its start step."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise UserError("--logger tensorboard needs the tensorboard package",
                            "pip install 'tgbench[tensorboard]' (or pip install tensorboard)") from err
        self._writer_class = SummaryWriter
        self.writer = None

    def start(self, info: RunInfo) -> None:

        # purge_step: events a previous session wrote after the checkpoint it resumes from are hidden
        self.writer = self._writer_class(log_dir=str(info.run_dir / TENSORBOARD_DIR),
                                         purge_step=info.start_step or None)
        if not info.start_step:
            self.writer.add_text("config", "```\n" + to_toml(info.config) + "\n```", 0)

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        walltime = record_walltime(record)
        for tag, value in _scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record.get("step", 0), walltime=walltime)

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def read_tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a run's TensorBoard event files: tag -> [(step, value), ...] (for tests and notebooks)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(Path(run_dir) / TENSORBOARD_DIR))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


# -- Weights & Biases ---------------------------------------------------------------------------------------
def _wandb():
    try:
        import wandb
    except ImportError as err:
        raise UserError("--logger wandb needs the wandb package",
                        "pip install 'tgbench[wandb]' (or pip install wandb)") from err
    return wandb


def wandb_settings(name: str, directory: Path) -> dict[str, Any]:
    """wandb.init keywords: offline unless WANDB_MODE is set, project from WANDB_PROJECT (default tgbench)."""
    return {"project": os.environ.get("WANDB_PROJECT", "tgbench"), "name": name, "dir": str(directory),
            "mode": os.environ.get("WANDB_MODE", "offline")}


def _artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


class WandbTracker(Tracker):
    """One W&B run per training session; offline by default (`wandb sync` uploads it later)."""

    def __init__(self) -> None:
        self.wandb = _wandb()
        self.run = None
        self.info: RunInfo | None = None

    def start(self, info: RunInfo) -> None:
        self.info = info
        config = {**info.config, "meta": {k: v for k, v in info.meta.items() if v is not None}}
        self.run = self.wandb.init(config=config, group=info.meta.get("label"), job_type="train",
                                   reinit="create_new", **wandb_settings(info.run_id, info.run_dir))

    def log(self, record: dict[str, Any]) -> None:
        if self.run is None:
            return
        values = {k: v for k, v in record.items() if k not in ("step", "time") and isinstance(v, (int, float, str))}
        self.run.log(values, step=int(record.get("step", 0)))

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None or self.info is None:
            return
        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                self.run.summary[key] = value
        artifact = self.wandb.Artifact(_artifact_name(f"run-{self.info.run_id}"), type="run")
        for name in ("config.toml", "summary.json"):
            path = self.info.run_dir / name
            if path.is_file():
                artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "done" else 1)
            self.run = None


def log_report_to_wandb(report: Path, grid_dir: Path) -> None:
    """Upload a grid's report.html (and results.csv, fits.json where present) as a W&B artifact of type report."""
    wandb = _wandb()
    run = wandb.init(job_type="report", reinit="create_new", **wandb_settings(f"report-{Path(grid_dir).name}",
                                                                               Path(grid_dir)))
    artifact = wandb.Artifact(_artifact_name(f"report-{Path(grid_dir).name}"), type="report")
    artifact.add_file(str(report))
    for name in ("results.csv", "fits.json"):
        if (Path(grid_dir) / name).is_file():
            artifact.add_file(str(Path(grid_dir) / name))
    run.log_artifact(artifact)
    run.finish()


# -- choosing -----------------------------------------------------------------------------------------------
def check_loggers(names: Sequence[str]) -> list[str]:
    """The --logger values, checked (csv is always on and need not be named)."""

    out = []
    for name in names:
        for part in str(name).split(","):
            part = part.strip()
            if not part:
                continue
            if part not in LOGGERS:
                raise unknown_name("logger", part, LOGGERS)
            if part not in out:
                out.append(part)
    return out


def make_trackers(loggers: Sequence[str], plain_lines: bool) -> list[Tracker]:
    """The trackers for a session: plain lines when asked, then one per --logger (csv is metrics.jsonl itself)."""
    trackers: list[Tracker] = [ProgressLines()] if plain_lines else []
    for name in check_loggers(loggers):
        if name == "tensorboard":
            trackers.append(TensorBoardTracker())
        elif name == "wandb":
            trackers.append(WandbTracker())
    return trackers
