"""Is A better than B? Paired tests of the loss difference at the measured budgets, a class, power.

The method is /work/shared/statistics.md ("How tgbench decides"), summarised here:

- The replicate is the unit. A replicate fixes the data order and the initialisation, and every model of a
  replicate gets the same ones, so A's and B's runs of one (budget, replicate) are a pair: d = L_A - L_B
  (nats/token, the loss ``tgbench.results.table.fit_loss`` picks).
- Two designs, recorded in results.csv's ``seed_scheme`` column:
  "per-budget" (tgbench >= 0.3: each (budget, replicate) has its own seeds, so cells are independent) and
  "shared" (older grids, and any table without the column: a replicate's seed is the same at every budget,
  smaller budgets are prefixes of the same seeded order, so a replicate's differences are correlated across
  budgets). Shared designs are analysed at replicate level: one number per replicate, df = replicates - 1.
- Per measured budget: mean of d, t interval (df = n - 1), paired t p and the exact sign-flip p (2^n sign
  flips; with n replicates the smallest two-sided sign-flip p is 2 / 2^n, 0.25 for 3).
- Pooled (budget as a fixed effect, no interaction): "per-budget": the mean of every d, t on its residuals
  (df = N - 1); "shared": the mean of the replicates' mean differences, t across replicates (df = R - 1).
- Interaction (does the difference change with budget?): the slope of d against log2 D (nats per doubling).
  "per-budget": least squares over every d (df = N - 2); "shared": each replicate's own slope, t across
  replicates (df = R - 1).
- Classes, in this order: "A better at every measured budget" (intersection-union test, Berger 1982: every
  per-budget paired t rejects at 5% with A lower; at least 2 replicates per budget); "depends on budget" (the
  interaction rejects at 5% and the per-budget mean differences have both signs); "A better on average"
  (the pooled test rejects, the interaction does not); otherwise "not distinguishable". The same with B.
  Only budgets where both models ran enter: nothing is extrapolated.
- ``sensitive_to``: the run ids whose removal (leave one run out) changes the class. Removing a run removes
  its pair, so a run and its partner of the same budget and replicate are named together; the flags
  (``tgbench.results.flags``) say which of the two is off.
- Power: from the measured SD of the pooled test's unit (d, or a replicate's mean d), the smallest |A - B|
  the pooled paired t detects with 80% power at 5% (two-sided, noncentral t), and the replicates per budget
  needed to detect the observed difference.

Measured error rates (tests/test_verdicts.py's generator, 2000 grids each, 3 budgets x 2, seed SD 0.03 nats):
A = B with half the seed variance shared across budgets, analysed per replicate: a "better" class in 5.5%
of grids with 3 replicates, 5.0% with 5, 4.9% with 90% shared; independent cells (per-budget): 4.5%. The same
shared-seed tables analysed as independent cells: 18.5% (why shared tables are tested per replicate). A
crossing of 0.06 nats per doubling: "depends on budget" in 84% (per-budget, 3 replicates), 99% (shared,
5 replicates), 69% (shared, 3 replicates: one slope per replicate, df = 2).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from tgbench.plan.config import SCHEME_PER_BUDGET, SCHEME_SHARED, SEED_SCHEMES

ALPHA = 0.05
POWER_TARGET = 0.8
MAX_REPLICATES = 10_000  # replicates_needed above this is reported as null ("not within reach")
SCHEMES = SEED_SCHEMES
NOT_DISTINGUISHABLE = "not distinguishable"
DEPENDS = "depends on budget"


def class_every(label: str) -> str:
    return f"{label} better at every measured budget"


def class_average(label: str) -> str:
    return f"{label} better on average"


def verdict_classes(a: str, b: str) -> list[str]:
    """The six verdict classes of a pair, with the labels filled in."""
    return [class_every(a), class_average(a), DEPENDS, NOT_DISTINGUISHABLE, class_every(b), class_average(b)]


def seed_scheme(results: pd.DataFrame) -> tuple[str, str]:
    """The design of a results table: ("shared" | "per-budget", where that was read from)."""
    if "seed_scheme" not in results.columns:
        return SCHEME_SHARED, "assumed: results.csv has no seed_scheme column (tables before tgbench 0.3)"
    values = {str(v) for v in results["seed_scheme"] if isinstance(v, str) and v}
    if values == {SCHEME_PER_BUDGET}:
        return SCHEME_PER_BUDGET, "results.csv column seed_scheme"
    if values - set(SCHEMES):
        return SCHEME_SHARED, f"assumed: unknown seed_scheme values {sorted(values - set(SCHEMES))}"
    if len(values) > 1:
        return SCHEME_SHARED, "assumed: the runs mix seed schemes"
    return SCHEME_SHARED, "results.csv column seed_scheme" if values else "assumed: seed_scheme is empty"


# ----------------------------------------------------------------------------------------------------------
# pairing


@dataclass
class Pairs:
    """A's and B's runs of the same (budget, replicate): one entry per pair, sorted by budget, replicate."""

    x: np.ndarray  # (n,) the budget D
    replicate: np.ndarray  # (n,) the replicate (seed) index
    d: np.ndarray  # (n,) L_A - L_B, nats/token
    run_a: list[str]
    run_b: list[str]
    loss_a: np.ndarray  # (n,) L_A

    def __len__(self) -> int:
        return int(self.d.size)

    def subset(self, keep: np.ndarray) -> Pairs:
        idx = np.flatnonzero(keep)
        return Pairs(self.x[idx], self.replicate[idx], self.d[idx], [self.run_a[i] for i in idx],
                     [self.run_b[i] for i in idx], self.loss_a[idx])


def paired_rows(rows: pd.DataFrame, a: str, b: str) -> tuple[Pairs, str]:
    """A's and B's runs of the same (budget, replicate) in the data-axis group where they share most budgets.

    Args:
        rows: usable runs with columns label, width, layers, tokens, seed, loss, run_id.
        a, b: the labels.

    Returns:
        (the pairs; the group, e.g. "width=128,layers=4", "" when the pair shares no cell). A duplicate run
        (the same cell and seed twice) keeps its first row.
    """
    found: dict[str, dict[tuple, tuple[float, str]]] = {a: {}, b: {}}
    columns = [rows[c].tolist() for c in ("label", "width", "layers", "tokens", "seed", "loss", "run_id")]
    for label, width, layers, tokens, seed, loss, run in zip(*columns, strict=True):
        if label in found:
            found[label].setdefault((float(width), float(layers), float(tokens), seed), (float(loss), str(run)))
    shared = sorted(set(found[a]) & set(found[b]))
    if not shared:
        return Pairs(np.zeros(0), np.zeros(0), np.zeros(0), [], [], np.zeros(0)), ""
    groups: dict[tuple, list[tuple]] = {}
    for key in shared:
        groups.setdefault(key[:2], []).append(key)
    (width, layers), keys = max(groups.items(), key=lambda kv: (len({k[2] for k in kv[1]}), len(kv[1]), kv[0][0]))
    keys = sorted(keys, key=lambda k: (k[2], str(k[3])))
    pairs = Pairs(np.array([k[2] for k in keys]), np.array([str(k[3]) for k in keys]),
                  np.array([found[a][k][0] - found[b][k][0] for k in keys]),
                  [found[a][k][1] for k in keys], [found[b][k][1] for k in keys],
                  np.array([found[a][k][0] for k in keys]))
    return pairs, f"width={_plain(width)},layers={_plain(layers)}"


def _plain(value):
    return int(value) if float(value).is_integer() else float(value)


# ----------------------------------------------------------------------------------------------------------
# tests


def t_test(values: np.ndarray) -> dict:
    """One-sample t of the mean against 0: mean, 95% CI, p (two-sided), n, sd, df; CI and p None for n < 2."""
    values = np.asarray(values, dtype=float)
    n = values.size
    mean = float(values.mean()) if n else None
    if n < 2:
        return {"mean": mean, "ci": [None, None], "p": None, "n": n, "sd": None, "df": None}
    sd = float(values.std(ddof=1))
    se = sd / math.sqrt(n)
    df = n - 1
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    if se > 0:
        p = float(2 * stats.t.sf(abs(mean) / se, df))
    else:
        p = 0.0 if mean != 0 else 1.0
    return {"mean": mean, "ci": [mean - half, mean + half], "p": p, "n": n, "sd": sd, "df": df}


def sign_flip_p(values: np.ndarray) -> float | None:
    """Exact two-sided sign-flip permutation p of the mean (all 2^n flips; None for n < 1 or n > 20)."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 1 or n > 20:
        return None
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2^n, n)
    means = np.abs(flips @ values) / n
    return float(np.mean(means >= abs(values.mean()) * (1 - 1e-12)))


