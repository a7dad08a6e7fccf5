"""What a gap is made of: each memory model's gain over its no-memory twin, the difference of two models' gains,
and a pair's gap at a document's first sentence beside its gap over later sentences.

A verdict says that A beats B; these say whether the memory is why. Every number is a paired difference per
(budget, replicate), tested by the same code as the verdicts (`tgbench.tasks.stats.paired.analyse`,
`tgbench.tasks.stats.verdicts.verdict_of_pairs`), so the pooled mean, its CI and the classes mean what they mean
there.

- Memory gain of model M (a grid's ``controls = ["no-memory"]`` adds M's twin, results.csv's ``control_of``
  names M): g = L_twin - L_M, nats per lexical token; g > 0 means the memory helps. Its verdict is the twin
  (A) against M (B), so "M better at every budget" reads "M's memory helps at every budget".
- Difference of gains of M1 and M2: (L_twin1 - L_1) - (L_twin2 - L_2) per (budget, replicate) where all four
  runs exist: a difference in differences; > 0 means M1's memory is worth more than M2's.
- Sentence 1 against later sentences for a pair A, B (the ``ppl`` task's loss by sentence position): at a
  document's first sentence no model has context from earlier sentences, so d_1 = L_A,1 - L_B,1 is the part of
  the gap that context cannot explain; d_later is the gap over sentences 2+ (token-weighted over the position
  buckets); d_later - d_1, paired, is the part that context could explain (an upper bound on the memory's share:
  anything else that differs at later positions counts there too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tgbench.tasks.stats.paired import Pairs, analyse, paired_rows
from tgbench.tasks.stats.verdicts import verdict_of_pairs

FIRST_BUCKET = "1"  # the ppl task's bucket of a document's first sentence
LOSS_PREFIX, TOKENS_PREFIX = "ppl.loss_sentence_", "ppl.tokens_sentence_"


def control_map(rows: pd.DataFrame) -> dict[str, str]:
    """control twin's label -> the label of the model it controls, from results.csv's ``control_of``."""
    if "control_of" not in rows.columns:
        return {}
    out: dict[str, str] = {}
    for label, model in zip(rows["label"], rows["control_of"], strict=True):
        if isinstance(model, str) and model and model != "nan":
            out.setdefault(str(label), model)
    return out


def _fmt(mean: float | None, ci) -> str:
    if mean is None:
        return "n/a"
    lo, hi = ci if ci else (None, None)
    return f"{mean:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "")


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def memory_gain(rows: pd.DataFrame, twin: str, model: str, scheme: str,
                flags: Mapping[str, list[str]] | None = None) -> dict | None:
    """The gain of `model`'s memory over its twin, paired per (budget, replicate); None without shared cells.

    Returns:
        {"model", "twin", "gain", "gain_ci", "p_value", "n_pairs", "class", "sentence", "verdict"} where
        "verdict" is the full verdict of twin (A) against model (B) and gain = its pooled mean of L_twin - L_M.
    """
    pairs, group = paired_rows(rows, twin, model)
    if not len(pairs):
        return None
    v = verdict_of_pairs(pairs, twin, model, scheme, group=group, flags=dict(flags or {}), leave_one_out=False,
                         with_power=False)["verdict"]
    sentence = (f"{model}'s memory is worth {_fmt(v['delta_mean'], v['delta_ci'])} nats per token ({twin} minus "
                f"{model}, mean over {len(v['per_budget'])} budgets, p = {_p(v['p_value'])}): {v['class']}")
    return {"model": model, "twin": twin, "gain": v["delta_mean"], "gain_ci": v["delta_ci"],
            "p_value": v["p_value"], "n_pairs": v["n_pairs"], "group": group, "class": v["class"],
            "sentence": sentence, "verdict": v}


def _cells(rows: pd.DataFrame, labels: list[str]) -> tuple[dict, str]:
    """(key -> {label: (loss, run)}) for the (width, layers) group where all `labels` share most budgets."""
    found: dict[str, dict[tuple, tuple[float, str]]] = {lab: {} for lab in labels}
    columns = [rows[c].tolist() for c in ("label", "width", "layers", "tokens", "seed", "loss", "run_id")]
    for label, width, layers, tokens, seed, loss, run in zip(*columns, strict=True):
        if label in found:
            found[label].setdefault((float(width), float(layers), float(tokens), str(seed)), (float(loss), str(run)))
    shared = set.intersection(*(set(found[lab]) for lab in labels))
    if not shared:
        return {}, ""
    groups: dict[tuple, list[tuple]] = {}
    for key in shared:
        groups.setdefault(key[:2], []).append(key)
    (width, layers), keys = max(groups.items(), key=lambda kv: (len({k[2] for k in kv[1]}), len(kv[1]), kv[0][0]))
    cells = {k: {lab: found[lab][k] for lab in labels} for k in sorted(keys, key=lambda k: (k[2], k[3]))}
    return cells, f"width={width:g},layers={layers:g}"


def gain_difference(rows: pd.DataFrame, first: tuple[str, str], second: tuple[str, str], scheme: str) -> dict | None:
    """The difference of two memory models' gains, paired per (budget, replicate) where all four runs exist.

    Args:
        rows: usable runs (label, width, layers, tokens, seed, loss, run_id).
        first, second: (model, twin) of each memory model.
        scheme: the table's seed scheme.

    Returns:
        {"models": [M1, M2], "difference" (gain of M1 minus gain of M2), "ci", "p_value", "gains" (each model's
        mean gain over the same cells), "class", "sentence", "n_pairs"}; None without a cell holding all four.
    """
    (m1, t1), (m2, t2) = first, second
    cells, group = _cells(rows, [m1, t1, m2, t2])
    if not cells:
        return None
    keys = list(cells)
    g1 = np.array([cells[k][t1][0] - cells[k][m1][0] for k in keys])
    g2 = np.array([cells[k][t2][0] - cells[k][m2][0] for k in keys])
    # d = g2 - g1 reads like a verdict's L_A - L_B with A = M1's memory: negative when M1's memory is worth more
    pairs = Pairs(np.array([k[2] for k in keys]), np.array([k[3] for k in keys]), g2 - g1,
                  [cells[k][m1][1] for k in keys], [cells[k][m2][1] for k in keys],
                  np.array([cells[k][m1][0] for k in keys]))
    a, b = f"{m1}'s memory", f"{m2}'s memory"
    v = verdict_of_pairs(pairs, a, b, scheme, group=group, leave_one_out=False, with_power=False)["verdict"]
    diff = None if v["delta_mean"] is None else -v["delta_mean"]
    lo, hi = v["delta_ci"]
    ci = [None if hi is None else -hi, None if lo is None else -lo]
    sentence = (f"{m1}'s memory is worth {g1.mean():+.3f} nats, {m2}'s {g2.mean():+.3f} over the same "
                f"{len(keys)} pairs of runs; the difference is {_fmt(diff, ci)} (p = {_p(v['p_value'])}): "
                f"{v['class']}")
    return {"models": [m1, m2], "twins": [t1, t2], "difference": diff, "ci": ci, "p_value": v["p_value"],
            "gains": [float(g1.mean()), float(g2.mean())], "n_pairs": len(keys), "group": group,
            "class": v["class"], "sentence": sentence}


def position_columns(rows: pd.DataFrame) -> list[str]:
    """The position buckets results.csv has loss and token columns for ([] without the ppl task's buckets)."""
    buckets = [c.removeprefix(LOSS_PREFIX) for c in rows.columns if c.startswith(LOSS_PREFIX)]
    return [b for b in buckets if TOKENS_PREFIX + b in rows.columns]


def _first_and_later(row: pd.Series, buckets: list[str]) -> tuple[float, float]:
    """A run's loss at sentence 1 and its token-weighted loss over the later buckets (NaN when missing)."""
    first = pd.to_numeric(row.get(LOSS_PREFIX + FIRST_BUCKET), errors="coerce")
    later = [(pd.to_numeric(row.get(LOSS_PREFIX + b), errors="coerce"),
              pd.to_numeric(row.get(TOKENS_PREFIX + b), errors="coerce")) for b in buckets if b != FIRST_BUCKET]
    later = [(loss, n) for loss, n in later if np.isfinite(loss) and np.isfinite(n) and n > 0]
    total = sum(n for _, n in later)
    return float(first), (sum(loss * n for loss, n in later) / total) if total else math.nan


def position_split(rows: pd.DataFrame, a: str, b: str, scheme: str) -> dict | None:
    """The gap of A against B at sentence 1 and over later sentences, and the paired difference of the two.

    Returns:
        {"a", "b", "sentence_1", "later", "context"} (each {mean, ci, p, ...}: `analyse`'s pooled result of
        d_1, d_later and d_later - d_1), "n_pairs", "sentence"; None without position columns for both.
    """
    buckets = position_columns(rows)
    if FIRST_BUCKET not in buckets or len(buckets) < 2:
        return None
    pairs, group = paired_rows(rows, a, b)
    if not len(pairs):
        return None
    by_run = rows.drop_duplicates("run_id").set_index("run_id")
    values = np.array([[*_first_and_later(by_run.loc[ra], buckets), *_first_and_later(by_run.loc[rb], buckets)]
                       for ra, rb in zip(pairs.run_a, pairs.run_b, strict=True)])  # (n, 4)
    keep = np.isfinite(values).all(axis=1)
    if keep.sum() < 2:
        return None
    pairs, values = pairs.subset(keep), values[keep]
    d_first, d_later = values[:, 0] - values[:, 2], values[:, 1] - values[:, 3]
    out = {}
    for name, d in (("sentence_1", d_first), ("later", d_later), ("context", d_later - d_first)):
        pooled = analyse(Pairs(pairs.x, pairs.replicate, d, pairs.run_a, pairs.run_b, pairs.loss_a), scheme)["pooled"]
        out[name] = {k: pooled.get(k) for k in ("mean", "ci", "p", "se", "df")}
    s1, later, ctx = out["sentence_1"], out["later"], out["context"]
    sentence = (f"{a} - {b} at a document's first sentence (no context from earlier sentences): "
                f"{_fmt(s1['mean'], s1['ci'])} nats; over later sentences: {_fmt(later['mean'], later['ci'])}; "
                f"later minus first: {_fmt(ctx['mean'], ctx['ci'])} (p = {_p(ctx['p'])}), the part of the gap that "
                f"context from earlier sentences could explain (below 0: context favours {a})")
    return {"a": a, "b": b, **out, "n_pairs": len(pairs), "group": group, "sentence": sentence}


def attribution(rows: pd.DataFrame, pairs: list[tuple[str, str]], scheme: str,
                flags: Mapping[str, list[str]] | None = None) -> dict:
    """fits.json's ``attribution``: memory gains, differences of gains, and each pair's position split.

    Args:
        rows: usable runs (the fits' rows: label, width, layers, tokens, seed, loss, run_id, control_of and the
            ppl task's position columns when evaluated).
        pairs: the compared pairs (A, B).
        scheme: the table's seed scheme.
        flags: run_id -> flags.

    Returns:
        {"controls": {twin: model}, "memory_gains": [...], "gain_differences": [...], "by_position": [...],
        "notes": [...]}.
    """
    controls = control_map(rows)
    gains, notes = [], []
    for twin, model in controls.items():
        gain = memory_gain(rows, twin, model, scheme, flags)
        if gain is None:
            notes.append(f"no memory gain for {model}: no budget where {model} and {twin} both have a finished run "
                         "of the same replicate")
        else:
            gains.append(gain)
    differences = []
    ordered = [(g["model"], g["twin"]) for g in gains]
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            diff = gain_difference(rows, first, second, scheme)
            if diff is not None:
                differences.append(diff)
    by_position = [split for a, b in pairs if (split := position_split(rows, a, b, scheme)) is not None]
    return {"controls": controls, "memory_gains": gains, "gain_differences": differences,
            "by_position": by_position, "notes": notes}
