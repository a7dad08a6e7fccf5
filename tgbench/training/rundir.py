"""The run-directory format (files are written atomically through `tgbench.core.files`).

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
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import tgbench
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
from tgbench.plan.config import RunConfig, load_run_config, to_toml
from tgbench.registry import with_earlier_options

FORMAT_VERSION = 1


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
        """The run's settings as it trained them (options added since at the values it ran with)."""
        return with_earlier_options(load_run_config(self.config_path))

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