def slope_test(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares slope of y on x with its t test (df = n - 2); None fields when not estimable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = x.size
    sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
    if n < 3 or sxx <= 0:
        slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx) if n >= 2 and sxx > 0 else None
        return {"slope": slope, "ci": [None, None], "p": None, "df": None}
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    resid = y - y.mean() - slope * (x - x.mean())
    df = n - 2
    se = math.sqrt(float(np.sum(resid ** 2)) / df / sxx)
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    p = float(2 * stats.t.sf(abs(slope) / se, df)) if se > 0 else (0.0 if slope != 0 else 1.0)
    return {"slope": slope, "ci": [slope - half, slope + half], "p": p, "df": df}


def per_replicate_slopes(pairs: Pairs) -> np.ndarray:
    """Each replicate's own slope of d on log2 D (replicates with at least 2 budgets)."""
    slopes = []
    for rep in np.unique(pairs.replicate):
        here = pairs.replicate == rep
        lx = np.log2(pairs.x[here])
        if np.unique(lx).size >= 2:
            slopes.append(slope_test(lx, pairs.d[here])["slope"])
    return np.asarray(slopes, dtype=float)


def analyse(pairs: Pairs, scheme: str) -> dict:
    """Per-budget, pooled and interaction tests of one pair's paired differences.

    Args:
        pairs: ``paired_rows`` output (non-empty).
        scheme: "shared" or "per-budget" (module docstring).

    Returns:
        {per_budget, pooled (t_test dict), interaction (slope per doubling, ci, p, df), unit, n_units}.
    """
    per_budget = []
    for x in np.unique(pairs.x):
        here = pairs.x == x
        d = pairs.d[here]
        t = t_test(d)
        # perplexity summaries are geometric means over replicates: exp of the mean loss
        log_ppl_a = float(pairs.loss_a[here].mean())
        per_budget.append({"x": float(x), "delta_mean": t["mean"], "delta_ci": t["ci"], "p_value": t["p"],
                           "sign_flip_p": sign_flip_p(d), "n": int(d.size), "sd": t["sd"],
                           "ppl_a": math.exp(log_ppl_a), "ppl_b": math.exp(log_ppl_a - t["mean"]),
                           "ppl_rel": math.expm1(t["mean"])})
    if scheme == SCHEME_SHARED:
        units = np.array([pairs.d[pairs.replicate == rep].mean() for rep in np.unique(pairs.replicate)])
        pooled = t_test(units)
        slopes = per_replicate_slopes(pairs)
        st = t_test(slopes) if slopes.size else {"mean": None, "ci": [None, None], "p": None, "df": None}
        interaction = {"slope": st["mean"], "ci": st["ci"], "p": st["p"], "df": st["df"],
                       "basis": "each replicate's slope, t across replicates"}
        unit = "replicate"
    else:
        units = pairs.d
        pooled = t_test(units)
        st = slope_test(np.log2(pairs.x), pairs.d)
        interaction = {**st, "basis": "least squares over every (budget, replicate) pair"}
        unit = "pair"
    pooled["sign_flip_p"] = sign_flip_p(units)
    return {"per_budget": per_budget, "pooled": pooled, "interaction": interaction, "unit": unit,
            "n_units": int(units.size)}


