"""The one training loop, for every adapter.

`train(config, out)` turns a `RunConfig` into a run directory: AdamW (no decay on biases,
norms, gates and other 1-D tensors), linear warmup then cosine decay to a fraction of the peak
(torch's own schedulers), gradient clipping, periodic lexical validation through the adapter's
`score`, best and latest checkpoints, `metrics.jsonl`, and `DONE` last.

Interrupted runs resume exactly: the epoch's batch list is rebuilt from the seed and skipped to
the saved position; model, optimiser, scheduler and RNG state come from the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import resource
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from tgbench.adapter import Adapter, Document, Vocab
from tgbench.config import RunConfig
from tgbench.errors import UserError
from tgbench.registry import build_adapter, resolved
from tgbench.runs import RunDir, latest_good_checkpoint, provenance, read_json, save_checkpoint, write_json

console = Console(stderr=True)


class TrainingFailed(Exception):
    """The loss became non-finite; the run is marked FAILED and keeps its last good checkpoint."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        self.signum = signum
        self.run_dir = run_dir
        super().__init__(f"interrupted by signal {signum}")


@dataclass
class RunResult:
    run_dir: Path
    status: str  # done | skipped | failed
    best_val_loss: float = math.nan
    steps: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available", "use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"unknown device '{name}'", "use auto, cpu, cuda or cuda:N") from err


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (or when asked); plain float32 otherwise."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(config.train.beta1, config.train.beta2))


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, total_steps: int):
    """Linear warmup from ~0, then cosine decay to `min_lr_fraction` of the peak."""
    warmup = min(total_steps - 1, max(1, round(config.train.warmup_fraction * total_steps)))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup), eta_min=config.train.lr * config.train.min_lr_fraction
    )
    if warmup <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


CPU_FLOPS_PER_CORE = 15e9  # training FLOP/s per core measured here (benchmarks: ~30 GFLOP/s on 2 cores)
LARGE_RUN_HOURS = 1.0


def warn_if_large(model: torch.nn.Module, tokens: int, device: torch.device) -> float:
    """Print a warning when a CPU run would take hours (e.g. a bare `tgbench train --model tg`: 12 x 768).

    The estimate is 6 x parameters (embeddings included: the tied output layer costs as much as
    its matrix) x training tokens, at the CPU rate measured by the benchmarks.

    Returns:
        The estimated hours (0 on a GPU).
    """
    if device.type != "cpu":
        return 0.0
    flops = 6 * sum(p.numel() for p in model.parameters()) * tokens
    hours = flops / (CPU_FLOPS_PER_CORE * torch.get_num_threads()) / 3600
    if hours > LARGE_RUN_HOURS:
        from tgbench.console import print_error

        print_error(f"this run is large for a CPU: ~{flops / 1e15:.2f} PFLOP, roughly {hours:.0f} hours on "
                    f"{torch.get_num_threads()} threads", "for a quick run try --width 128 --layers 4 --tokenizer "
                    "bpe-8192 --tokens 300000, or train on a GPU (--device cuda)", label="warning")
    return hours


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def validation_documents(documents: Sequence[Document], max_tokens: int) -> list[Document]:
    """The fixed validation subset: documents in file order until `max_tokens` lexical tokens."""
    chosen, total = [], 0
    for doc in documents:
        if total >= max_tokens:
            break
        chosen.append(doc)
        total += sum(len(s) for s in doc)
    return chosen


def lexical_loss(adapter: Adapter, model: torch.nn.Module, documents: Sequence[Document], vocab: Vocab,
                 device: torch.device, dtype: str) -> tuple[float, int]:
    """Mean lexical NLL (nats/token) over `documents` through the adapter's scoring path."""
    was_training = model.training
    model.eval()
    with autocast_context(device, dtype):
        logprobs = adapter.score(model, documents, vocab)
    model.train(was_training)
    count = sum(len(lp) for lp in logprobs)
    total = -sum(float(lp.double().sum()) for lp in logprobs)
    return total / max(count, 1), count


def epoch_documents(train_docs: Sequence[Document], seed: int, epoch: int) -> list[Document]:
    """Epoch 0 keeps the subset's seeded order; later epochs reshuffle with (seed, epoch)."""
    if epoch == 0:
        return list(train_docs)
    order = np.random.default_rng([seed, epoch]).permutation(len(train_docs))
    return [train_docs[i] for i in order]


