"""Is A better than B? Paired tests of the loss difference at the measured budgets, a class, power.

The method (with its references) is docs/statistics.md. The paired tests are `tgbench.tasks.stats.paired`'s,
the power `tgbench.tasks.stats.power`'s; this module turns them into a class, a sentence and the influence of
single pairs.

Classes (the first that holds, A checked before B; exact strings, fits.json ``class``)
------------------------------------------------------------------------------------
1. ``class_every(X)``    "{X} better at every measured budget": every per-budget one-sided test rejects at
   5% for X (an intersection-union test, Berger 1982: level 5% without a multiplicity correction); needs
   at least 2 replicates at every budget.
2. ``class_crossing(Y, X)`` "crossing: {Y} better at small D, {X} better at large D": the one-sided tests at
   the smallest and at the largest budget reject in opposite directions (X better at the largest; an IUT of
   two one-sided tests, so a false crossing stays <= 5% under any truth without one), or Holm over the
   budgets finds significant differences of both signs (X is the side of the largest such budget).
3. ``class_grows(X)``    "{X} better, gap grows with D" and ``class_shrinks(X)`` "{X} better, gap shrinks
   with D": the pooled test rejects (two-sided 5%) in X's favour and the trend rejects (two-sided 5%); the
   gap grows when the trend moves d further in X's favour (slope of d with the sign of X's advantage).
4. ``class_average(X)``  "{X} better on average": the pooled test rejects, the trend does not.
5. ``CHANGES``           "difference changes with D, neither side shown": only the trend rejects.
6. ``NOT_DISTINGUISHABLE`` "not distinguishable": none of these.

``verdict_classes(a, b)`` lists them from A best to B best and ``class_rank`` gives that order as a number
(the order the monotonicity test checks: lowering A's losses at one budget never lowers the rank, except as
below). The classes that name one side as better overall share a rank ("on average", "gap grows", "gap
shrinks": lowering A's losses at the largest budget can turn "on average" into "gap grows", at the smallest
into "gap shrinks"), above them "every measured budget"; crossings, "changes with D" and "not
distinguishable" share the middle rank. A crossing keeps what the other side had shown at one end: when B's
advantage at the smallest budget was already significant and lowering A's losses at the largest budget makes
A's significant too, "A better on average" becomes a crossing; and lowering A's losses at the budget where B
was shown better can drop a crossing to the pooled test's "B better ..." that the crossing had outranked.
No order of these classes is monotone there (a crossing is reached from "A better on average" and from "B
better on average", and left towards both), so the test checks instead that the B side the new class names
(B's one-sided test at that end, Holm, or the pooled test) had rejected before the change: lowering A's
losses never creates evidence for B. On random grids about 1 shift in 1,000 takes such a step.

Influence and flags
-------------------
- ``influential``: a pair (budget, replicate) is named when removing it moves the pooled mean or the trend
  slope by more than one standard error of that estimate. Both are the coefficients of one fit, the
  regression of d on log2 D through the budget means (least squares over the pairs, each budget weighted
  1 / n_k, on 1 and the centred log2 D), and the shift is the pair's DFBETA in units of the coefficient's
  standard error in that fit (one residual variance for every pair); each entry gives the pair's Cook's
  distance in the same fit (statsmodels' OLSInfluence). Why that SE: measured against the verdict's own
  Welch SE no pair can ever qualify (removing one of n values moves their mean by at most s / sqrt(n),
  Samuelson's inequality, so a contrast of budget means moves by at most its SE); an SE recomputed without the
  pair (DFBETAS) names a pair in 34-77% of null grids with 3 replicates, as a budget left with 2 pairs has a
  variance on 1 df. The cost: a single outlier at the middle budget, which does not move the slope, inflates
  the residual SD it is measured with and is not named (``tgbench.results.flags``' cell-outlier flag names it).
- ``flagged``: the pair's runs that ``tgbench.results.flags`` flags; flags never drop runs. When there are any,
  ``without_flagged`` gives the class without their pairs.

Measured error rates
--------------------
Simulated results tables through ``tgbench.tasks.stats.fits.table_verdicts`` (the code of ``tgbench fit``), made by
tests/test_verdicts.py's generator: budgets 100k, 200k, 400k, SD of a paired difference 0.057 nats (each run's
seed noise 0.057 / sqrt(2)), 3 replicates and per-budget seeds unless the row says otherwise ("shared seeds":
half of a run's seed variance common to its replicate at every budget; "seed SD 2 : 1 : 0.5": the noise per
budget scaled so). 2000 grids per row; percent of grids per class. Produced by ``python tests/test_verdicts.py``
(the slow tests, ``pytest -m slow tests/test_verdicts.py``, assert the targets on the same seeds).
Columns: Ae, Ag, As, Aa = "a better at every measured budget", "gap grows", "gap shrinks", "on average";
xBA = "crossing: b better at small D, a better at large D", xAB the reverse; ch = "difference changes with D";
nd = "not distinguishable"; Ba, Bs, Bg, Be likewise for b.

| truth (A - B) | R | Ae | Ag | As | Aa | xBA | xAB | ch | nd | Ba | Bs | Bg | Be |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| null, per-budget seeds | 3 | 0.0 | 0.0 | 0.0 | 1.2 | 0.1 | 0.2 | 2.6 | 94.0 | 1.6 | 0.1 | 0.1 | 0.0 |
| null, shared seeds | 3 | 0.2 | 0.1 | 0.0 | 1.9 | 0.2 | 0.1 | 3.8 | 91.5 | 1.8 | 0.1 | 0.1 | 0.1 |
| null, seed SD 2 : 1 : 0.5 | 3 | 0.0 | 0.0 | 1.5 | 0.9 | 0.2 | 0.2 | 2.5 | 92.7 | 1.1 | 0.9 | 0.0 | 0.0 |
| uniform -0.1 | 3 | 25.2 | 1.1 | 1.1 | 70.0 | 0.0 | 0.0 | 0.1 | 2.4 | 0.0 | 0.0 | 0.0 | 0.0 |
| fan-out 0, -0.1, -0.15 | 3 | 2.3 | 49.5 | 0.0 | 34.6 | 4.5 | 0.0 | 2.7 | 6.3 | 0.0 | 0.0 | 0.0 | 0.0 |
| fan-out 0, -0.1, -0.15, 5 replicates | 5 | 5.4 | 82.9 | 0.0 | 6.0 | 5.5 | 0.0 | 0.1 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |
| crossing +0.1, 0, -0.1 | 5 | 0.0 | 0.3 | 0.0 | 0.0 | 87.2 | 0.0 | 11.7 | 0.6 | 0.0 | 0.1 | 0.0 | 0.0 |
| shrinking -0.15, -0.1, 0 | 5 | 4.2 | 0.0 | 85.8 | 5.0 | 0.0 | 4.9 | 0.1 | 0.1 | 0.0 | 0.0 | 0.0 | 0.0 |
| null, shared seeds, 5 replicates | 5 | 0.2 | 0.1 | 0.1 | 2.1 | 0.0 | 0.1 | 4.6 | 90.5 | 1.9 | 0.1 | 0.1 | 0.4 |

Targets (measured; every one met):

- null, per-budget seeds (R = 3): any better 3.1% (target <= 5%)
- null, per-budget seeds (R = 3): crossing 0.3% (target <= 5%)
- null, per-budget seeds (R = 3): changes 2.6% (target <= 5%)
- null, shared seeds (R = 3): any better 4.4% (target <= 5%)
- null, shared seeds (R = 3): crossing 0.2% (target <= 5%)
- null, shared seeds (R = 3): changes 3.8% (target <= 5%)
- null, seed SD 2 : 1 : 0.5 (R = 3): any better 4.4% (target <= 5%)
- null, seed SD 2 : 1 : 0.5 (R = 3): crossing 0.5% (target <= 5%)
- null, seed SD 2 : 1 : 0.5 (R = 3): changes 2.5% (target <= 6%)
- uniform -0.1 (R = 3): A classes 97.5% (target >= 80%)
- uniform -0.1 (R = 3): crossing 0.0% (target <= 1%)
- fan-out 0, -0.1, -0.15 (R = 3): A classes 86.4% (target >= 80%)
- fan-out 0, -0.1, -0.15 (R = 3): crossing 4.5% (target <= 5%)
- fan-out 0, -0.1, -0.15 (R = 3): every budget 2.3% (target <= 5%)
- fan-out 0, -0.1, -0.15, 5 replicates (R = 5): A better, gap grows 82.9% (target >= 80%)
- crossing +0.1, 0, -0.1 (R = 5): crossing 87.2% (target >= 80%)
- crossing +0.1, 0, -0.1 (R = 5): A or B better 0.5% (target <= 5%)

With 3 replicates the Welch-Satterthwaite tests are conservative under equal noise (their df, 2-6, are
estimated from the data), which keeps the null rates under 5% and costs the trend power: the committed
cpu-study's tg vs gpt2 gap (-0.065 nats per doubling, p = 0.059 with df 2.3, as the 100k budget is four times
as noisy as 400k) is "tg better on average", not "gap grows". Influence (``influential`` non-empty), 1000 null
grids each:
- null, 3 replicates: 13.3% of 1000 grids
- null, 5 replicates: 0.5% of 1000 grids
- null, seed SD 2 : 1 : 0.5, 3 replicates: 41.0% of 1000 grids
(a pair of the noisiest budget moves the estimates by more than the fit's common-noise SE).
"""