def classify(result: dict, a: str, b: str) -> str:
    """The verdict class from ``analyse`` output (rules in the module docstring)."""
    per = result["per_budget"]
    pooled, inter = result["pooled"], result["interaction"]
    for label, sign in ((a, -1.0), (b, 1.0)):
        if per and all(p["p_value"] is not None and p["p_value"] < ALPHA and p["n"] >= 2
                       and sign * p["delta_mean"] > 0 for p in per):
            return class_every(label)
    signs = {np.sign(p["delta_mean"]) for p in per if p["delta_mean"] is not None}
    interacts = inter["p"] is not None and inter["p"] < ALPHA
    if interacts and {-1.0, 1.0} <= signs:
        return DEPENDS
    if pooled["p"] is not None and pooled["p"] < ALPHA and not interacts:
        return class_average(a) if pooled["mean"] < 0 else class_average(b)
    return NOT_DISTINGUISHABLE


# ----------------------------------------------------------------------------------------------------------
# power


def _power(effect: float, sd: float, n_units: int) -> float:
    """Power of a two-sided one-sample t test at ALPHA with n_units units of SD sd, true mean ``effect``."""
    df = n_units - 1
    if df < 1 or sd <= 0:
        return float("nan")
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    nc = abs(effect) / (sd / math.sqrt(n_units))
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if not math.isfinite(power):  # scipy's noncentral t gives NaN far in the tail, where the power is ~1
        return 1.0 if nc > crit else 0.0
    return min(power, 1.0)


