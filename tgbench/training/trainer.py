"""The one training loop, for every adapter. One concept, one file: a training session and its steps.

`train(config, out)` turns a `RunConfig` into a run directory: AdamW (no decay on biases,
norms, gates and other 1-D tensors), linear warmup then cosine decay to a fraction of the peak
(torch's own schedulers), gradient clipping, periodic lexical validation through the adapter's
`score`, best and latest checkpoints, `metrics.jsonl`, and `DONE` last.

Interrupted runs resume exactly: the epoch's batch list is rebuilt from the seed and skipped to
the saved position; model, optimiser, scheduler and RNG state come from the checkpoint.

One optimiser step consumes `world_size x grad_accumulation` consecutive batches of the epoch's
list (one batch when neither is set). Under `torchrun` every process builds the same list, takes its
own `grad_accumulation` batches of each step, and torch DDP averages the gradients; rank 0 alone
writes the run directory. A single process with `grad_accumulation = world_size` computes the same
steps. Steps that cannot be filled at the end of an epoch are dropped (only when a step takes more
than one batch).

Compute: every step adds its batches' training FLOPs (`tgbench.training.flops`: the adapter's count, else a
measured estimate) to the run's total, and the training loop's wall time, evaluation and checkpoints left out,
to its training seconds; both are kept in the checkpoint's TrainState, so a resumed run continues them, and
summary.json gives them with FLOPs per lexical token, the method and 6ND beside them.
"""


from __future__ import annotations

import contextlib
import functools
import math
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from tgbench.adapter import Adapter, Batch, Document, Vocab
from tgbench.core.console import progress_bar
from tgbench.core.devices import (
    Distributed,
    RunMemory,
    autocast_context,
    distributed_from_env,
    init_process_group,
    matmul_peak_flops,
    resolve_device,
    synchronize,
)
from tgbench.core.errors import Interrupted, TrainingFailed, UserError, plugin_error_message
from tgbench.core.files import read_json, write_json
from tgbench.data import load_corpus
from tgbench.plan.compute import training_flops
from tgbench.plan.config import RunConfig
from tgbench.plan.expand import RunSpec
from tgbench.plan.steps import batch_rng, epoch_documents, epoch_steps
from tgbench.registry import adapter_code, build_adapter, resolved
from tgbench.training.advice import (
    undertraining_note,
    unigram_loss,
    warn_if_few_steps,
    warn_if_large,
    warn_if_untrained,
)
from tgbench.training.allocator import cpu_usage, usage_since
from tgbench.training.checkpoints import Checkpoint, latest_good_checkpoint, save_checkpoint
from tgbench.training.current import run_state
from tgbench.training.flops import COUNTED, MEASURED, BatchFlops
from tgbench.training.optim import make_optimizer, make_scheduler
from tgbench.training.rundir import LOCK_NAME, RunDir, provenance, run_lock
from tgbench.training.tracking import RunInfo, Tracker, make_trackers, stdout_is_terminal, timestamp

console = Console(stderr=True)


