"""`eval_run`: one task on one run, written as ``<run>/eval/<task>.json`` (lm-eval-shaped), skipped when current.

The task comes from the registry (`tgbench.registry.get_task`): ``ppl``, ``reversal``, a plug-in task, or
any lm-eval task name or YAML. Whatever it is, the file holds its numbers under ``results[<task>]``, its
metric schema (``metrics``: name, direction, format, aggregation; the report reads it), its versions and
the checkpoint it scored; results.csv turns those numbers into ``<task>.<metric>`` columns.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tgbench
from tgbench.core.errors import UserError
from tgbench.core.files import json_safe, write_json, write_text
from tgbench.evaluation.lmeval import lm_eval_cli  # noqa: F401 (the console script of installs made before tgbench.evaluation.lmeval)
from tgbench.evaluation.loaded import load_run
from tgbench.registry import get_task
from tgbench.task import DEFAULT_BATCH_SIZE, Task, TaskResult
from tgbench.training.rundir import RunDir, list_runs


def result_path(run_dir: Path, name: str) -> Path:
    """Where a task's results for a run live: ``<run>/eval/<task>.json`` (the name made file-safe)."""
    return RunDir(run_dir).eval_dir / f"{task_file_stem(name)}.json"


def task_file_stem(name: str) -> str:
    """The file-safe name of a task, also the ``<task>`` of its results.csv columns (so no dots in it)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def checkpoint_info(run_dir: Path, checkpoint: str) -> dict[str, Any]:
    """Name, step and sha256 of a run's checkpoint, from its sidecar (no weights read)."""
    sidecar = RunDir(run_dir).checkpoints / f"{checkpoint}.json"
    if not sidecar.exists():
        raise UserError(f"run '{run_dir}' has no '{checkpoint}' checkpoint yet",
                        "finish or resume the run first (tgbench train ... --resume auto)")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint sidecar '{sidecar}' is damaged: {err}",
                        "use --checkpoint latest, or retrain the run (--resume never)") from err
    return {"name": checkpoint, "step": data.get("state", {}).get("step"), "sha256": data.get("sha256")}


def is_current(path: Path, checkpoint: dict[str, Any], versions: dict[str, Any], limit: int | None,
               fingerprint: dict[str, str] | None = None) -> bool:
    """True when `path` holds results of this checkpoint file, these task versions, this limit and this task
    definition (`Task.fingerprint`: a user's YAML and its data files; {} for built-in tasks)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (old.get("checkpoint", {}).get("sha256") == checkpoint["sha256"]
            and old.get("versions") == json.loads(json.dumps(versions, default=str))
            and old.get("config", {}).get("limit") == limit
            and (old.get("task_fingerprint") or {}) == (fingerprint or {}))


def results_document(task: Task, result: TaskResult, data_config) -> dict[str, Any]:
    """The lm-eval-shaped body of ``eval/<task>.json`` (lm-eval's own dict when lm-eval computed it)."""
    name = task.name
    schema = [m.to_dict() for m in task.metrics]
    about = {"metrics": schema, "description": task.description, "task_reference": task.reference}
    if result.raw is not None:
        return {**result.raw, **about}
    config = {"task": name, "computed_by": f"{type(task).__module__}.{type(task).__qualname__}",
              "tokenizer": data_config.tokenizer, "splitter": data_config.splitter, "corpus": data_config.corpus,
              "metadata": {"version": task.version}, **result.config}
    return {
        "results": {name: {"alias": name, **result.metrics}},
        "configs": {name: config},
        "n-shot": {name: 0},
        "higher_is_better": {name: {m.name: m.higher_is_better for m in task.metrics
                                    if m.higher_is_better is not None}},
        "n_samples": {name: result.n_samples},
        **about,
        **result.extra,
    }


def eval_run(run_dir: Path, task: str | Task, *, checkpoint: str = "best", include_paths: Sequence[Path] = (),
             limit: int | None = None, device: str = "auto", force: bool = False,
             batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
             corpora: dict[str, Any] | None = None) -> tuple[str, Path, dict[str, Any] | None]:
    """Evaluate one run on one task and write ``<run>/eval/<task>.json``.

    Args:
        run_dir: A run directory with a finished checkpoint.
        task: A `Task`, or a name for `tgbench.registry.get_task` (``ppl``, ``reversal``, a plug-in, an
            lm-eval task name or YAML path).
        checkpoint: "best" or "latest".
        include_paths: Extra lm-eval task folders.
        limit: The task's items to evaluate (test documents, father/son pairs, lm-eval's per-task limit).
        force: Recompute even when the file is current.
        corpora: A cache of loaded corpora shared across runs (keyed by data settings).

    Returns:
        (status "done" | "skipped", the results file, the results or None when skipped).
    """

    run_dir = Path(run_dir)
    RunDir(run_dir).check_is_run()
    task = get_task(task, include_paths) if isinstance(task, str) else task
    info = checkpoint_info(run_dir, checkpoint)
    versions = task.versions(run_dir)
    fingerprint = task.fingerprint(run_dir)
    path = result_path(run_dir, task.name)
    if not force and is_current(path, info, versions, limit, fingerprint):
        return "skipped", path, None

    config = RunDir(run_dir).read_config()
    key = json.dumps({k: v for k, v in vars(config.data).items() if k != "cache_dir"}, sort_keys=True)
    corpora = {} if corpora is None else corpora
    run = load_run(run_dir, checkpoint=checkpoint, device=device, corpus=corpora.get(key))
    corpora[key] = run.corpus
    started = time.time()
    result = task.evaluate(run, limit=limit, batch_size=batch_size, progress=progress)
    for name, text in result.files.items():
        write_text(RunDir(run_dir).eval_dir / name, text)
    results = results_document(task, result, config.data)
    results.update({
        "task": task.name,
        "versions": versions,
        "task_fingerprint": fingerprint,
        "config": {"model": "tgbench", "model_args": {"run": str(run_dir), "checkpoint": checkpoint},
                   "adapter": config.model, "limit": limit, "batch_size": batch_size,
                   "device": str(next(run.model.parameters()).device)},
        "checkpoint": info,
        "date": started,
        "date_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "tgbench_version": tgbench.__version__,
    })
    results = json_safe(results)
    write_json(path, results)
    return "done", path, results


def grid_runs(grid_dir: Path) -> list[Path]:
    """Finished run directories of a grid (subdirectories with config.toml and DONE), sorted.

    Raises:
        UserError: when the grid directory does not exist.
    """
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise UserError(f"grid directory '{grid_dir}' does not exist",
                        "give the --out directory of `tgbench train-grid`")
    return list_runs(grid_dir, finished=True)