def power_analysis(result: dict, scheme: str, a: str, b: str) -> dict:
    """fits.json ``power`` entry of a pair (module docstring).

    The unit SD is the pooled test's: a replicate's mean difference ("shared") or one pair's difference
    ("per-budget"). Replicates per budget needed: the smallest R at which the pooled test reaches 80% power
    for the observed difference (the number of budgets kept as measured).
    """
    pooled = result["pooled"]
    n_units, sd = result["n_units"], pooled["sd"]
    n_budgets = len(result["per_budget"])
    replicates = int(max(p["n"] for p in result["per_budget"])) if result["per_budget"] else 0
    out = {"a": a, "b": b, "alpha": ALPHA, "power": POWER_TARGET, "test": "pooled paired t, two-sided",
           "unit": result["unit"], "sd": sd, "n_units": n_units, "n_budgets": n_budgets,
           "replicates": replicates, "observed_delta": pooled["mean"], "min_detectable_delta": None,
           "replicates_needed": None, "power_at_observed": None}
    if sd is None or not sd > 0 or n_units < 2:
        out["note"] = "no seed variance to size the design from (fewer than 2 replicates, or identical losses)"
        out["sentence"] = power_sentence(out)  # `tgbench fit` prints every entry's sentence
        return out
    hi = sd * 1000.0 / math.sqrt(n_units)
    out["min_detectable_delta"] = float(optimize.brentq(lambda e: _power(e, sd, n_units) - POWER_TARGET,
                                                        1e-12 * sd, hi))
    observed = pooled["mean"]
    out["power_at_observed"] = _power(observed, sd, n_units) if observed else None
    if observed:
        per_rep = 1 if scheme == SCHEME_SHARED else max(n_budgets, 1)  # units a replicate adds
        for r in range(2, MAX_REPLICATES + 1):
            if _power(observed, sd, r * per_rep) >= POWER_TARGET:
                out["replicates_needed"] = r
                break
    out["sentence"] = power_sentence(out)
    return out


def power_sentence(power: dict) -> str:
    """One sentence of a ``power`` entry."""
    a, b = power["a"], power["b"]
    if power.get("min_detectable_delta") is None:
        return f"{a} vs {b}: {power.get('note', 'no power estimate')}."
    unit = "replicate means" if power["unit"] == "replicate" else "paired runs"
    text = (f"{a} vs {b}: with {power['replicates']} replicates at {power['n_budgets']} budget(s) and the measured "
            f"SD of {unit} ({power['sd']:.3f} nats), this design detects a difference of "
            f"{power['min_detectable_delta']:.3f} nats with 80% power at 5%")
    needed, observed = power.get("replicates_needed"), power.get("observed_delta")
    if observed:
        text += (f"; the observed {observed:+.3f} nats would need {needed} replicates per budget" if needed else
                 f"; the observed {observed:+.3f} nats would need more than {MAX_REPLICATES:,} replicates")
    return text + "."


# ----------------------------------------------------------------------------------------------------------
# the pair's fits.json entries


def _sentence(v: dict, scheme: str) -> str:
    """The plain sentence of a verdict: what the test showed, with the numbers."""
    a = v["a"]
    n_pairs = sum(p["n"] for p in v["per_budget"])
    lower = v["n_lower"]
    lo, hi = v["delta_ci"]
    ci = f", 95% CI [{lo:+.3f}, {hi:+.3f}]" if lo is not None else ""
    p = v["p_value"]
    reps = v["n_replicates"]
    test = (f"with {reps} replicates (seeds shared across budgets, so one mean per replicate), p = {p:.2g}"
            if scheme == SCHEME_SHARED and p is not None else
            f"with {reps} replicates per budget, p = {p:.2g}" if p is not None else
            f"with {reps} replicate(s) there is no test")
    parts = [f"{v['class']}: {a}'s loss is lower in {lower} of {n_pairs} same-replicate comparisons "
             f"(mean {v['delta_mean']:+.3f} nats{ci}); {test}"]
    slope, ip = v["interaction_slope"], v["interaction_p"]
    if slope is not None and ip is not None:
        parts.append(f"the difference changes by {slope:+.3f} nats per doubling of D (interaction p = {ip:.2g})")
    if v["per_budget"] and max(p["n"] for p in v["per_budget"]) <= 4:
        smallest = 2.0 / 2 ** max(p["n"] for p in v["per_budget"])
        parts.append(f"with {max(p['n'] for p in v['per_budget'])} replicates the exact sign-flip p of one budget "
                     f"is at least {smallest:.2g}")
    if v["sensitive_to"]:
        parts.append(f"the class changes without run {', '.join(v['sensitive_to'])}")
    if v.get("without_flagged") and v["without_flagged"]["class"] != v["class"]:
        parts.append(f"without the flagged runs ({', '.join(v['without_flagged']['excluded'])}) it is "
                     f"\"{v['without_flagged']['class']}\"")
    return "; ".join(parts) + "."


