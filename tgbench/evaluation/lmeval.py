"""The lm-eval bridge: any run as an lm-eval model, and any lm-eval task as a tgbench `Task`.

- `TGBenchLM` is an `lm_eval.api.model.LM` registered as ``tgbench``: it wraps any run directory
  and answers lm-eval's `loglikelihood`, `loglikelihood_rolling` and `generate_until` requests through
  the run's adapter (`tgbench.evaluation.scoring`).
- `LMEvalTask` wraps an lm-eval task name or YAML path as a `Task`: its metrics, directions and
  aggregations are read from lm-eval's own task config (``metric_list``, else lm-eval's defaults for
  the output type) and, once run, from the ``higher_is_better`` lm-eval reports.
- `lm_eval_cli` is ``tgbench-lm-eval``: lm-eval's CLI with the ``tgbench`` model and tgbench's task
  folder (tg_ppl, tg_reversal, the lm-eval twins of the built-in tasks).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

import tgbench.tasks
from tgbench.adapter import Document
from tgbench.core.console import print_error, progress_bar
from tgbench.core.errors import UserError, unknown_name
from tgbench.evaluation.loaded import load_run
from tgbench.evaluation.scoring import as_document, continuation_document, score_documents, text_sentences
from tgbench.results.columns import Metric
from tgbench.task import DEFAULT_BATCH_SIZE, Task, TaskResult, metric_values
from tgbench.training.rundir import RunDir

TASKS_DIR = Path(tgbench.tasks.__path__[0])


def local_lm_eval_tasks() -> list[str]:
    """The lm-eval tasks of tgbench's own task folder (a folder named like its YAML)."""
    return sorted(p.name for p in TASKS_DIR.iterdir() if (p / f"{p.name}.yaml").is_file())


# -- the lm-eval model -----------------------------------------------------------------------------
@register_model("tgbench")
class TGBenchLM(LM):
    """Any tgbench run as an lm-eval model: ``--model tgbench --model_args run=DIR[,checkpoint=latest]``.

    All three request types go through the run's adapter: `loglikelihood` and
    `loglikelihood_rolling` through `score`, `generate_until` through `generate` (greedy).

    The `is_greedy` flag of `loglikelihood` is always False: `score` returns the log-prob of each
    given token, not the argmax, so exact-match-by-greedy metrics are not available.
    """

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None):
        """lm-eval's constructor hook; `--model_args device=...` wins over the CLI's `--device` default."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    def __init__(self, run: str | Path | None = None, checkpoint: str = "best", device: str = "auto",
                 batch_size: int | str | None = DEFAULT_BATCH_SIZE, loaded=None, progress: bool = True,
                 **_ignored: Any) -> None:
        super().__init__()

        if loaded is None:
            if run is None:
                raise UserError("the tgbench lm-eval model needs a run directory",
                                "pass --model_args run=PATH/TO/RUN[,checkpoint=best|latest]")
            device = str(device or "auto")
            if device.startswith("cuda") and not torch.cuda.is_available():
                print(f"tgbench: device '{device}' is not available; using cpu", file=sys.stderr)
                device = "cpu"
            loaded = load_run(Path(run), checkpoint=str(checkpoint), device=device)
        self.run = loaded
        self.tokenizer = loaded.corpus.tokenizer
        self.data_config = loaded.config.data
        self.batch_size = int(batch_size) if str(batch_size).isdigit() and int(batch_size) > 0 else \
            DEFAULT_BATCH_SIZE  # "auto" and None fall back to the default
        self.progress = progress

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name

    def get_model_info(self) -> dict[str, Any]:
        return {"tgbench_run": str(self.run.run_dir), "checkpoint": self.run.checkpoint,
                "adapter": self.run.config.model, "tokenizer": self.tokenizer.name}

    def _score(self, documents: Sequence[Document], description: str) -> list[torch.Tensor]:
        return score_documents(self.run, documents, batch_size=self.batch_size, description=description,
                               progress=self.progress)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        built = [continuation_document(*req.args, self.tokenizer, self.data_config) for req in requests]
        scores = self._score([doc for doc, _ in built], "loglikelihood")
        results = []
        for req, (_, n), score in zip(requests, built, scores, strict=True):
            answer = (float(score[len(score) - n :].double().sum()) if n else 0.0, False)
            self.cache_hook.add_partial("loglikelihood", req.args, answer)
            results.append(answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        documents = [as_document(text_sentences(req.args[0], self.tokenizer, self.data_config))
                     for req in requests]
        scores = self._score(documents, "loglikelihood_rolling")
        results = []
        for req, score in zip(requests, scores, strict=True):
            total = float(score.double().sum())
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
            results.append(total)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        with progress_bar(self.progress) as bar:
            task = bar.add_task("generate_until", total=len(requests))
            for req in requests:
                context, kwargs = req.args[0], dict(req.args[1] if len(req.args) > 1 else {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kwargs.get("max_gen_toks", 256))
                prompt = as_document(text_sentences(context, self.tokenizer, self.data_config))
                with torch.no_grad():
                    new = self.run.adapter.generate(
                        self.run.model, prompt, self.run.vocab, max_new_tokens=max_new,
                        stop=[self.tokenizer.encode(u) for u in until if u],
                    )
                text = cut_at(self.tokenizer.decode(new), until)
                self.cache_hook.add_partial("generate_until", req.args, text)
                results.append(text)
                bar.advance(task)
        return results


def cut_at(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = len(text)
    for stop in until:
        if stop and (at := text.find(stop)) >= 0:
            cut = min(cut, at)
    return text[:cut]


# -- lm-eval tasks by name ---------------------------------------------------------------------------
def task_manager(include_paths: Sequence[Path] = (), defaults: bool = False, metadata: dict | None = None):
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)] + [str(Path(p).expanduser().resolve()) for p in include_paths]
    return TaskManager(include_path=paths, include_defaults=defaults, metadata=metadata)


def is_task_file(task: str) -> bool:
    return task.endswith((".yaml", ".yml")) or Path(task).expanduser().is_file()


def task_file_entry(task: str):
    """lm-eval's index entry of a task YAML (its name and path)."""
    from lm_eval.tasks._index import TaskIndex

    path = Path(task).expanduser()
    entry = TaskIndex.entry_from_path(path) if path.is_file() else None
    if entry is None:
        raise UserError(f"task file '{task}' is missing or names no task",
                        "give an lm-eval task YAML with a `task:` key")
    return entry


