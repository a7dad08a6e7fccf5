"""The run-directory format (files are written atomically through `tgbench.files`).

```
<run>/config.toml        resolved settings + provenance (versions, git sha, config hash)
<run>/metrics.jsonl      one JSON object per log/eval step
<run>/checkpoints/       latest, previous and best: safetensors + JSON sidecar with a checksum
<run>/eval/<task>.json   lm-eval-shaped results
<run>/summary.json       final figures of the run
<run>/FAILED | DONE      written last
<run>/LOCK               while a training session writes the directory: its pid (see `run_lock`)
```

Every file is replaced atomically (temp file in the same directory, fsync, `os.replace`), so an
interrupted or out-of-space write never leaves a partial file where a good one was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import tgbench
from tgbench.adapter import Adapter, Vocab
from tgbench.config import RunConfig, load_run_config, to_toml
from tgbench.errors import UserError
from tgbench.files import (  # noqa: F401 (the write helpers are imported from here across tgbench)
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

FORMAT_VERSION = 1
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- one writer per run directory ----------------------------------------------------------------
LOCK_NAME = "LOCK"


def _lock_holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return "unknown"


@contextlib.contextmanager
def run_lock(run_dir: Path, warn=None) -> Iterator[None]:
    """Hold `<run_dir>/LOCK` while a training session writes the directory (grid workers included).

    The lock is an advisory `flock` on a file holding the writer's pid: the kernel releases it when the
    process dies however it dies, so a lock left behind by a crash is simply taken over (with a
    warning naming the dead pid). The file is removed on a clean exit, and so is a directory this
    call created that is still empty (a refused run writes nothing).

    Raises:
        UserError: another live process holds the lock (the message names its pid).
    """
    import fcntl

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    make_dir(run_dir)
    path = run_dir / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        except OSError as err:
            raise unwritable(run_dir, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _lock_holder(path)
            raise UserError(
                f"run directory '{run_dir}' is in use by process {holder} (lock {path}); two trainings cannot "
                "write one run directory",
                f"wait for process {holder} to finish (or stop it), or train into another --out directory",
            ) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the holder removed it between our open and flock
            same_file = False
        if same_file:
            break
        os.close(fd)  # we locked a file its last holder had just removed: lock the new one
    stale = os.read(fd, 256).decode("utf-8", "replace").split()
    if stale and warn is not None:
        warn(f"took over the lock of process {stale[0]} in {run_dir} (it ended without releasing it)")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {platform.node()}\n".encode(), 0)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # closing releases the flock
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only succeeds while empty


# -- provenance ------------------------------------------------------------------------------
def git_sha() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: str) -> dict[str, Any]:
    import numpy

    return {
        "tgbench": tgbench.__version__,
        "format": FORMAT_VERSION,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor(),
        "git_sha": git_sha(),
    }


# -- the run directory -----------------------------------------------------------------------
@dataclass
class RunDir:
    """Paths and small helpers of one run directory."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    @property
    def failed(self) -> bool:
        return (self.path / "FAILED").exists()

    def status(self) -> str:
        if self.done:
            return "done"
        if self.failed:
            return "failed"
        if (self.checkpoints / "latest.json").exists():
            return "interrupted"
        return "pending" if not self.config_path.exists() else "started"

    def write_config(self, config: RunConfig, meta: dict[str, Any]) -> None:
        settings = config.to_dict()
        settings["meta"] = {**meta, "config_hash": config.hash()}
        write_text(self.config_path, to_toml(settings))

    def read_config(self) -> RunConfig:
        return load_run_config(self.config_path)

    def read_meta(self) -> dict[str, Any]:
        import tomllib

        return tomllib.loads(self.config_path.read_text(encoding="utf-8")).get("meta", {})

    def foreign_reason(self) -> str | None:
        """Why this is not a directory tgbench wrote (no config.toml, or one without tgbench's [meta]), or None."""
        import tomllib

        if not self.config_path.is_file():
            return "no config.toml"
        try:
            raw = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return "its config.toml is not readable TOML"
        meta = raw.get("meta")
        if not isinstance(meta, dict) or "format" not in meta or "model" not in raw:
            return "its config.toml was not written by tgbench"
        return None

    def check_is_run(self, what: str = "") -> None:
        """Refuse a directory tgbench did not write, naming it (`what` names it as the user gave it)."""
        reason = self.foreign_reason()
        if reason is not None:
            raise UserError(f"not a tgbench run: {what or self.path} ({reason})",
                            "give a directory written by `tgbench train` or `tgbench train-grid`")

    def check_version(self) -> None:
        """Refuse run directories written by an incompatible tgbench."""
        meta = self.read_meta()
        if meta.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise UserError(
                f"run directory '{self.path}' has format {meta.get('format')} (tgbench {meta.get('tgbench')}); "
                f"this tgbench {tgbench.__version__} reads format {FORMAT_VERSION}",
                "use a new --out directory, or the tgbench version that wrote it",
            )

    def mark(self, name: str, text: str = "") -> None:
        write_text(self.path / name, text)

    def clear_marks(self) -> None:
        for name in ("DONE", "FAILED"):
            (self.path / name).unlink(missing_ok=True)

    # -- metrics ---------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line and fsync it; a torn last line is dropped by `read_metrics`."""
        line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.metrics_path, "a torn last line is dropped on resume") from err
            raise

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
        return records

    def truncate_metrics(self, step: int) -> int:
        """Keep only records up to `step` (what a resumed run will not repeat).

        Returns:
            The number of torn (unparseable) lines dropped on the way.
        """
        exists = self.metrics_path.exists()
        kept, torn = [], 0
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if exists else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                torn += 1
                continue
            if record.get("step", 0) <= step:
                kept.append(record)
        write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        return torn


