"""Several runs at once on one machine: the pool every list of run specs goes through.

`execute(specs, out, jobs=N)` trains each `RunSpec` into `out/<run_id>`. With `jobs = 1` the runs train one
after another in this process (sharing one loaded corpus). With `jobs > 1` each run trains in a fresh
worker process of its own (multiprocessing's *spawn* start method), at most N at a time, so that a run's
thread count, its GPU and its measured peak memory (`summary.json`, `peak_memory_mb`) are its own:

- on the CPU the cores are divided: every worker gets `threads = cores // N` (at least 1), unless the
  run's config sets `train.threads` itself;
- with CUDA every worker sees one GPU (`CUDA_VISIBLE_DEVICES`), round-robin over the visible GPUs; the
  default N (`jobs = 0`) is the GPU count, or 1 on a CPU.

Everything else is as for one run at a time: DONE runs are skipped without starting a worker, interrupted
ones resume, failed ones rerun from scratch (`tgbench.training.current` decides, in the worker). There is one
long-lived worker per slot (`tgbench.training.workers`; started when first needed), so interpreter start,
imports and the corpus load are paid once per worker; each run's peak memory is reset at its start, so it is
the run's own. A run's output goes to `<run>/worker.log`; its metrics records come back through a queue to
the caller's board.

Workers are started with multiprocessing's spawn method, which imports the caller's main module again in
each worker: a script that calls `execute` or `run_grid` must do so under `if __name__ == "__main__":`
(the `tgbench` command, `python -m ...` modules with such a guard, notebooks and pytest are fine).

Ctrl-C (or SIGTERM) stops launching runs and forwards the signal once to every running worker (workers
sit in their own process group so a terminal's Ctrl-C reaches them only through this forwarding): each
finishes its step, writes a checkpoint and exits; then `Interrupted` is raised. A second Ctrl-C is
forwarded too, and stops the workers at once. A worker whose parent has died checkpoints and stops.

The run-directory lock is taken inside `train()`, so a worker holds its run's lock exactly as
a single `tgbench train` does.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.markup import escape

from tgbench.core.errors import Interrupted, UserError
from tgbench.core.files import read_json
from tgbench.data import load_corpus
from tgbench.training.advice import undertraining_note
from tgbench.training.current import needs_training
from tgbench.training.trainer import train_spec
from tgbench.training.workers import WORKER_LOG, _worker_main

if TYPE_CHECKING:
    from tgbench.plan.expand import RunSpec


POLL_S = 0.2  # how often the parent looks at its workers and their messages



class Board(Protocol):
    """What the executor tells its caller (the grid's live table, a sweep's progress)."""

    def start(self, run_id: str, where: str) -> None: ...

    def update(self, run_id: str, record: dict[str, Any]) -> None: ...

    def finish(self, run_id: str, status: str) -> None: ...



class _Quiet:
    def start(self, run_id: str, where: str) -> None:
        pass

    def update(self, run_id: str, record: dict[str, Any]) -> None:
        pass

    def finish(self, run_id: str, status: str) -> None:
        pass



@dataclass(frozen=True)
class Slot:
    """One place a worker runs: its CPU threads (0 = the run's own setting) and its GPU (None = as configured)."""

    index: int
    threads: int
    gpu: str | None

    @property
    def where(self) -> str:
        parts = [f"gpu {self.gpu}"] if self.gpu is not None else []
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        return ", ".join(parts) or "in process"



def cpu_cores() -> int:
    """The CPUs this process may run on (its affinity mask; `os.cpu_count()` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1



def visible_gpus() -> list[str]:
    """The GPU ids a worker may be given: this process's CUDA_VISIBLE_DEVICES, else 0..count-1; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if listed:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]



def uses_cuda(device: str) -> bool:
    """Whether a run's device setting lets the executor choose its GPU ("auto" or "cuda", not "cuda:N" or "cpu")."""
    return device in ("auto", "cuda")



def resolve_jobs(jobs: int, specs: Sequence[RunSpec]) -> int:
    """The number of runs at once: `jobs` when given (> 0), else the GPU count on CUDA, else 1."""
    if jobs < 0:
        raise UserError(f"--jobs {jobs} must not be negative", "use --jobs N with N >= 1, or 0 for the default")
    if jobs > 0:
        return jobs
    gpus = visible_gpus() if any(uses_cuda(s.config.train.device) for s in specs) else []
    return max(1, len(gpus))



def plan_slots(jobs: int, specs: Sequence[RunSpec]) -> list[Slot]:
    """One slot per worker: the cores divided by `jobs`, and one GPU each (round-robin) when CUDA is used."""
    if jobs == 1:
        return [Slot(0, 0, None)]  # in process, with the run's own (or torch's default) threads
    gpus = visible_gpus() if any(uses_cuda(s.config.train.device) for s in specs) else []
    threads = max(1, cpu_cores() // jobs)
    return [Slot(i, threads, gpus[i % len(gpus)] if gpus else None) for i in range(jobs)]



def execute(specs: Sequence[RunSpec], out: Path, *, jobs: int = 1, board: Board | None = None,
            corpus: Any = None, progress: bool = False) -> dict[str, str]:
    """Train every spec into `out/<run_id>`, `jobs` at a time; returns each run's final status.

    Args:
        specs: The runs (a grid's expansion, a learning-rate sweep, ...), trained in this order.
        out: The directory holding one directory per run.
        jobs: Runs at once; 0 = the GPU count with CUDA, else 1. With 1 the runs train in this process.
        board: Told when a run starts, logs a metrics record and finishes.
        corpus: An already loaded corpus for in-process training (`jobs = 1`); workers load theirs from
            the cache, which is built here first.
        progress: Show corpus-loading progress.

    Returns:
        run_id -> "done" | "skipped" | "failed" (or "interrupted" for runs cut by Ctrl-C before `Interrupted`).

    Raises:
        Interrupted: SIGINT/SIGTERM arrived; every running run wrote a checkpoint.
        UserError: A run's settings or directory are wrong (the other running runs are checkpointed first).
    """
    board = board or _Quiet()
    jobs = resolve_jobs(jobs, specs)
    slots = plan_slots(jobs, specs)
    statuses: dict[str, str] = {}
    todo = []
    for spec in specs:
        if needs_training(spec, out):
            todo.append(spec)
        else:
            statuses[spec.run_id] = "skipped"
            board.finish(spec.run_id, "skipped")
    if jobs == 1:
        _in_process(todo, out, board, corpus, statuses)
    else:
        _warm_caches(todo, progress)
        _Pool(slots, out, board, statuses).run(todo)
    return {spec.run_id: statuses.get(spec.run_id, "pending") for spec in specs}



def _in_process(specs: Sequence[RunSpec], out: Path, board: Board, corpus: Any, statuses: dict[str, str]) -> None:
    for spec in specs:
        board.start(spec.run_id, "in process")
        try:
            status = train_spec(spec, out, corpus=corpus, progress=False,
                             on_log=lambda record, run_id=spec.run_id: board.update(run_id, record))
        except BaseException:
            board.finish(spec.run_id, "interrupted")
            raise
        statuses[spec.run_id] = status
        board.finish(spec.run_id, status)



def _warm_caches(specs: Sequence[RunSpec], progress: bool) -> None:
    """Encode every distinct corpus once here, so workers only read caches (never build one N times at once)."""
    seen = []
    for spec in specs:
        if spec.config.data not in seen:
            seen.append(spec.config.data)
            load_corpus(spec.config.data, progress=progress)



# -- worker processes ---------------------------------------------------------------------------------
@dataclass
class _Worker:
    """One long-lived worker process on one slot; it trains the runs sent to its inbox, one at a time."""

    slot: Slot
    process: Any  # multiprocessing.Process
    inbox: Any  # multiprocessing.Queue of RunSpecs as plain dicts (None: exit)
    spec: RunSpec | None = None  # the run it trains now
    status: str | None = None
    error: tuple[str, str, str | None] | None = None  # (kind, message, fix)
    ready: bool = False  # past its start-up (imports), with its SIGINT handler: a forwarded signal reaches it



class _Pool:
    """One spawned worker per slot (started when first needed); relays their messages, forwards signals.

    Workers live for the whole pool, so the interpreter start, the imports and the corpus load are paid once
    per worker, not once per run; each run's peak memory is still its own (`devices.reset_peak_memory`).
    """

    def __init__(self, slots: list[Slot], out: Path, board: Board, statuses: dict[str, str]) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.messages = self.context.Queue()
        self.slots = slots
        self.workers: dict[int, _Worker] = {}
        self.out = out
        self.board = board
        self.statuses = statuses
        self.signals: list[int] = []
        self.errors: list[tuple[str, str, str, str | None]] = []  # (run_id, kind, message, fix)

    @property
    def busy(self) -> list[_Worker]:
        return [w for w in self.workers.values() if w.spec is not None]

    def run(self, specs: Sequence[RunSpec]) -> None:
        waiting = deque(specs)
        try:
            with _ForwardSignals(self._on_signal):
                while waiting or self.busy:
                    for slot in self.slots:
                        if waiting and not self.signals and not self.errors and self._idle(slot):
                            self._assign(slot, waiting.popleft())
                    self._relay(timeout=POLL_S)
                    self._reap()
                    if (self.signals or self.errors) and not self.busy:
                        break
        finally:
            self._close()
        if self.errors:
            run_id, kind, message, fix = self.errors[0]
            if kind == "UserError":
                raise UserError(f"run {run_id}: {message}", fix)
            raise RuntimeError(f"run {run_id} raised {kind}: {message} (traceback in "
                               f"{self.out / run_id / WORKER_LOG})")
        if self.signals:
            interrupted = [self.out / r for r, s in self.statuses.items() if s == "interrupted"]
            raise Interrupted(self.signals[0], self.out, run_dirs=interrupted)

    def _idle(self, slot: Slot) -> bool:
        worker = self.workers.get(slot.index)
        return worker is None or worker.spec is None

    def _assign(self, slot: Slot, spec: RunSpec) -> None:
        if slot.threads and not spec.config.train.threads:  # the run's own thread setting wins
            spec = replace(spec, config=replace(spec.config, train=replace(spec.config.train, threads=slot.threads)))
        worker = self.workers.get(slot.index)
        if worker is None or worker.process.exitcode is not None:
            worker = self._start_worker(slot)
        worker.spec, worker.status, worker.error = spec, None, None
        worker.inbox.put(spec_to_dict(spec))
        self.board.start(spec.run_id, slot.where)

    def _start_worker(self, slot: Slot) -> _Worker:
        env = {"CUDA_VISIBLE_DEVICES": slot.gpu} if slot.gpu is not None else {}
        if slot.threads:
            env |= {"OMP_NUM_THREADS": str(slot.threads), "MKL_NUM_THREADS": str(slot.threads)}
        inbox = self.context.Queue()
        process = self.context.Process(target=_worker_main, name=f"tgbench-worker-{slot.index}",
                                       args=(slot.index, str(self.out), env, inbox, self.messages, os.getpid()))
        # the child inherits an ignored SIGINT (Python then installs no KeyboardInterrupt handler), so a Ctrl-C
        # during its start-up is the parent's alone; `_worker_main` restores it and says "ready"
        previous = _ignore_sigint()
        try:
            process.start()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        worker = _Worker(slot, process, inbox)
        self.workers[slot.index] = worker
        return worker

    def _relay(self, timeout: float) -> None:
        """Pass every waiting message on (the first wait up to `timeout` seconds)."""
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message: tuple) -> None:
        kind, slot_index, run_id, payload = message
        worker = self.workers.get(slot_index)
        if kind == "log":
            self.board.update(run_id, payload)
            return
        if kind == "ready":
            if worker is not None:
                worker.ready = True
                if self.signals and worker.spec is not None:  # it ignored the signal while starting up
                    self._forward(worker, self.signals[0])
            return
        if worker is None or worker.spec is None or worker.spec.run_id != run_id:
            return
        if kind == "status":
            worker.status = payload
        elif kind == "error":
            worker.error = payload
        self._finish(worker, worker.process.exitcode)

    def _reap(self) -> None:
        """Finish the runs of workers that died without reporting (killed, out of memory)."""
        for worker in self.busy:
            if worker.process.exitcode is not None:
                self._relay(timeout=0.05)  # a report sent just before the exit
                if worker.spec is not None:
                    self._finish(worker, worker.process.exitcode)

    def _finish(self, worker: _Worker, exitcode: int | None) -> None:
        run_id, status = worker.spec.run_id, worker.status
        if worker.error is not None:
            kind, message, fix = worker.error
            self.errors.append((run_id, kind, message, fix))
            status = "failed"
            if not self.signals:  # stop the others as a one-at-a-time grid would stop at the error
                self._on_signal(signal.SIGINT, forward_only=True)
        elif status is None and self.signals:
            status = "interrupted"  # stopped before its training loop could checkpoint (nothing to save)
        elif status is None:
            status = "failed"
            killed = " (killed: out of memory?)" if exitcode == -signal.SIGKILL else ""
            _say(f"[bold red]run {run_id}: its worker exited with code {exitcode}{killed}[/bold red]; "
                 f"see {self.out / run_id / WORKER_LOG}; the grid goes on")
        elif status == "failed":
            reason = _read(self.out / run_id / "FAILED") or f"see {self.out / run_id / WORKER_LOG}"
            _say(f"[bold red]run {run_id} failed:[/bold red] {escape(reason)}; the grid goes on")
        elif status == "done":  # the worker warned in its log; the grid's own log says it too
            summary_path = self.out / run_id / "summary.json"
            note = undertraining_note(run_id, read_json(summary_path)) if summary_path.exists() else None
            if note is not None:
                _say(f"[yellow]warning:[/yellow] {escape(note)}")
        worker.spec = None
        self.statuses[run_id] = status
        self.board.finish(run_id, status)

    def _on_signal(self, signum: int, forward_only: bool = False) -> None:
        if not forward_only:
            self.signals.append(signum)
        for worker in self.busy:  # idle workers are told to exit in _close; starting ones when "ready"
            if worker.ready:
                self._forward(worker, signum)

    @staticmethod
    def _forward(worker: _Worker, signum: int) -> None:
        if worker.process.pid is not None and worker.process.exitcode is None:
            try:
                os.kill(worker.process.pid, signum)
            except ProcessLookupError:
                pass

    def _close(self) -> None:
        """Tell every worker to exit and wait for it (a worker still training is interrupted first)."""
        for worker in self.workers.values():
            if worker.process.exitcode is None:
                if worker.spec is not None:
                    os.kill(worker.process.pid, signal.SIGTERM)
                worker.inbox.put(None)
        for worker in self.workers.values():
            worker.process.join(timeout=60)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            worker.inbox.close()
        self._relay(timeout=0.01)
        self.messages.close()



class _ForwardSignals:
    """While the pool runs, SIGINT/SIGTERM go to a callback (which forwards them) instead of stopping it."""

    def __init__(self, callback: Callable[[int], None]) -> None:
        self.callback = callback
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _ForwardSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, lambda s, _frame: self.callback(s))
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)



def _ignore_sigint():
    """Ignore SIGINT (in the main thread); returns the previous handler to restore, None when not allowed."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""



def _say(text: str) -> None:
    Console(stderr=True).print(text, soft_wrap=True)



def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    """A RunSpec as plain data (what crosses to a worker: strings, numbers, lists and dicts only)."""
    out = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "config"}
    return {**out, "config": spec.config.to_dict()}
