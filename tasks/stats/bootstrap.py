"""Intervals of fitted laws and of the multipliers computed from them: a bootstrap over seeds within cells.

A cell is one x value of an axis group (one budget, or one size); its runs differ only in their seed.

- Resampling: each bootstrap resample keeps every x and every cell's number of seeds, and resamples the
  seeds within their cell (the cell's mean log loss plus seed deviations drawn with replacement). The
  deviations are rescaled, cell by cell, so that their variance is the axis's pooled seed variance s^2 (the
  unbiased one, with nu = sum over cells of (seeds - 1) degrees of freedom); a cell with a single seed draws
  from the pooled deviations. Without the rescaling, two seeds per cell give the resampled cell means half
  the variance of real ones.
- Interval: estimate +- t(0.975, df) x bootstrap standard deviation, on the log scale (every parameter and
  multiplier is positive, and asymmetric in x). The t quantile pays for a seed variance estimated from a few
  degrees of freedom: df = nu for one adapter's parameters, and for a multiplier the Welch-Satterthwaite
  combination of both adapters' nu, weighted by how much of the bootstrap variance each adapter causes.
- One seed per cell: there is no seed variance to resample. The resamples then draw the fit's residuals
  (scaled by sqrt(n / (n - p)), df = n - p), so the interval reflects the scatter of the points around the
  curve, not a measured seed variance; the fit says so (``seed_variance`` false and ``interval_note``).
- As many parameters as distinct x (a saturating fit of 3 budgets): the curve passes through the points,
  so there is nothing to estimate a noise from: status "exactly determined, no interval" and no intervals.

Measured coverage (synthetic grids, 3% multiplicative noise, 2 seeds per cell, 3-5 x values; the tests in
tests/test_scaling.py, ``test_interval_coverage*``): the plain row bootstrap's percentile intervals covered
the true Kaplan alpha in 64-72% of grids and the true multiplier in 73-76%. The method above covers
alpha 94.9%, x_c 94.9% and m 96.1% (1200 grids: 400 each of 3, 4 and 5 budgets, kaplan); saturating curves
(4-5 budgets, 400 grids) alpha 96.6%, E 95.6%, A 96.9%, m 95.8%; one seed per cell (5 budgets, kaplan,
600 grids) alpha 95.7%, m 95.5%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from tgbench.core.errors import UserError
from tgbench.core.files import json_safe
from tgbench.tasks.stats.laws import (
    FIT_FORMS,
    STATUS_EXACT,
    PowerLawFit,
    _as_points,
    _cells,
    _single_threaded,
    fit_power_law,
    inverse_form,
    predict_form,
)

try:  # comes with scikit-learn (an lm-eval dependency); only used to keep BLAS single-threaded
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None


CI_LEVEL = 0.95


MAX_RESAMPLES = 100_000


def check_resamples(n_resamples) -> int:
    """The number of bootstrap resamples as an int in [0, MAX_RESAMPLES].

    Raises:
        UserError: for anything else, with the accepted range as the fix.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer) \
            or not 0 <= n_resamples <= MAX_RESAMPLES:
        raise UserError(f"--resamples must be a whole number from 0 to {MAX_RESAMPLES:,}; got {n_resamples!r}",
                        "use e.g. --resamples 200 (0 skips the intervals; a few hundred give stable intervals)")
    return int(n_resamples)


@dataclass
class BootstrapFit:
    """A point fit with its bootstrap refits.

    Attributes:
        fit: the point fit (with ``intervals`` and the interval fields filled in).
        params: each parameter's refitted values, shape (R,), NaN where a refit failed; empty without a
            bootstrap.
        df: degrees of freedom of the noise estimate (None without an interval).
    """

    fit: PowerLawFit
    params: dict[str, np.ndarray] = field(default_factory=dict)
    df: float | None = None

    @property
    def n_resamples(self) -> int:
        return len(next(iter(self.params.values()))) if self.params else 0


