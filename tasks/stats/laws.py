"""Scaling laws: the fit forms, how each is fitted, and a fitted law. One concept, one file.


Forms (x is the training-token budget D on the data axis, the non-embedding parameter count N on the
parameter axis):

- ``kaplan``:     L(x) = (x_c / x)^alpha                  (the paper's form, Kaplan et al. 2020)
- ``saturating``: L(x) = E + A x^-alpha                    (irreducible loss E)
- ``joint``:      L(N, D) = E + A / N^alpha + B / D^beta   (Chinchilla approach 3)

Fit forms are registered classes (``FitForm``: name, param_names, predict, inverse, fit; ``@register_form``):
a new form is one class, fitted to every axis group and compared by its multipliers.

`PowerLawFit` is what a fit returns: parameters, intervals, status, and why it failed when it did.

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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from tgbench.core.errors import unknown_name
from tgbench.core.files import json_safe

try:  # comes with scikit-learn (an lm-eval dependency); only used to keep BLAS single-threaded
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None


JOINT_PARAMS = ("E", "A", "alpha", "B", "beta")


STATUS_OK = "ok"


STATUS_EXACT = "exactly determined, no interval"


STATUS_FAILED = "fit failed"


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

        raise unknown_name("fit form", name, FIT_FORMS)
    return FIT_FORMS[name]


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
        return json_safe({
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


def _param_names(form: str) -> tuple[str, ...]:
    return JOINT_PARAMS if form == "joint" else FIT_FORMS[form].param_names


def _cells(x: np.ndarray) -> np.ndarray:
    """The cell (index of the distinct x value) of every row."""
    return np.unique(x, return_inverse=True)[1].ravel()


try:  # comes with scikit-learn (an lm-eval dependency); only used to keep BLAS single-threaded
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None


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


def _failure(form: str, reason: str, x: list, y: list, n_distinct: int = 0) -> PowerLawFit:
    return PowerLawFit(form=form, params={}, intervals={}, converged=False, reason=reason, n_points=len(y),
                       x=x, y=y, n_distinct=n_distinct)


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