from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.outliers_influence import OLSInfluence

from tgbench.plan.config import SCHEME_SHARED
from tgbench.tasks.stats.paired import (
    ALPHA,
    COMPUTE,
    DATA,
    SIZE,
    Axis,
    Pairs,
    analyse,
    compute_pairs,
    paired_rows,
    size_pairs,
)
from tgbench.tasks.stats.power import _si, power_analysis

NOT_DISTINGUISHABLE = "not distinguishable"


def changes(axis: Axis = DATA) -> str:
    """Class 5: only the trend rejects."""
    return f"difference changes with {axis.symbol}, neither side shown"


CHANGES = changes(DATA)


def class_every(label: str, axis: Axis = DATA) -> str:
    """Class 1: every per-budget one-sided test rejects for ``label``."""
    return f"{label} better at every measured {axis.point}"


def class_crossing(small: str, large: str, axis: Axis = DATA) -> str:
    """Class 2: ``small`` shown better at small D, ``large`` at large D."""
    return f"crossing: {small} better at small {axis.symbol}, {large} better at large {axis.symbol}"


def class_grows(label: str, axis: Axis = DATA) -> str:
    """Class 3: the pooled test favours ``label`` and the trend moves d further in its favour."""
    return f"{label} better, gap grows with {axis.symbol}"


