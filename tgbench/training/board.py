"""The live table of a grid's runs: state, where each runs, tokens and losses; timestamped lines in a log."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from tgbench.core.console import print_table
from tgbench.plan.expand import RunSpec
from tgbench.training.rundir import RunDir
from tgbench.training.tracking import duration, grid_line


class _Board:
    """The live table: every run's state, where it runs, tokens and loss (several runs at once with --jobs)."""

    def __init__(self, specs: list[RunSpec], out: Path, jobs: int = 1, title: str = "grid") -> None:
        self.specs = specs
        self.jobs = jobs
        self.title = title
        self.state = {s.run_id: RunDir(out / s.run_id).status() for s in specs}
        self.where: dict[str, str] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self._live = None
        self._last = 0.0
        self.plain = False  # timestamped lines instead of the live table (stdout is not a terminal)
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    def live(self, enabled: bool):
        """A live-updating table on a terminal; in a log the final table is printed once (`print_final`)."""
        from contextlib import nullcontext

        from rich.console import Console
        from rich.live import Live

        if not enabled or not Console().is_terminal:
            self.plain = enabled
            return nullcontext()
        self._live = Live(self._live_table(), refresh_per_second=2, transient=False)
        return self._live

    def _live_table(self):
        from rich.console import Console

        return self.table(rows=max(3, Console().height - 8))  # title, header, borders, caption, progress

    def print_final(self, enabled: bool) -> None:
        from rich.console import Console

        if enabled and not Console().is_terminal:
            print_table(self.table())

    def start(self, run_id: str, where: str) -> None:
        """A run starts: the table shows it running; a log gets `[done/total] RUN start`."""
        self.state[run_id] = "running"
        self.where[run_id] = where
        self._started[run_id] = time.monotonic()
        if self.plain:
            grid_line("start" if self.jobs == 1 else f"start ({where})", run_id, self.finished_count(),
                      len(self.specs))
        self.refresh()

    def update(self, run_id: str, record: dict[str, Any]) -> None:
        self.latest.setdefault(run_id, {}).update(record)
        if time.monotonic() - self._last > 0.5:
            self.refresh()

    def finish(self, run_id: str, status: str) -> None:
        """A run ends with `status`: a log gets `[done/total] RUN STATUS: val_loss ..., wall time`."""
        self.state[run_id] = status
        self._finished.add(run_id)
        if self.plain:
            record = self.latest.get(run_id, {})
            detail = [f"val_loss {_fmt(record['val_loss'])}"] if record.get("val_loss") is not None else []
            if run_id in self._started:
                detail.append(duration(time.monotonic() - self._started[run_id]))
            grid_line(status, run_id, self.finished_count(), len(self.specs), ", ".join(detail))
        self.refresh()

    def finished_count(self) -> int:
        """Runs of this grid that are over in this session (done, skipped, failed or interrupted)."""
        return len(self._finished)

    def refresh(self) -> None:
        self._last = time.monotonic()
        if self._live is not None:
            self._live.update(self._live_table())

    def visible(self, rows: int | None) -> list[RunSpec]:
        """The runs shown when only `rows` fit: a window that scrolls with the first running (or pending) run."""
        if rows is None or len(self.specs) <= rows:
            return list(self.specs)
        rows = max(rows, 3)
        states = [self.state[s.run_id] for s in self.specs]
        focus = next((i for i, st in enumerate(states) if st == "running"),
                     next((i for i, st in enumerate(states) if st not in ("done", "skipped", "failed")), 0))
        start = min(max(0, focus - rows // 3), len(self.specs) - rows)
        return self.specs[start: start + rows]

    def table(self, rows: int | None = None):
        """The table of every run, or of a window of `rows` runs (a live table taller than the terminal
        cannot be redrawn, so it scrolls with the running run and counts the others in its caption)."""
        from collections import Counter

        from rich.table import Table

        running = sum(state == "running" for state in self.state.values())
        title = self.title if self.jobs == 1 else f"{self.title}: {running} of {self.jobs} workers busy"
        table = Table(title=title, show_lines=False)
        columns = ("run", "state", "tokens", "train loss", "val loss") + (("where",) if self.jobs > 1 else ())
        for column in columns:
            # Run ids fold onto a second line on a narrow terminal rather than being cut.
            table.add_column(column, justify="left" if column in ("run", "where") else "right",
                             overflow="fold" if column == "run" else "ellipsis")
        colours = {"done": "green", "skipped": "green", "failed": "red", "running": "yellow"}
        shown = self.visible(rows)
        if len(shown) < len(self.specs):
            first = self.specs.index(shown[0]) + 1
            counts = Counter(self.state[s.run_id] for s in self.specs)
            table.caption = (f"runs {first}-{first + len(shown) - 1} of {len(self.specs)}: "
                             + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        for spec in shown:
            record = self.latest.get(spec.run_id, {})
            state = self.state[spec.run_id]
            cells = [spec.run_id, f"[{colours.get(state, 'white')}]{state}",
                     f"{record.get('tokens', 0):,}/{spec.tokens:,}",
                     _fmt(record.get("train_lexical_loss")), _fmt(record.get("val_loss"))]
            if self.jobs > 1:
                cells.append(self.where.get(spec.run_id, "") if state == "running" else "")
            table.add_row(*cells)
        return table


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"
