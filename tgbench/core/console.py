"""Terminal output that stays readable in an 80-column log: one-line errors, tables never cut.

Rich wraps text and shrinks tables to the console width (80 columns when output goes to a file or
a CI log), which cuts run ids and numbers and breaks errors mid-word. Errors here are printed
without wrapping, and tables are printed at their natural width, however wide that is.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

out = Console()
err = Console(stderr=True)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (a multi-line message would break the `error:` line)."""
    return " ".join(str(err).split()) or "(no message)"


def print_error(message: str, fix: str | None = None, label: str = "error") -> None:
    """`error: MESSAGE` and `fix: FIX` on stderr, one line each whatever the width (text is not markup)."""
    err.print(f"[bold red]{label}:[/bold red] {escape(message)}", soft_wrap=True)
    if fix:
        err.print(f"[bold]fix:[/bold] {escape(fix)}", soft_wrap=True)


def print_warning(message: str, hint: str | None = None) -> None:
    """`warning: MESSAGE` and `hint: HINT` on stderr, one line each (a warning's advice is no error's `fix:`)."""
    err.print(f"[bold yellow]warning:[/bold yellow] {escape(message)}", soft_wrap=True)
    if hint:
        err.print(f"[bold]hint:[/bold] {escape(hint)}", soft_wrap=True)


def print_table(table: Table, console: Console | None = None) -> None:
    """Print a Rich table at its natural width, so no column (run ids above all) is cut or wrapped."""
    console = console or out
    natural = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    width = console.width
    console.width = max(width, natural)
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def progress_bar(enabled: bool = True, unit: str = "", extra: tuple = (), console: Console | None = None,
                 transient: bool = True):
    """The one progress bar of tgbench: description, bar, done/total [unit], extra columns, elapsed, remaining.

    Args:
        enabled: False gives a disabled bar (same API, prints nothing).
        unit: Word after the counts ("documents", "steps").
        extra: More Rich columns, e.g. ``TextColumn("loss {task.fields[loss]:.3f}")``.
        console: Where it draws (default: stderr, so stdout stays clean for results).
        transient: Remove the bar when done.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns += [*extra, TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console or err, disable=not enabled, transient=transient)