def class_shrinks(label: str, axis: Axis = DATA) -> str:
    """Class 3: the pooled test favours ``label`` and the trend moves d towards the other side."""
    return f"{label} better, gap shrinks with {axis.symbol}"


def class_average(label: str) -> str:
    """Class 4: the pooled test favours ``label``, the trend does not reject."""
    return f"{label} better on average"


def verdict_classes(a: str, b: str, axis: Axis = DATA) -> list[str]:
    """Every verdict class of a pair, with the labels filled in, from A best to B best."""
    return [class_every(a, axis), class_grows(a, axis), class_shrinks(a, axis), class_average(a),
            class_crossing(b, a, axis), class_crossing(a, b, axis), changes(axis), NOT_DISTINGUISHABLE,
            class_average(b), class_shrinks(b, axis), class_grows(b, axis), class_every(b, axis)]


def class_rank(cls: str, a: str, b: str, axis: Axis = DATA) -> int:
    """The class's place from B best (0) to A best (4): B every, B better overall, neither side overall
    (crossings, changes with D, not distinguishable), A better overall (on average, gap grows or shrinks),
    A every (module docstring: why these share ranks)."""
    if cls == class_every(a, axis):
        return 4
    if cls in (class_grows(a, axis), class_shrinks(a, axis), class_average(a)):
        return 3
    if cls in (class_grows(b, axis), class_shrinks(b, axis), class_average(b)):
        return 1
    if cls == class_every(b, axis):
        return 0
    if cls in (class_crossing(a, b, axis), class_crossing(b, a, axis), changes(axis), NOT_DISTINGUISHABLE):
        return 2
    raise ValueError(f"not a verdict class of {a} vs {b}: {cls!r}")


