"""The errors tgbench raises on purpose, and where an exception came from.

- `UserError`: a problem with the user's input; the CLI prints its message and fix, without a traceback.
- `TrainingFailed`, `Interrupted`: how a training run ends other than DONE (the CLI names the run and the fix).
- `user_code_frame`: the file and line of plug-in code an exception was raised in (the registry records the
  files of every plug-in it loads), so a plug-in's bug is reported to its author, not as tgbench's.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: names the bad value and says how to fix it."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message}\n  fix: {fix}")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """An error for an unknown adapter/task/preset name with a did-you-mean suggestion."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return UserError(
        f"unknown {kind} '{name}'",
        f"{hint}known {kind}s: {', '.join(known) if known else '(none)'}",
    )


class TrainingFailed(Exception):
    """The loss became non-finite; the run is marked FAILED and keeps its last good checkpoint."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written (in `run_dir`, or in each of a grid's `run_dirs`)."""

    def __init__(self, signum: int, run_dir: Path, run_dirs: list[Path] | None = None) -> None:
        self.signum = signum
        self.run_dir = run_dir
        self.run_dirs = [run_dir] if run_dirs is None else run_dirs
        super().__init__(f"interrupted by signal {signum}")


# Source files of plug-ins (path:Class, module:Class, entry points; adapters and tasks): an exception raised in
# one of them is its author's to fix, and the CLI reports it as such (`user_code_frame`).
USER_CODE_FILES: set[str] = set()


def user_code_frame(err: BaseException) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost traceback frame of `err` in a plug-in's file."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in USER_CODE_FILES:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    if found is None and isinstance(err, SyntaxError) and err.filename in USER_CODE_FILES:
        found = (err.filename, err.lineno or 0, "<module>")
    return found


def plugin_error_message(err: BaseException) -> str | None:
    """One line naming the plug-in file and line `err` was raised in, or None when no plug-in raised it.

    Args:
        err: An exception caught around code that may call plug-ins (training, evaluation).

    Returns:
        "plug-in code raised IndexError: ... (at /path/adapter.py:42, in loss)", or None for tgbench's own errors.
    """
    frame = user_code_frame(err)
    if frame is None:
        return None
    file, line, function = frame
    text = " ".join(str(err).split()) or type(err).__name__
    return f"plug-in code raised {type(err).__name__}: {text} (at {file}:{line}, in {function})"
