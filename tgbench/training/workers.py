"""A worker process of `train-grid --jobs N`: it trains the runs it is sent, one at a time, each logged to a file.

The pool (`tgbench.training.pool`) starts one worker per slot with multiprocessing's *spawn* method and sends it
run specs as plain data. The worker sets its slot's environment (its GPU, its threads) first, and only then
imports torch and the trainer: this module imports nothing heavy at its top, because a spawned process imports
it before `_worker_main` runs. Each run's output goes to `<run>/worker.log`; its metrics records, its status or
its error go back to the pool through a queue. A worker whose parent has died checkpoints and stops.
"""


from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tgbench.core.errors import Interrupted

WORKER_LOG = "worker.log"


def spec_from_dict(raw: dict[str, Any]):
    """The RunSpec `spec_to_dict` wrote, its config validated as any config file is."""
    # imported here, after _worker_main set the slot's environment (see the module docstring)
    from tgbench.plan.config import RunConfig
    from tgbench.plan.expand import RunSpec

    return RunSpec(**{**raw, "config": RunConfig.from_dict(raw["config"])})


def _worker_main(slot_index: int, out: str, env: dict[str, str], inbox, messages, parent_pid: int) -> None:
    """A worker: trains the runs from `inbox` one by one, each run's output in `<run>/worker.log`."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent, which forwards it exactly once
    os.environ.update(env)  # before anything touches CUDA or starts a thread pool
    from tgbench.training.allocator import keep_freed_memory

    keep_freed_memory()  # a spawned process starts with glibc's defaults again
    # The heavy imports happen while SIGINT is still ignored (the parent started this process so): a
    # KeyboardInterrupt raised inside torch's import, where C++ calls back into Python, cannot unwind and
    # aborts the process ("terminate called ... KeyboardInterrupt"). A Ctrl-C meanwhile waits for "ready".
    import tgbench.data  # noqa: F401
    import tgbench.plan.config  # noqa: F401
    import tgbench.plan.expand  # noqa: F401
    import tgbench.training.trainer  # noqa: F401

    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on a forwarded SIGINT stops it as usual
    messages.put(("ready", slot_index, "", None))  # the parent forwards a signal that arrived before now
    corpora: dict[str, Any] = {}  # loaded once per data config, for every run this worker trains
    while True:
        try:
            blob = inbox.get()
            if blob is None:
                break
            spec = spec_from_dict(blob)
        except KeyboardInterrupt:  # stopped between runs: the parent counts the run it sent as interrupted
            break
        try:
            status, error = _train_one(spec, Path(out), env, corpora, messages, slot_index, parent_pid)
        except KeyboardInterrupt:  # it came before the run's own handling began (opening its log)
            status, error = "interrupted", None
        if error is not None:
            messages.put(("error", slot_index, spec.run_id, error))
        else:
            messages.put(("status", slot_index, spec.run_id, status))
        if status == "interrupted" or error is not None:
            break
    messages.close()
    messages.join_thread()  # every message is in the pipe before the process ends


def _train_one(spec, out: Path, env: dict[str, str], corpora: dict[str, Any], messages, slot_index: int,
               parent_pid: int) -> tuple[str | None, tuple[str, str, str | None] | None]:
    """One run in this worker: (status, None), or (None, (error type, message, fix))."""
    # imported here, after _worker_main set the slot's environment (see the module docstring)
    from tgbench.core.devices import reset_peak_memory

    run_id = spec.run_id
    log = _open_log(out / run_id / WORKER_LOG)
    status, error = None, None
    try:
        from tgbench.data import load_corpus
        from tgbench.training.trainer import train_spec

        def on_log(record: dict[str, Any]) -> None:
            messages.put(("log", slot_index, run_id, record))
            if os.getppid() != parent_pid:  # the executor died: checkpoint and stop
                os.kill(os.getpid(), signal.SIGTERM)

        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} worker {slot_index} (pid {os.getpid()}) starts run {run_id} "
              f"({', '.join(f'{k}={v}' for k, v in env.items()) or 'default environment'})", flush=True)
        key = repr(spec.config.data)
        if key not in corpora:
            corpora[key] = load_corpus(spec.config.data, progress=False)
        reset_peak_memory()  # summary.json's peak_memory_mb is this run's own, not the worker's so far
        status = train_spec(spec, out, corpus=corpora[key], progress=False, on_log=on_log)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        status = "interrupted"
    except Exception as err:
        if isinstance(err, Interrupted):
            status = "interrupted"
            print(f"interrupted by signal {err.signum}; checkpoint written", flush=True)
        else:
            traceback.print_exc()
            error = (type(err).__name__, getattr(err, "message", str(err)), getattr(err, "fix", None))
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} run {run_id} ends: {status or error}", flush=True)
    sys.stdout.flush()
    log.close()
    return status, error


def _open_log(path: Path):
    """Send this process's stdout and stderr (Python's and the file descriptors) to `path`, appending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed by the caller)
    for fd in (1, 2):
        os.dup2(handle.fileno(), fd)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    return handle
