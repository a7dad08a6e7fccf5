"""The task contract: what an evaluation measures and how it is run on one trained run.

A task is one class (see docs/tasks.md): a `name` (the ``<task>`` of results.csv's ``<task>.<metric>``
columns and of ``<run>/eval/<task>.json``), a `version` (bump it when the numbers change, so stale result
files are recomputed), the `metrics` it reports (name, direction, display format, aggregation) and
`evaluate(run) -> TaskResult`. Tasks are found through `tgbench.registry.get_task`: the built-ins
(``ppl``, ``reversal``), the entry-point group ``tgbench.tasks``, ``path/to/file.py:Class`` or
``module:Class``, and any lm-eval task name or YAML (wrapped by `tgbench.evaluation.lmeval.LMEvalTask`).

A task may override `report_section` for its own plots and tables; without one the report draws the
generic section (`tgbench.report.task_sections`): a table per run and each scored metric against D or N with seed bars.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tgbench.results.columns import Metric  # noqa: F401 (part of the contract: a task declares its metrics)

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from tgbench.adapter import Adapter, Vocab
    from tgbench.plan.config import RunConfig
    from tgbench.report.task_sections import Section, TaskView

DEFAULT_BATCH_SIZE = 32  # documents per `Adapter.score` call


@dataclass
class LoadedRun:
    """A trained run, ready to evaluate: what `Task.evaluate` receives (`tgbench.evaluation.loaded.load_run`).

    Attributes:
        run_dir: The run directory.
        config: Its settings (config.toml).
        adapter: Its adapter, holding the model settings.
        model: The model with the checkpoint's weights, in eval mode on the evaluation device.
        corpus: Its encoded corpus (`tgbench.data.EncodedCorpus`: splits, tokenizer, vocab).
        checkpoint: "best" or "latest".
        sidecar: The checkpoint's JSON sidecar (step, epoch, checksum).
    """

    run_dir: Path
    config: RunConfig
    adapter: Adapter
    model: torch.nn.Module
    corpus: Any  # EncodedCorpus
    checkpoint: str
    sidecar: dict[str, Any]

    @property
    def vocab(self) -> Vocab:
        return self.corpus.vocab


@dataclass
class TaskResult:
    """What `Task.evaluate` returns; `tgbench.evaluation.evaluate.eval_run` writes it as ``eval/<task>.json``.

    Attributes:
        metrics: Metric name -> value (every `Task.metrics` name; extra keys such as ``*_stderr`` are kept
            in the JSON but get no results.csv column).
        n_samples: Items in the task and items evaluated (``{"original": n, "effective": m}``).
        config: Settings that determine the numbers (seed, item counts), recorded in the JSON.
        extra: More top-level keys of the JSON (e.g. counts a report section reads).
        files: Extra files to write into ``<run>/eval/`` (file name -> text), e.g. per-item tables.
        raw: A complete lm-eval results dict, when lm-eval computed the numbers (kept as lm-eval wrote it).
    """

    metrics: dict[str, float]
    n_samples: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] | None = None


class Task(ABC):
    """The contract between tgbench and one evaluation.

    Subclasses set `name`, `version`, `metrics` and `description`, and implement `evaluate`. A task
    instance must be cheap to build (the report builds one to draw its section).
    """

    name: ClassVar[str] = ""
    version: ClassVar[int | str] = 1
    metrics: ClassVar[tuple[Metric, ...]] = ()
    description: ClassVar[str] = ""
    reference: str = ""  # how the registry found it ("ppl", "path/to/file.py:Class"); set by get_task

    def versions(self, run_dir: Path) -> dict[str, Any]:
        """{result name: version} that identifies the numbers this task writes (results are recomputed
        when it changes). lm-eval tasks answer with every subtask's version."""
        return {self.name: self.version}

    def fingerprint(self, run_dir: Path) -> dict[str, str]:
        """{name: digest} of what defines this task beyond its version (a YAML file, its local data files):
        a results file computed under another fingerprint is recomputed. Built-in tasks answer {} (their
        `version` is bumped with their code)."""
        return {}

    @abstractmethod
    def evaluate(self, run: LoadedRun, *, limit: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool = True) -> TaskResult:
        """Evaluate one trained run.

        Args:
            run: The loaded run (model, adapter, corpus with its tokenizer, config).
            limit: Evaluate only the first `limit` items (None: all).
            batch_size: Documents per `Adapter.score` call.
            progress: Show a progress bar.
        """

    def report_section(self, view: TaskView) -> Section | None:
        """This task's own section of the report; None (the default) draws the generic one
        (`tgbench.report.task_sections.generic_section`: a table per run and a plot per scored metric)."""
        return None


def metric_values(task_results: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics of one task's ``results[task]`` entry, keyed as results.csv names them.

    lm-eval keys a metric as ``"<metric>,<filter>"``: the ``none`` filter is dropped (``acc``), other
    filters are joined with an underscore (``exact_match_strict-match``). Standard errors and the alias
    are left out (the JSON keeps them).
    """
    out = {}
    for key, value in task_results.items():
        metric, _, filt = str(key).partition(",")
        name = metric if filt in ("", "none") else f"{metric}_{filt}"
        if name == "alias" or name.endswith("_stderr") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and (not isinstance(value, float) or math.isfinite(value)):
            out[name] = float(value)
        elif value is None and not metric.endswith("_stderr"):
            out[name] = math.nan
    return out


def metric_schema(data: dict[str, Any]) -> list[Metric]:
    """The metrics recorded in an ``eval/<task>.json`` (its ``metrics`` list, else lm-eval's
    ``higher_is_better`` for the task, else every numeric result with no direction)."""
    if isinstance(data.get("metrics"), list):
        return [Metric.from_dict(m) for m in data["metrics"] if isinstance(m, dict) and "name" in m]
    name = data.get("task")
    directions = (data.get("higher_is_better") or {}).get(name) or {}
    values = metric_values(((data.get("results") or {}).get(name)) or {})
    return [Metric(key, directions.get(key.split(",")[0])) for key in values]
