"""Evaluation: the lm-eval bridge, scoring through `Adapter.score`, and `eval_run`.

Everything is scored through `Adapter.score` (see `tgbench/adapter.py`), so every architecture is
measured on exactly the same content tokens:

- `TGBenchLM` is an `lm_eval.api.model.LM` registered as ``tgbench``: it wraps any run directory
  and answers lm-eval's `loglikelihood`, `loglikelihood_rolling` and `generate_until` requests.
- The built-in tasks own their data and metrics in their folders: ``tasks/tg_ppl/task.py`` computes
  the lexical metrics of the run's test split directly on the encoded token ids (no re-tokenisation;
  the lm-eval task ``tg_ppl`` gives the same numbers through `loglikelihood_rolling` on each test
  document's decoded text), ``tasks/tg_reversal/task.py`` runs the in-context father/son probe
  (paper section 6; the lm-eval task ``tg_reversal`` runs the same items as a two-choice task).
- `eval_run` writes ``<run>/eval/<task>.json`` (lm-eval-shaped) and skips results that are current.

How text becomes a document (lm-eval requests): the text is split into sentences with the
splitter of the run's training data, each sentence is encoded with the run's tokenizer, and the
run's sentence-length caps are applied (`cap_and_merge`, which never drops or reorders a token).
That is the pipeline that encoded the training corpus, so decoded corpus text re-encodes to the
same ids. For ``loglikelihood(context, continuation)`` the continuation is appended to the last
context sentence; its tokens are ``encode(last + continuation)`` minus ``encode(last)`` when the
latter is a prefix of the former (true at word boundaries for byte-level BPE, so a merge across
the boundary is never split), otherwise ``encode(continuation)`` is appended as is.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

import tgbench
import tgbench.tasks
from tgbench.adapter import Document
from tgbench.errors import UserError, unknown_name
from tgbench.runs import RunDir, write_json, write_text

TASKS_DIR = Path(tgbench.tasks.__path__[0])

# Built-in tasks computed directly through `Adapter.score`: alias -> (task name, file stem).
DIRECT_TASKS = {"ppl": "tg_ppl", "tg_ppl": "tg_ppl", "reversal": "tg_reversal", "tg_reversal": "tg_reversal"}
FILE_STEMS = {"tg_ppl": "ppl", "tg_reversal": "reversal"}
# Bump when the numbers a task produces change; must equal `metadata.version` in its YAML.
TASK_VERSIONS = {"tg_ppl": 1, "tg_reversal": 1}

DEFAULT_BATCH_SIZE = 32  # documents per `score` call


# -- text -> documents ---------------------------------------------------------------------------
def text_sentences(text: str, tokenizer, data_config) -> list[list[int]]:
    """Token ids per sentence of `text`, through the run's splitter, tokenizer and length caps."""
    from tgbench.data.split import cap_and_merge, split_sentences

    pieces = split_sentences(text, data_config.splitter)
    ids = tokenizer.encode_batch(pieces) if pieces else []
    sentences, _, _ = cap_and_merge(ids, data_config.max_sentence_tokens, data_config.min_fragment_tokens)
    return sentences


def continuation_document(context: str, continuation: str, tokenizer, data_config) -> tuple[Document, int]:
    """The document scored for a loglikelihood request, and how many of its last tokens are the
    continuation (see the module docstring for the tokenisation rule)."""
    from tgbench.data.split import cap_and_merge, split_sentences

    pieces = split_sentences(context, data_config.splitter) or [""]
    ids = tokenizer.encode_batch(pieces)
    last = ids[-1]
    joined = tokenizer.encode(pieces[-1] + continuation)
    if joined[: len(last)] == last:
        tail = joined[len(last) :]
    else:
        tail = tokenizer.encode(continuation)
    ids[-1] = last + tail
    sentences, _, _ = cap_and_merge(ids, data_config.max_sentence_tokens, data_config.min_fragment_tokens)
    return as_document(sentences), len(tail)


def as_document(sentences: Sequence[Sequence[int]]) -> Document:
    return [np.asarray(s, dtype=np.int64) for s in sentences if len(s)]


