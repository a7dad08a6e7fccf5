"""reversal: the in-context father/son probe (paper section 6), its items, its metrics and its report section.

`ReversalTask` (registered as ``reversal``) scores every item directly through `Adapter.score` with
`evaluate_reversal`; `reversal_dataset` hands lm-eval the same items for the YAML task in this folder
(``tg_reversal``, a two-choice task). `item_metrics` is the probe's metric, used by both.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import tgbench
from tgbench.adapter import Document
from tgbench.core.errors import UserError
from tgbench.evaluation.scoring import as_document, run_corpus, run_from, score_documents
from tgbench.report.plots import Band, Series, plot
from tgbench.report.task_sections import SECONDARY_NOTE, Section, Table, TaskView, fmt_number, mean, num, runs_table
from tgbench.task import DEFAULT_BATCH_SIZE, Metric, Task, TaskResult

NAMES_FILE = Path(tgbench.__file__).parent / "data" / "names.txt"
REVERSAL_PAIRS = 1000  # father/son pairs, i.e. items per condition
REVERSAL_SEED = 0
CONDITIONS = ("normal", "reversed")


def item_metrics(condition: str, target_nll: float, distractor_nll: float) -> dict[str, float]:
    """One item's metrics: target and distractor NLL, margin (distractor - target NLL; negative is an
    error) and the error (1.0 when the distractor was more likely)."""
    margin = distractor_nll - target_nll
    return {f"{condition}_target_nll": target_nll, f"{condition}_distractor_nll": distractor_nll,
            f"{condition}_margin": margin, f"{condition}_error_rate": float(margin < 0)}


# -- items -------------------------------------------------------------------------------
def load_names(path: Path = NAMES_FILE) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def single_token_names(tokenizer, names: Sequence[str] | None = None) -> list[str]:
    """Names that `tokenizer` encodes, with a leading space, as exactly one id (sorted, unique)."""
    names = load_names() if names is None else names
    return sorted({n for n in names if len(tokenizer.encode(" " + n)) == 1})


def sample_pairs(names: Sequence[str], n: int, seed: int = REVERSAL_SEED) -> list[tuple[str, str]]:
    """`n` ordered (father, son) pairs with father != son, deterministic in `seed`.

    Distinct pairs while there are enough; with too few names every possible pair is used before
    any repeats (the record of distinct names tells how varied the items are). The pairs for a
    smaller `n` are a prefix of those for a larger one.
    """
    k = len(names)
    if k < 2:
        raise UserError(
            f"the reversal probe needs at least 2 names that are single tokens, the run's tokenizer has {k}",
            "use a tokenizer with a larger vocabulary (e.g. gpt2 or bpe-8192)",
        )
    possible = k * (k - 1)
    rng = np.random.default_rng(seed)
    # Whole permutations of all possible pairs, so a smaller n gives a prefix of a larger n's pairs.
    rounds = [rng.permutation(possible) for _ in range(max(1, math.ceil(n / possible)))]
    codes = np.concatenate(rounds)[:n]
    pairs = []
    for code in codes.tolist():
        father, j = divmod(code, k - 1)
        son = j if j < father else j + 1  # skip the diagonal: never father == son
        pairs.append((names[father], names[son]))
    return pairs


@dataclass(frozen=True)
class ReversalItem:
    """One query: the context sentence, the query sentence (with its leading space) and two names."""

    pair: int
    condition: str  # normal | reversed
    father: str
    son: str

    @property
    def context(self) -> str:
        return f"The son of {self.father} is {self.son}."

    @property
    def query(self) -> str:
        if self.condition == "normal":
            return f" The son of {self.father} is"
        return f" The father of {self.son} is"

    @property
    def target(self) -> str:
        return self.son if self.condition == "normal" else self.father

    @property
    def distractor(self) -> str:
        return self.father if self.condition == "normal" else self.son

    def as_doc(self) -> dict[str, Any]:
        """The lm-eval dataset row."""
        return {"pair": self.pair, "condition": self.condition, "father": self.father, "son": self.son,
                "context": self.context, "query": self.query, "text": self.context + self.query,
                "choices": [self.target, self.distractor], "label": 0}


def reversal_items(pairs: Sequence[tuple[str, str]]) -> list[ReversalItem]:
    """Both conditions of every pair, pair by pair (normal first)."""
    return [ReversalItem(i, cond, f, s) for i, (f, s) in enumerate(pairs) for cond in CONDITIONS]


def reversal_documents(item: ReversalItem, tokenizer) -> tuple[Document, Document]:
    """[context sentence, query + name] for the target and for the distractor.

    TG reads the context sentence through its memory and the query as the next sentence; GPT-2
    sees both in one window. The name is one token, so its log-prob is the last entry of `score`.
    """
    context, query = tokenizer.encode(item.context), tokenizer.encode(item.query)
    target, distractor = tokenizer.encode(" " + item.target), tokenizer.encode(" " + item.distractor)
    return as_document([context, query + target]), as_document([context, query + distractor])


def reversal_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per condition: the mean of every `item_metrics` value over the pairs, with its standard error.

    Args:
        rows: One dict per pair with ``{condition}_target_logprob`` and ``{condition}_distractor_logprob``.
    """
    from scipy.stats import sem

    out: dict[str, float] = {}
    for cond in CONDITIONS:
        items = [item_metrics(cond, -r[f"{cond}_target_logprob"], -r[f"{cond}_distractor_logprob"]) for r in rows]
        for key in items[0] if items else ():
            array = np.array([item[key] for item in items], dtype=np.float64)
            out[key] = float(array.mean())
            out[f"{key}_stderr"] = float(sem(array)) if len(array) > 1 else float("nan")
    return out


