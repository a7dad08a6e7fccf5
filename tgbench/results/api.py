"""Results in Python: `tgbench.load_results` and `tgbench.load_fits`, for notebooks and scripts.

Both read the files a grid directory holds, through the same code as the report (`tgbench.results.table` for the
table, fits.json as `tgbench fit` wrote it), so a notebook sees exactly the numbers the report shows.
docs/python.md has a five-line example that redraws the report's data-scaling plot with matplotlib.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tgbench.core.errors import UserError
from tgbench.core.files import read_json
from tgbench.plan.config import read_grid_file
from tgbench.plan.expand import grid_variants
from tgbench.report.task_sections import axis_cells
from tgbench.report.verdict import FIT_FORM
from tgbench.results.table import read_results
from tgbench.tasks.stats.laws import PowerLawFit
from tgbench.training.rundir import RunDir, list_runs

CONFIG_PREFIX = "config."


def _grid_dir(grid_dir: str | Path) -> Path:
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise UserError(f"grid directory '{grid_dir}' does not exist",
                        "give the --out directory of `tgbench train-grid` (or of `tgbench report A B`)")
    return grid_dir


def flat_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.toml flattened to ``config.<table>.<key>`` (lists and dicts kept as values), {} if none."""

    run = RunDir(run_dir)
    if not run.config_path.exists():
        return {}
    try:
        settings = run.read_config().to_dict()
    except Exception:  # noqa: BLE001 - an unreadable config leaves the row's config columns empty
        return {}
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            out[prefix] = value

    for key, value in settings.items():
        walk(CONFIG_PREFIX.rstrip(".") + f".{key}", value)
    return out


def load_results(grid_dir: str | Path, *, configs: bool = True, documents: bool = False) -> pd.DataFrame:
    """A grid's results table: one row per run, as results.csv and the report have it, plus each run's settings.

    Columns: everything results.csv holds (run_id, label, adapter, variant, width, layers, n_params, tokens,
    seed, status, losses, every task's metrics as ``<task>.<metric>``, throughput, the lr and its source, the
    run's ``flags``, ...), then ``loss`` (the loss the fits and the verdict use: the test loss, else the best
    validation loss) and ``loss_is_val``, ``on_data_axis`` / ``on_param_axis`` (the runs the report's
    data-scaling and parameter-scaling plots draw), ``grid`` (the grid of origin; a comparison's table keeps
    each run's), and with `configs` every setting of the run's config.toml as ``config.<table>.<key>``
    (``config.train.lr``, ``config.model_options.memory_slots``, ``config.data.tokenizer``, ...).

    Args:
        grid_dir: A grid directory (of `tgbench train-grid`, or of `tgbench report A B`).
        configs: Add the flattened config columns (read from every run directory).
        documents: One row per (run, test document) instead of per run: the run's columns plus ``doc_id``,
            ``doc_lexical_nll`` (the document's summed lexical NLL, nats), ``doc_tokens``, ``doc_sentences``
            and ``doc_lexical_loss`` (NLL per token), from each run's eval/ppl.json (``by_document``; runs
            evaluated before it was written have no rows: ``tgbench eval --force`` rewrites them). Documents are
            in test-split order, the same for every run of one corpus: pair them by ``doc_id``.

    Returns:
        The table; empty (with its columns) for a grid without runs.
    """

    grid_dir = _grid_dir(grid_dir)
    grid = read_grid_file(grid_dir)
    variants: dict[str, str] = {}
    if grid:

        variants = grid_variants(grid)
    frame = read_results(grid_dir, variants).copy()
    if "grid" not in frame.columns:
        frame["grid"] = str(grid.get("name") or grid_dir.name)
    data_group, param_tokens = axis_cells(frame) if not frame.empty else (None, None)
    done = frame["status"].astype(str) == "done"
    frame["on_data_axis"] = done & (frame["width"] == data_group[0]) & (frame["layers"] == data_group[1]) \
        if data_group else False
    frame["on_param_axis"] = done & (frame["tokens"] == param_tokens) if param_tokens is not None else False
    paths = _run_paths(frame, grid_dir) if configs or documents else []
    if configs:
        rows = [flat_config(path) if path is not None else {} for path in paths]
        settings = pd.DataFrame(rows, index=frame.index)
        frame = pd.concat([frame, settings[sorted(settings.columns)]], axis=1)
    if documents:
        frame = frame.merge(_document_rows(frame["run_id"], paths), on="run_id", how="inner")
    return frame


def _run_paths(frame: pd.DataFrame, grid_dir: Path) -> list[Path | None]:
    """Each row's run directory (a comparison's rows name theirs in ``source_dir``); None when it is gone."""
    run_paths = {d.name: d for d in list_runs(grid_dir)}
    sources = frame["source_dir"] if "source_dir" in frame.columns else [None] * len(frame)
    return [Path(source) if isinstance(source, str) and source else run_paths.get(str(run_id))
            for run_id, source in zip(frame["run_id"], sources, strict=True)]


