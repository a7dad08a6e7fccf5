"""The report's plots: loss against D and N with the fitted curves, the multipliers, the training curves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from tgbench.report.files import GridFiles
from tgbench.report.format import fmt_value, num
from tgbench.report.plots import Band, Series, plot
from tgbench.report.task_sections import axis_cells
from tgbench.report.verdict import AXIS_PRESETS, PAPER, report_form
from tgbench.results.columns import done_rows
from tgbench.tasks.stats.laws import PowerLawFit


# -- plots ---------------------------------------------------------------------------------------------------
def _fit_curve(fit: dict[str, Any] | None, lo: float, hi: float) -> list[tuple[float, float]]:

    if not fit or not fit.get("converged") or not fit.get("params"):
        return []
    model = PowerLawFit(form=fit["form"], params=fit["params"], intervals={}, converged=True, reason="",
                        n_points=0, x=[], y=[])
    xs = np.geomspace(lo, hi, 40)
    return list(zip(xs.tolist(), model.predict(xs).tolist(), strict=True))


def _axis_line(what: str, preset: str, who: str) -> Markup:
    """One line: what the grid lacks, the preset that measures it and where its report is."""
    return Markup("{}; {}: <code>tgbench demo --preset {}</code>, whose report sits beside this one at "
                  '<a href="../{}/report.html">../{}/report.html</a> (committed in the repository: '
                  "<code>reports/{}/report.html</code>).").format(what, who, preset, preset, preset, preset)


def missing_axes(frame: pd.DataFrame) -> dict[str, Markup]:
    """The axes this grid's design does not have, each with the one line the report shows in place of its plots.

    A grid of one width has no N axis, a grid of one budget no D axis: their loss and multiplier plots would stay
    empty whatever the runs give, so the report says which preset measures the axis instead. Read from every row
    (finished or not): a grid whose runs have not finished keeps its (empty) plots.

    Returns:
        {"data" | "params": line}; empty for a grid with both axes, or with no runs.
    """
    if frame.empty:
        return {}
    out = {}
    sizes = frame[["width", "layers"]].drop_duplicates()
    budgets = pd.to_numeric(frame["tokens"], errors="coerce").dropna().unique()
    if len(sizes) == 1:
        width, layers = sizes.iloc[0]
        out["params"] = _axis_line(f"Loss vs N and m_N: this grid has one size (width {fmt_value(width)}, "
                                   f"{fmt_value(layers)} layers), so no parameter axis", *AXIS_PRESETS["params"])
    if len(budgets) == 1:
        out["data"] = _axis_line(f"Loss vs D and m_D: this grid has one budget "
                                 f"(D = {fmt_value(budgets[0], fmt='si')} tokens), so no data axis",
                                 *AXIS_PRESETS["data"])
    return out


def scaling_plots(files: GridFiles, palette: dict[str, str]) -> list:
    """Loss against D (data axis) and against N (parameter axis): seed means, seed spread, fitted curves; an axis
    the grid's design lacks (`missing_axes`) has no plot."""
    frame = done_rows(files.results)
    data_group, param_tokens = axis_cells(files.results)
    missing = missing_axes(files.results)
    out = []
    specs = [("data", "tokens", "training tokens D", data_group is not None,
              lambda f: (f["width"] == data_group[0]) & (f["layers"] == data_group[1]),
              f"width={data_group[0]},layers={data_group[1]}" if data_group else ""),
             ("params", "n_params", "non-embedding parameters N", param_tokens is not None,
              lambda f: f["tokens"] == param_tokens, f"tokens={param_tokens}")]
    for axis, x_col, xlabel, present, select, group in specs:
        if axis in missing:
            continue
        series = []
        uses_val = False
        if present:
            rows = frame[select(frame)]
            uses_val = bool(rows["loss_is_val"].any())
            for label in files.ordered(rows["label"]):
                g = rows[rows["label"] == label]
                pts, errs = [], []
                for x, gx in g.groupby(x_col):
                    losses = [v for v in (num(v) for v in gx["loss"]) if v is not None]
                    if losses:
                        pts.append((float(x), float(np.mean(losses))))
                        errs.append((float(x), min(losses), max(losses)))
                fit = (((files.fits or {}).get("axes") or {}).get(axis) or {}).get(label, {}).get(group, {})
                xs = [p[0] for p in pts]
                curve = _fit_curve(fit.get(report_form(files.fits)), min(xs), max(xs)) if xs else []
                series.append(Series(label, palette[label], pts, errs, curve))
        where = (f"width {data_group[0]}, {data_group[1]} layers" if axis == "data" and data_group else
                 f"D = {fmt_value(param_tokens, fmt='si')} tokens" if param_tokens else "")
        note = f"points: seed mean, bars: seed min-max, lines: {report_form(files.fits)} fit" + \
            ("; no test eval: best val loss" if uses_val else "")
        out.append(plot(series, title=f"Lexical test loss vs {'D' if axis == 'data' else 'N'} ({where})"
                        if where else f"Lexical test loss vs {'D' if axis == 'data' else 'N'}",
                        xlabel=xlabel, ylabel="loss (nats/token)", xlog=True, ylog=True, note=note))
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats: none reaches a lower loss with as little compute, sorted by compute."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def compute_plot(files: GridFiles, palette: dict[str, str]):
    """Loss against training FLOPs (counted) for every model, with the Pareto front over all of them; None when
    no run has its FLOPs (runs from before they were counted)."""
    frame = done_rows(files.results)
    if "train_flops" not in frame.columns:
        return None
    frame = frame.assign(_flops=[num(v) for v in frame["train_flops"]]).dropna(subset=["_flops"])
    frame = frame[frame["_flops"] > 0]
    if frame.empty:
        return None
    series, cells = [], []
    for label in files.ordered(frame["label"]):
        g = frame[frame["label"] == label]
        pts, errs = [], []
        for _, cell in g.groupby(["width", "layers", "tokens"]):
            losses = [v for v in (num(v) for v in cell["loss"]) if v is not None]
            if losses:
                x = float(cell["_flops"].mean())
                pts.append((x, float(np.mean(losses))))
                errs.append((x, min(losses), max(losses)))
        cells.extend(pts)
        one_size = g.groupby(["width", "layers"]).ngroups == 1  # a line joins the budgets of one size only
        series.append(Series(label, palette[label], pts, errs, sorted(pts) if one_size and len(pts) > 1 else []))
    front = pareto_front(cells)
    if len(front) > 1:
        series.append(Series("Pareto front", "#6B7280", [], [], front, dashed=True))
    return plot(series, title="Lexical test loss vs training compute", xlabel="training FLOPs (counted)",
                ylabel="loss (nats/token)", xlog=True, ylog=True,
                note="points: a cell's seed mean at its mean FLOPs, bars: seed min-max; dashed: the lowest loss "
                     "reached with at most that compute")