def evaluate_reversal(run, limit: int | None = None, seed: int = REVERSAL_SEED,
                      batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True
                      ) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]:
    """The father/son probe on `run` through `adapter.score`.

    Returns:
        (metrics, one row per pair with both directions' log-probs, counts: pairs, names, distinct pairs).
    """
    tokenizer = run.corpus.tokenizer
    names = single_token_names(tokenizer)
    pairs = sample_pairs(names, REVERSAL_PAIRS, seed)[:limit]  # the lm-eval task's first 2 * limit rows
    items = reversal_items(pairs)
    documents = [doc for item in items for doc in reversal_documents(item, tokenizer)]
    scores = score_documents(run, documents, batch_size=batch_size, description="reversal",
                             progress=progress)
    rows = [{"pair": i, "father": f, "son": s} for i, (f, s) in enumerate(pairs)]
    for k, item in enumerate(items):
        target, distractor = scores[2 * k], scores[2 * k + 1]
        rows[item.pair][f"{item.condition}_target_logprob"] = float(target[-1])
        rows[item.pair][f"{item.condition}_distractor_logprob"] = float(distractor[-1])
    used = {n for pair in pairs for n in pair}
    counts = {"pairs": len(pairs), "usable_names": len(names), "distinct_names": len(used),
              "distinct_pairs": len(set(pairs))}
    return reversal_metrics(rows), rows, counts


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    logprobs = [f"{c}_{w}_logprob" for c in CONDITIONS for w in ("target", "distractor")]
    columns = ["pair", "father", "son", *logprobs]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def reversal_dataset(**kwargs: Any):
    """`custom_dataset` of tg_reversal: the same items as `evaluate_reversal` (pair by pair)."""
    import datasets

    corpus = run_corpus(run_from(kwargs))
    n = int(kwargs.get("pairs", REVERSAL_PAIRS))
    pairs = sample_pairs(single_token_names(corpus.tokenizer), n, int(kwargs.get("seed", REVERSAL_SEED)))
    rows = [item.as_doc() for item in reversal_items(pairs)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


ITEMS_CSV = "reversal_items.csv"


class ReversalTask(Task):
    """The in-context reversal probe: "The son of F is S." then "The son of F is" / "The father of S is"."""

    name = "reversal"
    version = 1  # must equal `metadata.version` in tg_reversal.yaml
    description = "in-context father/son probe (paper section 6): target vs distractor name, both directions"
    metrics = tuple(
        metric
        for cond in CONDITIONS
        for metric in (
            Metric(f"{cond}_target_nll", False, ".3f", "mean", f"{cond} target NLL", "nats"),
            Metric(f"{cond}_distractor_nll", None, ".3f", "mean", f"{cond} distractor NLL", "nats"),
            Metric(f"{cond}_margin", True, ".3f", "mean", f"{cond} margin", "nats"),
            Metric(f"{cond}_error_rate", False, ".1%", "mean", f"{cond} error rate"),
        )
    )

    def evaluate(self, run, *, limit: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool = True) -> TaskResult:
        metrics, rows, counts = evaluate_reversal(run, limit, batch_size=batch_size, progress=progress)
        return TaskResult(metrics, {"original": REVERSAL_PAIRS, "effective": counts["pairs"]},
                          {"output_type": "multiple_choice", "seed": REVERSAL_SEED, "pairs": counts["pairs"]},
                          extra={"reversal": counts, "items_csv": ITEMS_CSV}, files={ITEMS_CSV: rows_to_csv(rows)})

    def report_section(self, view: TaskView) -> Section:
        return reversal_section(view)


# -- the report section ----------------------------------------------------------------------------
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