DOCUMENT_COLUMNS = ["run_id", "doc_id", "doc_lexical_nll", "doc_tokens", "doc_sentences", "doc_lexical_loss"]


def _document_rows(run_ids: Sequence[Any], paths: Sequence[Path | None]) -> pd.DataFrame:
    """run_id and each test document's figures, from the runs' eval/ppl.json ``by_document``."""
    rows = []
    for run_id, path in zip(run_ids, paths, strict=True):
        data = read_json(path / "eval" / "ppl.json") if path is not None else {}
        for doc in data.get("by_document") or []:
            tokens = int(doc.get("tokens") or 0)
            nll = float(doc.get("lexical_nll", math.nan))
            rows.append([run_id, int(doc.get("doc_id", len(rows))), nll, tokens, int(doc.get("sentences") or 0),
                         nll / tokens if tokens else math.nan])
    return pd.DataFrame(rows, columns=DOCUMENT_COLUMNS)


class Fits(dict):
    """fits.json as a dict (``fits["verdicts"]``, ``fits["axes"]``, ...) with helpers for plotting.

    Layout: see tasks/stats/fits.py. ``fits["axes"][axis][label][group][form]`` is one fitted law, axis "data"
    (loss against training tokens D at one width) or "params" (against parameters N at one budget).
    """

    @property
    def form(self) -> str:
        """The fitted form the report draws (``tgbench fit --form``; Kaplan by default)."""

        return str(self.get("form") or FIT_FORM)

    def groups(self, label: str, axis: str = "data") -> list[str]:
        """The fitted groups of a label on an axis (e.g. ``width=128,layers=4`` on the data axis)."""
        return list(((self.get("axes") or {}).get(axis) or {}).get(label, {}))

    def fit(self, label: str, axis: str = "data", group: str | None = None, form: str | None = None
            ) -> dict[str, Any]:
        """One fitted law: ``{"form", "params", "converged", "intervals", ...}``.

        Args:
            label: A label of the grid.
            axis: "data" or "params".
            group: The group (default: the only one, else the one with the most points).
            form: The fitted form (default: `form`).

        Raises:
            UserError: when the label has no fit on that axis.
        """
        by_group = ((self.get("axes") or {}).get(axis) or {}).get(label)
        if not by_group:
            known = sorted((self.get("axes") or {}).get(axis) or {})
            raise UserError(f"fits.json has no {axis}-axis fit for '{label}'",
                            f"labels with one: {', '.join(known) or '(none)'}; run tgbench fit GRID_DIR")
        if group is None:
            group = max(by_group, key=lambda g: len(((by_group[g] or {}).get(form or self.form) or {}).get("x")
                                                     or []))
        if group not in by_group:
            raise UserError(f"'{label}' has no {axis}-axis fit for group '{group}'",
                            f"its groups: {', '.join(by_group)}")
        return (by_group[group] or {}).get(form or self.form) or {}

    def predict(self, label: str, x: Sequence[float] | np.ndarray, axis: str = "data", group: str | None = None,
                form: str | None = None) -> np.ndarray:
        """The fitted loss of `label` at `x` (tokens on the data axis, parameters on the params axis); NaN
        where the fit did not converge."""

        xs = np.asarray(x, dtype=float)
        fit = self.fit(label, axis, group, form)
        if not fit.get("converged") or not fit.get("params"):
            return np.full(xs.shape, math.nan)
        law = PowerLawFit(form=fit["form"], params=fit["params"], intervals={}, converged=True, reason="",
                          n_points=0, x=[], y=[])
        return np.asarray(law.predict(xs), dtype=float)

    def table(self) -> pd.DataFrame:
        """Every fitted law as a row: axis, label, group, form, converged, and one column per parameter."""
        rows = []
        for axis, by_label in (self.get("axes") or {}).items():
            for label, by_group in (by_label or {}).items():
                for group, by_form in (by_group or {}).items():
                    for form, fit in (by_form or {}).items():
                        if not isinstance(fit, dict):
                            continue
                        rows.append({"axis": axis, "label": label, "group": group, "form": form,
                                     "converged": fit.get("converged"), **(fit.get("params") or {})})
        return pd.DataFrame(rows)


def load_fits(grid_dir: str | Path) -> Fits:
    """A grid's fits.json (written by `tgbench fit`): the fitted laws, multipliers, verdicts and notes.

    Raises:
        UserError: when the grid has no fits.json yet, or it is unreadable.
    """
    path = _grid_dir(grid_dir) / "fits.json"
    if not path.is_file():
        raise UserError(f"'{path}' does not exist", f"run tgbench fit {Path(grid_dir)} first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"'{path}' is unreadable: {err}", f"rerun tgbench fit {Path(grid_dir)}") from err
    if not isinstance(data, dict):
        raise UserError(f"'{path}' is not a JSON object", f"rerun tgbench fit {Path(grid_dir)}")
    return Fits(data)


__all__ = ["Fits", "flat_config", "load_fits", "load_results"]
