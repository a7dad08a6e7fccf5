"""Each pair's verdict as the report shows it: class, sentence and numbers from fits.json, with its multipliers.

Nothing is computed here: fits.json's ``verdicts`` (`tgbench.tasks.stats.verdicts`) decides, this module only
picks what the page shows and says what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from markupsafe import Markup

from tgbench.plan.comparison import comparison_pairs
from tgbench.report.files import GridFiles
from tgbench.report.format import num
from tgbench.report.plots import ForestRow, fmt_si, forest_plot
from tgbench.results.columns import done_rows
from tgbench.tasks.stats.paired import AXES, COMPUTE, DATA, size_gap_sentence, size_gaps

FIT_FORM = "kaplan"  # default form drawn (the paper's L(x) = (x_c / x)^alpha); fits.json's "form" overrides it


# The paper's comparison: its numbers are shown only beside this pair, its ablations only for TG's variants.
PAPER_PAIR = ("tg", "gpt2")


# The paper's numbers (paper.md section 5), shown beside the reproduction.
PAPER = {"data": (1.05, 1.08), "params": (1.33, 1.42), "ppl": (23.2, 24.0, "50M tokens, 85M params")}


# The presets that measure an axis a grid lacks, named where the report leaves that axis out. A preset's report
# lands in runs/<preset>/ beside a user's runs/<grid>/ (and is committed at reports/<preset>/ beside the others),
# so the link is relative to this report's folder.
AXIS_PRESETS = {
    "data": ("demo", "the demo and cpu-study presets measure it (3 budgets at width 128)"),
    "params": ("cpu-params", "the cpu-params preset measures it (widths 64-192 x 4 layers at one budget, each "
                             "model tuned at every width)"),
}


# -- the verdict: rendered from fits.json, which computes every statistic (tasks/stats/verdicts.py) -----------------
# display of a verdict class: (pill colour, short text)
def _class_pill(cls: str, a: str, b: str) -> str:
    """The pill colour of a verdict class: "ahead" when A is better, "behind" when B is, else "overlap"."""
    if cls.startswith(f"{a} better"):
        return "ahead"
    if cls.startswith(f"{b} better"):
        return "behind"
    return "overlap" if cls else "unknown"


def multiplier_summary(fits: dict[str, Any] | None, axis: str, a: str, b: str,
                       form: str = FIT_FORM) -> dict[str, Any]:
    """B's multipliers over A on one axis, as fits.json has them: points with intervals, and their range.

    ``range`` is the min-max of the point estimates over the measured budgets (or sizes) that were not
    extrapolated. Nothing is classified here: the verdict is fits.json's ``verdicts``.
    """
    if not fits:
        return {"status": "missing", "points": [], "range": None, "kind": form}
    groups = (((fits.get("multipliers") or {}).get(axis) or {}).get(a) or {}).get(b) or {}
    points, notes, kind = [], set(), form
    for group, forms in sorted(groups.items()):
        forms = forms or {}
        kind = "interpolated" if "interpolated" in forms else form
        mult = forms.get(kind) or {}
        if mult.get("interval_note"):
            notes.add(str(mult["interval_note"]))
        for p in mult.get("points", []):
            points.append({**p, "group": group})
    if not points:
        note = next((n for n in fits.get("notes", []) if f"no {axis}-axis multipliers for {a} vs {b}" in n), "")
        return {"status": "missing", "points": [], "range": None, "kind": kind,
                "note": note or f"fits.json has no {axis}-axis multipliers for {a} vs {b}"}
    ok = [p for p in points if p.get("status") == "ok" and num(p.get("value")) is not None
          and not p.get("extrapolated")]
    if not ok:
        status = "fit failed" if any(p.get("status") == "fit failed" for p in points) else "not reachable"
        return {"status": status, "points": points, "range": None, "kind": kind,
                "note": "no point inside B's measured range" if status == "not reachable" else ""}
    values = [p["value"] for p in ok]
    return {"status": "ok", "points": points, "range": (min(values), max(values)), "n_points": len(ok),
            "kind": kind, "note": "; ".join(sorted(notes))}


def _fitted_pairs(fits: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(p[0]), str(p[1])) for p in (fits or {}).get("pairs") or [] if len(p) == 2]


def _axis_extent(frame: pd.DataFrame, axis: str, labels: Iterable[str]) -> int:
    """The most distinct x values (budgets, or sizes) any group of the axis has for the given labels."""
    done = done_rows(frame)
    done = done[done["label"].isin(list(labels))]
    group, x = (["width", "layers"], "tokens") if axis == "data" else (["tokens"], "n_params")
    if done.empty:
        return 0
    return int(done.groupby(["label", *group])[x].nunique().max())


def _run_flags(frame: pd.DataFrame) -> dict[str, str]:
    """run_id -> the flags results.csv records for it (empty ones left out)."""
    if "flags" not in frame.columns:
        return {}
    return {str(r): str(f) for r, f in zip(frame["run_id"], frame["flags"], strict=True)
            if isinstance(f, str) and f.strip()}


def pair_verdict(files: GridFiles, a: str, b: str) -> dict[str, Any]:
    """The pair's verdict from fits.json (class, sentence, per-budget differences, power, flagged runs)."""
    fits = files.fits or {}
    entry = next((v for v in fits.get("verdicts") or [] if v.get("a") == a and v.get("b") == b), None)
    power = next((p for p in fits.get("power") or [] if p.get("a") == a and p.get("b") == b), None)
    has_fits = (a, b) in _fitted_pairs(fits)
    mults = {axis: multiplier_summary(fits if has_fits else None, axis, a, b, report_form(fits))
             for axis in ("data", "params", "compute")}
    if not has_fits:
        for m in mults.values():
            m["note"] = ("fits.json is missing: run tgbench fit" if not files.fits else
                         f"fits.json does not fit {a} vs {b}; rerun tgbench fit --pair {a},{b}")
    # k_C only where FLOPs were counted: runs from before then have no compute axis to speak of
    mults["compute"]["shown"] = bool(mults["compute"]["points"]) or _has_flops(files.results)
    for axis, m in mults.items():
        if axis == "compute":
            # a model's compute axis is its budgets at one size: with fewer than 3 there is nothing to fit
            if not m["points"] and m["shown"] and _axis_extent(files.results, "data", (a, b)) < 3:
                m.update(status="not measured", note="this grid has fewer than 3 budgets at one size, so no "
                                                     f"compute axis to fit; the {AXIS_PRESETS['data'][0]} preset "
                                                     "measures it")
            continue
        if not m["points"] and _axis_extent(files.results, axis, (a, b)) < 3:
            what = "budgets at one size" if axis == "data" else "sizes at one budget"
            preset = AXIS_PRESETS[axis][0]
            m.update(status="not measured", note=f"this grid has fewer than 3 {what}, so no {axis} axis to fit; "
                                                 f"the {preset} preset measures it")
    # what equal width means in N, stated beside m_N (TG has a few percent more parameters than GPT-2 at a width)
    done = done_rows(files.results)
    mults["params"]["size_gap"] = size_gap_sentence(size_gaps(done, a, b), a, b) if "label" in done else ""
    flags = _run_flags(files.results)
    if entry is None:
        done = set(done_rows(files.results)["label"])
        if not {a, b} <= done:
            sentence = f"No finished, evaluated runs of both {a} and {b} yet: nothing to compare."
        elif not files.fits:
            sentence = "No verdict: fits.json is missing. Run tgbench fit on this directory."
        elif not has_fits:
            sentence = f"No verdict: fits.json does not compare {a} with {b}; rerun tgbench fit --pair {a},{b}."
        else:
            sentence = f"No finished runs of {a} and {b} at the same budget and replicate yet: nothing to compare."
        return {"a": a, "b": b, "class": "", "pill": "unknown", "sentence": sentence, "per_budget": [],
                "multipliers": mults, "power": power, "flagged": [], "influential": [], "details": [],
                "forest": None, "has_fits": has_fits, "paper": (a, b) == PAPER_PAIR,
                "axis": AXES[str(fits.get("axis") or DATA.name)], "other_axes": other_axes(files, a, b)}
    cls = str(entry.get("class", ""))
    # fits.json lists the pair's flagged runs (results.csv's flags plus the table's own); older files: the column
    flagged = ([{"run": f["run"], "flags": "; ".join(f.get("flags") or [])} for f in entry["flagged"]]
               if "flagged" in entry else
               [{"run": r, "flags": flags[r].replace(";", "; ")} for r in entry.get("runs", []) if r in flags])
    return {"a": a, "b": b, "class": cls, "pill": _class_pill(cls, a, b), "sentence": str(entry.get("sentence", "")),
            "details": [str(d) for d in entry.get("details") or []],
            "per_budget": entry.get("per_budget") or [], "delta_mean": entry.get("delta_mean"),
            "delta_ci": entry.get("delta_ci") or [None, None], "ppl_rel": entry.get("ppl_rel"),
            "group": entry.get("group", ""), "multipliers": mults, "power": power, "flagged": flagged,
            "influential": entry.get("influential") or [], "without_flagged": entry.get("without_flagged"),
            "forest": forest(entry), "has_fits": has_fits, "paper": (a, b) == PAPER_PAIR,
            "axis": AXES[str(entry.get("axis") or DATA.name)], "other_axes": other_axes(files, a, b),
            "by_position": next((s for s in attribution(fits).get("by_position", [])
                                 if s.get("a") == a and s.get("b") == b), None)}