__all__ = ["Interrupted", "RunResult", "TrainState", "TrainingFailed", "train"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # done | skipped | failed
    best_val_loss: float = math.nan
    steps: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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


# -- the state of a run -----------------------------------------------------------------------------------
@dataclass
class Window:
    """Sums over the steps since the last metrics record (tensors stay on the device until a log)."""

    loss: Any = 0.0
    lexical_nll: Any = 0.0
    lexical_tokens: int = 0
    sentences: int = 0
    steps: int = 0
    grad_norm: Any = 0.0  # sum of the steps' gradient norms before clipping
    grad_norm_max: Any = 0.0
    clipped: Any = 0  # steps whose norm exceeded grad_clip


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint's sidecar and restored on resume.

    Attributes:
        step: Optimiser steps taken.
        epoch: Current epoch (0-based).
        batch: Index, in the epoch's batch list, of the first batch of the next step.
        tokens: Lexical training tokens consumed (all processes together).
        best_val_loss: Lowest validation loss so far (None before the first validation).
        window: The sums of the current logging window.
        flops: Training FLOPs of the batches consumed (all processes together); None when unknown (a run
            resumed from a checkpoint written before they were counted).
        flops_method: "counted" (every batch by its adapter) or "measured" (some batch by FlopCounterMode).
        train_seconds: Wall seconds of the training loop so far, evaluation and checkpoints left out (None:
            unknown, as `flops`).
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0
    tokens: int = 0
    best_val_loss: float | None = None
    window: Window = field(default_factory=Window)
    flops: float | None = 0.0
    flops_method: str = COUNTED
    train_seconds: float | None = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "window"}
        out["acc"] = {k: float(v) for k, v in asdict(self.window).items()}  # the sidecar's historic name
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainState:
        acc = raw.get("acc") or {}
        window = Window(float(acc.get("loss", 0.0)), float(acc.get("lexical_nll", 0.0)),
                        int(acc.get("lexical_tokens", 0)), int(acc.get("sentences", 0)), int(acc.get("steps", 0)),
                        float(acc.get("grad_norm", 0.0)), float(acc.get("grad_norm_max", 0.0)),
                        int(acc.get("clipped", 0)))
        unknown = 0.0 if int(raw["step"]) == 0 else None  # a checkpoint from before FLOPs were counted
        return cls(int(raw["step"]), int(raw["epoch"]), int(raw["batch"]), int(raw["tokens"]),
                   raw.get("best_val_loss"), window, raw.get("flops", unknown), raw.get("flops_method", COUNTED),
                   raw.get("train_seconds", unknown))


