"""Atomic file writes and JSON: the one place tgbench writes a file.

Every file is replaced atomically (temp file in the same directory, fsync, `os.replace`), so an
interrupted or out-of-space write never leaves a partial file where a good one was. JSON is written
through `json_safe` (NaN and infinities become null, numpy values plain numbers).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tgbench.errors import UserError

UMASK = os.umask(0)  # the process umask (read by setting it and putting it back)
os.umask(UMASK)


# -- atomic writes ---------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; results are meant to be shared
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, "the previous file is intact") from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def disk_full(path: Path, consequence: str) -> UserError:
    """The error for a write that ran out of disk space (or quota)."""
    return UserError(
        f"disk full while writing '{path}' (no space left on {Path(path).parent}); {consequence}",
        "free disk space, then rerun with --resume auto",
    )


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """A JSON-ready copy: NaN/inf -> None, numpy scalars and arrays -> Python numbers and lists, tuples ->
    lists, keys -> str, anything else unknown -> str."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return str(obj)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically (non-finite floats become null, see `json_safe`)."""
    write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when it is missing or unreadable (callers show such files as missing)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


