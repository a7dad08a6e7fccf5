"""Scaling-law fits of a grid's results table and the data / parameter multipliers between adapters.

Pure numerics (numpy, scipy, pandas). The input is ``runs/<grid>/results.csv``; the output is the content of
``runs/<grid>/fits.json``, which the report reads.

Forms (x is the training-token budget D on the data axis, the non-embedding parameter count N on the
parameter axis):

- ``kaplan``:     L(x) = (x_c / x)^alpha                  (the paper's form, Kaplan et al. 2020)
- ``saturating``: L(x) = E + A x^-alpha                    (irreducible loss E)
- ``joint``:      L(N, D) = E + A / N^alpha + B / D^beta   (Chinchilla approach 3)

How the forms are fitted, and why:

- ``kaplan`` is a straight line in log space, log L = alpha log x_c - alpha log x, so it is fitted by ordinary
  least squares of log L on log x (closed form, every seed a row). With multiplicative seed noise that is the
  maximum-likelihood fit, and it has no optimizer to fail. (tgbench <= 0.1 minimised a Huber loss with
  delta = 1e-3 on log residuals: seed noise is ~1e-2 in log loss, so that was in effect an L1 fit.)
- ``saturating`` and ``joint`` are not linear in their parameters. They are fitted in log space with
  ``scipy.optimize.least_squares`` from several starts, in two passes: plain least squares, then a Huber loss
  whose threshold is scaled to the residual noise of that first pass, delta = 1.345 sigma, sigma =
  sqrt(RSS / (n - p)). Residuals within 1.345 sigma count quadratically (95% of least squares' efficiency
  with Gaussian noise), and one diverged run cannot drag the curve. An exactly determined fit (n = p) stays
  at least squares. Positive quantities are optimised as logs and x is divided by its geometric mean, so the
  optimizer sees numbers of order one whatever the units.

The multiplier of adapter A over adapter B at a measured x is m(x) = x_B(L_A(x)) / x, where x_B inverts B's
fitted curve: m_D > 1 means B needs m_D times more data to reach A's loss. Every label is fitted once; by
default the first label ("tg" when present) is compared with every other label of the grid.

Fit intervals
-------------
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

fits.json layout (``fit_grid``, version 3)::

    {"version": 3, "reference": A, "pairs": [[A, B], [A, C], ...], "form": "kaplan" (the form the report draws),
     "design": {"seed_scheme": "per-budget" | "shared", "source": where that was read},
     "verdicts": [verdict], "power": [power], "flags": {run_id: [flag, ...]},
     "loss_column": "test_loss" | "best_val_loss" | "mixed", "n_resamples": int, "seed": int,
     "axes": {"data":   {label: {"width=W,layers=L": {form: fit}}},
              "params": {label: {"tokens=D": {form: fit}}}},
     "joint": {label: fit},
     "multipliers": {"data":   {A: {B: {"width=W,layers=L": {"interpolated": mult, form: mult}}}},
                     "params": {A: {B: {"tokens=D": {"interpolated": mult, form: mult}}}}},
     "points": [rows used], "notes": [why rows, axes or pairs were left out, interval caveats, lack of fit]}

    verdict, power = tasks/verdicts.py (paired tests per measured budget with Holm, pooled with budget as a
           fixed effect, trend on log2 D; class, sentence and details; influential pairs with Cook's distance;
           flagged runs and the class without them; prospective power of "on average" and "every budget")
    fit  = PowerLawFit.to_dict() plus "lack_of_fit" (tasks/multipliers.py; None without replicates): form,
           status ("ok" | "exactly determined, no interval" | "fit failed"; a saturating E or alpha on its bound
           is a failure with that reason, so no bound is shown as a fitted value), params, intervals (95%, see
           above), converged, reason, n_points, n_distinct, x, y, n_resamples, failed_fraction, huber_delta,
           interval_basis ("seeds" | "residuals" | "none"), seed_variance, df, interval_note
    mult = {"points": [{"x", "loss_a", "x_b", "value", "ci_low", "ci_high", "df", "status", "extrapolated"}],
            "range": [min, max] of the point values | null, "range_ci", "failed_fraction", "n_resamples",
            "interval_basis" ("analytic" for kaplan, "seeds" for interpolated and bootstrapped forms),
            "seed_variance", "interval_note"}; "interpolated" and "kaplan" are tasks/multipliers.py's analytic
           multipliers (intervals that include lack of fit); other forms keep the seed bootstrap below.

Fit forms are registered classes (``FitForm``: name, param_names, predict, inverse, fit; ``@register_form``):
a new form is one class, fitted to every axis group and compared by its multipliers.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import least_squares

from tgbench.errors import UserError
from tgbench.files import json_safe
from tgbench.flags import join_flags, split_flags, table_flags
from tgbench.results import DONE, fit_loss, label_of, ordered_labels
from tgbench.runs import write_text
from tgbench.tasks.multipliers import interpolated_multiplier, kaplan_multiplier, lack_of_fit
from tgbench.tasks.verdicts import comparison_pairs, grid_verdicts, seed_scheme

try:  # comes with scikit-learn (an lm-eval dependency); only used to keep BLAS single-threaded
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None

FITS_VERSION = 3
JOINT_PARAMS = ("E", "A", "alpha", "B", "beta")
REQUIRED_COLUMNS = ("run_id", "adapter", "width", "layers", "n_params", "tokens", "seed", "status",
                    "best_val_loss")
STATUS_OK = "ok"
STATUS_EXACT = "exactly determined, no interval"
STATUS_FAILED = "fit failed"
CI_LEVEL = 0.95
MAX_RESAMPLES = 100_000
# Huber threshold in units of the residual standard deviation: the usual choice, 95% of least squares'
# efficiency when the noise is Gaussian.
HUBER_K = 1.345

# Exponents outside these bounds mean the data does not follow the form (flat or step-like losses).
ALPHA_MIN, ALPHA_MAX = 1e-3, 10.0
# Multi-start grids, most diverse first so a short n_starts still spans the space: (irreducible-loss
# fraction E / min loss, exponent) for the saturating form, and (E fraction, alpha, beta) for the joint one.
_SATURATING_STARTS = ((0.5, 0.1), (0.0, 0.3), (0.9, 0.5), (0.5, 1.0), (0.0, 0.05), (0.9, 0.1), (0.5, 0.03),
                      (0.0, 1.5))
_JOINT_STARTS = ((0.5, 0.3, 0.3), (0.0, 0.1, 0.5), (0.9, 0.5, 0.1), (0.5, 1.0, 1.0), (0.0, 0.3, 0.3),
                 (0.9, 0.1, 0.5), (0.5, 0.5, 0.1), (0.0, 1.0, 1.0))


# ----------------------------------------------------------------------------------------------------------
# the curves, vectorised over parameter arrays (a bootstrap evaluates hundreds of fits at once)


class FitForm:
    """A one-dimensional scaling-law form, L(x) with positive parameters: the contract of a registered form.

    A new form is one subclass with ``name``, ``param_names``, ``predict``, ``inverse`` and ``fit``, decorated
    with ``@register_form``; ``tgbench fit`` then fits it to every axis group, bootstraps its intervals and
    computes its multipliers, and ``tgbench fit --form NAME`` makes the report draw it.
    """

    name: str = ""
    param_names: tuple[str, ...] = ()

    def predict(self, params: Mapping[str, float | np.ndarray], x) -> np.ndarray:
        """L(x); parameters and x broadcast against each other (e.g. params (R, 1), x (n,))."""
        raise NotImplementedError

    def inverse(self, params: Mapping[str, float | np.ndarray], loss) -> np.ndarray:
        """The x at which the form reaches ``loss``; NaN where it never does."""
        raise NotImplementedError

    def fit(self, x: np.ndarray, y: np.ndarray, n_distinct: int, *, n_starts: int | None = None,
            init: Mapping[str, float] | None = None, huber_delta: float | None = None) -> PowerLawFit:
        """The point fit to checked positive x and y with n_distinct distinct x (>= len(param_names))."""
        raise NotImplementedError

    def refit_many(self, x: np.ndarray, log_ys: np.ndarray, full: PowerLawFit) -> dict[str, np.ndarray]:
        """Refit every resample (rows of log_ys); each parameter's values (R,), NaN where a refit failed."""
        out = {k: np.full(log_ys.shape[0], np.nan) for k in self.param_names}
        cell = _cells(x)
        cache: dict[bytes, PowerLawFit] = {}
        for i, log_y in enumerate(log_ys):
            # a fit depends only on the multiset of losses within each cell, and with 2 seeds many resamples repeat
            key = np.round(log_y[np.lexsort((log_y, cell))], 12).tobytes()
            if key not in cache:
                cache[key] = self.fit(x, np.exp(log_y), np.unique(x).size, n_starts=1, init=full.params,
                                      huber_delta=full.huber_delta)
            refit = cache[key]
            if refit.converged:
                for k in out:
                    out[k][i] = refit.params[k]
        return out


