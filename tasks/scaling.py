"""Scaling-law fits of a grid's results table and the data / parameter multipliers between two adapters.

Pure numerics (numpy, scipy, pandas). The input is ``runs/<grid>/results.csv``; the output is the content of
``runs/<grid>/fits.json``, which the report reads.

Forms (x is the training-token budget D on the data axis, the non-embedding parameter count N on the
parameter axis):

- ``kaplan``:     L(x) = (x_c / x)^alpha                  (the paper's form, Kaplan et al. 2020)
- ``saturating``: L(x) = E + A x^-alpha                    (irreducible loss E)
- ``joint``:      L(N, D) = E + A / N^alpha + B / D^beta   (Chinchilla approach 3)

Every form is fitted by minimising a Huber loss (delta 1e-3) on log-loss residuals with multi-start
L-BFGS-B; positive quantities are optimised as logs and x is divided by its geometric mean, so the
optimizer sees numbers of order one whatever the units.

The multiplier of adapter A over adapter B at a measured x is m(x) = x_B(L_A(x)) / x, where x_B inverts B's
fitted curve: m_D > 1 means B needs m_D times more data to reach A's loss. Confidence intervals come from a
seeded bootstrap over rows (runs and seeds) of each adapter's axis, resampled independently per adapter.

fits.json layout (``fit_grid``)::

    {"version": 1, "pair": [A, B], "loss_column": "test_loss" | "best_val_loss" | "mixed",
     "n_resamples": int, "seed": int,
     "axes": {"data":   {label: {"width=W,layers=L": {"kaplan": fit, "saturating": fit}}},
              "params": {label: {"tokens=D": {"kaplan": fit, "saturating": fit}}}},
     "joint": {label: fit},
     "multipliers": {"data":   {"width=W,layers=L": {"kaplan": mult, "saturating": mult}},
                     "params": {"tokens=D": {"kaplan": mult, "saturating": mult}}},
     "points": [rows used], "notes": [why rows or axes were left out]}

    fit  = PowerLawFit.to_dict(): form, params, intervals (95% bootstrap percentiles), converged, reason,
           n_points, x, y, n_resamples, failed_fraction
    mult = {"points": [{"x", "loss_a", "x_b", "value", "ci_low", "ci_high", "status", "extrapolated"}],
            "range": [min, max] | null, "range_ci": {"min": [lo, hi], "max": [lo, hi]},
            "failed_fraction": float, "n_resamples": int}
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber

try:  # comes with scikit-learn (an lm-eval dependency); only used to keep BLAS single-threaded
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

FITS_VERSION = 1
FORMS = ("kaplan", "saturating")
PARAM_NAMES = {
    "kaplan": ("x_c", "alpha"),
    "saturating": ("E", "A", "alpha"),
    "joint": ("E", "A", "alpha", "B", "beta"),
}
REQUIRED_COLUMNS = ("run_id", "adapter", "width", "layers", "n_params", "tokens", "seed", "status",
                    "best_val_loss")

# Exponents outside these bounds mean the data does not follow the form (flat or step-like losses).
ALPHA_MIN, ALPHA_MAX = 1e-3, 10.0
# Multi-start grids, most diverse first so a short n_starts still spans the space: starting exponents for
# the Kaplan form, (irreducible-loss fraction E / min loss, exponent) for the saturating one, and
# (E fraction, alpha, beta) for the joint one.
_KAPLAN_STARTS = (0.1, 0.5, 0.03, 1.5)
_SATURATING_STARTS = ((0.5, 0.1), (0.0, 0.3), (0.9, 0.5), (0.5, 1.0), (0.0, 0.05), (0.9, 0.1), (0.5, 0.03),
                      (0.0, 1.5))
_JOINT_STARTS = ((0.5, 0.3, 0.3), (0.0, 0.1, 0.5), (0.9, 0.5, 0.1), (0.5, 1.0, 1.0), (0.0, 0.3, 0.3),
                 (0.9, 0.1, 0.5), (0.5, 0.5, 0.1), (0.0, 1.0, 1.0))
_DEFAULT_STARTS = {"kaplan": 3, "saturating": 6}


@dataclass
class PowerLawFit:
    """A fitted scaling law, or an explicit failure (``converged`` False, ``params`` empty, ``reason`` set).

    Attributes:
        form: "kaplan", "saturating" or "joint".
        params: fitted parameters in the data's own units (see PARAM_NAMES).
        intervals: 95% bootstrap percentile interval per parameter (empty without a bootstrap).
        converged: whether the optimizer converged to finite parameters inside the bounds.
        reason: why the fit failed ("" when it converged).
        n_points: number of (x, loss) points fitted.
        x: the x values fitted ([N, D] pairs for the joint form).
        y: the losses fitted.
        n_resamples: bootstrap resamples behind ``intervals`` (0 when none).
        failed_fraction: fraction of those resamples whose fit failed (None without a bootstrap).
    """

    form: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    converged: bool
    reason: str
    n_points: int
    x: list
    y: list
    n_resamples: int = 0
    failed_fraction: float | None = None

    def predict(self, x) -> np.ndarray:
        """The fitted loss at x (for the joint form, x is an (N, D) pair or an array of shape (k, 2)).

        NaN everywhere when the fit failed.
        """
        if self.form == "joint":
            nd = np.asarray(x, dtype=float)
            n, d = (nd[..., 0], nd[..., 1]) if nd.ndim > 1 else (nd[0], nd[1])
            if not self.converged:
                return np.full(np.shape(n), np.nan)
            p = self.params
            return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]
        x = np.asarray(x, dtype=float)
        if not self.converged:
            return np.full(x.shape, np.nan)
        p = self.params
        if self.form == "kaplan":
            return (p["x_c"] / x) ** p["alpha"]
        return p["E"] + p["A"] * x ** -p["alpha"]

    def inverse(self, loss) -> np.ndarray:
        """The x at which the fitted curve reaches ``loss``; NaN where it never does (loss <= E) or the fit failed."""
        if self.form == "joint":
            raise ValueError("the joint form has two inputs (N, D) and no single inverse; use a 1-D fit")
        loss = np.asarray(loss, dtype=float)
        out = np.full(loss.shape, np.nan)
        if not self.converged:
            return out
        p = self.params
        floor = 0.0 if self.form == "kaplan" else p["E"]
        ok = np.isfinite(loss) & (loss > floor)
        if self.form == "kaplan":
            out[ok] = p["x_c"] * loss[ok] ** (-1.0 / p["alpha"])
        else:
            out[ok] = (p["A"] / (loss[ok] - p["E"])) ** (1.0 / p["alpha"])
        return out

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (non-finite numbers become None)."""
        return _json_safe({
            "form": self.form,
            "params": dict(self.params),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "converged": self.converged,
            "reason": self.reason,
            "n_points": self.n_points,
            "x": list(self.x),
            "y": list(self.y),
            "n_resamples": self.n_resamples,
            "failed_fraction": self.failed_fraction,
        })


