"""The perplexity task's report section: where in a document each model's loss is made, and what it could see.

Loss by sentence position answers where a gain comes from: the first sentence of a document (local
modelling, no history) or later ones (what a memory or a long context buys). The numbers are the
``ppl.loss_sentence_<bucket>`` columns of results.csv, the same per-token log-probs as the test loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tgbench.report.plots import Band, Series, fmt_si, plot
from tgbench.report.task_sections import Table, TaskView, fmt_number, generic_section, mean, num, runs_table
from tgbench.tasks.tg_ppl.positions import BUCKETS

# x of each bucket in the plots: its first sentence position, on a log axis (the buckets double)
BUCKET_STARTS = (1, 2, 3, 5, 9, 17, 33)
BUCKET_NOTE = "buckets 1, 2, 3-4, 5-8, 9-16, 17-32, 33+ at their first position"
CONTEXT_METRICS = ("effective_context_tokens", "memory_slots_per_sentence", "memory_full_fraction")


def position_cell(view: TaskView) -> tuple[pd.DataFrame, Any, Any]:
    """The runs the position plots show: the data axis's largest budget that has position results (or, without
    a data axis, the largest budget), with its width; (rows, width, tokens), empty rows when none."""
    rows = view.data_axis() if view.data_group is not None else view.evaluated()
    column = view.column(f"loss_sentence_{BUCKETS[0]}")
    if column not in rows.columns:
        return rows.iloc[0:0], None, None
    rows = rows[pd.to_numeric(rows[column], errors="coerce").notna()]
    if rows.empty:
        return rows, None, None
    tokens = rows["tokens"].max()
    rows = rows[rows["tokens"] == tokens]
    width = rows["width"].max()
    return rows[rows["width"] == width], width, tokens


def cell_name(width: Any, tokens: Any) -> str:
    budget = "all training tokens" if not num(tokens) else fmt_si(float(tokens))
    return f"width {fmt_number(width, 'd')}, D = {budget}"


def bucket_values(g: pd.DataFrame, view: TaskView, bucket: str) -> list[float]:
    return [v for v in (num(x) for x in g[view.column(f"loss_sentence_{bucket}")]) if v is not None]


def position_plots(view: TaskView) -> list:
    """Loss per position bucket per model (seed means, min-max bars), and each model's difference to the
    reference, paired by seed (same data order), with the seed spread of the difference."""
    rows, width, tokens = position_cell(view)
    if rows.empty:
        return []
    where = cell_name(width, tokens)
    labels = view.ordered(rows["label"])
    series = []
    for label in labels:
        g = rows[rows["label"] == label]
        points, bars = [], []
        for x, bucket in zip(BUCKET_STARTS, BUCKETS, strict=True):
            values = bucket_values(g, view, bucket)
            if values:
                points.append((float(x), float(np.mean(values))))
                if len(values) > 1:
                    bars.append((float(x), min(values), max(values)))
        series.append(Series(label, view.palette.get(label, "#666666"), points, bars, points))
    out = [plot(series, title=f"Loss by sentence position ({where})", xlabel="sentence position",
                ylabel="lexical loss (nats/token)", xlog=True,
                note=f"{BUCKET_NOTE}; seed mean, min-max bars")]
    reference = view.labels[0] if view.labels else labels[0]
    base = rows[rows["label"] == reference]
    others = [label for label in labels if label != reference]
    if base.empty or not others:
        return out
    series = []
    for label in others:
        g = rows[rows["label"] == label]
        points, bars = [], []
        for x, bucket in zip(BUCKET_STARTS, BUCKETS, strict=True):
            column = view.column(f"loss_sentence_{bucket}")
            ref = {seed: num(v) for seed, v in zip(base["seed"], base[column], strict=True)}
            diffs = [num(v) - ref[seed] for seed, v in zip(g["seed"], g[column], strict=True)
                     if num(v) is not None and ref.get(seed) is not None]
            if diffs:
                points.append((float(x), float(np.mean(diffs))))
                if len(diffs) > 1:
                    bars.append((float(x), min(diffs), max(diffs)))
        series.append(Series(label, view.palette.get(label, "#666666"), points, bars, points))
    out.append(plot(series, title=f"Loss by sentence position minus {reference}'s ({where})",
                    xlabel="sentence position", ylabel=f"loss - {reference} loss (nats/token)", xlog=True,
                    bands=[Band(0.0, 0.0, f"0 = {reference}")],
                    note=f"paired by seed: mean, min-max bars; above 0: {reference} lower"))
    return out


def position_table(view: TaskView) -> Table | None:
    """Mean loss per bucket per model at the plotted cell, with the tokens each bucket holds."""
    rows, width, tokens = position_cell(view)
    if rows.empty:
        return None
    columns = [{"label": "model", "unit": "", "numeric": False, "direction": ""},
               {"label": "seeds", "unit": "", "numeric": True, "direction": ""}]
    columns += [{"label": f"sentence {b}", "unit": "nats/token", "numeric": True, "direction": "lower is better"}
                for b in BUCKETS]
    body = []
    for label in view.ordered(rows["label"]):
        g = rows[rows["label"] == label]
        cells = [{"text": label, "sort": label, "classes": "nowrap"},
                 {"text": str(len(g)), "sort": repr(float(len(g))), "classes": ""}]
        for bucket in BUCKETS:
            value = mean(bucket_values(g, view, bucket))
            text = fmt_number(value, ".3f")
            cells.append({"text": text, "sort": "" if value is None else repr(value),
                          "classes": "missing" if text == "missing" else ""})
        body.append(cells)
    first = rows.iloc[0]
    counts = ", ".join(f"{b}: {fmt_number(first.get(view.column(f'tokens_sentence_{b}')), 'd')}" for b in BUCKETS)
    return Table(columns, body, title=f"Loss by sentence position, mean over seeds ({cell_name(width, tokens)})",
                 note=f"Test tokens per bucket (the same for every model): {counts}.")


def context_table(view: TaskView) -> Table | None:
    """Per model: its effective context in tokens (a GPT-2's window; TG's memory span, memory_slots x the test
    split's tokens per sentence) and the memory slots it read per sentence in training and in evaluation."""
    rows = view.evaluated()
    column = view.column("effective_context_tokens")
    if rows.empty or column not in rows.columns:
        return None
    specs = [("effective context", "tokens", column, ",.0f"),
             ("memory read, training", "slots/sentence", "memory_slots_train", ".2f"),
             ("memory read, test", "slots/sentence", view.column("memory_slots_per_sentence"), ".2f"),
             ("memory full, test", "of sentences", view.column("memory_full_fraction"), ".0%")]
    columns = [{"label": "model", "unit": "", "numeric": False, "direction": ""}]
    columns += [{"label": name, "unit": unit, "numeric": True, "direction": ""} for name, unit, _, _ in specs]
    body = []
    for label in view.ordered(rows["label"]):
        g = rows[rows["label"] == label]
        cells = [{"text": label, "sort": label, "classes": "nowrap"}]
        for _, _, key, spec in specs:
            value = mean(num(v) for v in g[key]) if key in g.columns else None
            # "missing", as the runs table shows the same empty cell; the note says what it means here
            text = fmt_number(value, spec) if value is not None else "missing"
            cells.append({"text": text, "sort": "" if value is None else repr(value),
                          "classes": "missing" if value is None else ""})
        body.append(cells)
    return Table(columns, body, title="What each model can see",
                 note="Effective context: the most preceding text a model draws on, in tokens; for a sentence "
                      "memory, its span (slots x the test split's tokens per sentence); missing where the adapter "
                      "declares none (Adapter.effective_context returns None). Memory read: slots read per sentence "
                      "(mean over runs); missing for models without a sentence memory.")


SMALL_TEST_TOKENS = 20_000  # below this many scored test tokens a test loss is warned about


def small_test_split(view: TaskView) -> str:
    """A warning when the runs' test split is small ('' when it is not): a few thousand tokens from a few dozen
    documents give test losses whose differences between models are dominated by which documents they are."""
    rows = view.evaluated()
    column = view.column("tokens")
    if column not in rows.columns:
        return ""
    scored = [v for v in (num(x) for x in rows[column]) if v is not None and v > 0]
    if not scored or max(scored) >= SMALL_TEST_TOKENS:
        return ""
    return (f"Warning: the test split is small, {int(max(scored)):,} tokens scored per run (under "
            f"{SMALL_TEST_TOKENS:,}): differences between models of a few percent can come from which documents "
            "the split holds; use a larger corpus or test_fraction, and see each document's loss with "
            "tgbench.load_results(grid, documents=True).")


def ppl_section(view: TaskView):
    """The perplexity section: word perplexity and bits per byte against D or N, loss by sentence position,
    what each model can see, and the runs table (without the per-bucket columns, which the position table
    summarises)."""
    section = generic_section(view, plotted=("word_perplexity", "bits_per_byte"), title="Perplexity (ppl)")
    section.notes.insert(0, "Test loss and test PPL are plotted in Scaling and compared in the verdict; "
                            "word perplexity and bits per byte are shown here, then where in a document the loss "
                            "is made.")
    if view.evaluated().empty:
        return section
    warning = small_test_split(view)
    if warning:
        section.notes.insert(0, warning)
    section.plots.extend(position_plots(view))
    shown = [m for m in view.present if not m.name.startswith(("loss_sentence_", "tokens_sentence_"))]
    tables = [t for t in (position_table(view), context_table(view)) if t is not None]
    section.tables = [*tables, runs_table(view, shown)]
    return section