# -- checkpoints -----------------------------------------------------------------------------
def _unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop aliases of tied weights (safetensors stores each storage once)."""
    seen, out = set(), {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype) if tensor.device.type != "meta" else name
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().to("cpu").contiguous()
    return out


def save_checkpoint(
    directory: Path,
    name: str,
    model: torch.nn.Module,
    sidecar: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    keep_previous: bool = False,
) -> None:
    """Write `<name>.safetensors` and `<name>.json` (with the tensors' checksum) atomically.

    With `keep_previous`, the current checkpoint of that name becomes `previous` first, so a
    corrupted new file can fall back to it.
    """
    make_dir(directory)
    tensors = {f"model.{k}": v for k, v in _unique_tensors(model.state_dict()).items()}
    optim_meta = None
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous()
        optim_meta = {"param_groups": state["param_groups"]}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if keep_previous and (directory / f"{name}.json").exists():
        for suffix in (".safetensors", ".json"):
            os.replace(directory / f"{name}{suffix}", directory / f"previous{suffix}")
    weights = directory / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    full = {**sidecar, "optimizer": optim_meta, "sha256": sha256_file(weights), "format": FORMAT_VERSION}
    write_json(directory / f"{name}.json", full)


@dataclass
class Checkpoint:
    name: str
    tensors: dict[str, torch.Tensor]
    sidecar: dict[str, Any]

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def load_model(self, model: torch.nn.Module, path: Path) -> None:
        """Load weights, with a clear error when shapes do not match the model's config."""
        state = self.model_state()
        own = model.state_dict()
        for key, tensor in state.items():
            if key in own and own[key].shape != tensor.shape:
                raise UserError(
                    f"checkpoint '{path}' does not match its config: '{key}' has shape {tuple(tensor.shape)}, "
                    f"the model built from config.toml expects {tuple(own[key].shape)}",
                    "use the config.toml the checkpoint was written with",
                )
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {k for k in missing if any(own[k].data_ptr() == own[o].data_ptr() for o in state if o in own)}
        if set(missing) - tied or unexpected:
            raise UserError(
                f"checkpoint '{path}' does not match its model: missing {sorted(set(missing) - tied)}, "
                f"unexpected {sorted(unexpected)}",
                "use the config.toml the checkpoint was written with",
            )

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        state: dict[int, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": self.sidecar["optimizer"]["param_groups"]})

    def restore_rng(self) -> None:
        torch.set_rng_state(self.tensors["rng.torch"])
        if "rng.cuda" in self.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.tensors["rng.cuda"])


class CorruptCheckpoint(Exception):
    pass


def read_checkpoint(directory: Path, name: str) -> Checkpoint:
    """Read and verify one checkpoint. Raises CorruptCheckpoint naming the bad file."""
    sidecar_path = directory / f"{name}.json"
    weights = directory / f"{name}.safetensors"
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptCheckpoint(f"{sidecar_path}: unreadable sidecar ({err})") from err
    if not weights.exists() or sha256_file(weights) != sidecar.get("sha256"):
        raise CorruptCheckpoint(f"{weights}: checksum does not match its sidecar (truncated or corrupted)")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise CorruptCheckpoint(f"{weights}: unreadable ({err})") from err
    return Checkpoint(name, tensors, sidecar)


def latest_good_checkpoint(directory: Path, warn=print) -> Checkpoint | None:
    """The newest readable training checkpoint (`latest`, else `previous`), or None."""
    for name in ("latest", "previous"):
        if not (directory / f"{name}.json").exists() and not (directory / f"{name}.safetensors").exists():
            continue
        try:
            return read_checkpoint(directory, name)
        except CorruptCheckpoint as err:
            warn(f"corrupted checkpoint skipped: {err}")
    return None


def list_runs(grid_dir: Path, finished: bool = False) -> list[Path]:
    """The run directories of a grid (subdirectories holding a config.toml), sorted by name; a run directory
    given instead of a grid is a grid of that one run (`tgbench report RUN_DIR`).

    Args:
        grid_dir: The grid directory; a missing one has no runs.
        finished: Only runs marked DONE.
    """
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        return []
    if (grid_dir / "config.toml").exists() and RunDir(grid_dir).foreign_reason() is None:
        return [grid_dir] if not finished or (grid_dir / "DONE").exists() else []
    return [d for d in sorted(grid_dir.iterdir())
            if d.is_dir() and (d / "config.toml").exists() and (not finished or (d / "DONE").exists())]


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
    from tgbench.devices import resolve_device
    from tgbench.registry import build_adapter

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