def _progress(enabled: bool = True):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=True)


def score_documents(run, documents: Sequence[Document], *, batch_size: int = DEFAULT_BATCH_SIZE,
                    description: str = "scoring", progress: bool = True) -> list[torch.Tensor]:
    """`adapter.score` over many documents, longest first in batches (less padding), in input order.

    Args:
        run: A `tgbench.train.LoadedRun`.
        documents: Documents of content ids; empty documents get an empty tensor without a call.
        batch_size: Documents per `score` call.

    Returns:
        One float32 CPU tensor of per-token log-probs per document.
    """
    from tgbench.devices import autocast_context

    device = next(run.model.parameters()).device
    lengths = [sum(len(s) for s in doc) for doc in documents]
    order = [i for i in sorted(range(len(documents)), key=lambda i: -lengths[i]) if lengths[i] > 0]
    out: list[torch.Tensor] = [torch.zeros(0) for _ in documents]
    run.model.eval()
    with _progress(progress) as bar, torch.no_grad(), autocast_context(device, run.config.train.dtype):
        task = bar.add_task(description, total=len(documents))
        bar.advance(task, len(documents) - len(order))
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start : start + batch_size]
            scores = run.adapter.score(run.model, [documents[i] for i in chunk], run.vocab)
            for index, score in zip(chunk, scores, strict=True):
                if len(score) != lengths[index]:
                    raise UserError(
                        f"adapter '{run.adapter.name}' ({type(run.adapter).__module__}) scored {len(score)} tokens "
                        f"of a {lengths[index]}-token document",
                        "make the adapter's score() return one log-prob per content token, in order "
                        "(the contract in docs/adapters.md)")
                out[index] = score.float().cpu()
            bar.advance(task, len(chunk))
    return out


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
        from tgbench.runs import load_run

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
        with _progress(self.progress) as bar:
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


# -- datasets for the lm-eval task folders (called from tasks/*/utils.py) ----------------------------
def run_from(kwargs: dict[str, Any]) -> Path:
    import os

    run = kwargs.get("run") or os.environ.get("TGBENCH_RUN")
    if not run:
        raise UserError("the tg_* lm-eval tasks need the run whose corpus/tokenizer they use",
                        "pass --model_args run=DIR (lm-eval hands model_args to the task) or set TGBENCH_RUN")
    return Path(run)


def run_corpus(run_dir: Path):
    from tgbench.data import load_corpus

    return load_corpus(RunDir(run_dir).read_config().data, progress=False)


# -- lm-eval tasks by name ---------------------------------------------------------------------------
def task_manager(include_paths: Sequence[Path] = (), defaults: bool = False, metadata: dict | None = None):
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)] + [str(Path(p).expanduser().resolve()) for p in include_paths]
    return TaskManager(include_path=paths, include_defaults=defaults, metadata=metadata)


def resolve_task(task: str, include_paths: Sequence[Path] = (), metadata: dict | None = None):
    """(task manager, task spec, name) for an lm-eval task name or YAML path.

    Local task folders are searched first; lm-eval's ~14,000 built-in YAMLs only when the name is
    not found there (indexing them takes seconds).
    """
    path = Path(task).expanduser()
    if task.endswith((".yaml", ".yml")) or path.is_file():
        from lm_eval.tasks._index import TaskIndex

        entry = TaskIndex.entry_from_path(path) if path.is_file() else None
        if entry is None:
            raise UserError(f"task file '{task}' is missing or names no task",
                            "give an lm-eval task YAML with a `task:` key")
        # lm-eval loads a YAML by path (its `!function` and `include:` resolve beside the file).
        return task_manager(include_paths, False, metadata), str(path.resolve()), entry.name
    manager = task_manager(include_paths, False, metadata)
    if task not in manager.all_tasks:
        manager = task_manager(include_paths, True, metadata)
        if task not in manager.all_tasks:
            local = task_manager(include_paths, False).all_tasks
            raise unknown_name("task", task, sorted({*DIRECT_TASKS, *local}))
    return manager, task, task


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
    with dataset_errors(task):
        return simple_evaluate(model=lm, tasks=[spec], task_manager=manager, limit=limit,
                               bootstrap_iters=bootstrap_iters, log_samples=log_samples, random_seed=None,
                               numpy_random_seed=None, torch_random_seed=None, fewshot_random_seed=None)