def resolve_task(task: str, include_paths: Sequence[Path] = (), metadata: dict | None = None,
                 also_known: Sequence[str] = ()):
    """(task manager, task spec, name) for an lm-eval task name or YAML path.

    Local task folders are searched first; lm-eval's ~14,000 built-in YAMLs only when the name is
    not found there (indexing them takes seconds).

    Raises:
        UserError: for an unknown name, listing the local tasks and `also_known` (tgbench's own).
    """
    if is_task_file(task):
        entry = task_file_entry(task)
        # lm-eval loads a YAML by path (its `!function` and `include:` resolve beside the file).
        return task_manager(include_paths, False, metadata), str(entry.yaml_path), entry.name
    manager = task_manager(include_paths, False, metadata)
    if task not in manager.all_tasks:
        manager = task_manager(include_paths, True, metadata)
        if task not in manager.all_tasks:
            raise unknown_task(task, manager.all_tasks, include_paths, also_known)
    return manager, task, task


def unknown_task(task: str, known: Sequence[str], include_paths: Sequence[Path] = (),
                 also_known: Sequence[str] = ()) -> UserError:
    """The error for a task name that is neither tgbench's nor lm-eval's (nor in an --include-path folder)."""
    import difflib

    close = difflib.get_close_matches(task, [*also_known, *known], n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    searched = f", nor in {', '.join(str(p) for p in include_paths)}" if include_paths else ""
    own = ", ".join(sorted(also_known)) or "ppl, reversal"
    return UserError(
        f"unknown task '{task}': not a tgbench task, not one of lm-eval's {len(known):,} task names{searched}",
        f"{hint}give a tgbench task ({own}), an lm-eval task name (`lm-eval ls tasks` lists them), a task YAML "
        "path, or --include-path DIR for a folder of your own task YAMLs")


HUB_ERRORS = ("ConnectionError", "DatasetNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled",
              "HfHubHTTPError", "DataFilesNotFoundError")


@contextlib.contextmanager
def dataset_errors(task: str):
    """Turn "the task's dataset is neither cached nor downloadable" into one clear UserError."""
    try:
        yield
    except Exception as err:
        if not any(cls.__name__ in HUB_ERRORS for cls in type(err).__mro__):
            raise
        named = re.search(r"'([^']+/[^']+)'", str(err))
        dataset = named.group(1) if named else f"the dataset of task '{task}'"
        raise UserError(
            f"lm-eval task '{task}' needs {dataset}, which is not in the local Hugging Face cache and could not "
            f"be downloaded ({type(err).__name__})",
            f"connect to the internet once so `datasets` downloads and caches {dataset}, or point HF_HOME at a "
            "cache that holds it (offline with a cached copy, set HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1)",
        ) from err


def git_describe() -> str | None:
    """`git describe --always` in the working directory, or None outside a repository (stderr kept quiet)."""
    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False)
    except OSError:  # no git installed
        return None
    return done.stdout.strip() or None