_SINGLE_THREAD_DEPTH = 0


def _single_threaded(fn):
    """Run ``fn`` with one BLAS thread: L-BFGS-B calls BLAS on vectors of 2-5 numbers, where OpenBLAS's thread
    hand-off costs ~10x the work (and far more on a loaded machine)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _SINGLE_THREAD_DEPTH
        if _SINGLE_THREAD_DEPTH or threadpool_limits is None:
            return fn(*args, **kwargs)
        _SINGLE_THREAD_DEPTH += 1
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                return fn(*args, **kwargs)
        finally:
            _SINGLE_THREAD_DEPTH -= 1

    return wrapper


# ----------------------------------------------------------------------------------------------------------
# validation


def _check_positive_finite(name: str, values: np.ndarray) -> None:
    """Raise ValueError naming the first offending entries of a column that must be positive and finite."""
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(f"[{i}]={values[i]!r}" for i in idx[:5])
        more = f" (and {len(idx) - 5} more)" if len(idx) > 5 else ""
        raise ValueError(f"{name} must be positive and finite; bad values at {shown}{more}")


def _as_points(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} values but x has {n}")
    _check_positive_finite(name, arr)
    return arr


def _check_distinct(name: str, x: np.ndarray) -> int:
    n_distinct = np.unique(x).size
    if n_distinct < 2:
        raise ValueError(f"{name} needs at least 2 distinct values to fit a power law; got {np.unique(x).tolist()}")
    return n_distinct


def _failure(form: str, reason: str, x: list, y: list) -> PowerLawFit:
    return PowerLawFit(form=form, params={}, intervals={}, converged=False, reason=reason, n_points=len(y),
                       x=x, y=y)


# ----------------------------------------------------------------------------------------------------------
# objectives: theta holds logs of the positive quantities, x is normalised by its geometric mean (u = x / x0)


def _huber_objective(log_pred: np.ndarray, dlog_pred: np.ndarray, log_y: np.ndarray, delta: float):
    """Huber loss on log residuals (divided by delta so its scale is that of |r|) and its gradient."""
    r = log_pred - log_y  # (n,)
    value = huber(delta, r).sum() / delta
    grad = dlog_pred @ (np.clip(r, -delta, delta) / delta)  # (p, n) @ (n,) -> (p,)
    return value, grad


def _kaplan_logpred(theta: np.ndarray, log_u: np.ndarray):
    """log L = l0 - alpha log u, theta = (l0, log alpha), l0 = log L(x0) = alpha log(x_c / x0).

    Linear in (l0, alpha), so the optimizer does not fight the strong coupling of x_c and alpha.
    """
    alpha = math.exp(theta[1])
    log_pred = theta[0] - alpha * log_u
    d = np.stack([np.ones_like(log_u), -alpha * log_u])  # (2, n)
    return log_pred, d


def _saturating_logpred(theta: np.ndarray, log_u: np.ndarray):
    """L = E + A' u^-alpha, theta = (log E, log A', log alpha)."""
    alpha = math.exp(theta[2])
    e = math.exp(theta[0])
    t = np.exp(theta[1] - alpha * log_u)  # (n,)
    pred = e + t
    d = np.stack([e / pred, t / pred, -alpha * log_u * t / pred])  # (3, n)
    return np.log(pred), d


def _joint_logpred(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """L = E + A' n^-alpha + B' d^-beta, theta = (log E, log A', log alpha, log B', log beta)."""
    alpha, beta = math.exp(theta[2]), math.exp(theta[4])
    e = math.exp(theta[0])
    ta = np.exp(theta[1] - alpha * log_n)  # (n,)
    tb = np.exp(theta[3] - beta * log_d)  # (n,)
    pred = e + ta + tb
    d = np.stack([e / pred, ta / pred, -alpha * log_n * ta / pred, tb / pred, -beta * log_d * tb / pred])
    return np.log(pred), d


def _minimize_multistart(objective, starts: list[np.ndarray], bounds: list[tuple[float, float]]):
    """Run L-BFGS-B from every start; return the best converged result (or None) and the best of any."""
    best, best_any = None, None
    for theta0 in starts:
        theta0 = np.clip(theta0, [b[0] for b in bounds], [b[1] for b in bounds])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": 100, "ftol": 1e-11, "gtol": 1e-7})
        if not (np.isfinite(res.fun) and np.all(np.isfinite(res.x))):
            continue
        # L-BFGS-B reports a failed line search once the objective is flat to machine precision; that is
        # convergence too when the projected gradient is small.
        ok = res.success or np.max(np.abs(_projected_grad(res, bounds))) < 1e-5
        if ok and (best is None or res.fun < best.fun):
            best = res
        if best_any is None or res.fun < best_any.fun:
            best_any = res
    return best, best_any


def _no_convergence_reason(best_any, n_starts: int, alpha_index: Sequence[int]) -> str:
    """Why no start converged, naming an exponent that ran into its bound (the usual cause)."""
    if best_any is None:
        return f"L-BFGS-B gave non-finite results from all {n_starts} starts"
    for i in alpha_index:
        a = math.exp(best_any.x[i])
        if _at_bound(a, ALPHA_MIN, ALPHA_MAX):
            return f"alpha ran into its bound ({a:.3g}) without converging: the losses do not follow the form"
    return f"L-BFGS-B did not converge from any of {n_starts} starts ({best_any.message})"


def _projected_grad(res, bounds) -> np.ndarray:
    g = np.array(res.jac, dtype=float)
    lo, hi = np.array(bounds).T
    g[(res.x <= lo) & (g > 0)] = 0.0
    g[(res.x >= hi) & (g < 0)] = 0.0
    return g


def _at_bound(value: float, lo: float, hi: float) -> bool:
    return value <= lo * (1 + 1e-6) or value >= hi * (1 - 1e-6)


def _starts_from_init(form: str, init: Mapping[str, float] | None, x0: float) -> list[np.ndarray]:
    """Convert a previous fit's parameters into a start in the optimizer's coordinates."""
    if not init:
        return []
    try:
        if form == "kaplan":
            a = init["alpha"]
            return [np.array([a * math.log(init["x_c"] / x0), math.log(a)])]
        a = init["alpha"]
        return [np.array([math.log(init["E"]), math.log(init["A"]) - a * math.log(x0), math.log(a)])]
    except (KeyError, ValueError, OverflowError):
        return []


@_single_threaded
def fit_power_law(x, loss, form: str = "kaplan", *, n_starts: int | None = None, delta: float = 1e-3,
                  init: Mapping[str, float] | None = None) -> PowerLawFit:
    """Fit L(x) = (x_c / x)^alpha ("kaplan") or L(x) = E + A x^-alpha ("saturating").

    Args:
        x: positive x values (token budgets or parameter counts); repeats (seeds) are allowed.
        loss: positive losses, one per x.
        form: "kaplan" or "saturating".
        n_starts: number of starting points of the L-BFGS-B multi-start grid (default: 3 for "kaplan", whose
            Huber objective is convex in (alpha log x_c, alpha) and starts from least squares; 6 for "saturating").
        delta: Huber threshold on log-loss residuals.
        init: parameters of an earlier fit, tried first (the bootstrap warm-starts from the point estimate).

    Returns:
        The fit; ``converged`` is False with a ``reason`` when the form has more parameters than distinct x,
        the optimizer fails, or a parameter runs into its bound or overflows.

    Raises:
        ValueError: on non-positive or non-finite x or loss, mismatched lengths, or fewer than 2 distinct x.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {FORMS} (use fit_joint for the joint form)")
    x = _as_points("x", x)
    y = _as_points("loss", loss, x.size)
    n_distinct = _check_distinct("x", x)
    xs, ys = x.tolist(), y.tolist()
    n_par = len(PARAM_NAMES[form])
    if n_distinct < n_par:
        return _failure(form, f"{n_par} parameters but only {n_distinct} distinct x values", xs, ys)

    x0 = float(np.exp(np.mean(np.log(x))))
    log_u, log_y = np.log(x / x0), np.log(y)
    if form == "kaplan":
        # log L is linear in log u, so least squares gives a start next to the optimum when alpha > 0.
        slope, _ = np.polyfit(log_u, log_y, 1)
        alphas = ([-slope] if slope < 0 else []) + list(_KAPLAN_STARTS)
        # l0 from the mean residual at each alpha: log L = l0 - alpha log u
        starts = [np.array([np.mean(log_y + a * log_u), math.log(a)]) for a in alphas]
        bounds = [(-50.0, 50.0), (math.log(ALPHA_MIN), math.log(ALPHA_MAX))]

        def objective(theta):
            return _huber_objective(*_kaplan_logpred(theta, log_u), log_y, delta)
    else:
        y_min = float(y.min())
        starts = []
        for frac, a in _SATURATING_STARTS:
            e = frac * y_min
            # A' from the mean residual of log(L - E) = log A' - alpha log u
            log_a = float(np.mean(np.log(np.maximum(y - e, 1e-3 * y_min)) + a * log_u))
            starts.append(np.array([math.log(max(e, 1e-6 * y_min)), log_a, math.log(a)]))
        bounds = [(math.log(y_min) - 10.0, math.log(float(y.max())) + 1.0), (-50.0, 50.0),
                  (math.log(ALPHA_MIN), math.log(ALPHA_MAX))]

        def objective(theta):
            return _huber_objective(*_saturating_logpred(theta, log_u), log_y, delta)

    if n_starts is None:
        n_starts = _DEFAULT_STARTS[form]
    starts = _starts_from_init(form, init, x0) + starts[:n_starts]
    best, best_any = _minimize_multistart(objective, starts, bounds)
    if best is None:
        return _failure(form, _no_convergence_reason(best_any, len(starts), [len(bounds) - 1]), xs, ys)

    theta = best.x
    alpha = math.exp(theta[-1])
    if _at_bound(alpha, ALPHA_MIN, ALPHA_MAX):
        return _failure(form, f"alpha ran into its bound ({alpha:.3g}): the losses do not follow the form",
                        xs, ys)
    with np.errstate(over="ignore"):
        if form == "kaplan":
            params = {"x_c": x0 * math.exp(min(theta[0] / alpha, 700.0)), "alpha": alpha}
        else:
            params = {"E": math.exp(theta[0]), "A": math.exp(theta[1]) * x0 ** alpha, "alpha": alpha}
    if not all(np.isfinite(v) and v < 1e300 for v in params.values()):
        return _failure(form, f"non-finite parameters {params}", xs, ys)
    return PowerLawFit(form=form, params=params, intervals={}, converged=True, reason="", n_points=len(ys),
                       x=xs, y=ys)


