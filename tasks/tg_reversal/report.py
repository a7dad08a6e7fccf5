"""The reversal probe's report section: target and distractor NLL, margins and error rates against D."""

from __future__ import annotations

import math

import pandas as pd

from tgbench.plots import Band, Series, plot
from tgbench.sections import SECONDARY_NOTE, Section, Table, TaskView, fmt_number, mean, num, runs_table
from tgbench.tasks.tg_reversal.task import CONDITIONS, REVERSAL_PAIRS

MEASURES = (("target_nll", ".3f", "target NLL"), ("distractor_nll", ".3f", "distractor NLL"),
            ("margin", ".3f", "margin"), ("error_rate", ".1%", "error rate"))


def at_chance(error_rate: float, seeds: int) -> bool:
    """Whether an error rate averaged over `seeds` evaluations of the probe is within the 95% binomial band of
    chance (0.5), assuming every evaluation scored the probe's full REVERSAL_PAIRS pairs per condition."""
    n = max(seeds, 1) * REVERSAL_PAIRS
    return abs(error_rate - 0.5) <= 1.96 * math.sqrt(0.25 / n)


def _mean_by(g: pd.DataFrame, x_col: str, y_col: str) -> list[tuple[float, float]]:
    pts = []
    for x, gx in g.groupby(x_col):
        ys = [v for v in (num(v) for v in gx[y_col]) if v is not None]
        if ys:
            pts.append((float(x), float(sum(ys) / len(ys))))
    return pts


def reversal_plots(view: TaskView) -> list:
    """Target and distractor NLL per condition against D, and the margins and error rates, on the data axis."""
    frame = view.data_axis()
    col = view.column
    if frame.empty:
        return []
    out = []
    for cond in CONDITIONS:
        series = []
        for label in view.ordered(frame["label"]):
            g = frame[frame["label"] == label]
            for what, dashed in (("target_nll", False), ("distractor_nll", True)):
                pts = _mean_by(g, "tokens", col(f"{cond}_{what}"))
                series.append(Series(f"{label} {what.split('_')[0]}", view.palette[label], pts, [], pts, dashed))
        out.append(plot(series, title=f"Reversal probe ({cond}): NLL of target and distractor",
                        xlabel="training tokens D", ylabel="NLL (nats)",
                        note="solid: target, dashed: distractor"))
    series = []
    for label in view.ordered(frame["label"]):
        g = frame[frame["label"] == label]
        for cond, dashed in (("normal", False), ("reversed", True)):
            pts = _mean_by(g, "tokens", col(f"{cond}_margin"))
            series.append(Series(f"{label} {cond}", view.palette[label], pts, [], pts, dashed))
    out.append(plot(series, title="Reversal probe: margin (distractor - target NLL)",
                    xlabel="training tokens D", ylabel="margin (nats)", bands=[Band(0.0, 0.0, "0 = chance")],
                    note="higher is better; negative margin = the distractor is preferred"))
    series, chance = [], []
    for label in view.ordered(frame["label"]):
        g = frame[frame["label"] == label]
        for cond, dashed in (("normal", False), ("reversed", True)):
            pts = _mean_by(g, "tokens", col(f"{cond}_error_rate"))
            series.append(Series(f"{label} {cond}", view.palette[label], pts, [], pts, dashed))
            for tokens, rate in pts:
                seeds = int(pd.to_numeric(g.loc[g["tokens"] == tokens, col(f"{cond}_error_rate")],
                                          errors="coerce").notna().sum())
                if at_chance(rate, seeds):
                    chance.append(f"{label} {cond} at D = {fmt_number(tokens, 'si')}")
    note = ("at chance (within the 95% binomial band of 0.5): " + ", ".join(chance) if chance
            else "no point is at chance (all outside the 95% binomial band of 0.5)")
    out.append(plot(series, title="Reversal probe: error rate (distractor preferred)",
                    xlabel="training tokens D", ylabel="error rate", bands=[Band(0.5, 0.5, "0.5 = chance")],
                    note=note))
    return out


def reversal_means(view: TaskView) -> Table:
    """Margins and error rates per (model, D) on the data axis, mean over seeds."""
    frame = view.data_axis()
    columns = [{"label": "model", "unit": "", "numeric": False, "direction": ""},
               {"label": "D", "unit": "tokens", "numeric": True, "direction": ""}]
    columns += [{"label": f"{cond} {name}", "unit": "", "numeric": True, "direction": ""}
                for cond in CONDITIONS for _, _, name in MEASURES]
    order = {lab: i for i, lab in enumerate(view.labels)}
    rows = []
    for (label, tokens), g in sorted(frame.groupby(["label", "tokens"]),
                                     key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0], kv[0][1])):
        cells = [{"text": str(label), "sort": str(label), "classes": "nowrap"},
                 {"text": fmt_number(tokens, "si"), "sort": repr(float(tokens)), "classes": ""}]
        for cond in CONDITIONS:
            for what, spec, _ in MEASURES:
                value = mean(num(v) for v in g[view.column(f"{cond}_{what}")]) \
                    if view.column(f"{cond}_{what}") in g.columns else None
                text = fmt_number(value, spec)
                cells.append({"text": text, "sort": "" if value is None else repr(value),
                              "classes": "missing" if text == "missing" else ""})
        rows.append(cells)
    return Table(columns, rows, title="Mean over seeds on the data axis",
                 note="normal: The son of F is -> S; reversed: The father of S is -> F. Margin = NLL(distractor) "
                      "- NLL(target); an error is a negative margin.")


def reversal_section(view: TaskView) -> Section:
    section = Section(view.task, "Reversal probe", view.description, notes=[SECONDARY_NOTE])
    if view.evaluated().empty:
        section.notes.append("Reversal evaluation missing for every finished run (no eval/reversal.json).")
        return section
    section.plots = reversal_plots(view)
    section.tables = [reversal_means(view), runs_table(view)]
    return section