@contextlib.contextmanager
def quiet_git_hash():
    """lm-eval records the working directory's git commit by running git with the terminal's stderr, so every
    evaluation outside a repository printed "fatal: not a git repository"; it records the same value (None there)
    through `git_describe` instead."""
    import lm_eval.evaluator

    original = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = git_describe
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = original


def lm_eval_task(run, task: str, include_paths: Sequence[Path] = (), limit: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
                 bootstrap_iters: int = 100, log_samples: bool = False) -> dict[str, Any]:
    """Run one lm-eval task (name or YAML path) on a loaded run with `TGBenchLM`.

    `bootstrap_iters` > 0 turns on lm-eval's standard errors: analytic for `mean` metrics (the
    reversal probe), a small bootstrap for the few metrics lm-eval only bootstraps.

    Returns:
        lm-eval's results dict (``results``, ``configs``, ``versions``, ...).
    """
    from lm_eval import simple_evaluate

    metadata = {"run": str(run.run_dir), "checkpoint": run.checkpoint}
    manager, spec, _ = resolve_task(task, include_paths, metadata)
    lm = TGBenchLM(loaded=run, batch_size=batch_size, progress=progress)
    # No reseeding: the model is already built; the tasks here are deterministic.
    with dataset_errors(task), quiet_git_hash():
        return simple_evaluate(model=lm, tasks=[spec], task_manager=manager, limit=limit,
                               bootstrap_iters=bootstrap_iters, log_samples=log_samples, random_seed=None,
                               numpy_random_seed=None, torch_random_seed=None, fewshot_random_seed=None)


# -- any lm-eval task as a tgbench Task -----------------------------------------------------------------
def config_metrics(config: dict[str, Any]) -> list[Metric]:
    """The metrics an lm-eval task config declares: its ``metric_list`` (direction and aggregation as
    written, lm-eval's registry defaults where left out), else lm-eval's defaults for its output type."""
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY, is_higher_better

    listed = config.get("metric_list")
    if not listed:
        names = DEFAULT_METRIC_REGISTRY.get(str(config.get("output_type", "")), [])
        return [Metric(name, is_higher_better(name), aggregation=name if "perplexity" in name else "mean")
                for name in names]
    out = []
    for entry in listed:
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            continue
        name = entry["metric"]
        direction = entry["higher_is_better"] if "higher_is_better" in entry else is_higher_better(name)
        aggregation = str(entry.get("aggregation", "mean")).rsplit(".", 1)[-1]  # !function path -> name
        out.append(Metric(name, None if direction is None else bool(direction), aggregation=aggregation))
    return out


class LMEvalTask(Task):
    """An lm-eval task (name or YAML path) run through `TGBenchLM`, with lm-eval's metrics and directions.

    Args:
        spec: A task name (tgbench's task folder, `include_paths`, then lm-eval's built-ins) or a YAML path.
        include_paths: Extra lm-eval task folders.
        also_known: Names listed in the error for an unknown task (tgbench's own tasks).
    """

    description = "an lm-eval task"

    def __init__(self, spec: str, include_paths: Sequence[Path] = (), also_known: Sequence[str] = ()) -> None:
        self.spec = self.reference = spec
        self.include_paths = tuple(include_paths)
        self.also_known = tuple(also_known)
        if is_task_file(spec):
            entry = task_file_entry(spec)
            self.name, self._yaml = entry.name, entry.yaml_path
        else:
            self.name, self._yaml = spec, None
        self._metrics: list[Metric] | None = None
        self.description = f"lm-eval task {self.name}" + (f" ({spec})" if spec != self.name else "") + \
            ", run through the tgbench lm-eval model (every request scored by the adapter)"

    @property
    def metrics(self) -> tuple[Metric, ...]:  # type: ignore[override]
        if self._metrics is None:
            self._metrics = config_metrics(self._config())
        return tuple(self._metrics)

    def _config(self) -> dict[str, Any]:
        from lm_eval.tasks._yaml_loader import load_yaml

        path = self._yaml
        if path is None:
            manager, _, _ = resolve_task(self.spec, self.include_paths, also_known=self.also_known)
            entry = manager.task_index.get(self.spec)
            path = getattr(entry, "yaml_path", None)
            if path is None:
                return dict(getattr(entry, "cfg", None) or {})
        return load_yaml(path, resolve_func=False)

    def versions(self, run_dir: Path) -> dict[str, Any]:
        manager, spec, _ = resolve_task(self.spec, self.include_paths, {"run": str(run_dir)}, self.also_known)
        with dataset_errors(self.spec):
            loaded = manager.load([spec])
        return {t: obj.VERSION for t, obj in loaded["tasks"].items()}

    def fingerprint(self, run_dir: Path) -> dict[str, str]:
        """sha256 of the task's YAML settings and of every local data file they name (`dataset_kwargs.
        data_files`): editing a user's task file, or the items of its data, changes it."""
        import hashlib

        config = self._config()
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        names = files.values() if isinstance(files, dict) else [files]
        for name in sorted(str(f) for group in names for f in (group if isinstance(group, list) else [group])):
            path = Path(name).expanduser()
            if path.is_file():
                digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        return {self.name: digest.hexdigest()[:16]}

    def evaluate(self, run, *, limit: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool = True) -> TaskResult:
        raw = lm_eval_task(run, self.spec, self.include_paths, limit, batch_size, progress)
        kept = {k: raw[k] for k in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
                                    "higher_is_better") if k in raw}
        kept["n_samples"] = raw.get("n-samples", {})
        values = metric_values((raw.get("results") or {}).get(self.name) or {})
        reported = (raw.get("higher_is_better") or {}).get(self.name) or {}
        declared = {m.name: m for m in self.metrics}
        schema = []
        for key in list(values):
            base = key if key in declared or key in reported else key.rsplit("_", 1)[0]
            if base not in declared and base not in reported:
                del values[key]  # bookkeeping lm-eval adds (sample_len), not a metric of the task
                continue
            known = declared.get(base, Metric(base))
            direction = reported.get(base, known.higher_is_better)
            schema.append(Metric(key, None if direction is None else bool(direction), known.fmt, known.aggregation))
        self._metrics = schema
        return TaskResult(metrics=values, raw=kept)


