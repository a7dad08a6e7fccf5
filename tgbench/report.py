"""`tgbench report`: one self-contained HTML page from a grid directory's files.

The report is a pure function of `grid.toml`, `results.csv`, `fits.json` and the run directories: it never
runs a model, never touches the network, and renders missing or failed pieces as "missing" / "fit failed".
The page holds the verdict (multipliers and perplexity differences next to the paper's numbers), inline SVG
plots, sortable tables and provenance. Every string read from a file is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tgbench.comparison import Comparison, grid_comparison
from tgbench.grid import grid_variants
from tgbench.plots import Band, Series, colours, plot
from tgbench.results import (
    MEMORY_TRAIN,
    TaskInfo,
    check_grid_dir,
    done_rows,
    ordered_labels,
    read_results,
    refresh_results,
    task_column,
    task_schemas,
)
from tgbench.runs import RunDir, list_runs, write_text
from tgbench.sections import Section, TaskView, axis_cells, fmt_number
from tgbench.sections import num as _num
from tgbench.tune import tuning_caveat, tuning_section

TEMPLATES = Path(__file__).parent / "templates"
MEMORY_TEST = task_column("ppl", "memory_slots_per_sentence")  # memory slots read per sentence while scoring
FIT_FORM = "kaplan"  # default form drawn (the paper's L(x) = (x_c / x)^alpha); fits.json's "form" overrides it


# -- the metric schema: display names, units and direction, used for formatting, sorting and colouring -----
@dataclass(frozen=True)
class Metric:
    label: str
    unit: str = ""
    lower_is_better: bool | None = None  # None: not a score (sizes, seeds)
    fmt: str = ".3f"  # format spec, or "si" for 1.2M-style counts, "text" for strings


METRICS: dict[str, Metric] = {
    "run_id": Metric("run", fmt="text"),
    "label": Metric("model", fmt="text"),
    "width": Metric("width", fmt="d"),
    "layers": Metric("layers", fmt="d"),
    "n_params": Metric("params", "non-emb.", fmt="si"),
    "tokens": Metric("D", "tokens", fmt="si"),
    "seed": Metric("seed", fmt="d"),
    "status": Metric("status", fmt="text"),
    "steps": Metric("steps", fmt="d"),
    "best_val_loss": Metric("best val loss", "nats/token", True),
    "test_loss": Metric("test loss", "nats/token", True),
    "test_ppl": Metric("test PPL", "lexical", True, ".2f"),
    "tokens_per_s": Metric("tokens/s", "training", False, ",.0f"),
    "sentences_per_s": Metric("sentences/s", "training", False, ",.1f"),
    "peak_memory_mb": Metric("peak memory", "MB", True, ",.0f"),
    "lr": Metric("LR", "peak", fmt=".3g"),
    "lr_source": Metric("LR from", fmt="text"),
    "max_grad_norm": Metric("max grad norm", "before clipping", fmt=".3g"),
    "clipped_fraction": Metric("clipped", "of steps", fmt=".0%"),
    "flags": Metric("flags", "tgbench/flags.py", fmt="text"),
    MEMORY_TRAIN: Metric("memory read", "slots/sentence, training", fmt=".2f"),
    MEMORY_TEST: Metric("memory read", "slots/sentence, test", fmt=".2f"),
}
# The runs table: settings, training and the primary (lexical) numbers; every task has its own section.
RUN_COLUMNS = ["run_id", "label", "width", "layers", "n_params", "tokens", "seed", "status", "steps",
               "best_val_loss", "test_loss", "test_ppl", "tokens_per_s", "sentences_per_s", "peak_memory_mb", "lr",
               "lr_source", "max_grad_norm", "clipped_fraction", "flags", MEMORY_TRAIN, MEMORY_TEST]

# The paper's comparison: its numbers are shown only beside this pair, its ablations only for TG's variants.
PAPER_PAIR = ("tg", "gpt2")
# The paper's numbers (paper.md section 5), shown beside the reproduction.
PAPER = {"data": (1.05, 1.08), "params": (1.33, 1.42), "ppl": (23.2, 24.0, "50M tokens, 85M params")}
# (variant, what it changes, paper test PPL at ~30M tokens, paper note, paper training sentences/s on one A40)
PAPER_ABLATIONS = [
    ("", "Thought Gestalt as published", 29.8, "", 21),
    ("detach", "detach at memory write", 35.0, "", 24),
    ("no-memory", "no sentence memory", 45.8, "", None),
    ("prefix-memory", "memory as prefix tokens (self-attention)", 30.2, "", 19),
    ("self-cross", "Self->Cross in every block (114M)", 29.4, "", 17),
    ("fixed-S40", "no curriculum (fixed S = 40)", 30.5, "", None),
    ("last-layer-vector", "sentence vector from the last layer", None, "+0.4-0.7", None),
    ("no-seeding", "no context seeding", None, "+0.4-0.7", None),
    ("no-eos-downweight", "no EOS down-weighting", None, "+0.4-0.7", None),
    ("half-length", "half max sentence length", None, "+0.4-0.7", None),
    ("mean-pool", "mean-pooled sentence vector (not in the paper)", None, "", None),
]


def fmt_value(value: Any, key: str = "", fmt: str | None = None) -> str:
    """Display text of one value under the schema (or an explicit format); "missing" for empty cells."""
    return fmt_number(value, fmt or (METRICS[key].fmt if key in METRICS else ".4g"))


def _fmt_x(value: float | None) -> str:
    return "missing" if value is None else f"{value:.2f}\u00d7"


# -- reading the grid directory -----------------------------------------------------------------------------
@dataclass
class GridFiles:
    """Everything the report reads, already parsed; absent files are empty values, never errors."""

    path: Path
    grid: dict[str, Any]
    results: pd.DataFrame
    fits: dict[str, Any] | None
    fits_error: str
    runs: dict[str, RunDir]
    tasks: dict[str, TaskInfo] = field(default_factory=dict)  # every task that ran, with its metrics
    comparison: Comparison | None = None  # the grid's reference and baselines over the labels with runs

    def __post_init__(self) -> None:
        if self.comparison is None:
            self.comparison = grid_comparison(self.grid, self.results["label"] if "label" in self.results else [])

    def ordered(self, labels: Iterable[Any]) -> list[str]:
        """Labels in reading order: the reference, then the grid's order, then the rest alphabetically."""
        present = {str(x) for x in labels}
        return [lab for lab in self.comparison.labels if lab in present] + sorted(
            present - set(self.comparison.labels))


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, "missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"unreadable ({err})"
    return (data, "") if isinstance(data, dict) else (None, "not a JSON object")


