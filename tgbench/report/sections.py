"""Every block of the report page, in page order: one builder function each, registered with `@section`.

A builder reads the grid's files (`Page`: GridFiles plus the labels, colours and verdicts every block shares) and
returns a `PageSection` (or several, or None for a block with nothing to show): its anchor and title (the
page's navigation lists them), the partial template that draws it (templates/sections/) and the data that
partial reads. The page template only loops over them. A new block is one builder and its registration:

    @section
    def my_block(page: Page) -> PageSection:
        return PageSection("my-block", "My block", "generic", {"sec": Section("my-block", "My block", notes=[...])})

where "generic" draws a `tgbench.report.task_sections.Section` (plots, tables, notes), as every task's does.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tgbench.plan.comparison import ordered_labels
from tgbench.plan.expand import grid_variants
from tgbench.registry import task_class
from tgbench.report.figures import compute_plot, curve_plots, missing_axes, multiplier_plots, scaling_plots
from tgbench.report.files import GridFiles, read_json_file
from tgbench.report.format import fmt_g, fmt_value, geomean, mean, num
from tgbench.report.tables import runs_table
from tgbench.report.task_sections import TaskView, axis_cells, generic_section
from tgbench.report.tuning import comparison_tuning, tuning_caveat, tuning_section
from tgbench.report.verdict import PAPER, PAPER_PAIR, attribution, report_form
from tgbench.results.columns import COLUMNS, LEXICAL_PER_STEP, MEMORY_TEST, MEMORY_TRAIN, done_rows


@dataclass
class PageSection:
    """One block of the page.

    Attributes:
        anchor: Its id (the navigation links to #anchor).
        title: Its name in the navigation.
        template: Its partial, templates/sections/<template>.html.j2.
        data: What the partial reads (passed to it as `data`).
    """

    anchor: str
    title: str
    template: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Page:
    """What every builder reads: the grid's files, and what several blocks share (computed once)."""

    files: GridFiles
    labels: list[str]
    palette: dict[str, str]
    verdicts: list[dict[str, Any]]

    @property
    def frame(self) -> pd.DataFrame:
        return self.files.results

    @property
    def empty(self) -> bool:
        return self.files.results.empty

    @property
    def reference(self) -> str:
        return self.files.comparison.reference

    @property
    def baseline(self) -> str:
        """The first baseline (the throughput ratio's denominator)."""
        return self.files.comparison.baselines[0] if self.files.comparison.baselines else ""


Builder = Callable[[Page], "PageSection | list[PageSection] | None"]
SECTIONS: list[Builder] = []


def section(builder: Builder) -> Builder:
    """Register a block of the page; blocks appear in the order they are registered."""
    SECTIONS.append(builder)
    return builder


def page_sections(page: Page) -> list[PageSection]:
    """Every block of the page, in order (an empty grid shows its verdict notice and its provenance only)."""
    out: list[PageSection] = []
    for builder in SECTIONS:
        if page.empty and builder not in (verdict_section, provenance_section):
            continue
        built = builder(page)
        out.extend([] if built is None else built if isinstance(built, list) else [built])
    return out


# -- the blocks, in page order --------------------------------------------------------------------------------
@section
def verdict_section(page: Page) -> PageSection:
    """Every pair's verdict (from fits.json), with its multipliers and paired differences."""
    return PageSection("verdict", "Verdict", "verdict", {
        "verdicts": page.verdicts, "paper": PAPER, "reference": page.reference, "empty": page.empty,
        "tuning_caveat": "" if page.empty else tuning_caveat(page.frame), "fit_form": report_form(page.files.fits),
        "grid_dir": str(page.files.path), "attribution": attribution(page.files.fits)})


@section
def scaling_section(page: Page) -> PageSection:
    """Loss against D and N with the fitted curves, and the multipliers."""
    missing = missing_axes(page.files.results)
    return PageSection("scaling", "Scaling", "scaling", {
        "plots": [*scaling_plots(page.files, page.palette),
                  *[svg for svg in [compute_plot(page.files, page.palette)] if svg is not None]],
        "multiplier_plots": multiplier_plots(page.verdicts, page.palette, missing) if page.verdicts else [],
        "missing_axes": list(missing.values()), "verdicts": page.verdicts})


@section
def tuning_block(page: Page) -> PageSection:
    """The learning-rate sweep (tune.json), or why there was none."""
    return PageSection("tuning", "Tuning", "tuning", {"tuning": tuning_section(page.files.path, page.palette),
                                                     "caveat": tuning_caveat(page.frame),
                                                     "grids": comparison_tuning(page.files.path, page.palette)})


@section
def curves_section(page: Page) -> PageSection:
    """Every run's lexical loss during training."""
    return PageSection("curves", "Training curves", "curves", {"plots": curve_plots(page.files, page.palette)})


@section
def task_sections(page: Page) -> list[PageSection]:
    """One block per task that ran: the registered task's own (`Task.report_section`), else the generic one."""
    data_group, param_tokens = axis_cells(page.frame)
    out = []
    for task, info in page.files.tasks.items():
        cls = task_class(task, info.reference)
        view = TaskView(task, list(info.metrics), page.frame, page.labels, page.palette, data_group, param_tokens,
                        description=info.description or (cls.description if cls is not None else ""))
        own = cls().report_section(view) if cls is not None else None
        sec = own if own is not None else generic_section(view)
        out.append(PageSection(sec.anchor, sec.title, "task", {"sec": sec}))
    return out


# The runs table: settings, training and the primary (lexical) numbers; every task has its own section.
RUN_COLUMNS = ["run_id", "label", "width", "layers", "n_params", "tokens", "seed", "status", "steps", LEXICAL_PER_STEP,
               "flops_per_token", "train_flops", "best_val_loss", "test_loss", "test_ppl", "tokens_per_s",
               "sentences_per_s", "peak_memory_mb", "lr", "lr_source", "max_grad_norm", "clipped_fraction", "flags",
               MEMORY_TRAIN, MEMORY_TEST]


def _has_values(frame, column: str) -> bool:
    """Whether some row of `frame` has a number in `column`."""
    return column in frame.columns and bool(pd.to_numeric(frame[column], errors="coerce").notna().any())


@section
def runs_section(page: Page) -> PageSection:
    """Every run, sortable, with the best finished value of each scored column marked; failed runs' messages."""
    keys = list(RUN_COLUMNS)
    if _has_values(page.frame, "compute_budget"):  # an isoFLOP grid: the budget its runs' tokens were solved for
        keys.insert(keys.index("tokens"), "compute_budget")
    table = runs_table(page.frame, [(key, COLUMNS[key]) for key in keys], page.labels)
    failures = provenance(page.files)["failures"]
    return PageSection("runs", "Runs", "runs", {"table": table, "failures": failures})


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


@section
def ablations_section(page: Page) -> PageSection | None:
    """The reference's variants against it (TG: beside the paper's ablations); none without variants."""
    table = ablation_table(page.frame, page.reference)
    return PageSection("ablations", "Ablations", "ablations", {"ablations": table}) if table["rows"] else None


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
            measured = geomean([num(v) for v in here["test_ppl"]])  # perplexities: geometric means
            sps = mean([num(v) for v in here["sentences_per_s"]])
            ref = base[(base["width"] == width) & (base["tokens"] == tokens)]
            base_ppl = geomean([num(v) for v in ref["test_ppl"]])
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


@section
def fits_section(page: Page) -> PageSection:
    """Every fitted law with its parameters, intervals and lack of fit; the fits' notes."""
    files = page.files
    return PageSection("fits", "Fits", "fits", {
        "fits": fits_table(files.fits), "status": "present" if files.fits else f"fits.json {files.fits_error}",
        "notes": [str(n) for n in (files.fits or {}).get("notes", [])],
        "loss_column": (files.fits or {}).get("loss_column", ""), "grid_dir": str(files.path)})


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
            ci = f" [{fmt_g(lo)}, {fmt_g(hi)}]" if num(lo) is not None and num(hi) is not None else ""
            params.append(f"{name} = {fmt_g(value)}{ci}")
        failed = fit.get("failed_fraction")
        lof = fit.get("lack_of_fit") or {}
        p_text = fmt_value(lof.get("p_value"), fmt=".2g")
        lof_text = f"F({lof['df1']}, {lof['df2']}) = {fmt_g(lof.get('F'))}, p = {p_text}" if lof else ""
        if lof.get("sentence"):
            lof_text += f": {lof['sentence']}"
        if not fit.get("converged"):
            params = []  # a failed fit (e.g. E on its bound) shows no parameters as fitted
        # a converged fit the lack-of-fit test rejects is not "ok": the status says so, in the caveat colour
        status = ("fit failed" if not fit.get("converged") else
                  "converged, lack of fit" if lof.get("sentence") else "ok")
        rows.append({"axis": axis, "label": label, "group": group, "form": form, "lack_of_fit": lof_text,
                     "status": status, "status_class": {"ok": "status-done", "fit failed": "status-failed"}.get(
                         status, "status-pending"),
                     "reason": fit.get("reason") or "", "params": params, "n_points": fit.get("n_points", ""),
                     "failed": fmt_value(failed, fmt=".0%") if num(failed) is not None else ""})
    return rows


@section
def throughput_section(page: Page) -> PageSection:
    """Training throughput and peak memory per model and width, and the ratio to the first baseline."""
    return PageSection("throughput", "Throughput", "throughput", {
        "rows": throughput_table(page.frame, page.baseline, page.labels), "baseline": page.baseline})


def throughput_table(frame: pd.DataFrame, baseline: str = "", order: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Mean training throughput and peak memory per (model, width), with the ratio to `baseline` (the grid's
    first baseline) at that width."""
    done = done_rows(frame)
    rows = []
    reference = done[done["label"] == baseline]
    base = {w: mean([num(v) for v in g["tokens_per_s"]]) for w, g in reference.groupby("width")}
    for (label, width), g in done.groupby(["label", "width"]):
        tps = mean([num(v) for v in g["tokens_per_s"]])
        ref = base.get(width)
        sps = mean([num(v) for v in g["sentences_per_s"]])
        memory = max([v for v in (num(x) for x in g["peak_memory_mb"]) if v is not None], default=None)
        # counted FLOPs: a model's cost per token and how much of the machine's matmul peak its training used
        compute = {key: mean([num(v) for v in g[key]]) if key in g.columns else None
                   for key in ("flops_per_token", "flops_per_s", "peak_fraction")}
        rows.append({"label": label, "width": int(width), "runs": len(g),
                     "tokens_per_s": fmt_value(tps, "tokens_per_s"),
                     "sentences_per_s": fmt_value(sps, "sentences_per_s"),
                     "peak_memory_mb": fmt_value(memory, "peak_memory_mb"),
                     "ratio": f"{tps / ref:.2f}" if tps and ref else "",
                     "flops_per_token": fmt_value(compute["flops_per_token"], "flops_per_token"),
                     "flops_per_s": fmt_value(compute["flops_per_s"], "flops_per_s"),
                     "peak_fraction": fmt_value(compute["peak_fraction"], "peak_fraction")})
    order = {lab: i for i, lab in enumerate(ordered_labels(done["label"], order))}
    return sorted(rows, key=lambda r: (order.get(r["label"], 99), r["width"]))


ADAPTER_CODE_KEY = "adapter code"


@section
def provenance_section(page: Page) -> PageSection:
    """Versions, devices, dates, the grid's settings, and everything missing."""
    return PageSection("provenance", "Provenance", "provenance", {"provenance": provenance(page.files)})


def provenance(files: GridFiles) -> dict[str, Any]:
    """Versions, commits, devices, data settings, dates, and every missing run or evaluation."""
    meta_keys = ("tgbench", "torch", "numpy", "python", "platform", "device", "device_name", "git_sha")
    seen: dict[str, dict[str, int]] = {k: {} for k in (*meta_keys, ADAPTER_CODE_KEY)}
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
        code = meta.get("adapter_code")
        # which code trained each model: a plug-in edited between runs shows as two hashes
        value = (f"{code.get('class', '?')} ({Path(str(code.get('file', ''))).name}, {code.get('origin', '?')}) "
                 f"sha256 {str(code.get('sha256', ''))[:12]}" if isinstance(code, dict) else "missing")
        seen[ADAPTER_CODE_KEY][value] = seen[ADAPTER_CODE_KEY].get(value, 0) + 1
        if run.done:
            done_dates.append((run.path / "DONE").read_text(encoding="utf-8").strip())
            for task in files.tasks:
                data, _ = read_json_file(run.eval_dir / f"{task}.json")
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
                 "reference_width") + (("compute_budgets",) if files.grid.get("compute_budgets") else ())
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