class _LossModule(torch.nn.Module):
    """`adapter.loss` as a module's forward, so DDP and torch.compile see one call per micro-batch."""

    def __init__(self, adapter: Adapter, model: torch.nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.model = model

    def forward(self, batch: Batch, epoch: int):
        parts = self.adapter.loss(self.model, batch, epoch)
        return parts.loss, parts.lexical_nll_sum, parts.lexical_tokens


@dataclass
class Session:
    """Everything one training session works with (built by `_start`, used by the step functions)."""

    config: RunConfig
    run: RunDir
    adapter: Adapter
    model: torch.nn.Module  # the bare model: checkpoints, validation
    step_module: torch.nn.Module  # what a step calls: the loss module, maybe DDP-wrapped and compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    dist: Distributed
    vocab: Vocab
    train_docs: list[Document]
    valid_docs: list[Document]
    steps_per_epoch: list[int]
    n_params: int
    on_log: Callable[[dict[str, Any]], None] | None
    trackers: list[Tracker] = field(default_factory=list)  # plain lines, TensorBoard, W&B (rank 0 only)
    memory: RunMemory | None = None  # set once the corpus is loaded: what the run itself adds is measured
    advice: bool = False  # warn about too few steps / an untrained end (single runs; see `train`)
    state: TrainState = field(default_factory=TrainState)
    window_start: float = 0.0
    lr: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    flops: BatchFlops | None = None  # the training FLOPs of a batch (set by `_start`)
    clock: float = 0.0  # when the training clock last started (`_clock_in`)
    usage: dict[str, float] = field(default_factory=cpu_usage)  # this process's CPU time and page faults at start

    @property
    def total_steps(self) -> int:
        return sum(self.steps_per_epoch)

    @property
    def batches_per_step(self) -> int:
        return self.dist.world_size * self.config.train.grad_accumulation

    def epoch_batches(self, epoch: int) -> list[Batch]:
        """The epoch's batches, in order (the same list on every process)."""
        tc = self.config.train
        seed = tc.data_order_seed
        return self.adapter.batches(epoch_documents(self.train_docs, seed, epoch), self.vocab,
                                    batch_tokens=tc.batch_tokens, epoch=epoch, rng=batch_rng(seed, epoch))


# -- one session ------------------------------------------------------------------------------------------
def train(config: RunConfig, out: Path, *, resume: str = "auto", progress: bool = True,
          corpus=None, on_log: Callable[[dict[str, Any]], None] | None = None,
          labels: dict[str, Any] | None = None, loggers: Sequence[str] = (), advice: bool = True) -> RunResult:
    """Train one run into directory `out` (under torchrun: one process's share of it).

    Args:
        config: The run's settings.
        out: Run directory (created).
        resume: "auto" resumes from the latest good checkpoint when the config matches and skips a
            DONE run; "never" starts over (clears the directory's checkpoints and metrics).
        progress: Show progress: a Rich progress bar on a terminal, timestamped plain lines (run start, every
            log step, validation, checkpoint, finish) when stdout is not a terminal (a log file, a cluster job).
        corpus: An already loaded `EncodedCorpus` (grids load it once); loaded from
            `config.data` when None.
        on_log: Called with every metrics record as it is written (a grid's live table).
        labels: The run's ``label`` and ``variant`` in its grid and other provenance (``lr_source``,
            ``train_overrides``), recorded in its config.toml's [meta] (the results table reads them there).
        loggers: Trackers besides metrics.jsonl (always written): "tensorboard", "wandb" (`training.tracking`).
        advice: Warn when the run has too few steps to learn, or ends near the unigram perplexity (grids,
            whose small runs are meant to be small, turn this off).

    Returns:
        The run's status and final figures.
    """
    if resume not in ("auto", "never"):
        raise UserError(f"--resume {resume!r} is not a mode", "use --resume auto or --resume never")
    plain_lines = progress and not stdout_is_terminal()
    trackers = make_trackers(loggers, plain_lines)  # a missing tensorboard / wandb fails before any work
    config = resolved(config)  # every model setting, defaults included, is recorded and hashed
    dist_info = distributed_from_env()
    device = resolve_device(config.train.device, dist_info)
    init_process_group(dist_info, device)
    run = RunDir(out)
    # One writer per run directory (rank 0 writes for a whole torchrun job); --jobs workers take it too.
    lock = run_lock(run.path, warn=lambda m: console.print(f"[yellow]{m}")) if dist_info.is_main else \
        contextlib.nullcontext()
    with lock:
        skipped = _existing_run(run, config, resume, dist_info)
        if skipped is not None:
            return skipped
        session = _start(config, run, resume, dist_info, device, corpus, progress, on_log, labels or {}, advice)
        if dist_info.is_main:
            session.trackers = trackers
        return _tracked(session, progress and not plain_lines)


def _tracked(session: Session, progress_bar: bool) -> RunResult:
    """The session's epochs and finish, with every tracker told how it went (closed whatever happens)."""
    meta = session.run.read_meta() if session.dist.is_main else {}
    info = RunInfo(session.run.path, session.config.to_dict(), meta, session.total_steps, session.state.step)
    status = "failed"
    try:
        for tracker in session.trackers:
            tracker.start(info)
        _run_epochs(session, progress_bar)
        result = _finish(session)
        status = "done"
        return result
    except Interrupted:
        status = "interrupted"
        raise
    finally:
        for tracker in session.trackers:
            tracker.close(status)


def _existing_run(run: RunDir, config: RunConfig, resume: str, dist_info: Distributed) -> RunResult | None:
    """Refuse a directory holding other settings, skip a DONE run, or clear it for `--resume never`."""
    # what tgbench itself puts there before config.toml: the lock, a --jobs worker's log, temp files
    ours = (LOCK_NAME, "worker.log")
    others = [p.name for p in run.path.iterdir() if p.name not in ours and not p.name.startswith(".")] \
        if run.path.is_dir() else []
    if others and not run.config_path.exists() and not run.checkpoints.exists():
        raise UserError(f"'{run.path}' is not empty and holds no tgbench run (it has {', '.join(sorted(others)[:3])}"
                        f"{', ...' if len(others) > 3 else ''})", "train into a new or empty --out directory")
    if run.config_path.exists():
        run.check_is_run()
        run.check_version()
        state = run_state(run, config)
        if resume == "auto" and not state.same_settings:
            previous = resolved(run.read_config())
            raise UserError(
                f"'{run.path}' holds a run with different settings (config hash {previous.hash()} vs {config.hash()})",
                "choose a new --out directory, or pass --resume never to overwrite it",
            )
        if resume == "auto" and state.plugin_changed:
            raise UserError(f"the adapter's code changed since '{run.path}' was trained ({state.code_change})",
                            "pass --resume never to retrain it with the new code, or choose a new --out directory")
        if resume == "auto" and state.code_change is not None:
            console.print(f"[yellow]warning: tgbench's model code changed since {run.path} was trained "
                          f"({state.code_change}); the run is kept as it is (--resume never retrains it)",
                          soft_wrap=True)
        if resume == "auto" and state.current:
            summary = read_json(run.summary_path)
            return RunResult(run.path, "skipped", summary.get("best_val_loss", math.nan), summary.get("steps", 0),
                             summary)
    if dist_info.is_main:
        if resume == "never":
            for path in [*run.checkpoints.glob("*"), run.metrics_path, run.summary_path]:
                path.unlink(missing_ok=True)
        run.clear_marks()
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has cleared the directory before anyone reads its checkpoints
    return None


def _start(config: RunConfig, run: RunDir, resume: str, dist_info: Distributed, device: torch.device, corpus,
           progress: bool, on_log, labels: dict[str, Any], advice: bool = False) -> Session:
    """Build the model, data, optimiser and schedule, and restore the latest checkpoint when resuming."""

    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    adapter = build_adapter(config)
    if corpus is None or getattr(corpus, "config", config.data) != config.data:
        corpus = load_corpus(config.data, progress=progress and dist_info.is_main)  # or a model-specific cap
    vocab = corpus.vocab
    memory = RunMemory(device)
    seed_everything(tc.initialisation_seed)
    model = adapter.build(vocab).to(device)
    train_split = corpus.splits["train"]
    train_docs = train_split.documents(train_split.subset(tc.tokens, tc.data_order_seed))
    per_step = dist_info.world_size * tc.grad_accumulation
    steps_per_epoch = epoch_steps(adapter, train_docs, vocab, tc, per_step)
    if sum(steps_per_epoch) == 0:
        raise UserError("the training subset produced no batches", "raise --tokens or use a larger corpus")
    if dist_info.is_main:
        warn_if_large(model, sum(len(s) for d in train_docs for s in d) * tc.epochs, device)
        if advice:
            warn_if_few_steps(sum(steps_per_epoch), tc)
    optimizer = make_optimizer(model, config)
    session = Session(
        config=config, run=run, adapter=adapter, model=model, step_module=_step_module(adapter, model, tc, dist_info),
        optimizer=optimizer, scheduler=make_scheduler(optimizer, config, sum(steps_per_epoch)), device=device,
        dist=dist_info, vocab=vocab, train_docs=train_docs,
        valid_docs=validation_documents(corpus.splits["valid"].documents(), tc.eval_tokens),
        steps_per_epoch=steps_per_epoch, n_params=adapter.n_params(model), on_log=on_log, memory=memory, advice=advice,
        flops=BatchFlops(adapter, model),
    )
    checkpoint = latest_good_checkpoint(run.checkpoints, warn=lambda m: console.print(f"[yellow]{m}"))
    if checkpoint is not None and resume == "auto":
        _resume(session, checkpoint)
    elif dist_info.is_main:
        run.metrics_path.unlink(missing_ok=True)
    if dist_info.is_main:
        run.write_config(config, {**provenance(str(device)), "n_params": session.n_params,
                                  "total_steps": session.total_steps, "world_size": dist_info.world_size,
                                  "adapter_description": adapter.description,
                                  "adapter_code": adapter_code(config.model), **labels})
    return session


def _step_module(adapter: Adapter, model: torch.nn.Module, tc, dist_info: Distributed) -> torch.nn.Module:
    module: torch.nn.Module = _LossModule(adapter, model)
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [model_device.index] if (model_device := next(model.parameters()).device).type == "cuda" else None
        # some parameters may get no gradient in a step (e.g. TG's memory before the first sentence ends)
        module = DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)
    if tc.compile:
        module = torch.compile(module)
    return module