def load_grid_files(grid_dir: Path) -> GridFiles:
    """Parse grid.toml, results.csv (rebuilt in memory from the run dirs when absent) and fits.json."""
    grid_dir = Path(grid_dir)
    try:
        grid = tomllib.loads((grid_dir / "grid.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        grid = {}
    runs = {d.name: RunDir(d) for d in list_runs(grid_dir)}
    results = read_results(grid_dir, grid_variants(grid))
    fits, fits_error = _read_json(grid_dir / "fits.json")
    return GridFiles(grid_dir, grid, results, fits, fits_error, runs, task_schemas(grid_dir))


_axis_cells = axis_cells


# -- the verdict: rendered from fits.json, which computes every statistic (tasks/verdicts.py) -----------------
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
    ok = [p for p in points if p.get("status") == "ok" and _num(p.get("value")) is not None
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


def _split_flags(cell: Any) -> list[str]:
    from tgbench.flags import split_flags

    return split_flags(cell)


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
    mults = {axis: multiplier_summary(fits if has_fits else None, axis, a, b, _report_form(fits))
             for axis in ("data", "params")}
    if not has_fits:
        for m in mults.values():
            m["note"] = ("fits.json is missing: run tgbench fit" if not files.fits else
                         f"fits.json does not fit {a} vs {b}; rerun tgbench fit --pair {a},{b}")
    for axis, m in mults.items():
        if not m["points"] and _axis_extent(files.results, axis, (a, b)) < 3:
            what = "budgets at one size" if axis == "data" else "sizes at one budget"
            m.update(status="not measured", note=f"this grid has fewer than 3 {what}, so no {axis} axis to fit")
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
                "multipliers": mults, "power": power, "flagged": [], "sensitive_to": [], "has_fits": has_fits,
                "paper": (a, b) == PAPER_PAIR}
    cls = str(entry.get("class", ""))
    # fits.json lists the pair's flagged runs (results.csv's flags plus the table's own); older files: the column
    flagged = ([{"run": f["run"], "flags": "; ".join(f.get("flags") or [])} for f in entry["flagged"]]
               if "flagged" in entry else
               [{"run": r, "flags": flags[r].replace(";", "; ")} for r in entry.get("runs", []) if r in flags])
    return {"a": a, "b": b, "class": cls, "pill": _class_pill(cls, a, b), "sentence": str(entry.get("sentence", "")),
            "per_budget": entry.get("per_budget") or [], "delta_mean": entry.get("delta_mean"),
            "delta_ci": entry.get("delta_ci") or [None, None], "ppl_rel": entry.get("ppl_rel"),
            "group": entry.get("group", ""), "multipliers": mults, "power": power, "flagged": flagged,
            "sensitive_to": entry.get("sensitive_to") or [], "without_flagged": entry.get("without_flagged"),
            "has_fits": has_fits, "paper": (a, b) == PAPER_PAIR}


def verdicts(files: GridFiles) -> list[dict[str, Any]]:
    """Every pair fits.json compared, in its order; without fits.json, the grid's comparison (the grid file's
    `reference` against its `baselines`; shown as missing)."""
    pairs = _fitted_pairs(files.fits)
    if not pairs:
        from tgbench.tasks.verdicts import comparison_pairs

        comparison = files.comparison
        pairs = comparison_pairs(list(comparison.labels), comparison.reference or None,
                                 list(comparison.baselines))
    return [pair_verdict(files, a, b) for a, b in pairs]


def _report_form(fits: dict[str, Any] | None) -> str:
    """The fit form the report draws: fits.json's ``form`` setting (``tgbench fit --form``), else Kaplan."""
    return str((fits or {}).get("form") or FIT_FORM)


# -- plots ---------------------------------------------------------------------------------------------------
def _fit_curve(fit: dict[str, Any] | None, lo: float, hi: float) -> list[tuple[float, float]]:
    from tgbench.tasks.scaling import PowerLawFit

    if not fit or not fit.get("converged") or not fit.get("params"):
        return []
    model = PowerLawFit(form=fit["form"], params=fit["params"], intervals={}, converged=True, reason="",
                        n_points=0, x=[], y=[])
    xs = np.geomspace(lo, hi, 40)
    return list(zip(xs.tolist(), model.predict(xs).tolist(), strict=True))


def scaling_plots(files: GridFiles, palette: dict[str, str]) -> list:
    """Loss against D (data axis) and against N (parameter axis): seed means, seed spread, fitted curves."""
    frame = done_rows(files.results)
    data_group, param_tokens = _axis_cells(files.results)
    out = []
    specs = [("data", "tokens", "training tokens D", data_group is not None,
              lambda f: (f["width"] == data_group[0]) & (f["layers"] == data_group[1]),
              f"width={data_group[0]},layers={data_group[1]}" if data_group else ""),
             ("params", "n_params", "non-embedding parameters N", param_tokens is not None,
              lambda f: f["tokens"] == param_tokens, f"tokens={param_tokens}")]
    for axis, x_col, xlabel, present, select, group in specs:
        series = []
        uses_val = False
        if present:
            rows = frame[select(frame)]
            uses_val = bool(rows["loss_is_val"].any())
            for label in files.ordered(rows["label"]):
                g = rows[rows["label"] == label]
                pts, errs = [], []
                for x, gx in g.groupby(x_col):
                    losses = [v for v in (_num(v) for v in gx["loss"]) if v is not None]
                    if losses:
                        pts.append((float(x), float(np.mean(losses))))
                        errs.append((float(x), min(losses), max(losses)))
                fit = (((files.fits or {}).get("axes") or {}).get(axis) or {}).get(label, {}).get(group, {})
                xs = [p[0] for p in pts]
                curve = _fit_curve(fit.get(_report_form(files.fits)), min(xs), max(xs)) if xs else []
                series.append(Series(label, palette[label], pts, errs, curve))
        where = (f"width {data_group[0]}, {data_group[1]} layers" if axis == "data" and data_group else
                 f"D = {fmt_value(param_tokens, fmt='si')} tokens" if param_tokens else "")
        note = f"points: seed mean, bars: seed min-max, lines: {_report_form(files.fits)} fit" + \
            ("; no test eval: best val loss" if uses_val else "")
        out.append(plot(series, title=f"Lexical test loss vs {'D' if axis == 'data' else 'N'} ({where})"
                        if where else f"Lexical test loss vs {'D' if axis == 'data' else 'N'}",
                        xlabel=xlabel, ylabel="loss (nats/token)", xlog=True, ylog=True, note=note))
    return out


def multiplier_plots(pair_verdicts: list[dict[str, Any]], palette: dict[str, str]) -> list:
    """Every fitted pair's multipliers against D and against N, with intervals and the paper's band."""
    out = []
    first = pair_verdicts[0]["a"]
    shown = [v for v in pair_verdicts if v["a"] == first]
    for axis, xlabel in (("data", "training tokens D"), ("params", "non-embedding parameters N")):
        series = []
        for verdict in shown:
            ok = [p for p in verdict["multipliers"][axis]["points"]
                  if p.get("status") == "ok" and _num(p.get("value")) is not None]
            series.append(Series(f"{verdict['b']} over {verdict['a']}", palette.get(verdict["b"], "#D55E00"),
                                 [(p["x"], p["value"]) for p in ok],
                                 [(p["x"], p["ci_low"], p["ci_high"]) for p in ok
                                  if _num(p.get("ci_low")) is not None and _num(p.get("ci_high")) is not None],
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
                           if _num(r.get(key)) is not None and (_num(r.get("tokens")) or 0) > 0]
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


# -- tables --------------------------------------------------------------------------------------------------
def runs_table(frame: pd.DataFrame, order: Iterable[str] = ()) -> dict[str, Any]:
    """Every run with display text, sort keys and the best value of each scored column marked; models in
    reading order (`order`: the reference first), then by D, width and seed."""
    frame = frame.assign(**{key: None for key in RUN_COLUMNS if key not in frame.columns})  # e.g. no ppl yet
    best = {}
    done = done_rows(frame)
    for key in RUN_COLUMNS:
        metric = METRICS[key]
        values = [v for v in (_num(x) for x in done[key]) if v is not None]
        if values and metric.lower_is_better is not None:
            best[key] = min(values) if metric.lower_is_better else max(values)
    rows = []
    rank = {lab: i for i, lab in enumerate(ordered_labels(frame["label"], order))}
    ranked = frame.assign(_rank=[rank.get(str(lab), len(rank)) for lab in frame["label"]])
    for _, row in ranked.sort_values(["_rank", "tokens", "width", "seed"], na_position="last").iterrows():
        cells = []
        for key in RUN_COLUMNS:
            value = row[key]
            number = _num(value) if METRICS[key].fmt != "text" else None
            text = fmt_value(value, key) if key != "flags" else "; ".join(_split_flags(value))
            if key == "flags" and text:
                value = text
            classes = []
            if text == "missing":
                classes.append("missing")
            if key in best and number is not None and number == best[key] and row["status"] == "done":
                classes.append("best")
            if key == "status":
                classes.append(f"status-{text}")
            sort = "" if text in ("missing", "") else (repr(number) if number is not None else str(value))
            cells.append({"text": text, "sort": sort, "classes": " ".join(classes)})
        rows.append(cells)
    directions = {True: "lower is better", False: "higher is better"}
    columns = [{"key": k, "label": m.label, "unit": m.unit, "numeric": m.fmt != "text",
                "direction": directions.get(m.lower_is_better, "")}
               for k, m in ((k, METRICS[k]) for k in RUN_COLUMNS)]
    return {"columns": columns, "rows": rows}


def ablation_table(frame: pd.DataFrame, reference: str) -> dict[str, Any]:
    """Variants of the reference adapter (labels reference/variant) against the plain reference, at the largest
    budget each shares with it; with TG as the reference, next to the paper's ablations (also those not run).

    Returns:
        {"rows": [...], "paper": whether the paper's columns apply, "reference": the label}; no rows when the
        reference has no variants and is not TG.
    """
    done = done_rows(frame)
    base = done[done["label"] == reference]
    paper = reference == PAPER_PAIR[0]
    known = {v for v, *_ in PAPER_ABLATIONS} if paper else set()
    extra = sorted({str(lab).split("/", 1)[1] for lab in done["label"] if str(lab).startswith(f"{reference}/")}
                   - known)
    if not paper and not extra:
        return {"rows": [], "paper": False, "reference": reference}
    listed = PAPER_ABLATIONS if paper else [("", f"{reference} as listed in the grid", None, "", None)]
    rows = []
    for variant, what, paper_ppl, paper_note, paper_sps in [*listed, *[(v, "", None, "", None) for v in extra]]:
        label = reference if not variant else f"{reference}/{variant}"
        runs = done[done["label"] == label]
        measured = base_ppl = sps = None
        cell = ""
        if len(runs):
            shared = sorted(set(zip(runs["width"], runs["tokens"], strict=True)) &
                            set(zip(base["width"], base["tokens"], strict=True)), key=lambda c: (c[1], c[0]))
            width, tokens = shared[-1] if shared else max(zip(runs["width"], runs["tokens"], strict=True),
                                                          key=lambda c: (c[1], c[0]))
            here = runs[(runs["width"] == width) & (runs["tokens"] == tokens)]
            measured = _geomean([_num(v) for v in here["test_ppl"]])  # perplexities: geometric means
            sps = _mean([_num(v) for v in here["sentences_per_s"]])
            ref = base[(base["width"] == width) & (base["tokens"] == tokens)]
            base_ppl = _geomean([_num(v) for v in ref["test_ppl"]])
            cell = f"width {width}, D = {fmt_value(tokens, fmt='si')}"
        paper_delta = (f"{paper_ppl - 29.8:+.1f}" if paper_ppl is not None and variant else paper_note) or ""
        rows.append({"variant": variant or "(none)", "label": label, "what": what,
                     "paper_ppl": fmt_value(paper_ppl, fmt=".1f") if paper_ppl is not None else "",
                     "paper_delta": paper_delta, "paper_sps": "" if paper_sps is None else str(paper_sps),
                     "ppl": fmt_value(measured, fmt=".2f"),
                     "delta": fmt_value(measured - base_ppl, fmt="+.2f")
                     if measured is not None and base_ppl is not None and variant else "",
                     "sps": fmt_value(sps, fmt=",.1f"), "cell": cell,
                     "ran": measured is not None})
    return {"rows": rows, "paper": paper, "reference": reference}


def _geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of positive values (a perplexity summary: exp of the mean log-loss), None when none."""
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def fits_table(fits: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per fitted (axis, label, group, form), plus the joint fits, with parameters and intervals."""
    if not fits:
        return []
    rows = []
    entries = [(axis, label, group, form, fit)
               for axis, labels in sorted((fits.get("axes") or {}).items())
               for label, groups in sorted((labels or {}).items())
               for group, forms in sorted((groups or {}).items())
               for form, fit in sorted((forms or {}).items())]
    entries += [("joint", label, "all runs", "joint", fit)
                for label, fit in sorted((fits.get("joint") or {}).items())]
    for axis, label, group, form, fit in entries:
        fit = fit or {}
        params = []
        for name, value in (fit.get("params") or {}).items():
            lo, hi = ((fit.get("intervals") or {}).get(name) or [None, None])[:2]
            ci = f" [{_g(lo)}, {_g(hi)}]" if _num(lo) is not None and _num(hi) is not None else ""
            params.append(f"{name} = {_g(value)}{ci}")
        failed = fit.get("failed_fraction")
        lof = fit.get("lack_of_fit") or {}
        p_text = fmt_value(lof.get("p_value"), fmt=".2g")
        lof_text = f"F({lof['df1']}, {lof['df2']}) = {_g(lof.get('F'))}, p = {p_text}" if lof else ""
        if lof.get("sentence"):
            lof_text += f": {lof['sentence']}"
        if not fit.get("converged"):
            params = []  # a failed fit (e.g. E on its bound) shows no parameters as fitted
        rows.append({"axis": axis, "label": label, "group": group, "form": form, "lack_of_fit": lof_text,
                     "status": "ok" if fit.get("converged") else "fit failed",
                     "reason": fit.get("reason") or "", "params": params, "n_points": fit.get("n_points", ""),
                     "failed": fmt_value(failed, fmt=".0%") if _num(failed) is not None else ""})
    return rows


def _g(value: Any) -> str:
    number = _num(value)
    return "missing" if number is None else f"{number:.4g}"


def throughput_table(frame: pd.DataFrame, baseline: str = "", order: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Mean training throughput and peak memory per (model, width), with the ratio to `baseline` (the grid's
    first baseline) at that width."""
    done = done_rows(frame)
    rows = []
    reference = done[done["label"] == baseline]
    base = {w: _mean([_num(v) for v in g["tokens_per_s"]]) for w, g in reference.groupby("width")}
    for (label, width), g in done.groupby(["label", "width"]):
        tps = _mean([_num(v) for v in g["tokens_per_s"]])
        ref = base.get(width)
        sps = _mean([_num(v) for v in g["sentences_per_s"]])
        memory = max([v for v in (_num(x) for x in g["peak_memory_mb"]) if v is not None], default=None)
        rows.append({"label": label, "width": int(width), "runs": len(g),
                     "tokens_per_s": fmt_value(tps, "tokens_per_s"),
                     "sentences_per_s": fmt_value(sps, "sentences_per_s"),
                     "peak_memory_mb": fmt_value(memory, "peak_memory_mb"),
                     "ratio": f"{tps / ref:.2f}" if tps and ref else ""})
    order = {lab: i for i, lab in enumerate(ordered_labels(done["label"], order))}
    return sorted(rows, key=lambda r: (order.get(r["label"], 99), r["width"]))


def task_sections(files: GridFiles, labels: list[str], palette: dict[str, str]) -> list[Section]:
    """One section per task that ran: the registered task's own (`Task.report_section`), else the generic one."""
    from tgbench.registry import task_class
    from tgbench.sections import generic_section

    data_group, param_tokens = axis_cells(files.results)
    out = []
    for task, info in files.tasks.items():
        cls = task_class(task, info.reference)
        view = TaskView(task, list(info.metrics), files.results, labels, palette, data_group, param_tokens,
                        description=info.description or (cls.description if cls is not None else ""))
        own = cls().report_section(view) if cls is not None else None
        out.append(own if own is not None else generic_section(view))
    return out


# -- provenance ----------------------------------------------------------------------------------------------
def provenance(files: GridFiles) -> dict[str, Any]:
    """Versions, commits, devices, data settings, dates, and every missing run or evaluation."""
    meta_keys = ("tgbench", "torch", "numpy", "python", "platform", "device", "device_name", "git_sha")
    seen: dict[str, dict[str, int]] = {k: {} for k in meta_keys}
    done_dates, eval_dates = [], []
    missing_eval, failures = [], []
    for name, run in files.runs.items():
        try:
            meta = run.read_meta()
        except (OSError, tomllib.TOMLDecodeError):
            meta = {}
        for key in meta_keys:
            value = str(meta.get(key, "missing"))
            seen[key][value] = seen[key].get(value, 0) + 1
        if run.done:
            done_dates.append((run.path / "DONE").read_text(encoding="utf-8").strip())
            for task in files.tasks:
                data, _ = _read_json(run.eval_dir / f"{task}.json")
                if data is None:
                    missing_eval.append({"run": name, "task": task})
                elif data.get("date_iso"):
                    eval_dates.append(str(data["date_iso"]))
        elif run.failed:
            message = (run.path / "FAILED").read_text(encoding="utf-8").strip()
            failures.append({"run": name, "message": message})
    expected = list(grid_variants(files.grid))
    not_started = [r for r in expected if r not in files.runs]
    unfinished = [{"run": str(r["run_id"]), "status": str(r["status"])} for _, r in files.results.iterrows()
                  if str(r["status"]) not in ("done", "failed")]
    data = files.grid.get("data") or {}
    grid_keys = ("name", "description", "design", "widths", "layers", "head_dim", "budgets", "seeds",
                 "reference_width")
    return {
        "versions": [{"key": k, "values": sorted(v.items())} for k, v in seen.items()],
        "grid": [{"key": k, "value": _show(files.grid.get(k))} for k in grid_keys if k in files.grid],
        "data": [{"key": k, "value": _show(v)} for k, v in sorted(data.items())],
        # the grid's budgets and seeds replace train.tokens and train.seed in every run
        "train": [{"key": k, "value": _show(v)} for k, v in sorted((files.grid.get("train") or {}).items())
                  if k not in ("tokens", "seed")],
        "models": [{"label": m.get("adapter", "") + (f"/{m['variant']}" if m.get("variant") else ""),
                    "options": _show(m.get("options", {}))} for m in files.grid.get("models", [])],
        "trained": (min(done_dates), max(done_dates)) if done_dates else None,
        "evaluated": (min(eval_dates), max(eval_dates)) if eval_dates else None,
        "not_started": not_started, "unfinished": unfinished, "missing_eval": missing_eval,
        "failures": failures,
        "fits_status": "present" if files.fits else f"fits.json {files.fits_error}",
        "fits_notes": [str(n) for n in (files.fits or {}).get("notes", [])],
        "loss_column": (files.fits or {}).get("loss_column", ""),
    }


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_show(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    return str(value)


# -- rendering -----------------------------------------------------------------------------------------------
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        enabled_extensions=("html", "j2"), default_for_string=True, default=True), trim_blocks=True,
        lstrip_blocks=True)
    env.filters["x"] = _fmt_x
    env.filters["v"] = lambda value, fmt=".3f": fmt_value(value, fmt=fmt)
    return env


def render_report(grid_dir: Path | GridFiles) -> str:
    """The report of a grid directory as one HTML string (no network resources, no external files).

    Args:
        grid_dir: A grid directory (grid.toml, results.csv, fits.json, run dirs); any of them may be missing.
            Or its files already read (`tgbench.compare` pools several grids' files into one).

    Returns:
        The HTML page.
    """
    files = grid_dir if isinstance(grid_dir, GridFiles) else load_grid_files(Path(grid_dir))
    grid_dir = files.path
    frame = files.results
    labels = list(files.comparison.labels)
    palette = colours(labels)
    baseline = files.comparison.baselines[0] if files.comparison.baselines else ""
    empty = frame.empty
    pair_verdicts = [] if empty else verdicts(files)
    context = {
        "title": str(files.grid.get("name") or Path(grid_dir).name),
        "description": str(files.grid.get("description") or ""),
        "grid_dir": str(grid_dir),
        "empty": empty,
        "counts": frame["status"].astype(str).value_counts().to_dict() if not empty else {},
        "n_runs": len(frame),
        "verdicts": pair_verdicts,
        "paper": PAPER,
        "scaling_plots": [] if empty else scaling_plots(files, palette),
        "multiplier_plots": multiplier_plots(pair_verdicts, palette) if pair_verdicts else [],
        "curve_plots": [] if empty else curve_plots(files, palette),
        "task_sections": [] if empty else task_sections(files, labels, palette),
        "runs": runs_table(frame, labels) if not empty else None,
        "reference": files.comparison.reference,
        "baseline": baseline,
        "ablations": ablation_table(frame, files.comparison.reference) if not empty else {"rows": []},
        "fits": fits_table(files.fits),
        "fits_status": "present" if files.fits else f"fits.json {files.fits_error}",
        "throughput": throughput_table(frame, baseline, labels) if not empty else [],
        "provenance": provenance(files),
        "tuning": tuning_section(files.path, palette),
        "tuning_caveat": "" if empty else tuning_caveat(frame),
        "fit_form": _report_form(files.fits),
    }
    return _environment().get_template("report.html.j2").render(**context)


def write_report(grid_dir: Path, output: Path | None = None) -> Path:
    """Render the report of `grid_dir` and write it atomically (default `<grid_dir>/report.html`).

    `grid_dir` may be a single run directory: the report of that one run.
    """
    from tgbench.errors import UserError

    grid_dir = Path(grid_dir)
    check_grid_dir(grid_dir, "report")
    output = Path(output) if output is not None else grid_dir / "report.html"
    if output.is_dir():
        raise UserError(f"-o '{output}' is a directory",
                        f"give the report's file name, e.g. -o {output / 'report.html'}")
    with contextlib.suppress(OSError):  # a read-only grid: render_report rebuilds a stale table in memory
        refresh_results(grid_dir)
    write_text(output, render_report(grid_dir))
    return output