def crossing_sides(result: dict, a: str, b: str) -> tuple[str, str, str] | None:
    """(side better at small D, side better at large D, basis) when the per-budget tests show a crossing."""
    per = result["per_budget"]
    if len(per) < 2:
        return None
    first, last = per[0], per[-1]
    if first["p_value"] is not None and last["p_value"] is not None:
        if first["p_b_better"] < ALPHA and last["p_a_better"] < ALPHA:
            return b, a, "endpoints"
        if first["p_a_better"] < ALPHA and last["p_b_better"] < ALPHA:
            return a, b, "endpoints"
    shown = [p for p in per if p["holm_reject"]]
    signs = {np.sign(p["delta_mean"]) for p in shown}
    if {-1.0, 1.0} <= signs:
        large = a if shown[-1]["delta_mean"] < 0 else b
        return (b if large == a else a), large, "holm"
    return None


def classify(result: dict, a: str, b: str, axis: Axis = DATA) -> str:
    """The verdict class from ``analyse`` output (rules in the module docstring)."""
    per = result["per_budget"]
    if per and all(p["n"] >= 2 and p["p_value"] is not None for p in per):
        for label, key in ((a, "p_a_better"), (b, "p_b_better")):
            if all(p[key] < ALPHA for p in per):
                return class_every(label, axis)
    cross = crossing_sides(result, a, b)
    if cross:
        return class_crossing(cross[0], cross[1], axis)
    pooled, trend = result["pooled"], result["trend"]
    trend_rejects = trend["p"] is not None and trend["p"] < ALPHA
    if pooled["p"] is not None and pooled["p"] < ALPHA:
        label = a if pooled["mean"] < 0 else b
        if not trend_rejects:
            return class_average(label)
        # the gap grows when d moves further to the winner's side: the slope has the sign of the pooled mean
        grows = np.sign(trend["slope"]) == np.sign(pooled["mean"])
        return class_grows(label, axis) if grows else class_shrinks(label, axis)
    return changes(axis) if trend_rejects else NOT_DISTINGUISHABLE


def _budget_regression(pairs: Pairs) -> OLSInfluence | None:
    """The regression of d on log2 D through the budget means, with its influence measures.

    Least squares over the pairs with weights 1 / n_k (every budget counts once) on (1, log2 D - the mean of the
    budgets' log2 D): the coefficients are the pooled mean (the mean of the budget means) and the trend slope.
    The weighted fit is ordinary least squares on the whitened data (statsmodels' influence measures are for
    OLS). None when the fit has no residual degrees of freedom.
    """
    budgets, inverse = np.unique(pairs.x, return_inverse=True)
    columns = [np.ones(len(pairs))]
    if budgets.size >= 2:
        columns.append(np.log2(pairs.x.astype(float)) - np.log2(budgets.astype(float)).mean())
    exog = np.column_stack(columns)
    if len(pairs) <= exog.shape[1]:
        return None
    root_w = 1.0 / np.sqrt(np.bincount(inverse)[inverse].astype(float))
    return OLSInfluence(OLS(pairs.d * root_w, exog * root_w[:, None]).fit())