def pair_verdict(rows: pd.DataFrame, a: str, b: str, scheme: str, leave_one_out: bool = True,
                 with_power: bool = True, flags: dict[str, list[str]] | None = None) -> dict | None:
    """The ``verdicts`` entry of one pair (the keys fits.json's layout lists), plus its ``power`` entry.

    Args:
        rows: usable runs (label, width, layers, tokens, seed, loss, run_id).
        a, b: the labels (d = A - B).
        scheme: the table's seed scheme.
        leave_one_out: fill ``sensitive_to`` (refits the class once per run of the pair).
        with_power: compute the ``power`` entry (None otherwise).
        flags: run_id -> flags (``tgbench.results.flags``); flagged runs of the pair are listed, and when there are any
            the class without them is given as ``without_flagged``.

    Returns:
        {"verdict": {...}, "power": {...}}, or None when A and B share no (budget, replicate).
    """
    pairs, group = paired_rows(rows, a, b)
    if not len(pairs):
        return None
    result = analyse(pairs, scheme)
    cls = classify(result, a, b)
    sensitive = []
    runs = sorted(set(pairs.run_a) | set(pairs.run_b))
    if leave_one_out:
        for run in runs:
            keep = np.array([ra != run and rb != run for ra, rb in zip(pairs.run_a, pairs.run_b, strict=True)])
            other = classify(analyse(pairs.subset(keep), scheme), a, b) if keep.any() else NOT_DISTINGUISHABLE
            if other != cls:
                sensitive.append(run)
    pooled, inter = result["pooled"], result["interaction"]
    verdict = {
        "a": a, "b": b, "class": cls, "delta_mean": pooled["mean"], "delta_ci": pooled["ci"],
        "p_value": pooled["p"], "interaction_p": inter["p"],
        "per_budget": [{k: p[k] for k in ("x", "delta_mean", "delta_ci", "p_value", "sign_flip_p", "n", "ppl_a",
                                          "ppl_b", "ppl_rel")} for p in result["per_budget"]],
        "ppl_rel": math.expm1(pooled["mean"]),
        "sensitive_to": sensitive,
        "group": group, "scheme": scheme, "unit": result["unit"], "n_replicates": int(np.unique(pairs.replicate).size),
        "n_lower": int((pairs.d < 0).sum()), "n_pairs": len(pairs), "pooled_df": pooled["df"],
        "pooled_sign_flip_p": pooled["sign_flip_p"], "interaction_slope": inter["slope"],
        "interaction_ci": inter["ci"], "interaction_df": inter["df"], "interaction_basis": inter["basis"],
        "runs": runs,
        "flagged": [{"run": r, "flags": list((flags or {})[r])} for r in runs if (flags or {}).get(r)],
        "without_flagged": None,
    }
    if verdict["flagged"]:
        out_runs = {f["run"] for f in verdict["flagged"]}
        keep = np.array([ra not in out_runs and rb not in out_runs
                         for ra, rb in zip(pairs.run_a, pairs.run_b, strict=True)])
        other = classify(analyse(pairs.subset(keep), scheme), a, b) if keep.any() else NOT_DISTINGUISHABLE
        verdict["without_flagged"] = {"class": other, "excluded": sorted(out_runs)}
    verdict["sentence"] = _sentence(verdict, scheme)
    return {"verdict": verdict, "power": power_analysis(result, scheme, a, b) if with_power else None}


def grid_verdicts(rows: pd.DataFrame, pairs: Sequence[tuple[str, str]], scheme: str, leave_one_out: bool = True,
                  with_power: bool = True,
                  flags: dict[str, list[str]] | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """Verdicts and power of every pair; (verdicts, power, notes for pairs without a shared cell)."""
    verdicts, power, notes = [], [], []
    for a, b in pairs:
        out = pair_verdict(rows, a, b, scheme, leave_one_out, with_power, flags)
        if out is None:
            notes.append(f"no verdict for {a} vs {b}: no budget where both have a finished run of the same "
                         "replicate (seed)")
            continue
        verdicts.append(out["verdict"])
        if out["power"] is not None:
            power.append(out["power"])
    return verdicts, power, notes