def lm_eval_versions(task: str, include_paths: Sequence[Path], run_dir: Path) -> tuple[str, dict[str, Any]]:
    """(result name, {task: version}) of an lm-eval task without running it."""
    manager, spec, name = resolve_task(task, include_paths, {"run": str(run_dir)})
    with dataset_errors(task):
        loaded = manager.load([spec])
    return name, {t: obj.VERSION for t, obj in loaded["tasks"].items()}


# -- eval/<task>.json ---------------------------------------------------------------------------------
def canonical_task(task: str) -> str:
    return DIRECT_TASKS.get(task, task)


def result_path(run_dir: Path, name: str) -> Path:
    stem = FILE_STEMS.get(name, re.sub(r"[^A-Za-z0-9_.-]+", "_", name))
    return RunDir(run_dir).eval_dir / f"{stem}.json"


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


def is_current(path: Path, checkpoint: dict[str, Any], versions: dict[str, Any], limit: int | None) -> bool:
    """True when `path` holds results of this checkpoint file, these task versions and this limit."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (old.get("checkpoint", {}).get("sha256") == checkpoint["sha256"]
            and old.get("versions") == json.loads(json.dumps(versions, default=str))
            and old.get("config", {}).get("limit") == limit)


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, unknown objects -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


HIGHER_IS_BETTER = {
    "tg_ppl": {"lexical_loss": False, "lexical_ppl": False, "word_perplexity": False, "bits_per_byte": False},
    "tg_reversal": {f"{c}_{m}": m == "margin" for c in ("normal", "reversed")
                    for m in ("target_nll", "distractor_nll", "margin", "error_rate")},
}


def direct_results(run, name: str, limit: int | None, batch_size: int, progress: bool) -> dict[str, Any]:
    """lm-eval-shaped results of a built-in task computed through `adapter.score`."""
    data = run.config.data
    config = {"task": name, "output_type": "loglikelihood_rolling" if name == "tg_ppl" else "multiple_choice",
              "computed_by": "tgbench.evaluate (adapter.score on exact token ids)",
              "tokenizer": data.tokenizer,
              "splitter": data.splitter, "corpus": data.corpus, "metadata": {"version": TASK_VERSIONS[name]}}
    extra: dict[str, Any] = {}
    if name == "tg_ppl":
        from tgbench.tasks.tg_ppl.task import evaluate_ppl

        metrics, n, original = evaluate_ppl(run, limit, batch_size, progress)
        config["test_split"] = "test"
    else:
        from tgbench.tasks.tg_reversal.task import REVERSAL_PAIRS, REVERSAL_SEED, evaluate_reversal, rows_to_csv

        metrics, rows, counts = evaluate_reversal(run, limit, batch_size=batch_size, progress=progress)
        n, original = counts["pairs"], REVERSAL_PAIRS
        config.update(seed=REVERSAL_SEED, pairs=counts["pairs"])
        extra = {"reversal": counts, "items_csv": "tg_reversal_items.csv"}
        write_text(RunDir(run.run_dir).eval_dir / "tg_reversal_items.csv", rows_to_csv(rows))
    return {
        "results": {name: {"alias": name, **metrics}},
        "configs": {name: config},
        "versions": {name: TASK_VERSIONS[name]},
        "n-shot": {name: 0},
        "higher_is_better": {name: HIGHER_IS_BETTER[name]},
        "n_samples": {name: {"original": original, "effective": n}},
        **extra,
    }


def eval_run(run_dir: Path, task: str, *, checkpoint: str = "best", include_paths: Sequence[Path] = (),
             limit: int | None = None, device: str = "auto", force: bool = False,
             batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
             corpora: dict[str, Any] | None = None) -> tuple[str, Path, dict[str, Any] | None]:
    """Evaluate one run on one task and write ``<run>/eval/<task>.json``.

    Args:
        run_dir: A run directory with a finished checkpoint.
        task: ``ppl``/``tg_ppl``, ``reversal``/``tg_reversal``, or any lm-eval task name or YAML path.
        checkpoint: "best" or "latest".
        include_paths: Extra lm-eval task folders.
        limit: Test documents (ppl), father/son pairs (reversal) or lm-eval's per-task limit.
        force: Recompute even when the file is current.
        corpora: A cache of loaded corpora shared across runs (keyed by data settings).

    Returns:
        (status "done" | "skipped", the results file, the results or None when skipped).
    """
    from tgbench.runs import load_run

    run_dir = Path(run_dir)
    if not RunDir(run_dir).config_path.exists():
        raise UserError(f"'{run_dir}' is not a run directory (no config.toml)",
                        "give a directory written by `tgbench train`, or a grid with --runs")
    name = canonical_task(task)
    info = checkpoint_info(run_dir, checkpoint)
    if name in TASK_VERSIONS:
        versions: dict[str, Any] = {name: TASK_VERSIONS[name]}
    else:
        name, versions = lm_eval_versions(task, include_paths, run_dir)
    path = result_path(run_dir, name)
    if not force and is_current(path, info, versions, limit):
        return "skipped", path, None

    config = RunDir(run_dir).read_config()
    key = json.dumps({k: v for k, v in vars(config.data).items() if k != "cache_dir"}, sort_keys=True)
    corpora = {} if corpora is None else corpora
    run = load_run(run_dir, checkpoint=checkpoint, device=device, corpus=corpora.get(key))
    corpora[key] = run.corpus
    started = time.time()
    if name in TASK_VERSIONS:
        results = direct_results(run, name, limit, batch_size, progress)
    else:
        raw = lm_eval_task(run, task, include_paths, limit, batch_size, progress)
        results = {k: raw[k] for k in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
                                       "higher_is_better") if k in raw}
        results["n_samples"] = raw.get("n-samples", {})
    results["versions"] = versions
    results.update({
        "task": name,
        "config": {"model": "tgbench", "model_args": {"run": str(run_dir), "checkpoint": checkpoint},
                   "adapter": config.model, "limit": limit, "batch_size": batch_size,
                   "device": str(next(run.model.parameters()).device)},
        "checkpoint": info,
        "date": started,
        "date_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "tgbench_version": tgbench.__version__,
    })
    results = _finite(results)
    write_json(path, results)
    return "done", path, results


def grid_runs(grid_dir: Path) -> list[Path]:
    """Finished run directories of a grid (subdirectories with config.toml and DONE), sorted."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise UserError(f"grid directory '{grid_dir}' does not exist",
                        "give the --out directory of `tgbench train-grid`")
    return sorted(p for p in grid_dir.iterdir()
                  if p.is_dir() and (p / "config.toml").exists() and (p / "DONE").exists())


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
        if key.strip() == "run" and not RunDir(Path(value.strip())).config_path.exists():
            raise UserError(f"--model_args run={value.strip()} is not a run directory (no config.toml)",
                            "give a directory written by `tgbench train` or `tgbench train-grid`")
    local = sorted(FILE_STEMS)
    for task in (_option(args, "--tasks") or "").split(","):
        task = task.strip()
        if task.startswith("tg_") and task not in local:
            raise unknown_name("task", task, local)


def lm_eval_cli(argv: list[str] | None = None, run: Callable[[], None] | None = None) -> None:
    """`tgbench-lm-eval`: lm-eval's own CLI with the ``tgbench`` model registered.

    tgbench's task folder (tg_ppl, tg_reversal) is added to ``--include_path`` unless one is given.
    A missing run directory or an unknown task is one error line with a fix (exit 2), not a traceback.
    """
    from tgbench.console import print_error

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = sys.argv[1:]
    if args and not any(a in ("-h", "--help") for a in args) and not any(
            a == "--include_path" or a.startswith("--include_path=") for a in args):
        sys.argv.append("--include_path")
        sys.argv.append(str(TASKS_DIR))
    try:
        check_lm_eval_args(args)
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
                    f"{', '.join(sorted(FILE_STEMS))})")
        sys.exit(2)