FIT_FORMS: dict[str, FitForm] = {}


def register_form(cls: type[FitForm]) -> type[FitForm]:
    """Class decorator: register a FitForm under its ``name``."""
    FIT_FORMS[cls.name] = cls()
    return cls


def get_form(name: str) -> FitForm:
    """The registered form called ``name``.

    Raises:
        UserError: for an unknown name (the fix lists the registered ones).
    """
    if name not in FIT_FORMS:
        from tgbench.errors import unknown_name

        raise unknown_name("fit form", name, FIT_FORMS)
    return FIT_FORMS[name]


@register_form
class Kaplan(FitForm):
    """L(x) = (x_c / x)^alpha, fitted by least squares of log L on log x (closed form, every seed a row)."""

    name = "kaplan"
    param_names = ("x_c", "alpha")

    def predict(self, params, x):
        x = np.asarray(x, dtype=float)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return (params["x_c"] / x) ** params["alpha"]

    def inverse(self, params, loss):
        loss = np.asarray(loss, dtype=float)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = params["x_c"] * loss ** (-1.0 / np.asarray(params["alpha"]))
            out = np.where(np.isfinite(loss) & (loss > 0), out, np.nan)
        return np.where(np.isfinite(out) & (out > 0), out, np.nan)

    def fit(self, x, y, n_distinct, *, n_starts=None, init=None, huber_delta=None):
        return _fit_kaplan(x, y, n_distinct)

    def refit_many(self, x, log_ys, full):
        x0 = float(np.exp(np.mean(np.log(x))))  # one least-squares solve for all resamples
        l0, slope = _kaplan_coefficients(np.log(x / x0), log_ys)
        x_c, alpha, _ = _kaplan_params(l0, slope, x0)
        return {"x_c": x_c, "alpha": alpha}


@register_form
class Saturating(FitForm):
    """L(x) = E + A x^-alpha (irreducible loss E): least squares, then Huber, from several starts."""

    name = "saturating"
    param_names = ("E", "A", "alpha")

    def predict(self, params, x):
        x = np.asarray(x, dtype=float)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return params["E"] + params["A"] * x ** -np.asarray(params["alpha"])

    def inverse(self, params, loss):
        loss = np.asarray(loss, dtype=float)
        floor = params["E"]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = (params["A"] / (loss - floor)) ** (1.0 / np.asarray(params["alpha"]))
            out = np.where(np.isfinite(loss) & (loss > floor), out, np.nan)
        return np.where(np.isfinite(out) & (out > 0), out, np.nan)

    def fit(self, x, y, n_distinct, *, n_starts=None, init=None, huber_delta=None):
        return _fit_saturating(x, y, n_distinct, 6 if n_starts is None else n_starts, init, huber_delta)


