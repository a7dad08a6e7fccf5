"""`tgbench report`: one self-contained HTML page from a grid directory's files.

The report is a pure function of `grid.toml`, `results.csv`, `fits.json` and the run directories: it never
runs a model, never touches the network, and renders missing or failed pieces as "missing" / "fit failed".
The page is the list of sections `tgbench.report.sections` builds (verdict first, provenance last), each drawn
by its partial template; the page template adds the header, the navigation and the sortable tables' script.
Every string read from a file is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from tgbench.core.errors import UserError
from tgbench.core.files import write_text
from tgbench.report.files import GridFiles, load_grid_files
from tgbench.report.format import fmt_times, fmt_value
from tgbench.report.plots import colours
from tgbench.report.sections import Page, page_sections
from tgbench.report.verdict import forest, verdicts
from tgbench.results.table import check_grid_dir, refresh_results

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> Environment:
    """The templates, autoescaped, with the report's formatters as filters (`x`: a multiplier, `v`: a value)."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        enabled_extensions=("html", "j2"), default_for_string=True, default=True), trim_blocks=True,
        lstrip_blocks=True)
    env.filters["x"] = fmt_times
    env.filters["v"] = lambda value, fmt=".3f": fmt_value(value, fmt=fmt)
    return env


def render_report(grid_dir: Path | GridFiles) -> str:
    """The report of a grid directory as one HTML string (no network resources, no external files).

    Args:
        grid_dir: A grid directory (grid.toml, results.csv, fits.json, run dirs); any of them may be missing.
            Or its files already read (`tgbench.results.pooling` pools several grids' files into one).

    Returns:
        The HTML page.
    """
    files = grid_dir if isinstance(grid_dir, GridFiles) else load_grid_files(Path(grid_dir))
    frame = files.results
    labels = list(files.comparison.labels)
    page = Page(files, labels, colours(labels), [] if frame.empty else verdicts(files))
    return environment().get_template("report.html.j2").render(
        title=str(files.grid.get("name") or Path(files.path).name),
        description=str(files.grid.get("description") or ""), grid_dir=str(files.path),
        counts=frame["status"].astype(str).value_counts().to_dict() if not frame.empty else {},
        n_runs=len(frame), sections=page_sections(page))


def write_report(grid_dir: Path, output: Path | None = None) -> Path:
    """Render the report of `grid_dir` and write it atomically (default `<grid_dir>/report.html`), with each
    pair's verdict plot beside it as `verdict-A-vs-B.svg` (a file to paste elsewhere).

    `grid_dir` may be a single run directory: the report of that one run.
    """
    grid_dir = Path(grid_dir)
    check_grid_dir(grid_dir, "report")
    output = Path(output) if output is not None else grid_dir / "report.html"
    if output.is_dir():
        raise UserError(f"-o '{output}' is a directory",
                        f"give the report's file name, e.g. -o {output / 'report.html'}")
    with contextlib.suppress(OSError):  # a read-only grid: render_report rebuilds a stale table in memory
        refresh_results(grid_dir)
    files = load_grid_files(grid_dir)
    write_text(output, render_report(files))
    for entry in (files.fits or {}).get("verdicts") or []:
        plot = forest(entry, standalone=True)
        if plot is not None:
            write_text(output.parent / forest_file(entry["a"], entry["b"]), str(plot) + "\n")
    return output


def forest_file(a: str, b: str) -> str:
    """The file name of a pair's verdict plot (labels such as tg/no-memory made safe for a file name)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{a}-vs-{b}")
    return f"verdict-{safe}.svg"
