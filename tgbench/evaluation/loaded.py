"""A trained run, loaded back from its directory: its adapter, its corpus and its model at a checkpoint."""

from __future__ import annotations

from pathlib import Path

from tgbench.core.devices import resolve_device
from tgbench.core.errors import UserError
from tgbench.core.files import (  # noqa: F401 (the write helpers are imported from here across tgbench)
    UMASK,
    atomic_path,
    disk_full,
    json_safe,
    make_dir,
    read_json,
    unwritable,
    write_bytes,
    write_json,
    write_text,
)
from tgbench.data import load_corpus
from tgbench.registry import build_adapter
from tgbench.task import LoadedRun
from tgbench.training.checkpoints import CorruptCheckpoint, read_checkpoint
from tgbench.training.rundir import RunDir


def load_run(run_dir: Path, checkpoint: str = "best", device: str = "auto", corpus=None,
             progress: bool = False) -> LoadedRun:
    """Rebuild a run's adapter, corpus and model from its directory, in eval mode.

    Args:
        run_dir: A run directory written by `train`.
        checkpoint: "best" (lowest lexical validation loss) or "latest".
        device: Where to put the model.
        corpus: An already loaded corpus with the run's data settings (grids share one).
    """

    run = RunDir(run_dir)
    run.check_is_run()
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