def _resume(session: Session, checkpoint: Checkpoint) -> None:
    run = session.run
    checkpoint.load_model(session.model, run.checkpoints / f"{checkpoint.name}.safetensors")
    checkpoint.load_optimizer(session.optimizer)
    session.scheduler.load_state_dict(checkpoint.sidecar["scheduler"])
    checkpoint.restore_rng()
    session.state = TrainState.from_dict(checkpoint.sidecar["state"])
    if session.dist.is_main:
        torn = run.truncate_metrics(session.state.step)
        if torn:
            console.print(f"[yellow]dropped {torn} torn line(s) of {run.metrics_path} "
                          "(a write cut short by the interruption)")
        console.print(f"resuming {run.path} from step {session.state.step} (checkpoint '{checkpoint.name}')")


def _run_epochs(session: Session, progress: bool) -> None:
    """Every remaining step of every epoch, with logging, validation, checkpoints and Ctrl-C handling."""
    tc, state = session.config.train, session.state
    session.model.train()
    eval_every = tc.eval_every or max(1, session.steps_per_epoch[0])
    progress_bar = _progress(progress and session.dist.is_main)
    with SignalGuard() as guard, progress_bar:
        task = progress_bar.add_task(f"train {session.config.model}", total=session.total_steps,
                                     completed=state.step, loss=float("nan"))
        session.window_start = session.clock = time.perf_counter()
        while state.epoch < tc.epochs:
            batches = session.epoch_batches(state.epoch)
            per_step = session.batches_per_step
            for _ in range(session.steps_per_epoch[state.epoch] - state.batch // per_step):
                _step(session, batches[state.batch: state.batch + per_step])
                if state.step % tc.log_every == 0 or state.step == session.total_steps:
                    record = _log_window(session)
                    progress_bar.update(task, loss=record["train_lexical_loss"])
                if state.step % eval_every == 0:
                    with _off_clock(session):
                        _evaluate(session)
                if state.step % tc.checkpoint_every == 0:
                    with _off_clock(session):
                        _save(session, "latest", keep_previous=True)
                progress_bar.update(task, completed=state.step)
                signum = _agreed_signal(session, guard.received)
                if signum is not None:
                    _clock_in(session)
                    _save(session, "latest", keep_previous=True)
                    raise Interrupted(signum, session.run.path)
            state.epoch += 1
            state.batch = 0
        _clock_in(session)
    if state.step % eval_every != 0:
        _evaluate(session)
    _save(session, "latest", keep_previous=True)


def _clock_in(session: Session) -> None:
    """Add the wall time since the training clock last started to the run's training seconds, once the device
    has finished the steps queued on it, and start the clock again."""
    synchronize(session.device)
    now = time.perf_counter()
    if session.state.train_seconds is not None:
        session.state.train_seconds += now - session.clock
    session.clock = now


@contextlib.contextmanager
def _off_clock(session: Session):
    """Evaluation and checkpoints: wall time left out of the training seconds."""
    _clock_in(session)
    try:
        yield
    finally:
        session.clock = time.perf_counter()


def _count_flops(session: Session, step_batches: Sequence[Batch]) -> None:
    """Add the training FLOPs of a step's batches (all processes' batches) to the run's total."""
    state = session.state
    if state.flops is None:
        return
    state.flops += sum(session.flops(batch, state.epoch) for batch in step_batches)
    if session.flops.method == MEASURED:
        state.flops_method = MEASURED


def _step(session: Session, step_batches: Sequence[Batch]) -> None:
    """One optimiser step over this process's share of `step_batches` (all processes' batches)."""
    tc, state, window = session.config.train, session.state, session.state.window
    _count_flops(session, step_batches)
    accumulation = tc.grad_accumulation
    mine = step_batches[session.dist.rank * accumulation: (session.dist.rank + 1) * accumulation]
    for index, batch in enumerate(mine):
        batch = batch.to(session.device)
        last = index == len(mine) - 1
        # DDP averages gradients across processes at the last micro-batch only
        sync = session.step_module.no_sync() if session.dist.enabled and not last else contextlib.nullcontext()
        with sync, autocast_context(session.device, tc.dtype):
            loss, lexical_nll_sum, lexical_tokens = session.step_module(batch, state.epoch)
            (loss / accumulation).backward()
        window.loss += loss.detach() / accumulation
        window.lexical_nll += lexical_nll_sum.detach().float()
        window.lexical_tokens += lexical_tokens
        window.sentences += batch.sentences
    # The norm before clipping is a diagnostic of every run (spikes, divergence), clipped or not.
    norm = torch.nn.utils.clip_grad_norm_(session.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
    norm = norm.detach().float()
    window.grad_norm += norm
    window.grad_norm_max = torch.maximum(torch.as_tensor(window.grad_norm_max, device=norm.device), norm)
    if tc.grad_clip > 0:
        window.clipped += (norm > tc.grad_clip).int()
    session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    session.lr = session.scheduler.get_last_lr()[0]
    session.scheduler.step()
    window.steps += 1
    state.step += 1
    state.batch += len(step_batches)
    state.tokens += sum(b.lexical_tokens for b in step_batches)  # every process's share, known to all


def _agreed_signal(session: Session, received: int | None) -> int | None:
    """The signal any process received (all processes stop at the same step), or None."""
    if not session.dist.enabled:
        return received
    import torch.distributed as dist

    flag = torch.tensor([received or 0], dtype=torch.int64, device=session.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def _window_totals(session: Session) -> tuple[float, float, int, int]:
    """The window's (loss sum, lexical NLL, lexical tokens, sentences), summed over processes."""
    window = session.state.window
    values = torch.tensor([float(window.loss), float(window.lexical_nll), window.lexical_tokens, window.sentences],
                          dtype=torch.float64, device=session.device)
    if session.dist.enabled:
        import torch.distributed as dist

        dist.all_reduce(values)
        values[0] /= session.dist.world_size  # each process's loss is already a mean over its batches
    loss, nll, tokens, sentences = values.tolist()
    return loss, nll, int(tokens), int(sentences)


def _log_window(session: Session) -> dict[str, Any]:
    """Write one metrics record from the window (one host sync) and start a new window."""
    state = session.state
    loss_sum, nll, tokens, sentences = _window_totals(session)
    elapsed = max(time.perf_counter() - session.window_start, 1e-9)
    window = state.window
    steps = max(window.steps, 1)
    record = {
        "step": state.step, "epoch": state.epoch, "tokens": state.tokens, "lr": session.lr,
        "train_loss": loss_sum / steps, "train_lexical_loss": nll / max(tokens, 1),
        # the same on every process: DDP has averaged the gradients before the norm is taken
        "grad_norm": float(window.grad_norm) / steps, "grad_norm_max": float(window.grad_norm_max),
        "clipped_fraction": float(window.clipped) / steps,
        "tokens_per_s": tokens / elapsed, "sentences_per_s": sentences / elapsed,
        "peak_memory_mb": session.memory.peak_mb(),
    }
    state.window = Window()
    session.window_start = time.perf_counter()
    if not math.isfinite(record["train_loss"]):
        _fail(session, record)
    _write_record(session, record)
    return record


def _write_record(session: Session, record: dict[str, Any]) -> None:
    """Append a record to metrics.jsonl with its wall-clock `time`, then hand it to the grid and the trackers."""
    if session.dist.is_main:
        record.setdefault("time", timestamp())
        session.run.append_metrics(record)
        if session.on_log is not None:
            session.on_log(record)
        for tracker in session.trackers:
            tracker.log(record)


def _check_finite(session: Session) -> None:
    """A NaN between two logs must stop the run before a checkpoint or best model saves it."""
    window = session.state.window
    value = float(window.loss) if window.steps else 0.0
    if session.dist.enabled:  # every process must take the same branch (logging is collective)
        import torch.distributed as dist

        shared = torch.tensor([value], dtype=torch.float64, device=session.device)
        dist.all_reduce(shared)
        value = float(shared[0])
    if not math.isfinite(value):
        _log_window(session)


def _evaluate(session: Session) -> float:
    """Lexical validation loss (rank 0 computes it, every process gets it); saves `best` on improvement."""
    state, tc = session.state, session.config.train
    loss, count = math.nan, 0
    if session.dist.is_main:
        loss, count = lexical_loss(session.adapter, session.model, session.valid_docs, session.vocab,
                                   session.device, tc.dtype)
    if session.dist.enabled:
        import torch.distributed as dist

        shared = torch.tensor([loss, count], dtype=torch.float64, device=session.device)
        dist.broadcast(shared, src=0)
        loss, count = float(shared[0]), int(shared[1])
    record = {"step": state.step, "epoch": state.epoch, "tokens": state.tokens, "val_loss": loss,
              "val_ppl": math.exp(min(loss, 50)), "val_tokens": count}
    if not math.isfinite(loss):
        _check_finite(session)  # blame the training loss when it is the cause
        _fail(session, record, key="val_loss")
    _write_record(session, record)
    if state.best_val_loss is None or loss < state.best_val_loss:
        state.best_val_loss = loss
        _save(session, "best", with_optimizer=False)
    return loss


def _save(session: Session, name: str, keep_previous: bool = False, with_optimizer: bool = True) -> None:
    _check_finite(session)
    if not session.dist.is_main:
        return
    sidecar = {"state": session.state.to_dict(), "scheduler": session.scheduler.state_dict(),
               "n_params": session.n_params, "config_hash": session.config.hash()}
    save_checkpoint(session.run.checkpoints, name, session.model, sidecar,
                    session.optimizer if with_optimizer else None, keep_previous=keep_previous)
    for tracker in session.trackers:
        tracker.checkpoint(name, session.state.step)


def _fail(session: Session, record: dict[str, Any], key: str = "train_loss") -> None:
    run, state = session.run, session.state
    what = "training" if key == "train_loss" else "validation"
    kept = (f"the last good checkpoint is kept in {run.checkpoints}" if any(run.checkpoints.glob("*.json"))
            else "no checkpoint had been written yet")
    message = f"{what} loss became {record[key]} at step {state.step}; {kept}"
    if session.dist.is_main:
        _write_record(session, {**record, "error": message})
        run.mark("FAILED", message + "\n")
    raise TrainingFailed(message)


def _finish(session: Session) -> RunResult:
    """summary.json and DONE (rank 0), and the run's figures."""
    state, run = session.state, session.run
    unigram = unigram_loss(session.train_docs, session.valid_docs, session.vocab.size)
    train_records = [r for r in run.read_metrics() if "train_loss" in r] if session.dist.is_main else []
    summary = {
        "adapter": session.config.model, "n_params": session.n_params, "steps": state.step, "tokens": state.tokens,
        "best_val_loss": state.best_val_loss, "best_val_ppl": math.exp(min(state.best_val_loss, 50)),
        "final_train_lexical_loss": train_records[-1]["train_lexical_loss"] if train_records else None,
        **gradient_summary(train_records),
        "tokens_per_s": _median([r["tokens_per_s"] for r in train_records]),
        "sentences_per_s": _median([r["sentences_per_s"] for r in train_records]),
        "peak_memory_mb": session.memory.peak_mb(), "wall_s_this_session": time.perf_counter() - session.started,
        "world_size": session.dist.world_size, "config_hash": session.config.hash(),
        "unigram_val_ppl": math.exp(unigram) if math.isfinite(unigram) else None,
        **compute_summary(state, sum(p.numel() for p in session.model.parameters())),
    }
    summary.update(achieved_flops(summary["train_flops"], state.train_seconds, session.dist.world_size,
                                  _matmul_peak(session.device, session.config.train.dtype)))
    summary.update(_training_memory_reads(session))
    summary.update(usage_since(session.usage))  # this process's CPU time and page faults in this session
    if session.dist.is_main:
        write_json(run.summary_path, summary)
        run.mark("DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        for tracker in session.trackers:
            tracker.finish(summary)
        if session.advice:
            warn_if_untrained(state.best_val_loss, unigram, state.step, session.config.train)
    if session.dist.enabled:
        import torch.distributed as dist

        dist.barrier()  # no process leaves before DONE is written
    return RunResult(run.path, "done", state.best_val_loss, state.step, summary)


def compute_summary(state: TrainState, total_params: int) -> dict[str, Any]:
    """What the run's training cost: `train_flops` (the batches' counted or measured FLOPs), `flops_per_token`
    (per lexical training token), `flops_method`, `train_seconds` (the training loop's wall time, evaluation
    and checkpoints left out) and `flops_6nd` (6 x every parameter x lexical tokens, for reference)."""
    flops = state.flops  # None: resumed from a checkpoint written before FLOPs were counted
    known = flops is not None
    return {"train_flops": flops, "flops_per_token": flops / state.tokens if known and state.tokens else None,
            "flops_method": state.flops_method if known else None, "train_seconds": state.train_seconds,
            "flops_6nd": training_flops(total_params, state.tokens)}


@functools.lru_cache(maxsize=4)
def _matmul_peak(device: torch.device, dtype: str) -> float:
    """The matmul yardstick, measured once per process (a grid worker or test process trains many runs)."""
    return matmul_peak_flops(device, dtype)


def achieved_flops(train_flops: float | None, train_seconds: float | None, world_size: int,
                   peak: float) -> dict[str, float | None]:
    """`flops_per_s` (training FLOPs over the training loop's seconds), `matmul_peak_flops` (one device's
    measured matmul FLOP/s) and `peak_fraction` (the share of the devices' peak the run achieved)."""
    rate = train_flops / train_seconds if train_flops and train_seconds else None
    return {"flops_per_s": rate, "matmul_peak_flops": peak,
            "peak_fraction": rate / (peak * world_size) if rate and peak > 0 else None}


def gradient_summary(records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """`max_grad_norm` (before clipping) and `clipped_fraction` (of all steps) over a run's training records.

    Each record covers the steps since the one before it, so its clipped fraction is weighted by that count.
    Records written before these diagnostics existed give None.
    """
    with_norms = [r for r in records if r.get("grad_norm_max") is not None]
    if not with_norms:
        return {"max_grad_norm": None, "clipped_fraction": None}
    previous, clipped, steps = 0, 0.0, 0
    for record in records:
        count = record["step"] - previous
        previous = record["step"]
        if record.get("clipped_fraction") is not None:
            clipped += record["clipped_fraction"] * count
            steps += count
    return {"max_grad_norm": max(float(r["grad_norm_max"]) for r in with_norms),
            "clipped_fraction": clipped / steps if steps else None}


def _training_memory_reads(session: Session) -> dict[str, float]:
    """Memory slots read per sentence over every epoch's training layout ({} for models without a memory)."""
    tc, total = session.config.train, None
    for epoch in range(tc.epochs):
        documents = epoch_documents(session.train_docs, tc.data_order_seed, epoch)  # as the epoch trained them
        reads = session.adapter.memory_reads(documents, session.vocab, epoch=epoch)
        if reads is None:
            return {}
        total = reads if total is None else total + reads
    if total is None:
        return {}
    return {"memory_slots_per_sentence": total.per_sentence, "memory_full_fraction": total.full_fraction}


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _progress(enabled: bool):
    from rich.progress import TextColumn

    return progress_bar(enabled, "steps", (TextColumn("loss {task.fields[loss]:.3f}"),), console=console,
                        transient=False)


def train_spec(spec: RunSpec, grid_dir: Path, corpus=None, progress: bool = True, on_log=None) -> str:
    """Train one run of a grid into `grid_dir / spec.run_id`; returns its final status ("done", "skipped",
    "failed"). A run that is not current starts over (see `run_state`); an interrupted one resumes."""
    run_dir = RunDir(grid_dir / spec.run_id)
    state = run_state(run_dir, spec.config)
    if state.exists and state.same_settings and state.plugin_changed:
        console.print(f"run {spec.run_id}: the adapter's code changed ({state.code_change}); retraining it",
                      soft_wrap=True, markup=False)
    try:
        result = train(spec.config, run_dir.path, resume="never" if state.start_over else "auto", progress=progress,
                       corpus=corpus, on_log=on_log, labels={"label": spec.label, "variant": spec.variant,
                                                             **spec.meta},
                       loggers=spec.loggers, advice=False)
    except TrainingFailed as err:
        console.print(f"[bold red]run {spec.run_id} failed:[/bold red] {err}; the grid goes on")
        return "failed"
    except Exception as err:
        # a plug-in's bug fails its own run only: the grid's other runs (other models) still train
        message = plugin_error_message(err)
        if message is None:
            raise
        traceback.print_exc()  # into the worker's log (or the terminal): the plug-in's author needs the frames
        run_dir.mark("FAILED", message + "\n")
        console.print(f"[bold red]run {spec.run_id} failed:[/bold red] {escape(message)}; the grid goes on",
                      soft_wrap=True)
        return "failed"
    note = undertraining_note(spec.run_id, result.summary) if result.status == "done" else None
    if note is not None:  # a grid's runs get the warning a single `tgbench train` prints, as one line each
        console.print(f"[yellow]warning:[/yellow] {escape(note)}", soft_wrap=True)
    return result.status