class SignalGuard:
    """Turns SIGINT/SIGTERM into a flag the step loop checks, so a checkpoint can be written."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def train(config: RunConfig, out: Path, *, resume: str = "auto", progress: bool = True,
          corpus=None, on_log: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train one run into directory `out`.

    Args:
        config: The run's settings.
        out: Run directory (created).
        resume: "auto" resumes from the latest good checkpoint when the config matches and skips a
            DONE run; "never" starts over (clears the directory's checkpoints and metrics).
        progress: Show a Rich progress bar.
        corpus: An already loaded `EncodedCorpus` (grids load it once); loaded from
            `config.data` when None.
        on_log: Called with every metrics record as it is written (a grid's live table).

    Returns:
        The run's status and final figures.
    """
    from tgbench.data import load_corpus

    if resume not in ("auto", "never"):
        raise UserError(f"--resume {resume!r} is not a mode", "use --resume auto or --resume never")
    config = resolved(config)  # every model setting, defaults included, is recorded and hashed
    run = RunDir(out)
    if run.config_path.exists():
        run.check_version()
        previous = resolved(run.read_config())
        if resume == "auto" and previous.hash() != config.hash():
            raise UserError(
                f"'{out}' holds a run with different settings (config hash {previous.hash()} vs {config.hash()})",
                "choose a new --out directory, or pass --resume never to overwrite it",
            )
        if resume == "auto" and run.done:
            summary = read_json(run.summary_path)
            return RunResult(run.path, "skipped", summary.get("best_val_loss", math.nan), summary.get("steps", 0),
                             summary)
    if resume == "never":
        for path in [*run.checkpoints.glob("*"), run.metrics_path, run.summary_path]:
            path.unlink(missing_ok=True)
    run.clear_marks()

    tc = config.train
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    adapter = build_adapter(config)
    if corpus is None or getattr(corpus, "config", config.data) != config.data:
        corpus = load_corpus(config.data, progress=progress)  # none given, or a model-specific cap (half length)
    vocab = corpus.vocab
    seed_everything(tc.seed)
    model = adapter.build(vocab).to(device)
    n_params = adapter.n_params(model)

    train_split = corpus.splits["train"]
    train_docs = train_split.documents(train_split.subset(tc.tokens, tc.seed))
    valid_docs = validation_documents(corpus.splits["valid"].documents(), tc.eval_tokens)
    batch_rng = lambda epoch: np.random.default_rng([tc.seed, epoch, 1])  # noqa: E731
    plan = lambda epoch: adapter.batches(  # noqa: E731
        epoch_documents(train_docs, tc.seed, epoch), vocab, batch_tokens=tc.batch_tokens, epoch=epoch,
        rng=batch_rng(epoch),
    )
    steps_per_epoch = [len(plan(epoch)) for epoch in range(tc.epochs)]
    total_steps = sum(steps_per_epoch)
    if total_steps == 0:
        raise UserError("the training subset produced no batches", "raise --tokens or use a larger corpus")

    warn_if_large(model, sum(len(s) for d in train_docs for s in d) * tc.epochs, device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    state = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "best_val_loss": None, "acc": _fresh_acc()}

    checkpoint = latest_good_checkpoint(run.checkpoints, warn=lambda m: console.print(f"[yellow]{m}"))
    if checkpoint is not None and resume == "auto":
        checkpoint.load_model(model, run.checkpoints / f"{checkpoint.name}.safetensors")
        checkpoint.load_optimizer(optimizer)
        scheduler.load_state_dict(checkpoint.sidecar["scheduler"])
        checkpoint.restore_rng()
        state.update(checkpoint.sidecar["state"])
        torn = run.truncate_metrics(state["step"])
        if torn:
            console.print(f"[yellow]dropped {torn} torn line(s) of {run.metrics_path} "
                          "(a write cut short by the interruption)")
        console.print(f"resuming {out} from step {state['step']} (checkpoint '{checkpoint.name}')")
    else:
        run.metrics_path.unlink(missing_ok=True)
    run.write_config(config, {**provenance(str(device)), "n_params": n_params, "total_steps": total_steps,
                              "adapter_description": adapter.description})

    def log(record: dict[str, Any]) -> None:
        run.append_metrics(record)
        if on_log is not None:
            on_log(record)

    def check_finite() -> None:
        # A NaN between two logs must stop the run before a checkpoint or best model saves it.
        acc = state["acc"]
        if acc["steps"] and not math.isfinite(float(acc["loss"])):
            _fail(run, state, _flush(acc, state, lr, time.perf_counter() - window_start, device))

    def save(name: str, keep_previous: bool = False, with_optimizer: bool = True) -> None:
        check_finite()
        plain_state = {**state, "acc": {k: float(v) for k, v in state["acc"].items()}}
        sidecar = {"state": plain_state, "scheduler": scheduler.state_dict(), "n_params": n_params,
                   "config_hash": config.hash()}
        save_checkpoint(run.checkpoints, name, model, sidecar, optimizer if with_optimizer else None,
                        keep_previous=keep_previous)

    def evaluate() -> float:
        loss, count = lexical_loss(adapter, model, valid_docs, vocab, device, tc.dtype)
        record = {"step": state["step"], "epoch": state["epoch"], "tokens": state["tokens"], "val_loss": loss,
                  "val_ppl": math.exp(min(loss, 50)), "val_tokens": count}
        if not math.isfinite(loss):
            check_finite()  # blame the training loss when it is the cause
            _fail(run, state, record, key="val_loss")
        log(record)
        if state["best_val_loss"] is None or loss < state["best_val_loss"]:
            state["best_val_loss"] = loss
            save("best", with_optimizer=False)
        return loss

    model.train()
    eval_every = tc.eval_every or max(1, steps_per_epoch[0])
    started = time.perf_counter()
    progress_bar = _progress(progress)
    with SignalGuard() as guard, progress_bar:
        task = progress_bar.add_task(f"train {config.model}", total=total_steps, completed=state["step"],
                                     loss=float("nan"))
        window_start = time.perf_counter()
        while state["epoch"] < tc.epochs:
            epoch = state["epoch"]
            batches = plan(epoch)
            for index in range(state["batch"], len(batches)):
                batch = batches[index].to(device)
                with autocast_context(device, tc.dtype):
                    parts = adapter.loss(model, batch, epoch)
                parts.loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                acc = state["acc"]
                acc["loss"] += parts.loss.detach()
                acc["lexical_nll"] += parts.lexical_nll_sum.detach().float()
                acc["lexical_tokens"] += parts.lexical_tokens
                acc["sentences"] += batch.sentences
                acc["steps"] += 1
                state["step"] += 1
                state["batch"] = index + 1
                state["tokens"] += batch.lexical_tokens
                if state["step"] % tc.log_every == 0 or state["step"] == total_steps:
                    elapsed = time.perf_counter() - window_start
                    record = _flush(acc, state, lr, elapsed, device)
                    window_start = time.perf_counter()
                    if not math.isfinite(record["train_loss"]):
                        _fail(run, state, record)
                    log(record)
                    progress_bar.update(task, loss=record["train_lexical_loss"])
                if state["step"] % eval_every == 0:
                    evaluate()
                if state["step"] % tc.checkpoint_every == 0:
                    save("latest", keep_previous=True)
                progress_bar.update(task, completed=state["step"])
                if guard.received is not None:
                    save("latest", keep_previous=True)
                    raise Interrupted(guard.received, run.path)
            state["epoch"] += 1
            state["batch"] = 0
    if state["step"] % eval_every != 0:
        evaluate()
    save("latest", keep_previous=True)
    elapsed = time.perf_counter() - started
    metrics = run.read_metrics()
    train_records = [r for r in metrics if "train_loss" in r]
    summary = {
        "adapter": config.model, "n_params": n_params, "steps": state["step"], "tokens": state["tokens"],
        "best_val_loss": state["best_val_loss"], "best_val_ppl": math.exp(min(state["best_val_loss"], 50)),
        "final_train_lexical_loss": train_records[-1]["train_lexical_loss"] if train_records else None,
        "tokens_per_s": _median([r["tokens_per_s"] for r in train_records]),
        "sentences_per_s": _median([r["sentences_per_s"] for r in train_records]),
        "peak_memory_mb": peak_memory_mb(device), "wall_s_this_session": elapsed,
        "config_hash": config.hash(),
    }
    write_json(run.summary_path, summary)
    run.mark("DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    return RunResult(run.path, "done", state["best_val_loss"], state["step"], summary)


def _fresh_acc() -> dict[str, Any]:
    return {"loss": 0.0, "lexical_nll": 0.0, "lexical_tokens": 0, "sentences": 0, "steps": 0}


def _flush(acc: dict[str, Any], state: dict[str, Any], lr: float, elapsed: float, device) -> dict[str, Any]:
    """One metrics record from the accumulated window; resets the accumulator (one host sync)."""
    steps = max(acc["steps"], 1)
    loss = float(acc["loss"]) / steps
    lexical = float(acc["lexical_nll"]) / max(acc["lexical_tokens"], 1)
    record = {
        "step": state["step"], "epoch": state["epoch"], "tokens": state["tokens"], "lr": lr,
        "train_loss": loss, "train_lexical_loss": lexical,
        "tokens_per_s": acc["lexical_tokens"] / max(elapsed, 1e-9),
        "sentences_per_s": acc["sentences"] / max(elapsed, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
    }
    state["acc"] = _fresh_acc()
    return record


def _fail(run: RunDir, state: dict[str, Any], record: dict[str, Any], key: str = "train_loss") -> None:
    what = "training" if key == "train_loss" else "validation"
    kept = (f"the last good checkpoint is kept in {run.checkpoints}" if any(run.checkpoints.glob("*.json"))
            else "no checkpoint had been written yet")
    message = f"{what} loss became {record[key]} at step {state['step']}; {kept}"
    run.append_metrics({**record, "error": message})
    run.mark("FAILED", message + "\n")
    raise TrainingFailed(message)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
        TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn(), console=console,
        disable=not enabled, transient=False,
    )


@dataclass
class LoadedRun:
    """A trained run, ready to evaluate."""

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


def load_run(run_dir: Path, checkpoint: str = "best", device: str = "auto", corpus=None,
             progress: bool = False) -> LoadedRun:
    """Rebuild a run's adapter, corpus and model from its directory, in eval mode.

    Args:
        run_dir: A run directory written by `train`.
        checkpoint: "best" (lowest lexical validation loss) or "latest".
        device: Where to put the model.
        corpus: An already loaded corpus with the run's data settings (grids share one).
    """
    from tgbench.data import load_corpus
    from tgbench.runs import CorruptCheckpoint, read_checkpoint

    run = RunDir(run_dir)
    if not run.config_path.exists():
        raise UserError(f"'{run_dir}' is not a run directory (no config.toml)", "give a directory written by "
                        "`tgbench train` or `tgbench train-grid`")
    if checkpoint not in ("best", "latest"):
        raise UserError(f"checkpoint '{checkpoint}' is not known", "use best or latest")
    run.check_version()
    config = run.read_config()
    adapter = build_adapter(config)
    if corpus is None or getattr(corpus, "config", config.data) != config.data:
        corpus = load_corpus(config.data, progress=progress)
    target = resolve_device(device)
    model = adapter.build(corpus.vocab)
    if not any((run.checkpoints / f"{checkpoint}{suffix}").exists() for suffix in (".json", ".safetensors")):
        raise UserError(f"run '{run_dir}' has no '{checkpoint}' checkpoint yet",
                        "finish or resume the run first (tgbench train ... --resume auto)")
    try:
        found = read_checkpoint(run.checkpoints, checkpoint)
    except CorruptCheckpoint as err:
        other = "latest" if checkpoint == "best" else "best"
        raise UserError(f"checkpoint '{checkpoint}' of '{run_dir}' is damaged: {err}",
                        f"use --checkpoint {other}, or retrain the run (tgbench train ... --resume never)",
                        ) from err
    found.load_model(model, run.checkpoints / f"{checkpoint}.safetensors")
    model.to(target).eval()
    return LoadedRun(run.path, config, adapter, model, corpus, checkpoint, found.sidecar)