def t_intervals(points, samples, df, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """point * exp(+-t(df) x SD(log samples)) per column: t intervals on the log scale from bootstrap samples.

    Args:
        points: the estimates, shape (k,) (positive).
        samples: bootstrap values, shape (R, k); non-finite and non-positive ones (failed refits) are ignored.
        df: degrees of freedom of the noise estimate, scalar or (k,).
        level: coverage of the intervals.

    Returns:
        (low, high), each of shape (k,); NaN where a column has no positive point, no positive df or fewer than
        2 usable samples.
    """
    points = np.asarray(points, dtype=float)
    samples = np.asarray(samples, dtype=float).reshape(-1, points.size)
    df = np.broadcast_to(np.asarray(df, dtype=float), points.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.where(np.isfinite(samples) & (samples > 0), np.log(np.where(samples > 0, samples, 1.0)), np.nan)
        usable = (np.sum(np.isfinite(logs), axis=0) >= 2) & (points > 0) & (df > 0)
        spread = np.nanstd(np.where(usable, logs, 0.0), axis=0, ddof=1)
        half = stats.t.ppf(0.5 + level / 2, np.where(usable, df, 1.0)) * spread
        low, high = points * np.exp(-half), points * np.exp(half)
    return np.where(usable, low, np.nan), np.where(usable, high, np.nan)


def t_interval(point: float | None, samples, df: float | None,
               level: float = CI_LEVEL) -> tuple[float | None, float | None]:
    """One t interval on the log scale (see ``t_intervals``); (None, None) when there is none."""
    if point is None or df is None:
        return None, None
    low, high = t_intervals([point], np.asarray(samples, dtype=float).reshape(-1, 1), df, level)
    return (float(low[0]), float(high[0])) if np.isfinite(low[0]) else (None, None)


def seed_resamples(x: np.ndarray, log_y: np.ndarray, n_resamples: int,
                   rng: np.random.Generator) -> tuple[np.ndarray | None, int, str]:
    """Resampled log losses that keep every x: seeds resampled within their cell (module docstring).

    Args:
        x: x of every row (a cell is one distinct x).
        log_y: log loss of every row.
        n_resamples: number of resamples R.
        rng: random generator.

    Returns:
        (log losses of shape (R, n), or None when the design has no seed variance to resample; the degrees of
        freedom of the pooled seed variance; a note for the reader).
    """
    cell = _cells(x)
    counts = np.bincount(cell)
    df = int(np.sum(counts - 1))
    if df == 0:
        return None, 0, "one seed per cell"
    means = np.bincount(cell, weights=log_y) / counts
    dev = log_y - means[cell]
    ss = np.bincount(cell, weights=dev ** 2)
    pooled_var = float(ss.sum()) / df
    if pooled_var <= 0:
        return None, df, "every cell's seeds have identical losses"
    # rescale each cell's deviations so a draw has the pooled variance; n_c / (n_c - 1) undoes the shrinkage
    # of deviations from an estimated mean
    with np.errstate(divide="ignore", invalid="ignore"):
        cell_var = ss / (counts - 1)
        factor = np.sqrt(counts / (counts - 1) * pooled_var / cell_var)
    own = (counts >= 2) & (cell_var > 0)
    scaled = dev * np.where(own, factor, 0.0)[cell]
    pool = scaled[own[cell]]
    out = np.broadcast_to(means[cell], (n_resamples, x.size)).copy()
    for c in range(counts.size):
        rows = np.flatnonzero(cell == c)
        source = scaled[rows] if own[c] else pool
        out[:, rows] += rng.choice(source, size=(n_resamples, rows.size))
    note = f"seeds resampled within each of the {counts.size} cells (pooled seed variance, {df} df)"
    if not own.all():
        note += f"; {int((~own).sum())} cell(s) with one seed (or identical seeds) draw from the pooled deviations"
    return out, df, note


def residual_resamples(log_y: np.ndarray, log_pred: np.ndarray, n_par: int, n_resamples: int,
                       rng: np.random.Generator) -> tuple[np.ndarray | None, int]:
    """Fitted log losses plus resampled residuals (scaled by sqrt(n / (n - p))), for one seed per cell.

    Returns:
        (log losses of shape (R, n), or None when there are no residual degrees of freedom; n - p).
    """
    n = log_y.size
    df = n - n_par
    resid = log_y - log_pred
    if df < 1 or not np.any(np.abs(resid) > 0):
        return None, max(df, 0)
    resid = (resid - resid.mean()) * math.sqrt(n / df)
    return log_pred + rng.choice(resid, size=(n_resamples, n)), df


def _refit_all(form: str, x: np.ndarray, log_ys: np.ndarray, full: PowerLawFit) -> dict[str, np.ndarray]:
    """Refit every resample; returns each parameter's values (R,), NaN where a refit failed."""
    return FIT_FORMS[form].refit_many(x, log_ys, full)


@_single_threaded
def bootstrap_fit(x, loss, form: str, n_resamples: int, rng: np.random.Generator,
                  seeds: tuple[np.ndarray | None, int, str] | None = None) -> BootstrapFit:
    """Fit one axis group and give it intervals (module docstring, "Fit intervals").

    Args:
        x: x of every run (repeats are seeds).
        loss: loss of every run.
        form: "kaplan" or "saturating".
        n_resamples: bootstrap resamples (0: no intervals).
        rng: random generator of this group.
        seeds: the result of ``seed_resamples`` for this group, to reuse (so that every form of a group sees
            the same resamples); drawn here when None.

    Returns:
        The point fit with its intervals and interval notes, and the refitted parameters.

    Raises:
        ValueError: on bad x or loss values (see fit_power_law).
    """
    x = _as_points("x", x)
    y = _as_points("loss", loss, x.size)
    full = fit_power_law(x, y, form)
    full.n_resamples = n_resamples
    n_par = len(FIT_FORMS[form].param_names)
    if not full.converged:
        full.n_resamples = 0
        return BootstrapFit(full)
    if full.status == STATUS_EXACT:
        full.n_resamples = 0
        full.interval_note = (f"exactly determined: {n_par} parameters for {full.n_distinct} distinct x, so the "
                              "curve passes through the points and nothing is left to estimate the noise from")
        return BootstrapFit(full)
    if n_resamples == 0:
        full.interval_note = "no bootstrap (0 resamples): no intervals"
        return BootstrapFit(full)
    log_y = np.log(y)
    seed_draws, seed_df, seed_note = seeds if seeds is not None else seed_resamples(x, log_y, n_resamples, rng)
    if seed_draws is not None:
        draws, df, basis, note = seed_draws, seed_df, "seeds", seed_note
    else:
        draws, df = residual_resamples(log_y, np.log(full.predict(x)), n_par, n_resamples, rng)
        basis = "residuals" if draws is not None else "none"
        note = (f"{seed_note}: the interval reflects the scatter of the points around the fitted curve "
                f"(residual bootstrap, {df} df), not a measured seed variance" if draws is not None
                else f"{seed_note} and no residual scatter: no interval")
    full.interval_basis, full.interval_note = basis, note
    if draws is None:
        return BootstrapFit(full)
    params = _refit_all(form, x, draws, full)
    ok = np.all([np.isfinite(v) for v in params.values()], axis=0)
    full.df = float(df)
    full.failed_fraction = float(1.0 - ok.mean())
    names = list(full.params)
    lows, highs = t_intervals([full.params[k] for k in names], np.stack([params[k] for k in names], axis=1), df)
    full.intervals = {k: (lo, hi) for k, lo, hi in zip(names, lows.tolist(), highs.tolist(), strict=True)}
    return BootstrapFit(full, params, float(df))


def _welch_df(var_a: np.ndarray, var_b: np.ndarray, df_a: float, df_b: float) -> np.ndarray:
    """Welch-Satterthwaite degrees of freedom of a variance that is var_a (df_a) + var_b (df_b)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (var_a + var_b) ** 2 / (var_a ** 2 / df_a + var_b ** 2 / df_b)


def _multiplier_values(form: str, params_a, params_b, x: np.ndarray) -> np.ndarray:
    """m(x) = x_B(L_A(x)) / x for parameter arrays of shape (R, 1) or scalars; shape (R, n_x)."""
    return inverse_form(form, params_b, predict_form(form, params_a, x)) / x


def multiplier(fit_a: PowerLawFit, fit_b: PowerLawFit, x_values, b_range: Sequence[float]) -> list[dict]:
    """m(x) = x_B(L_A(x)) / x at each x: how much more x adapter B needs to reach A's fitted loss.

    Args:
        fit_a: A's fitted curve (evaluated at x).
        fit_b: B's fitted curve (inverted at A's loss).
        x_values: the x values (A's measured budgets or sizes).
        b_range: (min, max) of B's measured x; answers outside it are marked ``extrapolated``.

    Returns:
        One dict per x: {"x", "loss_a", "x_b", "multiplier", "status", "extrapolated"}, with status "ok",
        "not reachable" (A's loss is at or below B's asymptote; x_b and multiplier None) or "fit failed".
    """
    xv = np.asarray(x_values, dtype=float).ravel()
    if not (fit_a.converged and fit_b.converged):
        which = " and ".join(n for n, f in (("A", fit_a), ("B", fit_b)) if not f.converged)
        return [{"x": float(v), "loss_a": None, "x_b": None, "multiplier": None, "status": "fit failed",
                 "extrapolated": False, "reason": f"fit of {which} failed"} for v in xv]
    loss_a = fit_a.predict(xv)
    x_b = fit_b.inverse(loss_a)
    lo, hi = float(min(b_range)), float(max(b_range))
    out = []
    for v, la, xb in zip(xv, loss_a, x_b, strict=True):
        if not np.isfinite(xb):
            out.append({"x": float(v), "loss_a": float(la), "x_b": None, "multiplier": None,
                        "status": "not reachable", "extrapolated": False})
            continue
        extrapolated = bool(xb < lo * (1 - 1e-9) or xb > hi * (1 + 1e-9))
        out.append({"x": float(v), "loss_a": float(la), "x_b": float(xb), "multiplier": float(xb / v),
                    "status": "ok", "extrapolated": extrapolated})
    return out


def _interval_summary(a: BootstrapFit, b: BootstrapFit) -> tuple[str, str]:
    """The weaker of the two fits' interval bases, and a note on what the multiplier's interval reflects."""
    bases = (a.fit.interval_basis, b.fit.interval_basis)
    if a.fit.status == STATUS_EXACT or b.fit.status == STATUS_EXACT:
        return "none", "no interval: a fit is exactly determined (as many parameters as distinct x)"
    if "none" in bases:
        return "none", "no interval: " + "; ".join(sorted({f.fit.interval_note for f in (a, b)
                                                            if f.fit.interval_basis == "none"}))
    if "residuals" in bases:
        return "residuals", ("no seed variance: one seed per cell, so the interval reflects the scatter around "
                             "the fitted curves, not a measured seed variance")
    return "seeds", f"seeds resampled within cells ({a.df:g} + {b.df:g} df)"


def pair_multiplier(a: BootstrapFit, b: BootstrapFit, x_values, b_range: Sequence[float]) -> dict:
    """Multipliers of A over B at A's x values, with t intervals on the log scale, and their min-max range.

    The bootstrap resamples of A and B are independent, so resample i of A is paired with resample i of B.
    The degrees of freedom combine both adapters' (Welch-Satterthwaite), each weighted by the variance that
    resampling that adapter alone causes.

    Args:
        a: A's bootstrapped fit (evaluated at x).
        b: B's bootstrapped fit (inverted at A's loss).
        x_values: the x values (A's measured budgets or sizes).
        b_range: (min, max) of B's measured x, for the ``extrapolated`` flag.

    Returns:
        The ``mult`` dict of the fits.json layout (module docstring).
    """
    xv = np.asarray(x_values, dtype=float).ravel()
    form = a.fit.form
    points = multiplier(a.fit, b.fit, xv, b_range)
    basis, note = _interval_summary(a, b)
    n_res = min(a.n_resamples, b.n_resamples)
    intervals = [(None, None, None)] * len(points)
    range_ci = {"min": [None, None], "max": [None, None]}
    failed = None
    if basis != "none" and n_res >= 2 and a.fit.converged and b.fit.converged:
        pa = {k: v[:n_res, None] for k, v in a.params.items()}  # (R, 1): broadcasts against x
        pb = {k: v[:n_res, None] for k, v in b.params.items()}
        both = _multiplier_values(form, pa, pb, xv)  # (R, n_x)
        only_a = _multiplier_values(form, pa, b.fit.params, xv)
        only_b = _multiplier_values(form, a.fit.params, pb, xv)
        failed = float(1.0 - np.all(np.isfinite(both), axis=1).mean())
        with np.errstate(invalid="ignore", divide="ignore"):
            var_a, var_b = (np.nanvar(np.log(v), axis=0, ddof=1) for v in (only_a, only_b))
        dfs = _welch_df(var_a, var_b, a.df, b.df)
        values = np.array([np.nan if p["multiplier"] is None else p["multiplier"] for p in points])
        lows, highs = t_intervals(values, both, dfs)
        intervals = list(zip(lows.tolist(), highs.tolist(), dfs.tolist(), strict=True))
        complete = np.all(np.isfinite(both), axis=1)
        if complete.sum() >= 2 and all(p["status"] == "ok" for p in points):
            values = [p["multiplier"] for p in points]
            df_range = float(np.nanmin(dfs))  # the least informed point bounds what the extremes know
            range_ci = {"min": list(t_interval(min(values), both[complete].min(axis=1), df_range)),
                        "max": list(t_interval(max(values), both[complete].max(axis=1), df_range))}
    out_points = []
    for p, (lo, hi, dof) in zip(points, intervals, strict=True):
        out_points.append({"x": p["x"], "loss_a": p["loss_a"], "x_b": p["x_b"], "value": p["multiplier"],
                           "ci_low": lo, "ci_high": hi, "df": None if dof is None else round(float(dof), 2),
                           "status": p["status"], "extrapolated": p["extrapolated"]})
    ok_values = [p["multiplier"] for p in points if p["status"] == "ok"]
    return json_safe({
        "points": out_points,
        "range": [min(ok_values), max(ok_values)] if ok_values else None,
        "range_ci": range_ci,
        "failed_fraction": failed,
        "n_resamples": n_res,
        "interval_basis": basis,
        "seed_variance": basis == "seeds",
        "interval_note": note,
    })