def predict_form(form: str, params: Mapping[str, float | np.ndarray], x) -> np.ndarray:
    """L(x) of a registered 1-D form; parameters and x broadcast against each other (e.g. params (R, 1), x (n,))."""
    return FIT_FORMS[form].predict(params, x)


def inverse_form(form: str, params: Mapping[str, float | np.ndarray], loss) -> np.ndarray:
    """The x at which a registered 1-D form reaches ``loss``; NaN where it never does (loss <= E or not finite)."""
    return FIT_FORMS[form].inverse(params, loss)


@dataclass
class PowerLawFit:
    """A fitted scaling law, or an explicit failure (``converged`` False, ``params`` empty, ``reason`` set).

    Attributes:
        form: "kaplan", "saturating" or "joint".
        params: fitted parameters in the data's own units (the form's ``param_names``).
        intervals: 95% interval per parameter (empty without a bootstrap or when exactly determined).
        converged: whether the fit converged to finite parameters inside the bounds.
        reason: why the fit failed ("" when it converged).
        n_points: number of (x, loss) points fitted.
        x: the x values fitted ([N, D] pairs for the joint form).
        y: the losses fitted.
        n_resamples: bootstrap resamples behind ``intervals`` (0 when none).
        failed_fraction: fraction of those resamples whose fit failed (None without a bootstrap).
        n_distinct: distinct x values (distinct (N, D) pairs for the joint form).
        huber_delta: the Huber threshold on log residuals (None: least squares).
        interval_basis: "seeds" (seeds resampled within cells), "residuals" (one seed per cell) or "none".
        df: degrees of freedom of the noise estimate behind the intervals.
        interval_note: what the intervals do and do not reflect, for a reader.
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
    n_distinct: int = 0
    huber_delta: float | None = None
    interval_basis: str = "none"
    df: float | None = None
    interval_note: str = ""

    @property
    def status(self) -> str:
        """"ok", "exactly determined, no interval" (as many parameters as distinct x) or "fit failed"."""
        if not self.converged:
            return STATUS_FAILED
        return STATUS_EXACT if self.n_distinct <= len(_param_names(self.form)) else STATUS_OK

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
        return predict_form(self.form, self.params, x)

    def inverse(self, loss) -> np.ndarray:
        """The x at which the fitted curve reaches ``loss``; NaN where it never does (loss <= E) or the fit failed."""
        if self.form == "joint":
            raise ValueError("the joint form has two inputs (N, D) and no single inverse; use a 1-D fit")
        loss = np.asarray(loss, dtype=float)
        if not self.converged:
            return np.full(loss.shape, np.nan)
        return inverse_form(self.form, self.params, loss)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (non-finite numbers become None)."""
        return _json_safe({
            "form": self.form,
            "status": self.status,
            "params": dict(self.params),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "converged": self.converged,
            "reason": self.reason,
            "n_points": self.n_points,
            "n_distinct": self.n_distinct,
            "x": list(self.x),
            "y": list(self.y),
            "n_resamples": self.n_resamples,
            "failed_fraction": self.failed_fraction,
            "huber_delta": self.huber_delta,
            "interval_basis": self.interval_basis,
            "seed_variance": self.interval_basis == "seeds",
            "df": self.df,
            "interval_note": self.interval_note,
        })


_SINGLE_THREAD_DEPTH = 0


@functools.cache
def _thread_controller():
    """One controller per process: building one scans every loaded library (~10 ms, more on a loaded machine)."""
    return ThreadpoolController() if ThreadpoolController is not None else None


def _single_threaded(fn):
    """Run ``fn`` with one BLAS thread: the fits call BLAS on arrays of 2-20 numbers, where OpenBLAS's thread
    hand-off costs ~10x the work (and far more on a loaded machine)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _SINGLE_THREAD_DEPTH
        controller = _thread_controller()
        if _SINGLE_THREAD_DEPTH or controller is None:
            return fn(*args, **kwargs)
        _SINGLE_THREAD_DEPTH += 1
        try:
            with controller.limit(limits=1, user_api="blas"):
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


def _param_names(form: str) -> tuple[str, ...]:
    return JOINT_PARAMS if form == "joint" else FIT_FORMS[form].param_names


def _check_distinct(name: str, x: np.ndarray) -> int:
    n_distinct = np.unique(x).size
    if n_distinct < 2:
        raise ValueError(f"{name} needs at least 2 distinct values to fit a power law; got {np.unique(x).tolist()}")
    return n_distinct


def _failure(form: str, reason: str, x: list, y: list, n_distinct: int = 0) -> PowerLawFit:
    return PowerLawFit(form=form, params={}, intervals={}, converged=False, reason=reason, n_points=len(y),
                       x=x, y=y, n_distinct=n_distinct)


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


# ----------------------------------------------------------------------------------------------------------
# the Kaplan form: least squares of log L on log u, u = x / x0 (x0 the geometric mean of x)


def _kaplan_coefficients(log_u: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """(log L(x0), slope) of the least-squares line; log_y (n,) gives shape (2,), log_y (R, n) gives (2, R)."""
    return np.polynomial.polynomial.polyfit(log_u, np.asarray(log_y).T, 1)


def _kaplan_params(l0, slope, x0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x_c, alpha and a converged mask from line coefficients: log L = l0 - alpha log(x / x0)."""
    l0, alpha = np.asarray(l0, dtype=float), -np.asarray(slope, dtype=float)
    ok = np.isfinite(l0) & (alpha > ALPHA_MIN) & (alpha < ALPHA_MAX)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_xc = math.log(x0) + l0 / np.where(ok, alpha, 1.0)
    ok &= log_xc < 690.0  # exp(690) is still a finite float
    x_c = np.exp(np.where(ok, log_xc, 0.0))
    return np.where(ok, x_c, np.nan), np.where(ok, alpha, np.nan), ok


