"""Multipliers with analytic intervals that include lack of fit, and the lack-of-fit F test.

Two multipliers of A over B at A's measured x, m(x) = x_B(L_A(x)) / x (m > 1: B needs m times more):

- ``interpolated`` (primary, no law assumed): L_A(x) is A's cell mean of log loss at x, and x_B comes from
  piecewise-linear interpolation of B's cell means in log-log. Where A's loss is outside B's measured losses
  the point is "outside B's range" and has no value: nothing is extrapolated. Interval: delta method on the
  log scale, with the cells' variances from each model's pooled seed variance (df: Welch-Satterthwaite), widened
  by an allowance for the straight line's miss of B's curvature between the two cells (the second difference
  of B's cell means at the nearest three cells).
- ``kaplan``: both curves fitted as L = (x_c / x)^alpha by least squares in log space. Interval: delta method
  with the parameters' covariance from the full residual mean square (lack of fit + pure error, df = n - 2),
  plus a discrepancy variance for the curve's own misfit at a point, tau^2 = max(0, MS_lof - MS_pe) / (runs
  per cell) (df = cells - 2), for A at x and for B at x_B; the degrees of freedom combine every term
  (Welch-Satterthwaite). With one seed per cell the misfit cannot be told from noise and only the residual
  mean square enters (the note says so).

Lack-of-fit F test with replicates (Draper & Smith 1998, sec. 2.1): F = (SS_lof / (c - p)) / (SS_pe / (n - c)),
c distinct x, p parameters.

Measured coverage of the true multiplier (tests/test_multipliers.py's generator, 1000 grids per setting,
3 seeds, 3-5 budgets, log-noise SD 0.003-0.03, A = B with 1.3x the data): Kaplan fits of a quadratic-in-log-log
truth cover 94.7-100% at every budget, of a saturating truth 95.1-100% (intervals are wide when the law
misfits: that is the lack of fit). Interpolated: 95-98% wherever A's loss is inside B's measured losses with
SD <= 0.01; at SD 0.03 it drops to 87-90% at some middle budgets of a curved truth, and to 52-77% at points
near the edge of B's range (few grids have a value there); read it with that in mind.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CI_LEVEL = 0.95


def lack_of_fit(x, log_y, log_pred, n_par: int) -> dict | None:
    """Lack-of-fit F test of a fit (log scale); None without replicates or without lack-of-fit df."""
    x, log_y, log_pred = (np.asarray(v, dtype=float) for v in (x, log_y, log_pred))
    values, cell = np.unique(x, return_inverse=True)
    c, n = values.size, x.size
    if n - c < 1 or c - n_par < 1:
        return None
    counts = np.bincount(cell)
    means = np.bincount(cell, weights=log_y) / counts
    ss_pe = float(np.sum((log_y - means[cell]) ** 2))
    ss_lof = float(np.sum(counts * (means - np.bincount(cell, weights=log_pred) / counts) ** 2))
    df1, df2 = c - n_par, n - c
    if ss_pe <= 0:
        f, p = (math.inf, 0.0) if ss_lof > 0 else (math.nan, None)
    else:
        f = (ss_lof / df1) / (ss_pe / df2)
        p = float(stats.f.sf(f, df1, df2))
    sentence = ("the power law does not describe these points; read the per-budget differences"
                if p is not None and p < 0.05 else "")
    return {"F": f, "df1": df1, "df2": df2, "p_value": p, "ss_lof": ss_lof, "ss_pe": ss_pe, "sentence": sentence}


def _welch(terms: list[tuple[float, float]]) -> float:
    """Welch-Satterthwaite df of a sum of variance terms [(variance, df)]; terms with df <= 0 are skipped."""
    terms = [(v, d) for v, d in terms if v > 0 and d > 0]
    if not terms:
        return math.nan
    total = sum(v for v, _ in terms)
    return total ** 2 / sum(v ** 2 / d for v, d in terms)


def _point(x, loss_a, x_b, value, half, df, status, extrapolated=False):
    lo = value * math.exp(-half) if value is not None and half is not None and math.isfinite(half) else None
    hi = value * math.exp(half) if lo is not None else None
    return {"x": float(x), "loss_a": loss_a, "x_b": x_b, "value": value, "ci_low": lo, "ci_high": hi,
            "df": None if df is None or not math.isfinite(df) else round(float(df), 2), "status": status,
            "extrapolated": extrapolated}


def _summary(points: list[dict], basis: str, note: str) -> dict:
    ok = [p["value"] for p in points if p["status"] == "ok" and not p["extrapolated"]]
    return {"points": points, "range": [min(ok), max(ok)] if ok else None, "range_ci": None,
            "failed_fraction": None, "n_resamples": 0, "interval_basis": basis, "seed_variance": basis == "seeds",
            "interval_note": note}


def _cells(x, y):
    """Distinct x, cell means of log y, runs per cell, pooled within-cell variance of log y and its df."""
    x, ly = np.asarray(x, dtype=float), np.log(np.asarray(y, dtype=float))
    values, cell = np.unique(x, return_inverse=True)
    counts = np.bincount(cell)
    means = np.bincount(cell, weights=ly) / counts
    df = int(np.sum(counts - 1))
    var = float(np.sum((ly - means[cell]) ** 2)) / df if df > 0 else math.nan
    return values, means, counts, var, df


def _curvature(lx: np.ndarray, means: np.ndarray, j: int) -> float:
    """|second derivative| of log L in log x around segment j, from three neighbouring cells (0 with two)."""
    if lx.size < 3:
        return 0.0
    i = min(max(j, 1), lx.size - 2)  # the triple (i - 1, i, i + 1) nearest the segment
    d0, d1 = lx[i] - lx[i - 1], lx[i + 1] - lx[i]
    s0, s1 = (means[i] - means[i - 1]) / d0, (means[i + 1] - means[i]) / d1
    return abs(2 * (s1 - s0) / (d0 + d1))


def interpolated_multiplier(xa, ya, xb, yb) -> dict:
    """m at A's measured x from B's cell means interpolated in log-log (module docstring)."""
    va, ma, na, sa, dfa = _cells(xa, ya)
    vb, mb, nb, sb, dfb = _cells(xb, yb)
    lxb = np.log(vb)
    t_basis = "seeds" if dfa > 0 and dfb > 0 else "none"
    points = []
    for x, la, n_a in zip(va, ma, na, strict=True):
        seg = None
        for j in range(len(vb) - 1):
            lo, hi = sorted((mb[j], mb[j + 1]))
            if lo <= la <= hi and mb[j] != mb[j + 1]:
                seg = j
                break
        if seg is None:
            points.append(_point(x, math.exp(la), None, None, None, None, "outside B's range"))
            continue
        j = seg
        dl = mb[j + 1] - mb[j]
        t = (la - mb[j]) / dl
        dlx = lxb[j + 1] - lxb[j]
        log_xb = lxb[j] + t * dlx
        value = math.exp(log_xb - math.log(x))
        half = df = None
        if t_basis == "seeds":
            g = dlx / dl
            var_a = g ** 2 * sa / n_a
            var_b = g ** 2 * sb * ((1 - t) ** 2 / nb[j] + t ** 2 / nb[j + 1])
            df = _welch([(var_a, dfa), (var_b, dfb)])
            # a straight line between two cells misses B's curvature: allow for the interpolation error,
            # |L''| t (1 - t) dlx^2 / 2 in log loss, from the second difference at the nearest third cell
            bend = _curvature(lxb, mb, j)
            allowance = abs(g) * bend * t * (1 - t) * dlx ** 2 / 2
            half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * math.sqrt(var_a + var_b) + allowance
        points.append(_point(x, math.exp(la), math.exp(log_xb), value, half, df, "ok"))
    note = ("B's cell means interpolated in log-log at A's cell means; delta-method t interval from both models' "
            "pooled seed variances" if t_basis == "seeds" else
            "no interval: a model has one seed per cell (no seed variance)")
    return _summary(points, t_basis, note)


def _kaplan_line(x, y):
    """Centred least squares of log y on log x: mean log x, fitted log y there, alpha, their variances, tau^2."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    n = lx.size
    mu = float(lx.mean())
    sxx = float(np.sum((lx - mu) ** 2))
    slope = float(np.sum((lx - mu) * (ly - ly.mean())) / sxx)
    c = float(ly.mean())
    resid = ly - c - slope * (lx - mu)
    df = n - 2
    s2 = float(resid @ resid) / df if df > 0 else math.nan
    lof = lack_of_fit(lx, ly, c + slope * (lx - mu), 2)
    tau2, tau_df = 0.0, 0
    if lof is not None:
        cells = np.unique(lx).size
        ms_lof, ms_pe = lof["ss_lof"] / lof["df1"], lof["ss_pe"] / lof["df2"]
        tau2, tau_df = max(0.0, ms_lof - ms_pe) / (n / cells), lof["df1"]
    return {"mu": mu, "c": c, "alpha": -slope, "var_c": s2 / n, "var_alpha": s2 / sxx, "df": df, "tau2": tau2,
            "tau_df": tau_df, "replicated": lof is not None, "lo": float(np.exp(lx.min())),
            "hi": float(np.exp(lx.max()))}


