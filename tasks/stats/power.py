"""How large a difference a design can show: prospective power of the verdict's tests.

Power (prospective only: no "observed power", which is a function of p)
---------------------------------------------------------------------
From the pooled within-budget SD of d (``sd_within``; df = sum_k (n_k - 1)), at the design's replicates per
budget: the minimum detectable difference at 80% power for "on average" (the pooled test, two-sided 5%;
"shared": from the SD of the replicates' mean differences) and for "every budget" (the IUT: the product over
budgets of the one-sided power at 5%, noncentral t; with shared seeds the budgets' tests are positively
correlated and the product is a lower bound of their joint power); and the replicates per budget needed for
80% power to show the observed per-budget differences as "every budget" (when they share a sign) and as a
crossing (when the endpoints' differences differ in sign).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from tgbench.plan.config import SCHEME_SHARED
from tgbench.tasks.stats.paired import ALPHA

POWER_TARGET = 0.8
MAX_REPLICATES = 10_000  # replicates needed above this is reported as null ("not within reach")


def _finite_power(value: float, nc: float, crit: float) -> float:
    # scipy's noncentral t gives NaN far in the tail, where the power is ~1 or ~0
    return min(float(value), 1.0) if math.isfinite(value) else (1.0 if nc > crit else 0.0)


def _power_two_sided(effect: float, se: float, df: float) -> float:
    """Power of a two-sided t test at ALPHA of an estimate with standard error se and df, true value effect."""
    crit = float(stats.t.ppf(1 - ALPHA / 2, df))
    nc = abs(effect) / se
    return _finite_power(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc), nc, crit)


def _power_one_sided(effect: np.ndarray, sd: float, n: np.ndarray) -> np.ndarray:
    """Power of the one-sided paired t at ALPHA of n pairs (SD sd) in the direction of a true difference."""
    effect, n = np.broadcast_arrays(np.abs(np.asarray(effect, dtype=float)), np.asarray(n, dtype=float))
    df = n - 1
    crit = stats.t.ppf(1 - ALPHA, df)
    nc = effect * np.sqrt(n) / sd
    power = stats.nct.sf(crit, df, nc)
    return np.where(np.isfinite(power), np.minimum(power, 1.0), np.where(nc > crit, 1.0, 0.0))


def _replicates_needed(effects: Sequence[float], sd: float) -> int | None:
    """The fewest replicates per budget at which every one-sided test of ``effects`` rejects together with
    80% power (the product of their powers); None above MAX_REPLICATES."""
    reps = np.arange(2, MAX_REPLICATES + 1, dtype=float)
    power = np.prod([_power_one_sided(e, sd, reps) for e in effects], axis=0)
    hit = np.flatnonzero(power >= POWER_TARGET)
    return int(reps[hit[0]]) if hit.size else None


def power_analysis(result: dict, scheme: str, a: str, b: str) -> dict:
    """fits.json ``power`` entry of a pair (module docstring: prospective power only).

    Returns:
        {a, b, alpha, power (the target, 0.8), scheme, sd_within, sd_within_df, sd_replicate_means ("shared"),
        n_budgets, replicates (the fewest at a budget), replicates_max, observed_per_budget,
        min_detectable_average, min_detectable_every, replicates_needed_every, replicates_needed_crossing, note,
        sentence}.
    """
    per = result["per_budget"]
    n = np.array([p["n"] for p in per], dtype=float)
    sd = np.array([p["sd"] if p.get("sd") is not None else 0.0 for p in per], dtype=float)
    has = n >= 2
    df_within = float(np.sum(n[has] - 1))
    sd_within = math.sqrt(float(np.sum((n[has] - 1) * sd[has] ** 2)) / df_within) if df_within > 0 else None
    observed = [p.get("delta_mean") for p in per]
    out = {"a": a, "b": b, "alpha": ALPHA, "power": POWER_TARGET, "scheme": scheme, "sd_within": sd_within,
           "sd_within_df": df_within if sd_within is not None else None, "sd_replicate_means": None,
           "n_budgets": len(per), "replicates": int(n.min()) if n.size else 0,
           "replicates_max": int(n.max()) if n.size else 0,
           "observed_per_budget": [{"x": p["x"], "delta_mean": p.get("delta_mean")} for p in per],
           "min_detectable_average": None, "min_detectable_every": None, "replicates_needed_every": None,
           "replicates_needed_crossing": None, "note": None}
    if sd_within is None or not sd_within > 0:
        out["note"] = "no seed variance to size the design from (fewer than 2 replicates, or identical losses)"
        out["sentence"] = power_sentence(out)  # `tgbench fit` prints every entry's sentence
        return out
    k = len(per)
    if scheme == SCHEME_SHARED:
        units_sd, n_units = result["pooled"].get("sd"), result["n_units"]
        out["sd_replicate_means"] = units_sd
        se_unit = units_sd / math.sqrt(n_units) if units_sd and n_units >= 2 else None
        df_avg = n_units - 1
    else:
        # the pooled Welch test with one SD at every budget: SE = sd sqrt(sum 1/n_k) / K
        inv = 1.0 / n
        se_unit = sd_within * math.sqrt(float(inv.sum())) / k
        df_avg = float(inv.sum() ** 2 / np.sum(inv ** 2 / np.maximum(n - 1, 1)))
    if se_unit:
        out["min_detectable_average"] = float(optimize.brentq(
            lambda e: _power_two_sided(e, se_unit, df_avg) - POWER_TARGET, 1e-9 * se_unit, 100.0 * se_unit))
    if has.all():
        out["min_detectable_every"] = float(optimize.brentq(
            lambda e: float(np.prod(_power_one_sided(e, sd_within, n))) - POWER_TARGET,
            1e-9 * sd_within, 100.0 * sd_within))
    signs = {np.sign(v) for v in observed if v is not None}
    if observed and None not in observed and len(signs) == 1 and signs != {0.0}:
        out["replicates_needed_every"] = _replicates_needed(observed, sd_within)
    elif observed and None not in observed:
        out["note"] = "the observed per-budget differences differ in sign: \"every budget\" is not in reach"
    if len(per) >= 2 and None not in (observed[0], observed[-1]) and observed[0] * observed[-1] < 0:
        out["replicates_needed_crossing"] = _replicates_needed([observed[0], observed[-1]], sd_within)
    out["sentence"] = power_sentence(out)
    return out


def _si(x: float) -> str:
    """A budget for sentences: 100000 -> 100k, 1500000 -> 1.5M, 3.1e13 FLOPs -> 31T."""
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def power_sentence(power: dict) -> str:
    """The sentence of a ``power`` entry: what this design detects, and what the observed differences need."""
    a, b = power["a"], power["b"]
    if power.get("sd_within") is None or not power["sd_within"] > 0:
        return f"{a} vs {b}: {power.get('note') or 'no power estimate'}."
    parts = []
    reps = power["replicates"]
    if power.get("replicates_max", reps) != reps:
        reps = f"{reps}-{power['replicates_max']}"
    design = (f"{a} vs {b}: with {reps} replicates per budget at {power['n_budgets']} budget(s) and "
              f"a within-budget SD of the paired difference of {power['sd_within']:.3f} nats, this design detects")
    found = []
    if power.get("min_detectable_average") is not None:
        basis = (f", from the SD of the replicates' mean differences, {power['sd_replicate_means']:.3f} nats"
                 if power.get("sd_replicate_means") is not None else "")
        found.append(f"an average difference of {power['min_detectable_average']:.3f} nats (\"on average\"{basis})")
    if power.get("min_detectable_every") is not None:
        found.append(f"a difference of {power['min_detectable_every']:.3f} nats at every budget "
                     "(\"every budget\")")
    parts.append(f"{design} {' and '.join(found)} with 80% power at 5%" if found else
                 f"{a} vs {b}: no minimum detectable difference (too few replicates)")
    observed = ", ".join(f"{o['delta_mean']:+.3f} at {_si(o['x'])}" for o in power["observed_per_budget"]
                         if o["delta_mean"] is not None)
    needed = power.get("replicates_needed_every")
    if needed is not None:
        parts.append(f"showing the observed per-budget differences ({observed}) as \"every budget\" with 80% power "
                     f"needs {needed} replicates per budget")
    elif power.get("note"):
        parts.append(power["note"])
    elif observed:
        parts.append(f"showing the observed differences ({observed}) as \"every budget\" needs more than "
                     f"{MAX_REPLICATES:,} replicates per budget")
    crossing = power.get("replicates_needed_crossing")
    if crossing is not None:
        parts.append(f"showing the endpoints' differences as a crossing needs {crossing} replicates per budget")
    return "; ".join(parts) + "."