def _fit_kaplan(x: np.ndarray, y: np.ndarray, n_distinct: int) -> PowerLawFit:
    xs, ys = x.tolist(), y.tolist()
    x0 = float(np.exp(np.mean(np.log(x))))
    l0, slope = _kaplan_coefficients(np.log(x / x0), np.log(y))
    x_c, alpha, ok = _kaplan_params(l0, slope, x0)
    if not ok:
        a = -float(slope)
        if not ALPHA_MIN < a < ALPHA_MAX:
            return _failure("kaplan", f"alpha = {a:.3g} is outside ({ALPHA_MIN:g}, {ALPHA_MAX:g}): the losses do "
                            "not fall as a power law of x", xs, ys, n_distinct)
        return _failure("kaplan", f"x_c overflows (alpha = {a:.3g} is too flat for these losses)", xs, ys,
                        n_distinct)
    return PowerLawFit(form="kaplan", params={"x_c": float(x_c), "alpha": float(alpha)}, intervals={},
                       converged=True, reason="", n_points=len(ys), x=xs, y=ys, n_distinct=n_distinct)


# ----------------------------------------------------------------------------------------------------------
# the nonlinear forms: theta holds logs of the positive quantities, x is normalised by its geometric mean


def _saturating_logpred(theta: np.ndarray, log_u: np.ndarray):
    """log L and its Jacobian (p, n) for L = E + A' u^-alpha, theta = (log E, log A', log alpha)."""
    alpha = math.exp(theta[2])
    e = math.exp(theta[0])
    t = np.exp(theta[1] - alpha * log_u)  # (n,)
    pred = e + t
    d = np.stack([e / pred, t / pred, -alpha * log_u * t / pred])  # (3, n)
    return np.log(pred), d


