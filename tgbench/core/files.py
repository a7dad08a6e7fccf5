"""Atomic file writes and JSON: the one place tgbench writes a file.

Every file is replaced atomically (temp file in the same directory, fsync, `os.replace`), so an
interrupted or out-of-space write never leaves a partial file where a good one was. JSON is written
through `json_safe` (NaN and infinities become null, numpy values plain numbers).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tgbench.core.errors import UserError

UMASK = os.umask(0)  # the process umask (read by setting it and putting it back)
os.umask(UMASK)


# -- atomic writes ---------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write '{path}': it is a directory", "give a file path, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, "the previous file is intact") from err
        raise unwritable(path, err) from err
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; results are meant to be shared
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # again: a writer that replaces the file (safetensors does) leaves it 0600, unreadable by the group
        os.chmod(tmp_path, 0o666 & ~UMASK)
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


def make_dir(path: Path) -> Path:
    """`mkdir -p` for an output directory; a path that cannot be a directory is a UserError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(path, err) from err
    return path


def unwritable(path: Path, err: OSError) -> UserError:
    """The error for an output path that cannot be created or written (a file in the way, /proc, no permission)."""
    reason = {errno.ENOTDIR: "a file is in the way, where a directory is needed",
              errno.EEXIST: "a file is in the way, where a directory is needed",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EROFS: "read-only file system",
              errno.ENOENT: "the file system does not let a directory be made there"}.get(
        err.errno, err.strerror or type(err).__name__)
    where = f" at '{err.filename}'" if err.filename and str(err.filename) != str(path) else ""
    return UserError(f"cannot write '{path}': {reason}{where}",
                     "choose an output path in a writable directory (e.g. --out runs/NAME)")


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
