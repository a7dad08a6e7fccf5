"""Errors a user can cause. The CLI prints them as one clear message, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