def _joint_logpred(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """log L and its Jacobian for L = E + A' n^-alpha + B' d^-beta, theta = (log E, log A', log alpha, log B',
    log beta)."""
    alpha, beta = math.exp(theta[2]), math.exp(theta[4])
    e = math.exp(theta[0])
    ta = np.exp(theta[1] - alpha * log_n)  # (n,)
    tb = np.exp(theta[3] - beta * log_d)  # (n,)
    pred = e + ta + tb
    d = np.stack([e / pred, ta / pred, -alpha * log_n * ta / pred, tb / pred, -beta * log_d * tb / pred])
    return np.log(pred), d


def _least_squares_multistart(logpred, log_y: np.ndarray, starts: list[np.ndarray],
                              bounds: list[tuple[float, float]], huber_delta: float | None):
    """The best (lowest cost) converged ``least_squares`` solution over the starts, or None; and the best of any.

    ``huber_delta`` None fits plain least squares, otherwise a Huber loss with that threshold on log residuals.
    """
    lo, hi = np.array(bounds, dtype=float).T
    loss, scale = ("linear", 1.0) if huber_delta is None else ("huber", huber_delta)

    def fun(theta):
        return logpred(theta)[0] - log_y

    def jac(theta):
        return logpred(theta)[1].T

    best, best_any = None, None
    for theta0 in starts:
        # least_squares wants a start strictly inside the bounds
        theta0 = np.clip(theta0, lo + 1e-9, hi - 1e-9)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                res = least_squares(fun, theta0, jac=jac, bounds=(lo, hi), method="trf", loss=loss, f_scale=scale,
                                    x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=100 * len(theta0))
            except ValueError:  # residuals became non-finite at the start
                continue
        if not (np.isfinite(res.cost) and np.all(np.isfinite(res.x))):
            continue
        if res.status > 0 and (best is None or res.cost < best.cost):
            best = res
        if best_any is None or res.cost < best_any.cost:
            best_any = res
    return best, best_any


def _nonlinear_fit(logpred, log_y: np.ndarray, starts, bounds, huber_delta: float | None, n_par: int):
    """Least squares, then a Huber fit with delta scaled to its residual noise; returns (result, delta, reason).

    With ``huber_delta`` given (bootstrap refits reuse the point fit's), only the Huber pass runs.
    """
    n = log_y.size
    if huber_delta is None:
        best, best_any = _least_squares_multistart(logpred, log_y, starts, bounds, None)
        if best is None:
            return None, None, _no_convergence_reason(best_any, len(starts))
        if n <= n_par:
            return best, None, ""  # exactly determined: every loss gives the same interpolating curve
        sigma = math.sqrt(2.0 * best.cost / (n - n_par))
        huber_delta = HUBER_K * max(sigma, 1e-8)
        starts = [best.x]
    robust, best_any = _least_squares_multistart(logpred, log_y, starts, bounds, huber_delta)
    if robust is None:
        return None, huber_delta, _no_convergence_reason(best_any, len(starts))
    return robust, huber_delta, ""


def _no_convergence_reason(best_any, n_starts: int) -> str:
    """Why no start converged, naming an exponent that ran into its bound (the usual cause)."""
    if best_any is None:
        return f"least squares gave non-finite results from all {n_starts} starts"
    return f"least squares did not converge from any of {n_starts} starts ({best_any.message})"


def _at_bound(value: float, lo: float, hi: float) -> bool:
    return value <= lo * (1 + 1e-6) or value >= hi * (1 - 1e-6)


def _saturating_start_from(init: Mapping[str, float] | None, x0: float) -> list[np.ndarray]:
    """A previous fit's parameters as a start in the optimizer's coordinates."""
    if not init:
        return []
    try:
        a = init["alpha"]
        return [np.array([math.log(init["E"]), math.log(init["A"]) - a * math.log(x0), math.log(a)])]
    except (KeyError, ValueError, OverflowError):
        return []


def _fit_saturating(x: np.ndarray, y: np.ndarray, n_distinct: int, n_starts: int,
                    init: Mapping[str, float] | None, huber_delta: float | None) -> PowerLawFit:
    xs, ys = x.tolist(), y.tolist()
    x0 = float(np.exp(np.mean(np.log(x))))
    log_u, log_y = np.log(x / x0), np.log(y)
    y_min = float(y.min())
    starts = _saturating_start_from(init, x0)
    for frac, a in _SATURATING_STARTS[:n_starts]:
        e = frac * y_min
        # A' from the mean residual of log(L - E) = log A' - alpha log u
        log_a = float(np.mean(np.log(np.maximum(y - e, 1e-3 * y_min)) + a * log_u))
        starts.append(np.array([math.log(max(e, 1e-6 * y_min)), log_a, math.log(a)]))
    bounds = [(math.log(y_min) - 10.0, math.log(float(y.max())) + 1.0), (-50.0, 50.0),
              (math.log(ALPHA_MIN), math.log(ALPHA_MAX))]
    res, delta, reason = _nonlinear_fit(lambda th: _saturating_logpred(th, log_u), log_y, starts, bounds,
                                        huber_delta, 3)
    if res is None:
        return _failure("saturating", reason, xs, ys, n_distinct)
    theta = res.x
    alpha = math.exp(theta[2])
    if _at_bound(alpha, ALPHA_MIN, ALPHA_MAX):
        return _failure("saturating", f"alpha ran into its bound ({alpha:.3g}): the losses do not follow the form",
                        xs, ys, n_distinct)
    if theta[0] <= bounds[0][0] + 1e-3:
        # E at its floor: the points show no irreducible loss, and E would be the bound, not a fitted value
        return _failure("saturating", "E sits on its lower bound (the losses show no floor at these points): the "
                        "saturating form does not apply; no parameters are shown as fitted", xs, ys, n_distinct)
    with np.errstate(over="ignore"):
        params = {"E": math.exp(theta[0]), "A": math.exp(theta[1]) * x0 ** alpha, "alpha": alpha}
    if not all(np.isfinite(v) and v < 1e300 for v in params.values()):
        return _failure("saturating", f"non-finite parameters {params}", xs, ys, n_distinct)
    return PowerLawFit(form="saturating", params=params, intervals={}, converged=True, reason="",
                       n_points=len(ys), x=xs, y=ys, n_distinct=n_distinct, huber_delta=delta)


@_single_threaded
def fit_power_law(x, loss, form: str = "kaplan", *, n_starts: int | None = None,
                  init: Mapping[str, float] | None = None, huber_delta: float | None = None) -> PowerLawFit:
    """Fit L(x) = (x_c / x)^alpha ("kaplan") or L(x) = E + A x^-alpha ("saturating").

    Args:
        x: positive x values (token budgets or parameter counts); repeats (seeds) are allowed.
        loss: positive losses, one per x.
        form: "kaplan" (least squares of log L on log x, closed form) or "saturating" (least squares, then Huber
            with a threshold scaled to the residual noise; see the module docstring).
        n_starts: starts of the saturating form's multi-start grid (default 6); unused by "kaplan".
        init: parameters of an earlier saturating fit, tried first (bootstrap refits start from the point fit).
        huber_delta: a fixed Huber threshold on log residuals for the saturating form (skips the least-squares
            pass that estimates it); unused by "kaplan".

    Returns:
        The fit; ``converged`` is False with a ``reason`` when the form has more parameters than distinct x,
        when alpha leaves (ALPHA_MIN, ALPHA_MAX) (e.g. losses that rise with x) or when the optimizer fails.
        With exactly as many parameters as distinct x the fit converges but its ``status`` says so.

    Raises:
        ValueError: on non-positive or non-finite x or loss, mismatched lengths, or fewer than 2 distinct x.
    """
    if form not in FIT_FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {tuple(FIT_FORMS)} (use fit_joint for the joint "
                         "form)")
    x = _as_points("x", x)
    y = _as_points("loss", loss, x.size)
    n_distinct = _check_distinct("x", x)
    n_par = len(FIT_FORMS[form].param_names)
    if n_distinct < n_par:
        return _failure(form, f"{n_par} parameters but only {n_distinct} distinct x values", x.tolist(), y.tolist(),
                        n_distinct)
    return FIT_FORMS[form].fit(x, y, n_distinct, n_starts=n_starts, init=init, huber_delta=huber_delta)


@_single_threaded
def fit_joint(n_params, tokens, loss, *, n_starts: int = 8, huber_delta: float | None = None) -> PowerLawFit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta to points spanning both sizes and budgets.

    Least squares in log space, then a Huber loss with a threshold scaled to its residual noise (module
    docstring). No interval: the joint form is a summary; the multipliers come from the 1-D fits.

    Args:
        n_params: non-embedding parameter counts N, one per point.
        tokens: training-token budgets D, one per point.
        loss: losses, one per point.
        n_starts: number of starting points of the multi-start grid.
        huber_delta: a fixed Huber threshold on log residuals (default: 1.345 x the least-squares residual SD).

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
        return _failure("joint", f"5 parameters but only {n_distinct} distinct (N, D) points", xs, ys, n_distinct)

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
    res, delta, reason = _nonlinear_fit(lambda th: _joint_logpred(th, log_n, log_d), log_y, starts, bounds,
                                        huber_delta, 5)
    if res is None:
        return _failure("joint", reason, xs, ys, n_distinct)
    theta = res.x
    alpha, beta = math.exp(theta[2]), math.exp(theta[4])
    for name, v in (("alpha", alpha), ("beta", beta)):
        if _at_bound(v, ALPHA_MIN, ALPHA_MAX):
            return _failure("joint", f"{name} ran into its bound ({v:.3g}): the losses do not follow the form",
                            xs, ys, n_distinct)
    with np.errstate(over="ignore"):
        params = {"E": math.exp(theta[0]), "A": math.exp(theta[1]) * n0 ** alpha, "alpha": alpha,
                  "B": math.exp(theta[3]) * d0 ** beta, "beta": beta}
    if not all(np.isfinite(v) and v < 1e300 for v in params.values()):
        return _failure("joint", f"non-finite parameters {params}", xs, ys, n_distinct)
    return PowerLawFit(form="joint", params=params, intervals={}, converged=True, reason="", n_points=len(ys),
                       x=xs, y=ys, n_distinct=n_distinct, huber_delta=delta,
                       interval_note="no interval: the joint form is a summary; intervals are on the 1-D fits")


# ----------------------------------------------------------------------------------------------------------
# bootstrap


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


def _cells(x: np.ndarray) -> np.ndarray:
    """The cell (index of the distinct x value) of every row."""
    return np.unique(x, return_inverse=True)[1].ravel()


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
    return _json_safe({
        "points": out_points,
        "range": [min(ok_values), max(ok_values)] if ok_values else None,
        "range_ci": range_ci,
        "failed_fraction": failed,
        "n_resamples": n_res,
        "interval_basis": basis,
        "seed_variance": basis == "seeds",
        "interval_note": note,
    })


# ----------------------------------------------------------------------------------------------------------
# the whole grid


_json_safe = json_safe  # the one JSON sanitiser (tgbench.files)


def resolve_pairs(labels: Sequence[str], pairs: Sequence[Sequence[str]] | None = None, *,
                  reference: str | None = None, baselines: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The (A, B) pairs to compare: the given ones, checked, or the reference against every baseline.

    Args:
        labels: the labels in the results table (adapter, or adapter/variant).
        pairs: pairs (A, B) to fit; None for the default (``verdicts.comparison_pairs``): ``reference`` ("tg"
            when present, else the first label) against ``baselines`` (every other label).
        reference: the default pairs' A.
        baselines: the default pairs' B labels.

    Returns:
        The pairs, without duplicates, in the given order.

    Raises:
        UserError: for a pair that is not two different labels of the table (the fix names the known labels).
    """
    known = ordered_labels(labels)
    if pairs is None:
        pairs = comparison_pairs(known, reference, baselines)
    example = f"--pair {known[0]},{known[1]}" if len(known) >= 2 else "--pair tg,gpt2"
    out: list[tuple[str, str]] = []
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise UserError(f"a pair is two labels A,B; got {pair!r}", f"write each pair as A,B, e.g. {example}")
        a, b = (str(p).strip() for p in pair)
        unknown = [lab for lab in (a, b) if lab not in known]
        if unknown:
            raise UserError(f"pair {a},{b}: no runs labelled {', '.join(repr(u) for u in unknown)} in results.csv",
                            f"use labels from results.csv ({', '.join(known) or 'none yet'}), e.g. {example}")
        if a == b:
            raise UserError(f"pair {a},{b} compares {a} with itself", f"give two different labels, e.g. {example}")
        if (a, b) not in out:
            out.append((a, b))
    return out


def _row_labels(results: pd.DataFrame) -> list[str]:
    """Each row's label: results.csv's `label` (a plug-in's name, or the grid's `label =`), else adapter/variant."""
    variants = results["variant"] if "variant" in results.columns else [""] * len(results)
    labels = results["label"] if "label" in results.columns else [""] * len(results)
    return [lab if isinstance(lab, str) and lab else label_of(a, v)
            for lab, a, v in zip(labels, results["adapter"], variants, strict=True)]


def _usable_rows(results: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, str]:
    """The done rows with a finite loss, with columns label, x values and loss/loss_source added."""
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; it has {list(results.columns)}")
    df = results.copy()
    df["label"] = _row_labels(df)
    done = df["status"].astype(str) == DONE
    if (~done).any():
        notes.append(f"{int((~done).sum())} runs not done (status != 'done') were left out")
    df = df[done].copy()
    df["loss"], df["loss_source"] = fit_loss(df)
    no_loss = df["loss"].isna()
    if no_loss.any():
        notes.append(f"runs without any loss were left out: {df.loc[no_loss, 'run_id'].tolist()}")
    df = df[~no_loss]
    sources = sorted(set(df["loss_source"]))
    loss_column = sources[0] if len(sources) == 1 else ("mixed" if sources else "none")
    return df, loss_column


def _rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator per (seed, axis, label, group): results do not depend on the order groups are visited."""
    return np.random.default_rng([seed, zlib.crc32("|".join(key).encode())])


def _fit_axis_group(x: np.ndarray, y: np.ndarray, n_resamples: int,
                    rng: np.random.Generator) -> dict[str, BootstrapFit]:
    """Fit both forms to one group, sharing one set of seed resamples; {form: BootstrapFit}."""
    x = _as_points("x", x)
    y = _as_points("loss", y, x.size)
    seeds = seed_resamples(x, np.log(y), n_resamples, rng) if n_resamples else None
    return {form: bootstrap_fit(x, y, form, n_resamples, rng, seeds=seeds) for form in FIT_FORMS}


def run_flags(rows: pd.DataFrame) -> dict[str, list[str]]:
    """run_id -> flags of the usable runs: results.csv's ``flags`` column (curve flags) plus the table's own
    cell-outlier and Cook's-distance flags, recomputed here so that a table without the column gets them."""
    extra = table_flags(rows)
    column = rows["flags"] if "flags" in rows.columns else [""] * len(rows)
    out = {}
    for run, cell in zip(rows["run_id"], column, strict=True):
        joined = split_flags(join_flags(split_flags(cell), extra.get(str(run), [])))
        if joined:
            out[str(run)] = joined
    return out


def _fit_entry(fit: PowerLawFit, x: np.ndarray, y: np.ndarray) -> dict:
    """A fit's fits.json entry with its lack-of-fit F test (None without replicates or lack-of-fit df)."""
    out = fit.to_dict()
    out["lack_of_fit"] = None
    if fit.converged:
        out["lack_of_fit"] = _json_safe(lack_of_fit(x, np.log(y), np.log(fit.predict(x)), len(fit.params)))
    return out


def _verdicts_of_rows(results: pd.DataFrame, rows: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                      leave_one_out: bool = True, with_power: bool = True) -> dict:
    scheme, source = seed_scheme(results)
    flags = run_flags(rows) if leave_one_out else {}
    verdicts, power, notes = grid_verdicts(rows, pairs, scheme, leave_one_out, with_power, flags)
    return {"design": {"seed_scheme": scheme, "source": source}, "verdicts": verdicts, "power": power,
            "flags": flags, "notes": notes}


def table_verdicts(results: pd.DataFrame, pairs: Sequence[Sequence[str]] | None = None, *,
                   reference: str | None = None, baselines: Sequence[str] | None = None,
                   leave_one_out: bool = True, with_power: bool = True) -> dict:
    """The ``design``, ``verdicts`` and ``power`` of fits.json alone, by the code ``fit_grid`` runs.

    For simulations of the decision rule: the same rows, pairs and tests as ``tgbench fit``, without the
    curve fits. ``leave_one_out`` / ``with_power`` False skip ``influential`` (and the flags) / ``power``
    (neither changes the class).
    """
    notes: list[str] = []
    rows, _ = _usable_rows(results, notes)
    pairs = resolve_pairs(_row_labels(results), pairs, reference=reference, baselines=baselines)
    out = _verdicts_of_rows(results, rows, pairs, leave_one_out, with_power)
    out["notes"] = notes + out["notes"]
    return out


@_single_threaded
def fit_grid(results: pd.DataFrame, pairs: Sequence[Sequence[str]] | None = None, n_resamples: int = 200,
             seed: int = 0, *, reference: str | None = None, baselines: Sequence[str] | None = None) -> dict:
    """Fit every label's data and parameter axes, the joint form, and the pairs' multipliers with intervals.

    Args:
        results: the grid's results table (one row per run; see REQUIRED_COLUMNS, plus optional
            ``variant`` and ``test_loss``).
        pairs: (A, B) label pairs; a multiplier says how much more data / parameters B needs to reach A's loss.
            None: the first label ("tg" when present) against every other label (``resolve_pairs``).
        n_resamples: bootstrap resamples per axis group (0 for none; at most MAX_RESAMPLES).
        seed: seed of the bootstrap; the output is deterministic for a seed.
        reference: A of the default pairs (None: "tg" when present, else the first label).
        baselines: B labels of the default pairs (None: every other label).

    Returns:
        The content of fits.json (layout in the module docstring); JSON-serialisable without NaN.

    Raises:
        ValueError: when the table lacks required columns. Bad data inside a group is recorded as that
            group's failure instead.
        UserError: for pairs of unknown or equal labels, or a bad number of resamples.
    """
    n_resamples = check_resamples(n_resamples)
    notes: list[str] = []
    df, loss_column = _usable_rows(results, notes)
    pairs = resolve_pairs(_row_labels(results), pairs, reference=reference, baselines=baselines)
    paired = _verdicts_of_rows(results, df, pairs)
    notes.extend(paired["notes"])
    if paired["design"]["seed_scheme"] == "shared":
        notes.append("seeds are shared across budgets (seed_scheme shared): the multipliers' and fits' intervals "
                     "treat cells as independent and are only indicative; the verdict tests per replicate")
    axes: dict[str, dict] = {"data": {}, "params": {}}
    fitted: dict[str, dict] = {"data": {}, "params": {}}  # axis -> label -> key -> {form: BootstrapFit}
    ranges: dict[str, dict] = {"data": {}, "params": {}}  # axis -> label -> key -> (x distinct, (min, max))
    axis_spec = {"data": (["width", "layers"], "tokens"), "params": (["tokens"], "n_params")}
    caveats: dict[str, list[str]] = {}  # interval caveat -> groups it applies to

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
                    f: _failure(f, reason, x.tolist(), y.tolist()).to_dict() for f in FIT_FORMS}
                continue
            axes[axis].setdefault(label, {})[key] = {f: _fit_entry(res[f].fit, x, y) for f in FIT_FORMS}
            fitted[axis].setdefault(label, {})[key] = res
            ranges[axis].setdefault(label, {})[key] = (np.unique(x), (float(x.min()), float(x.max())), x, y)
            for form, b in res.items():
                if b.fit.interval_basis == "residuals":
                    caveats.setdefault("one seed per cell: intervals reflect the scatter around the curve, not "
                                       "seed variance", []).append(f"{axis} {label} {key} {form}")
                elif b.fit.status == STATUS_EXACT:
                    caveats.setdefault(f"{STATUS_EXACT} (as many parameters as distinct x)",
                                       []).append(f"{axis} {label} {key} {form}")
    for caveat, where in caveats.items():
        notes.append(f"{caveat}: {', '.join(where)}")
    for axis, labels in axes.items():
        for label, groups in labels.items():
            for key, forms in groups.items():
                for form, fit in forms.items():
                    lof = fit.get("lack_of_fit")
                    if lof and lof.get("sentence"):
                        notes.append(f"lack of fit, {axis} axis {label} {key} {form}: F({lof['df1']}, {lof['df2']}) "
                                     f"= {lof['F']:.3g}, p = {lof['p_value']:.2g}: {lof['sentence']}")

    joint: dict[str, dict] = {}
    for label, g in df.groupby("label", sort=True):
        n, d, y = (g[c].to_numpy(dtype=float) for c in ("n_params", "tokens", "loss"))
        if np.unique(n).size >= 2 and np.unique(d).size >= 2 and len(g) >= 5:
            try:
                joint[label] = fit_joint(n, d, y).to_dict()
            except ValueError as err:
                notes.append(f"bad data for the joint fit of {label}: {err}")
                joint[label] = _failure("joint", str(err), [], []).to_dict()

    multipliers: dict[str, dict] = {"data": {}, "params": {}}
    if not pairs:
        notes.append(f"no multipliers: they compare two labels and the table has {len(set(df['label']))}")
    for a_label, b_label in pairs:
        for axis in ("data", "params"):
            fa, fb = fitted[axis].get(a_label, {}), fitted[axis].get(b_label, {})
            shared = sorted(set(fa) & set(fb))
            if not shared:
                why = (f"both need a fitted {axis} axis (>= 3 distinct x; fitted: {sorted(fitted[axis]) or 'none'})"
                       if not fa or not fb else f"their {axis}-axis groups differ ({sorted(fa)} vs {sorted(fb)})")
                notes.append(f"no {axis}-axis multipliers for {a_label} vs {b_label}: {why}")
                continue
            by_group = multipliers[axis].setdefault(a_label, {}).setdefault(b_label, {})
            for key in shared:
                x_a, _, raw_xa, raw_ya = ranges[axis][a_label][key]
                _, b_range, raw_xb, raw_yb = ranges[axis][b_label][key]
                # the primary multiplier needs no law; Kaplan's interval is analytic and includes lack of fit;
                # other forms keep the seed bootstrap
                by_group[key] = {"interpolated": interpolated_multiplier(raw_xa, raw_ya, raw_xb, raw_yb),
                                 **{form: (kaplan_multiplier(raw_xa, raw_ya, raw_xb, raw_yb) if form == "kaplan"
                                           and fa[key][form].fit.converged and fb[key][form].fit.converged
                                           else pair_multiplier(fa[key][form], fb[key][form], x_a, b_range))
                                    for form in FIT_FORMS}}

    point_cols = [c for c in ("run_id", "label", "adapter", "variant", "width", "layers", "n_params", "tokens",
                              "seed", "loss", "loss_source") if c in df.columns]
    points = [{c: _json_safe(v) for c, v in row.items()} for row in df[point_cols].to_dict(orient="records")]
    return _json_safe({
        "version": FITS_VERSION,
        "reference": pairs[0][0] if pairs else None,
        "pairs": [list(p) for p in pairs],
        "design": paired["design"],
        "verdicts": paired["verdicts"],
        "power": paired["power"],
        "flags": paired["flags"],
        "loss_column": loss_column,
        "n_resamples": n_resamples,
        "seed": seed,
        "form": "kaplan",
        "axes": axes,
        "joint": joint,
        "multipliers": multipliers,
        "points": points,
        "notes": notes,
    })


def write_fits(grid_dir: Path, *, pairs: Sequence[Sequence[str]] | None = None, n_resamples: int = 200,
               seed: int = 0, form: str = "kaplan", reference: str | None = None,
               baselines: Sequence[str] | None = None) -> Path:
    """Read ``grid_dir/results.csv`` and write ``grid_dir/fits.json`` atomically (temp file + os.replace).

    Args:
        grid_dir: the grid directory.
        pairs: (A, B) label pairs to compare; None: `reference` against `baselines` (see fit_grid).
        n_resamples: bootstrap resamples per axis group.
        seed: seed of the bootstrap.
        form: the fit form the report draws (a registered FitForm; default the paper's Kaplan form).
        reference: the default pairs' A (the grid file's `reference`); None: tg when present, else the first label.
        baselines: the default pairs' Bs (the grid file's `baselines`); None: every other label.

    Returns:
        The path of fits.json.

    Raises:
        UserError: when the results table is missing, a pair names unknown labels, or n_resamples is bad.
        ValueError: when the table lacks required columns.
    """
    grid_dir = Path(grid_dir)
    form = get_form(form).name
    n_resamples = check_resamples(n_resamples)
    csv = grid_dir / "results.csv"
    if not csv.is_file():
        raise UserError(f"no results table at {csv}", "run the grid first (it writes results.csv)")
    fits = fit_grid(pd.read_csv(csv), pairs=pairs, n_resamples=n_resamples, seed=seed, reference=reference,
                    baselines=baselines)
    fits["form"] = form
    out = grid_dir / "fits.json"
    write_text(out, json.dumps(fits, indent=2, allow_nan=False) + "\n")
    return out


def summary_lines(fits: Mapping) -> list[str]:
    """What ``tgbench fit`` prints: the notes, each pair's class line and details, power, and the multipliers."""
    lines = [f"note: {note}" for note in fits.get("notes", [])]
    for verdict in fits.get("verdicts", []):
        lines.append(f"verdict {verdict['a']} vs {verdict['b']}: {verdict['sentence']}")
        lines.extend(f"  {detail}" for detail in verdict.get("details", []))
    for power in fits.get("power", []):
        lines.append(f"power {power['sentence']}")
    form = fits.get("form", "kaplan")
    for axis, by_a in (fits.get("multipliers") or {}).items():
        name = "m_D" if axis == "data" else "m_N"
        for a, by_b in by_a.items():
            for b, groups in by_b.items():
                for group, forms in groups.items():
                    for kind in ("interpolated", form):
                        mult = (forms or {}).get(kind)
                        if not mult:
                            continue
                        shown = []
                        for p in mult.get("points", []):
                            if p.get("value") is None:
                                shown.append(f"x = {p['x']:,.0f}: {p.get('status')}")
                                continue
                            ci = (f" [{p['ci_low']:.2f}, {p['ci_high']:.2f}]" if p.get("ci_low") is not None
                                  else "")
                            extra = " (extrapolated)" if p.get("extrapolated") else ""
                            shown.append(f"x = {p['x']:,.0f}: {p['value']:.2f}{ci}{extra}")
                        lines.append(f"{name} {b} over {a} ({group}, {kind}): " + "; ".join(shown))
    return lines