def multiplier_plots(pair_verdicts: list[dict[str, Any]], palette: dict[str, str],
                     missing: dict[str, str] | None = None) -> list:
    """Every fitted pair's multipliers against D and against N, with intervals and the paper's band; none for an
    axis in `missing` (`missing_axes`: the grid's design lacks it)."""
    out = []
    first = pair_verdicts[0]["a"]
    shown = [v for v in pair_verdicts if v["a"] == first]
    for axis, xlabel in (("data", "training tokens D"), ("params", "non-embedding parameters N")):
        if axis in (missing or {}):
            continue
        series = []
        for verdict in shown:
            ok = [p for p in verdict["multipliers"][axis]["points"]
                  if p.get("status") == "ok" and num(p.get("value")) is not None]
            series.append(Series(f"{verdict['b']} over {verdict['a']}", palette.get(verdict["b"], "#D55E00"),
                                 [(p["x"], p["value"]) for p in ok],
                                 [(p["x"], p["ci_low"], p["ci_high"]) for p in ok
                                  if num(p.get("ci_low")) is not None and num(p.get("ci_high")) is not None],
                                 [(p["x"], p["value"]) for p in ok]))
        bands = [Band(1.0, 1.0, "1.0 = no difference")]
        if any(v["paper"] for v in shown):
            lo, hi = PAPER[axis]
            bands.append(Band(lo, hi, f"paper (gpt2) {lo:.2f}-{hi:.2f}\u00d7", "#0072B2"))
        name = "m_D" if axis == "data" else "m_N"
        has_points = any(s.points for s in series)
        out.append(plot(series, title=f"{name}: {'data' if axis == 'data' else 'parameters'} needed / {first}'s",
                        xlabel=xlabel, ylabel="multiplier", xlog=True, bands=bands,
                        note="bars: 95% interval" if has_points else ""))
    return out


def curve_plots(files: GridFiles, palette: dict[str, str], limit: int = 12) -> list:
    """Validation (solid) and training (dashed) lexical loss while training, one plot per (width, D) cell."""
    frame = files.results
    out = []
    cells = frame.groupby(["width", "layers", "tokens"], sort=True)
    for (width, _, tokens), g in list(cells)[:limit]:
        series = []
        shown = set()
        for _, row in g.sort_values(["label", "seed"]).iterrows():
            run = files.runs.get(str(row["run_id"]))
            records = run.read_metrics() if run else []
            val, train = ([(r["tokens"], r[key]) for r in records
                           if num(r.get(key)) is not None and (num(r.get("tokens")) or 0) > 0]
                          for key in ("val_loss", "train_lexical_loss"))
            label = str(row["label"])
            # a run evaluated only once or twice still shows up, as markers
            series.append(Series(label, palette[label], val if len(val) <= 3 else [], [], val,
                                 legend=label not in shown))
            series.append(Series(label, palette[label], [], [], train, dashed=True, legend=False))
            shown.add(label)
        dots = any(s.points for s in series if not s.dashed)
        drawn = [what for what, dashed in ((f"solid{' or dots' if dots else ''}: validation", False),
                                           ("dashed: training", True))
                 if any(len(s.line) >= 2 or s.points for s in series if s.dashed == dashed)]
        out.append(plot(series, title=f"Loss: width {width}, D = {fmt_value(tokens, fmt='si')}",
                        xlabel="tokens seen", ylabel="loss (nats/token)", xlog=True, width=370, height=260,
                        legend_inside=True, note="; ".join(drawn)))
    return out