def attribution(fits: dict[str, Any] | None) -> dict[str, Any]:
    """fits.json's ``attribution`` (memory gains over the no-memory twins, differences of gains, each pair's gap at
    sentence 1 against later sentences); {} for a fits.json written before it."""
    return (fits or {}).get("attribution") or {}


def _has_flops(frame: pd.DataFrame) -> bool:
    done = done_rows(frame)
    return "train_flops" in done.columns and bool(pd.to_numeric(done["train_flops"], errors="coerce").gt(0).any())


def other_axes(files: GridFiles, a: str, b: str) -> list[dict[str, Any]]:
    """The pair's verdicts on the axes fits.json measured besides its leading one (equal compute beside equal data,
    equal size on a grid of widths): {at, class, pill, sentence}; a line saying why when FLOPs were counted but no
    equal-compute verdict could be formed."""
    fits = files.fits or {}
    lead = str(fits.get("axis") or DATA.name)
    out = []
    for name, spec in AXES.items():
        if name == lead:
            continue
        entries = ((fits.get("by_axis") or {}).get(name) or {}).get("verdicts") or []
        entry = next((v for v in entries if v.get("a") == a and v.get("b") == b), None)
        if entry is not None:
            cls = str(entry.get("class", ""))
            out.append({"at": spec.at, "class": cls, "pill": _class_pill(cls, a, b),
                        "sentence": str(entry.get("sentence", "")), "details": entry.get("details") or []})
        elif name == COMPUTE.name and _has_flops(files.results) and fits.get("by_axis") is not None:
            why = next((n for n in ((fits.get("by_axis") or {}).get(name) or {}).get("notes") or []
                        if f"for {a} vs {b}" in n), "")
            out.append({"at": spec.at, "class": "", "pill": "unknown", "details": [],
                        "sentence": why or f"no verdict {spec.at}: rerun tgbench fit"})
    return out