@_single_threaded
def fit_joint(n_params, tokens, loss, *, n_starts: int = 8, delta: float = 1e-3) -> PowerLawFit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta to points spanning both sizes and budgets.

    Args:
        n_params: non-embedding parameter counts N, one per point.
        tokens: training-token budgets D, one per point.
        loss: losses, one per point.
        n_starts: number of starting points of the L-BFGS-B multi-start grid.
        delta: Huber threshold on log-loss residuals.

    Returns:
        The fit (``x`` holds [N, D] pairs); a failure object when there are fewer distinct (N, D) points
        than the 5 parameters or the optimizer fails.

    Raises:
        ValueError: on non-positive or non-finite values, mismatched lengths, or fewer than 2 distinct N or D.
    """
    n = _as_points("n_params", n_params)
    d = _as_points("tokens", tokens, n.size)
    y = _as_points("loss", loss, n.size)
    _check_distinct("n_params", n)
    _check_distinct("tokens", d)
    xs, ys = [[float(a), float(b)] for a, b in zip(n, d, strict=True)], y.tolist()
    n_distinct = len({(a, b) for a, b in zip(n, d, strict=True)})
    if n_distinct < 5:
        return _failure("joint", f"5 parameters but only {n_distinct} distinct (N, D) points", xs, ys)

    n0, d0 = float(np.exp(np.mean(np.log(n)))), float(np.exp(np.mean(np.log(d))))
    log_n, log_d, log_y = np.log(n / n0), np.log(d / d0), np.log(y)
    y_min = float(y.min())
    # split the reducible part evenly between the two terms at the centre of the grid
    mid = float(np.exp(np.mean(log_y)))
    starts = []
    for frac, a, b in _JOINT_STARTS[:n_starts]:
        e = frac * y_min
        rest = math.log(max(mid - e, 1e-3 * y_min) / 2)
        starts.append(np.array([math.log(max(e, 1e-6 * y_min)), rest, math.log(a), rest, math.log(b)]))
    a_bounds = (math.log(ALPHA_MIN), math.log(ALPHA_MAX))
    bounds = [(math.log(y_min) - 10.0, math.log(float(y.max())) + 1.0), (-50.0, 50.0), a_bounds,
              (-50.0, 50.0), a_bounds]

    def objective(theta):
        return _huber_objective(*_joint_logpred(theta, log_n, log_d), log_y, delta)

    best, best_any = _minimize_multistart(objective, starts, bounds)
    if best is None:
        return _failure("joint", _no_convergence_reason(best_any, len(starts), [2, 4]), xs, ys)
    theta = best.x
    alpha, beta = math.exp(theta[2]), math.exp(theta[4])
    for name, v in (("alpha", alpha), ("beta", beta)):
        if _at_bound(v, ALPHA_MIN, ALPHA_MAX):
            return _failure("joint", f"{name} ran into its bound ({v:.3g}): the losses do not follow the form",
                            xs, ys)
    with np.errstate(over="ignore"):
        params = {"E": math.exp(theta[0]), "A": math.exp(theta[1]) * n0 ** alpha, "alpha": alpha,
                  "B": math.exp(theta[3]) * d0 ** beta, "beta": beta}
    if not all(np.isfinite(v) and v < 1e300 for v in params.values()):
        return _failure("joint", f"non-finite parameters {params}", xs, ys)
    return PowerLawFit(form="joint", params=params, intervals={}, converged=True, reason="",
                       n_points=len(ys), x=xs, y=ys)


# ----------------------------------------------------------------------------------------------------------
# multipliers


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


# ----------------------------------------------------------------------------------------------------------
# the whole grid


def _json_safe(obj):
    """Replace non-finite floats by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _label(adapter, variant) -> str:
    if variant is None or (isinstance(variant, float) and math.isnan(variant)) or str(variant).strip() == "":
        return str(adapter)
    return f"{adapter}/{variant}"