def kaplan_multiplier(xa, ya, xb, yb) -> dict:
    """m at A's measured x from both Kaplan fits, with the analytic interval of the module docstring."""
    fa, fb = _kaplan_line(xa, ya), _kaplan_line(xb, yb)
    points = []
    for x in np.unique(np.asarray(xa, dtype=float)):
        lx = math.log(x)
        la = fa["c"] - fa["alpha"] * (lx - fa["mu"])
        if not (fa["alpha"] > 0 and fb["alpha"] > 0):
            points.append(_point(x, math.exp(la), None, None, None, None, "fit failed"))
            continue
        log_xb = fb["mu"] + (fb["c"] - la) / fb["alpha"]
        value = math.exp(log_xb - lx)
        ab = fb["alpha"]
        terms = [(fa["var_c"] / ab ** 2, fa["df"]), ((lx - fa["mu"]) ** 2 * fa["var_alpha"] / ab ** 2, fa["df"]),
                 (fb["var_c"] / ab ** 2, fb["df"]), (((fb["c"] - la) / ab ** 2) ** 2 * fb["var_alpha"], fb["df"]),
                 (fa["tau2"] / ab ** 2, fa["tau_df"]), (fb["tau2"] / ab ** 2, fb["tau_df"])]
        var = sum(v for v, d in terms if d > 0 and math.isfinite(v))
        df = _welch(terms)
        half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * math.sqrt(var) if var > 0 and math.isfinite(df) else None
        x_b = math.exp(log_xb)
        extrapolated = bool(x_b < fb["lo"] * (1 - 1e-9) or x_b > fb["hi"] * (1 + 1e-9))
        points.append(_point(x, math.exp(la), x_b, value, half, df, "ok", extrapolated))
    replicated = fa["replicated"] and fb["replicated"]
    note = ("delta method on both Kaplan fits, from the full residual mean square (lack of fit + pure error) "
            "plus a discrepancy variance for each curve's misfit at the point" if replicated else
            "delta method on both Kaplan fits from the residual mean square; one seed per cell, so the curve's "
            "misfit cannot be told from seed noise")
    return _summary(points, "analytic", note)