def forest(entry: dict[str, Any], standalone: bool = False) -> Markup | None:
    """The verdict at a glance: the paired difference at each budget with its 95% interval, the pooled
    difference, a zero line, the class as the title (None without per-budget differences)."""
    per_budget = entry.get("per_budget") or []
    if not per_budget:
        return None
    a, b = entry["a"], entry["b"]
    symbol = AXES[str(entry.get("axis") or DATA.name)].symbol
    rows = [ForestRow(f"{symbol} = {fmt_si(p['x'])} (n = {p['n']})", p.get("delta_mean"),
                      *(p.get("delta_ci") or [None, None])) for p in per_budget]
    lo, hi = entry.get("delta_ci") or [None, None]
    rows.append(ForestRow("pooled", entry.get("delta_mean"), lo, hi, pooled=True))
    return forest_plot(rows, title=f"{a} vs {b}", subtitle=str(entry.get("class", "")), standalone=standalone,
                       xlabel=f"{a} \u2212 {b}, lexical test loss (nats/token); left of 0: {a} lower",
                       note="paired over replicates; bars: 95% t intervals")


def verdicts(files: GridFiles) -> list[dict[str, Any]]:
    """Every pair fits.json compared, in its order; without fits.json, the grid's comparison (the grid file's
    `reference` against its `baselines`; shown as missing)."""
    pairs = _fitted_pairs(files.fits)
    if not pairs:

        comparison = files.comparison
        pairs = comparison_pairs(list(comparison.labels), comparison.reference or None,
                                 list(comparison.baselines))
    return [pair_verdict(files, a, b) for a, b in pairs]


def report_form(fits: dict[str, Any] | None) -> str:
    """The fit form the report draws: fits.json's ``form`` setting (``tgbench fit --form``), else Kaplan."""
    return str((fits or {}).get("form") or FIT_FORM)