def influence(pairs: Pairs) -> list[dict]:
    """The pairs whose removal moves the pooled mean or the trend slope by more than one standard error.

    Both are coefficients of the regression of d on log2 D through the budget means (``_budget_regression``);
    a pair's shift is its DFBETA in units of the coefficient's standard error in that fit (the module
    docstring says why this SE and not the Welch SE or one recomputed without the pair).

    Returns:
        [{run_a, run_b, x, replicate, moves ("pooled" | "slope" | "both"), shift_in_se {pooled, slope},
        cooks_distance}] for the pairs that move either by more than one SE.
    """
    fit = _budget_regression(pairs)
    if fit is None:
        return []
    bse = np.asarray(fit.results.bse, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        shifts = np.abs(np.asarray(fit.dfbeta, dtype=float)) / bse
        cooks = np.asarray(fit.cooks_distance[0], dtype=float)
    names = ("pooled", "slope")[: shifts.shape[1]]
    out = []
    for i in range(len(pairs)):
        moves = [name for j, name in enumerate(names) if shifts[i, j] > 1.0]
        if not moves:
            continue
        out.append({"run_a": pairs.run_a[i], "run_b": pairs.run_b[i], "x": float(pairs.x[i]),
                    "replicate": str(pairs.replicate[i]), "moves": "both" if len(moves) == 2 else moves[0],
                    "shift_in_se": {name: (float(shifts[i, j]) if np.isfinite(shifts[i, j]) else None)
                                    for j, name in enumerate(names)},
                    "cooks_distance": float(cooks[i]) if np.isfinite(cooks[i]) else None})
    return out


def _p(p: float | None) -> str:
    """A p value for sentences, two significant digits."""
    return "n/a" if p is None else f"{p:.2g}"


def _sentence(v: dict, axis: Axis = DATA) -> str:
    """The short sentence: the class and its key numbers (the rest is in ``details``)."""
    a, b = v["a"], v["b"]
    per = v["per_budget"]
    lo, hi = v["delta_ci"]
    ci = f", 95% CI [{lo:+.3f}, {hi:+.3f}]" if lo is not None else ""
    p = f", p = {_p(v['p_value'])}" if v["p_value"] is not None else ""
    signs = ", ".join(f"{_si(q['x'])} {q['delta_mean']:+.3f}" for q in per)
    text = (f"{v['class']}: {a} - {b} = {v['delta_mean']:+.3f} nats averaged over {len(per)} {axis.points}{ci}"
            f"{p}; {a} lower at {sum(1 for q in per if q['delta_mean'] < 0)} of {len(per)} {axis.points} ({signs})")
    if v["trend_slope"] is not None and v["trend_p"] is not None and v["class"] in (
            class_grows(a, axis), class_shrinks(a, axis), class_grows(b, axis), class_shrinks(b, axis),
            changes(axis)):
        text += f"; {v['trend_slope']:+.3f} nats per doubling of {axis.symbol} (p = {_p(v['trend_p'])})"
    if v["class"] in (class_every(a, axis), class_every(b, axis)):
        key = "p_a_better" if v["class"] == class_every(a, axis) else "p_b_better"
        text += f"; every one-sided p is at most {max(q[key] for q in per):.2g}"
    if v["crossing_basis"] == "endpoints":
        first, last = per[0], per[-1]
        text += (f"; one-sided p {_p(min(first['p_a_better'], first['p_b_better']))} at {_si(first['x'])}, "
                 f"{_p(min(last['p_a_better'], last['p_b_better']))} at {_si(last['x'])}")
    elif v["crossing_basis"] == "holm":
        shown = ", ".join(f"{_si(q['x'])} (Holm p {_p(q['p_holm'])})" for q in per if q["holm_reject"])
        text += f"; Holm over the {axis.points}: {shown}"
    return text + "."


def _details(v: dict, scheme: str, axis: Axis = DATA, design: str = "") -> list[str]:
    """Everything the short sentence leaves out, one sentence each (`design`: how the pairs were made, when not
    the data axis's same-budget, same-replicate runs)."""
    a, b = v["a"], v["b"]
    per = v["per_budget"]
    out = []
    s = axis.symbol
    if design:
        out.append(design)
    elif scheme == SCHEME_SHARED:
        out.append(f"seeds are shared across budgets: the pooled and trend tests use one number per replicate "
                   f"({v['n_replicates']} replicates, df = {v['n_replicates'] - 1})")
    else:
        out.append(f"each (budget, replicate) has its own seeds: {v['n_pairs']} independent pairs at "
                   f"{len(per)} budget(s)")
    for q in per:
        if q["p_value"] is None:
            out.append(f"{s} = {_si(q['x'])}: {a} - {b} = {q['delta_mean']:+.3f} nats (n = {q['n']}, no test)")
            continue
        lo, hi = q["delta_ci"]
        out.append(f"{s} = {_si(q['x'])}: {a} - {b} = {q['delta_mean']:+.3f} nats [{lo:+.3f}, {hi:+.3f}], "
                   f"one-sided p {_p(q['p_a_better'])} ({a} better), {_p(q['p_b_better'])} ({b} better), "
                   f"two-sided {_p(q['p_value'])}, Holm {_p(q['p_holm'])}, sign-flip {_p(q['sign_flip_p'])} "
                   f"(n = {q['n']})")
    if v["p_value"] is not None:
        df = f", df = {v['pooled_df']:.1f}" if v["pooled_df"] is not None else ""
        out.append(f"pooled ({v['pooled_basis']}): {v['delta_mean']:+.3f} nats, SE {v['pooled_se']:.3f}{df}, "
                   f"p = {_p(v['p_value'])}" + (f", sign-flip p = {_p(v['pooled_sign_flip_p'])}"
                                               if v["pooled_sign_flip_p"] is not None else ""))
    if v["trend_p"] is not None:
        lo, hi = v["trend_ci"]
        out.append(f"trend ({v['trend_basis']}): {v['trend_slope']:+.3f} nats per doubling of {s} "
                   f"[{lo:+.3f}, {hi:+.3f}], df = {v['trend_df']:.1f}, p = {_p(v['trend_p'])}")
    max_n = max((q["n"] for q in per), default=0)
    if 0 < max_n <= 4:
        out.append(f"with {max_n} replicates the exact sign-flip p of one {axis.point} is at least "
                   f"{2.0 / 2 ** max_n:.2g}, "
                   "so the per-budget tests rest on the t distribution")
    if v["influential"]:
        for f in v["influential"]:
            shifts = " and ".join(f"the {'pooled mean' if k == 'pooled' else 'trend'} by "
                                  f"{'more than any SE' if s is None else f'{s:.2f} SE'}"
                                  for k, s in f["shift_in_se"].items() if s is None or s > 1)
            cook = f" (Cook's distance {f['cooks_distance']:.2f})" if f["cooks_distance"] is not None else ""
            out.append(f"removing the pair {f['run_a']} / {f['run_b']} moves {shifts}{cook}")
    else:
        out.append("no single pair moves the pooled mean or the trend by more than one standard error")
    if v["flagged"]:
        runs = ", ".join(f["run"] for f in v["flagged"])
        other = v["without_flagged"]["class"] if v["without_flagged"] else v["class"]
        out.append(f"flagged runs, kept: {runs}; without their pairs the class is \"{other}\"")
    return [s + "." for s in out]


def pair_verdict(rows: pd.DataFrame, a: str, b: str, scheme: str, leave_one_out: bool = True,
                 with_power: bool = True, flags: dict[str, list[str]] | None = None,
                 axis: Axis = DATA) -> dict | None:
    """The ``verdicts`` entry of one pair at equal data (or on another axis), plus its ``power`` entry.

    Args:
        rows: usable runs (label, width, layers, tokens, seed, loss, run_id; n_params for the size axis,
            train_flops and maybe compute_budget for the compute axis).
        a, b: the labels (d = A - B).
        scheme: the table's seed scheme.
        leave_one_out: fill ``influential`` (refits the pooled mean and trend once per pair).
        with_power: compute the ``power`` entry (None otherwise; equal data only).
        flags: run_id -> flags (``tgbench.results.flags``); flagged runs of the pair are listed, and when
            there are any the class without their pairs is given as ``without_flagged``.
        axis: equal data (`DATA`: same budget), equal compute (`COMPUTE`: `paired.compute_pairs`) or equal size
            (`SIZE`: same width, `paired.size_pairs`).

    Returns:
        {"verdict": {...}, "power": {...}}, or None when A and B share no measured point.
    """
    design = ""
    if axis.name == SIZE.name:
        pairs, group = size_pairs(rows, a, b)
        # the widths of one budget share a replicate's data order: test per replicate
        scheme, design = SCHEME_SHARED, ("the widths of one budget share each replicate's data order, so the pooled "
                                         "and trend tests use one number per replicate")
    elif axis.name == COMPUTE.name:
        pairs, group, how = compute_pairs(rows, a, b)
        if how == "interpolated":
            scheme, design = SCHEME_SHARED, (f"{b}'s loss at {a}'s training compute is interpolated in log-log "
                                             f"between {b}'s runs of the same replicate, so a replicate's "
                                             "differences share runs: the pooled and trend tests use one number "
                                             "per replicate")
        elif how == "direct":  # an isoFLOP grid: say so, as a reader otherwise assumes the interpolation
            design = (f"an isoFLOP grid: {a}'s and {b}'s runs of one compute budget and replicate trained the same "
                      "counted FLOPs and are paired directly, nothing interpolated")
    else:
        pairs, group = paired_rows(rows, a, b)
    if not len(pairs):
        return None
    return verdict_of_pairs(pairs, a, b, scheme, group=group, axis=axis, design=design, flags=flags,
                            leave_one_out=leave_one_out, with_power=with_power and axis.name == DATA.name)


def verdict_of_pairs(pairs: Pairs, a: str, b: str, scheme: str, *, group: str = "", axis: Axis = DATA,
                     design: str = "", flags: dict[str, list[str]] | None = None, leave_one_out: bool = True,
                     with_power: bool = True) -> dict:
    """The verdict and power entries of any set of paired differences d = L_A - L_B (a pair's runs, a memory gain,
    a difference of gains): the tests, the class, the sentence and details, influence and flags."""
    result = analyse(pairs, scheme)
    cls = classify(result, a, b, axis)
    cross = crossing_sides(result, a, b) if cls.startswith("crossing") else None
    runs = sorted(set(pairs.run_a) | set(pairs.run_b))
    pooled, trend = result["pooled"], result["trend"]
    keys = ("x", "delta_mean", "delta_ci", "sd", "df", "p_value", "p_a_better", "p_b_better", "p_holm",
            "holm_reject", "sign_flip_p", "n", "ppl_a", "ppl_b", "ppl_rel")
    verdict = {
        "a": a, "b": b, "class": cls, "delta_mean": pooled["mean"], "delta_ci": pooled["ci"],
        "p_value": pooled["p"], "pooled_se": pooled["se"], "pooled_df": pooled["df"],
        "pooled_sign_flip_p": pooled["sign_flip_p"], "pooled_basis": pooled["basis"],
        "trend_slope": trend["slope"], "trend_ci": trend["ci"], "trend_p": trend["p"], "trend_se": trend["se"],
        "trend_df": trend["df"], "trend_basis": trend["basis"],
        "crossing_basis": cross[2] if cross else None,
        "per_budget": [{k: p[k] for k in keys} for p in result["per_budget"]],
        "ppl_rel": math.expm1(pooled["mean"]),
        "influential": influence(pairs) if leave_one_out else [],
        "group": group, "scheme": scheme, "unit": result["unit"], "n_replicates": int(np.unique(pairs.replicate).size),
        "n_lower": int((pairs.d < 0).sum()), "n_pairs": len(pairs),
        "runs": runs,
        "flagged": [{"run": r, "flags": list((flags or {})[r])} for r in runs if (flags or {}).get(r)],
        "without_flagged": None,
    }
    if verdict["flagged"]:
        out_runs = {f["run"] for f in verdict["flagged"]}
        keep = np.array([ra not in out_runs and rb not in out_runs
                         for ra, rb in zip(pairs.run_a, pairs.run_b, strict=True)])
        other = classify(analyse(pairs.subset(keep), scheme), a, b, axis) if keep.any() else NOT_DISTINGUISHABLE
        verdict["without_flagged"] = {"class": other, "excluded": sorted(out_runs)}
    verdict["axis"] = axis.name
    verdict["sentence"] = _sentence(verdict, axis)
    verdict["details"] = _details(verdict, scheme, axis, design)
    return {"verdict": verdict, "power": power_analysis(result, scheme, a, b) if with_power else None}


def grid_verdicts(rows: pd.DataFrame, pairs: Sequence[tuple[str, str]], scheme: str, leave_one_out: bool = True,
                  with_power: bool = True, flags: dict[str, list[str]] | None = None,
                  axis: Axis = DATA) -> tuple[list[dict], list[dict], list[str]]:
    """Verdicts and power of every pair on one axis; (verdicts, power, notes for pairs without a shared point)."""
    verdicts, power, notes = [], [], []
    for a, b in pairs:
        out = pair_verdict(rows, a, b, scheme, leave_one_out, with_power, flags, axis=axis)
        if out is None:
            why = {DATA.name: "no budget where both have a finished run of the same replicate (seed)",
                   SIZE.name: "no budget where both have finished runs of the same replicate at two or more widths",
                   COMPUTE.name: "no run of the first inside the range of training compute the second was measured "
                                 "over at the same size and replicate (a size trained at one budget has no range; "
                                 "or no train_flops in results.csv: runs from before FLOPs were counted)"}
            notes.append(f"no verdict {axis.at} for {a} vs {b}: {why[axis.name]}")
            continue
        verdicts.append(out["verdict"])
        if out["power"] is not None:
            power.append(out["power"])
    return verdicts, power, notes