# -- console entry point -------------------------------------------------------------------------------
def _option(args: Sequence[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def check_lm_eval_args(args: Sequence[str]) -> None:
    """Fail fast, before lm-eval loads, on a `run=` that is no run directory or an unknown tgbench task.

    Raises:
        UserError: naming the bad value and the fix.
    """
    model_args = _option(args, "--model_args") or ""
    for pair in model_args.split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "run":
            RunDir(Path(value.strip())).check_is_run(f"--model_args run={value.strip()}")
    local = local_lm_eval_tasks()
    for task in (_option(args, "--tasks") or "").split(","):
        task = task.strip()
        if task.startswith("tg_") and task not in local:
            raise unknown_name("task", task, local)


def _skip_lm_eval_builtin_tasks() -> None:
    """Make lm-eval's CLI index only the given task folders, not its ~14,000 built-in YAMLs (which takes
    longer than scoring a small run): used when every requested task is one of tgbench's."""
    import lm_eval.tasks

    builtin = lm_eval.tasks.TaskManager

    class LocalTaskManager(builtin):
        def __init__(self, *args: Any, include_defaults: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, include_defaults=include_defaults, **kwargs)

    lm_eval.tasks.TaskManager = LocalTaskManager


def lm_eval_cli(argv: list[str] | None = None, run: Callable[[], None] | None = None) -> None:
    """`tgbench-lm-eval`: lm-eval's own CLI with the ``tgbench`` model registered.

    tgbench's task folder (tg_ppl, tg_reversal) is added to ``--include_path`` unless one is given.
    A missing run directory or an unknown task is one error line with a fix (exit 2), not a traceback.
    """

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = sys.argv[1:]
    if args and not any(a in ("-h", "--help") for a in args):
        # lm-eval's own defaults are made for Hugging Face models on a GPU: batch size 1 (one `score` call per
        # request, ~10x slower than `tgbench eval`) and device cuda:0 (wrong on a CPU machine). Unless given,
        # tgbench's are used: 32 documents per call (as `tgbench eval`) and the device `auto` picks.
        for names, value in ((("--include_path",), str(TASKS_DIR)), (("--batch_size", "-b"), str(DEFAULT_BATCH_SIZE)),
                             (("--device",), "auto")):
            if not any(a in names or a.startswith(names[0] + "=") for a in args):
                sys.argv += [names[0], value]
    try:
        check_lm_eval_args(args)
        tasks = [t.strip() for t in (_option(args, "--tasks") or "").split(",") if t.strip()]
        if tasks and all(t in local_lm_eval_tasks() for t in tasks):
            _skip_lm_eval_builtin_tasks()
        if run is None:
            from lm_eval.__main__ import cli_evaluate as run
        run()
    except UserError as err:
        print_error(err.message, err.fix)
        sys.exit(2)
    except ValueError as err:
        if "Tasks not found" not in str(err):
            raise
        print_error(f"lm-eval: {err}", "check the task names (`lm-eval ls tasks` lists them; tgbench's own: "
                    f"{', '.join(local_lm_eval_tasks())})")
        sys.exit(2)