def _percentile_interval(values: np.ndarray) -> list[float | None]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return [None, None]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator per (seed, axis, label, group): results do not depend on the order groups are visited."""
    return np.random.default_rng([seed, zlib.crc32("|".join(key).encode())])


def _fit_axis_group(x: np.ndarray, y: np.ndarray, n_resamples: int, rng: np.random.Generator):
    """Fit both forms to one group and bootstrap them over rows; return {form: (fit, [bootstrap fits])}."""
    out = {}
    idx_all = np.sort(rng.integers(0, x.size, size=(n_resamples, x.size)), axis=1)  # (R, n)
    for form in FORMS:
        full = fit_power_law(x, y, form)
        # A bootstrap refit starts from the point estimate plus the first grid start; the Kaplan objective is
        # convex in its linear coordinates, so its least-squares start alone suffices.
        refit = {"n_starts": 1}
        if form != "kaplan" and full.converged:
            refit["init"] = full.params
        cache: dict[tuple, PowerLawFit] = {}
        boots = []
        for idx in idx_all:
            # with a handful of rows most resamples repeat, and a fit depends only on the multiset of rows
            key = tuple(idx.tolist())
            if key not in cache:
                xs, ys = x[idx], y[idx]
                if np.unique(xs).size < 2:
                    cache[key] = _failure(form, "resample has fewer than 2 distinct x", [], [])
                else:
                    cache[key] = fit_power_law(xs, ys, form, **refit)
            boots.append(cache[key])
        if n_resamples:
            ok = [b for b in boots if b.converged]
            full.n_resamples = n_resamples
            full.failed_fraction = 1.0 - len(ok) / n_resamples
            if full.converged:
                full.intervals = {k: tuple(_percentile_interval(np.array([b.params[k] for b in ok])))
                                  for k in full.params}
        out[form] = (full, boots)
    return out


def _pair_multiplier(a, b, x_values, b_range, n_resamples: int) -> dict:
    """Point multipliers of A over B with bootstrap percentile intervals, and their min-max range."""
    (fit_a, boots_a), (fit_b, boots_b) = a, b
    points = multiplier(fit_a, fit_b, x_values, b_range)
    values = np.full((n_resamples, len(points)), np.nan)  # (R, n_x)
    failed = 0
    for i, (ba, bb) in enumerate(zip(boots_a, boots_b, strict=True)):
        if not (ba.converged and bb.converged):
            failed += 1
            continue
        for j, p in enumerate(multiplier(ba, bb, x_values, b_range)):
            if p["status"] == "ok":
                values[i, j] = p["multiplier"]
    out_points = []
    for j, p in enumerate(points):
        lo, hi = _percentile_interval(values[:, j])
        out_points.append({"x": p["x"], "loss_a": p["loss_a"], "x_b": p["x_b"], "value": p["multiplier"],
                           "ci_low": lo, "ci_high": hi, "status": p["status"], "extrapolated": p["extrapolated"]})
    ok_values = [p["multiplier"] for p in points if p["status"] == "ok"]
    # the range's own uncertainty: min and max over x within each resample where every x was reachable
    complete = values[np.all(np.isfinite(values), axis=1)] if values.size else values
    return {
        "points": out_points,
        "range": [min(ok_values), max(ok_values)] if ok_values else None,
        "range_ci": {"min": _percentile_interval(complete.min(axis=1)) if complete.size else [None, None],
                     "max": _percentile_interval(complete.max(axis=1)) if complete.size else [None, None]},
        "failed_fraction": failed / n_resamples if n_resamples else None,
        "n_resamples": n_resamples,
    }


def _usable_rows(results: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, str]:
    """The done rows with a finite loss, with columns label, x values and loss/loss_source added."""
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; it has {list(results.columns)}")
    df = results.copy()
    if "variant" not in df.columns:
        df["variant"] = ""
    done = df["status"].astype(str) == "done"
    if (~done).any():
        notes.append(f"{int((~done).sum())} runs not done (status != 'done') were left out")
    df = df[done].copy()
    df["label"] = [_label(a, v) for a, v in zip(df["adapter"], df["variant"], strict=True)]
    test = pd.to_numeric(df["test_loss"], errors="coerce") if "test_loss" in df.columns else None
    val = pd.to_numeric(df["best_val_loss"], errors="coerce")
    if test is None:
        df["loss"], df["loss_source"] = val, "best_val_loss"
    else:
        use_test = test.notna()
        df["loss"] = test.where(use_test, val)
        df["loss_source"] = np.where(use_test, "test_loss", "best_val_loss")
    no_loss = df["loss"].isna()
    if no_loss.any():
        notes.append(f"runs without any loss were left out: {df.loc[no_loss, 'run_id'].tolist()}")
    df = df[~no_loss]
    sources = sorted(set(df["loss_source"]))
    loss_column = sources[0] if len(sources) == 1 else ("mixed" if sources else "none")
    return df, loss_column


@_single_threaded
def fit_grid(results: pd.DataFrame, pair: tuple[str, str] = ("tg", "gpt2"), n_resamples: int = 200,
             seed: int = 0) -> dict:
    """Fit every adapter's data and parameter axes, the joint form, and A-over-B multipliers with bootstrap CIs.

    Args:
        results: the grid's results table (one row per run; see REQUIRED_COLUMNS, plus optional
            ``variant`` and ``test_loss``).
        pair: adapter labels (A, B); multipliers say how much more data / parameters B needs to reach A's loss.
        n_resamples: bootstrap resamples per axis group (0 for none).
        seed: seed of the bootstrap; the output is deterministic for a seed.

    Returns:
        The content of fits.json (layout in the module docstring); JSON-serialisable without NaN.

    Raises:
        ValueError: when the table lacks required columns. Bad data inside a group is recorded as that
            group's failure instead.
    """
    notes: list[str] = []
    df, loss_column = _usable_rows(results, notes)
    axes: dict[str, dict] = {"data": {}, "params": {}}
    fitted: dict[str, dict] = {"data": {}, "params": {}}  # axis -> label -> key -> {form: (fit, boots)}
    ranges: dict[str, dict] = {"data": {}, "params": {}}  # axis -> label -> key -> (x distinct, (min, max))
    axis_spec = {"data": (["width", "layers"], "tokens"), "params": (["tokens"], "n_params")}

    for axis, (group_cols, x_col) in axis_spec.items():
        for (label, *gvals), g in df.groupby(["label", *group_cols], sort=True):
            key = ",".join(f"{c}={_json_safe(v)}" for c, v in zip(group_cols, gvals, strict=True))
            x = pd.to_numeric(g[x_col], errors="coerce").to_numpy(dtype=float)
            y = g["loss"].to_numpy(dtype=float)
            if np.unique(x[np.isfinite(x)]).size < 3:
                continue  # an axis needs >= 3 distinct x values to be fitted
            try:
                res = _fit_axis_group(x, y, n_resamples, _rng_for(seed, axis, label, key))
            except ValueError as err:
                reason = f"bad data in {axis} axis, {label} {key}: {err}"
                notes.append(reason)
                axes[axis].setdefault(label, {})[key] = {
                    f: _failure(f, reason, x.tolist(), y.tolist()).to_dict() for f in FORMS}
                continue
            axes[axis].setdefault(label, {})[key] = {f: res[f][0].to_dict() for f in FORMS}
            fitted[axis].setdefault(label, {})[key] = res
            ranges[axis].setdefault(label, {})[key] = (np.unique(x), (float(x.min()), float(x.max())))

    joint: dict[str, dict] = {}
    for label, g in df.groupby("label", sort=True):
        n, d, y = (g[c].to_numpy(dtype=float) for c in ("n_params", "tokens", "loss"))
        if np.unique(n).size >= 2 and np.unique(d).size >= 2 and len(g) >= 5:
            try:
                joint[label] = fit_joint(n, d, y).to_dict()
            except ValueError as err:
                notes.append(f"bad data for the joint fit of {label}: {err}")
                joint[label] = _failure("joint", str(err), [], []).to_dict()

    a_label, b_label = pair
    multipliers: dict[str, dict] = {"data": {}, "params": {}}
    for axis in ("data", "params"):
        fa, fb = fitted[axis].get(a_label, {}), fitted[axis].get(b_label, {})
        if not fa or not fb:
            notes.append(f"no {axis}-axis multipliers: pair {list(pair)} needs fitted {axis} axes for both "
                         f"(fitted: {sorted(fitted[axis])})")
            continue
        for key in sorted(set(fa) & set(fb)):
            x_a = ranges[axis][a_label][key][0]
            b_range = ranges[axis][b_label][key][1]
            multipliers[axis][key] = {
                form: _pair_multiplier(fa[key][form], fb[key][form], x_a, b_range, n_resamples)
                for form in FORMS}

    point_cols = [c for c in ("run_id", "label", "adapter", "variant", "width", "layers", "n_params", "tokens",
                              "seed", "loss", "loss_source") if c in df.columns]
    points = [{c: _json_safe(v) for c, v in row.items()} for row in df[point_cols].to_dict(orient="records")]
    return _json_safe({
        "version": FITS_VERSION,
        "pair": list(pair),
        "loss_column": loss_column,
        "n_resamples": n_resamples,
        "seed": seed,
        "axes": axes,
        "joint": joint,
        "multipliers": multipliers,
        "points": points,
        "notes": notes,
    })


def write_fits(grid_dir: Path, *, pair: tuple[str, str] = ("tg", "gpt2"), n_resamples: int = 200,
               seed: int = 0) -> Path:
    """Read ``grid_dir/results.csv`` and write ``grid_dir/fits.json`` atomically (temp file + os.replace).

    Returns:
        The path of fits.json.

    Raises:
        UserError: when the results table is missing.
        ValueError: when it lacks required columns.
    """
    from tgbench.errors import UserError

    grid_dir = Path(grid_dir)
    csv = grid_dir / "results.csv"
    if not csv.is_file():
        raise UserError(f"no results table at {csv}", "run the grid first (it writes results.csv)")
    fits = fit_grid(pd.read_csv(csv), pair=pair, n_resamples=n_resamples, seed=seed)
    text = json.dumps(fits, indent=2, allow_nan=False)
    out = grid_dir / "fits.json"
    fd, tmp = tempfile.mkstemp(dir=grid_dir, prefix=".fits.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
