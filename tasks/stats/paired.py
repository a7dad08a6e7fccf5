"""The paired differences of two models and the tests on them: per budget, pooled, trend.

Design
------
- The replicate is the unit. A replicate fixes the data order and the initialisation, and every model of a
  replicate gets the same ones, so A's and B's runs of one (budget, replicate) are a pair: d = L_A - L_B
  (nats/token, the loss ``tgbench.results.columns.fit_loss`` picks). Negative d: A is better. A is the first label
  of the pair (the reference).
- Two designs, recorded in results.csv's ``seed_scheme`` column: "per-budget" (tgbench >= 0.3: each
  (budget, replicate) has its own seeds, so cells are independent) and "shared" (older grids, and any table
  without the column: a replicate's seed is the same at every budget, so a replicate's differences are
  correlated across budgets). Only budgets where both models ran enter: nothing is extrapolated.

Statistics
----------
- Per measured budget k (both designs): mean of d, SD, 95% t interval (df = n_k - 1), the one-sided p that A
  is better (``p_a_better``) and that B is better (``p_b_better``), the two-sided p, the Holm-adjusted
  two-sided p over the budgets (``p_holm``), and the exact sign-flip p (2^n flips; with n replicates the
  smallest two-sided sign-flip p of one budget is 2 / 2^n, 0.25 for 3).
- "per-budget" design, budget as a fixed effect:
  pooled = the mean of the budget means, SE = sqrt(sum_k s_k^2 / n_k) / K, Welch-Satterthwaite df;
  trend = the slope of the budget means on log2 D (nats per doubling), i.e. the contrast
  sum_k c_k m_k with c_k = (x_k - mean x) / sum_j (x_j - mean x)^2, x = log2 D, with the Welch SE
  sqrt(sum_k c_k^2 s_k^2 / n_k) and Satterthwaite df. Both use the within-budget variances only, so a gap
  that changes across budgets does not inflate the error of the pooled test, and unequal seed noise across
  budgets does not make the trend test liberal (in 100,000 simulated null grids of 3 budgets x 3 replicates,
  a plain OLS slope over all pairs rejects at 5% in 7.9% with seed SD 2 : 1 : 0.5 across budgets and 12% with
  4 : 1 : 1; this contrast in 5.7% and 5.7%). A budget with one replicate borrows the pooled within-budget
  variance of the others.
- "shared" design, replicate level (df = replicates - 1): pooled = t over the replicates' mean differences,
  trend = t over the replicates' own slopes on log2 D; the per-budget tests are the paired t per budget.
"""

from __future__ import annotations

import functools
import gc
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tgbench.plan.config import SCHEME_PER_BUDGET, SCHEME_SHARED, SEED_SCHEMES

ALPHA = 0.05


MAX_SIGN_FLIP_UNITS = 16  # 2^16 sign patterns: exact and cheap; beyond that the t p stands alone


SCHEMES = SEED_SCHEMES


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


@dataclass(frozen=True)
class Axis:
    """What "equal" means in a comparison: the quantity both models get the same of, and how it is named.

    Attributes:
        name: The axis in fits.json and `tgbench fit --axis`: "tokens" (equal data), "flops" (equal training
            compute) or "params" (equal size).
        symbol: D, C or N in the classes ("gap grows with D").
        point: A measured point of the axis ("budget"), and `points` its plural.
        quantity: What x counts (for sentences and plots).
        at: The comparison in words ("at equal data").
    """

    name: str
    symbol: str
    point: str
    points: str
    quantity: str
    at: str


DATA = Axis("tokens", "D", "budget", "budgets", "training tokens", "at equal data")
COMPUTE = Axis("flops", "C", "compute budget", "compute budgets", "training FLOPs", "at equal compute")
SIZE = Axis("params", "N", "size", "sizes", "non-embedding parameters", "at equal size")
AXES = {axis.name: axis for axis in (DATA, COMPUTE, SIZE)}
AUTO = "auto"  # `tgbench fit --axis auto`: the axis the grid varies (`auto_axis`)


def auto_axis(rows: pd.DataFrame) -> str:
    """The axis a grid measures: "params" (equal size) when its runs have one budget and several widths (a size
    grid such as the cpu-params preset, whose only data-axis comparison would be one budget at one width), else
    "tokens" (equal data).

    Args:
        rows: the usable runs (columns tokens, width).
    """
    if rows.empty:
        return DATA.name
    one_budget = pd.to_numeric(rows["tokens"], errors="coerce").nunique() == 1
    return SIZE.name if one_budget and rows["width"].nunique() >= 2 else DATA.name


@dataclass
class Pairs:
    """A's and B's runs of the same (budget, replicate): one entry per pair, sorted by budget, replicate."""

    x: np.ndarray  # (n,) the measured point: the budget D (or the compute C, the size N)
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
    """An integral float as an int, for group names ("width=128")."""
    return int(value) if float(value).is_integer() else float(value)


def size_pairs(rows: pd.DataFrame, a: str, b: str) -> tuple[Pairs, str]:
    """A's and B's runs of the same (width, replicate) at the budget where they share most widths: the pairs of
    the parameter axis, with x = A's non-embedding parameters at that width.

    Models of one width differ a little in parameters (TG has a few percent more than GPT-2 at one width); the
    pairs compare equal widths, and x is A's N so that sizes read in A's units.
    """
    found: dict[str, dict[tuple, tuple[float, str, float]]] = {a: {}, b: {}}
    columns = [rows[c].tolist() for c in ("label", "width", "layers", "tokens", "seed", "loss", "run_id", "n_params")]
    for label, width, layers, tokens, seed, loss, run, n_params in zip(*columns, strict=True):
        if label in found:
            found[label].setdefault((float(tokens), float(layers), float(width), seed),
                                    (float(loss), str(run), float(n_params)))
    shared = sorted(set(found[a]) & set(found[b]))
    groups: dict[tuple, list[tuple]] = {}
    for key in shared:
        groups.setdefault(key[:2], []).append(key)
    groups = {g: keys for g, keys in groups.items() if len({k[2] for k in keys}) >= 2}
    if not groups:
        return Pairs(np.zeros(0), np.zeros(0), np.zeros(0), [], [], np.zeros(0)), ""
    (tokens, layers), keys = max(groups.items(), key=lambda kv: (len({k[2] for k in kv[1]}), len(kv[1]), kv[0][0]))
    keys = sorted(keys, key=lambda k: (k[2], str(k[3])))
    size_of = {k[2]: found[a][k][2] for k in keys}  # A's N at each width (the same for every replicate)
    pairs = Pairs(np.array([size_of[k[2]] for k in keys]), np.array([str(k[3]) for k in keys]),
                  np.array([found[a][k][0] - found[b][k][0] for k in keys]),
                  [found[a][k][1] for k in keys], [found[b][k][1] for k in keys],
                  np.array([found[a][k][0] for k in keys]))
    return pairs, f"tokens={_plain(tokens)},layers={_plain(layers)}"


def size_gaps(rows: pd.DataFrame, a: str, b: str) -> list[dict]:
    """A's non-embedding parameters against B's at each width both were trained at: what "equal size" means here.

    The size axis pairs equal widths, and two architectures of one width differ a little in N (TG's sentence head
    and memory cross-attention: about 2.7% more than GPT-2 at 128 x 4); m_N and the verdicts along N are read
    with this gap beside them.

    Args:
        rows: runs with columns label, width, layers, n_params (results.csv's, or fits.json's points).
        a, b: the labels.

    Returns:
        [{width, layers, n_a, n_b, ratio (n_a / n_b)}] sorted by width; empty when they share no width.
    """
    sizes: dict[str, dict[tuple, float]] = {a: {}, b: {}}
    columns = [rows[c].tolist() for c in ("label", "width", "layers", "n_params")]
    for label, width, layers, n_params in zip(*columns, strict=True):
        n = float(n_params) if n_params is not None else math.nan
        if label in sizes and math.isfinite(n) and n > 0:
            sizes[label].setdefault((_plain(float(width)), _plain(float(layers))), n)
    return [{"width": w, "layers": layers, "n_a": sizes[a][(w, layers)], "n_b": sizes[b][(w, layers)],
             "ratio": sizes[a][(w, layers)] / sizes[b][(w, layers)]}
            for w, layers in sorted(set(sizes[a]) & set(sizes[b]))]


def size_gap_sentence(gaps: list[dict], a: str, b: str) -> str:
    """One line: A's N against B's at equal width ("tg has 2.7% more non-embedding parameters than gpt2 at
    128 x 4 (814,658 vs 793,344)"), the range over widths when there are several; "" without a shared width."""
    if not gaps:
        return ""
    pct = [100 * (g["ratio"] - 1) for g in gaps]
    where = "; ".join(f"{g['width']} x {g['layers']}: {g['n_a']:,.0f} vs {g['n_b']:,.0f}" for g in gaps)
    lo, hi = min(pct), max(pct)
    if lo >= 0 or hi <= 0:
        more = "more" if hi > 0 else "fewer"
        small, big = sorted((abs(lo), abs(hi)))
        amount = f"{big:.1f}%" if round(small, 1) == round(big, 1) else f"{small:.1f}-{big:.1f}%"
        amount = f"{amount} {more}"
    else:
        amount = f"{lo:+.1f}% to {hi:+.1f}%"
    return f"at equal width {a} has {amount} non-embedding parameters than {b} ({where})"


def compute_pairs(rows: pd.DataFrame, a: str, b: str) -> tuple[Pairs, str, str]:
    """A's runs against B at the same training compute: the pairs of the compute axis.

    An isoFLOP grid (a ``compute_budget`` column: every model of a cell trained the same FLOPs) pairs A's and B's
    runs of the same (compute budget, replicate) directly. Otherwise each of A's runs is compared with B's loss
    at A's compute, interpolated in log-log between B's runs of the same replicate that bracket it (B's runs
    at its other budgets); a run of A outside B's measured compute for that replicate has no pair: nothing is
    extrapolated. x is the mean compute of A's runs at the budget, so a budget stays one cell.

    Returns:
        (pairs, group, how: "direct" | "interpolated"); empty pairs without `train_flops` for both models.
    """
    empty = Pairs(np.zeros(0), np.zeros(0), np.zeros(0), [], [], np.zeros(0))
    if "train_flops" not in rows.columns:
        return empty, "", ""
    flops = pd.to_numeric(rows["train_flops"], errors="coerce")
    usable = rows[flops.notna() & (flops > 0)].assign(train_flops=flops)
    if "compute_budget" in usable.columns and pd.to_numeric(usable["compute_budget"], errors="coerce").notna().any():
        iso = usable.assign(tokens=pd.to_numeric(usable["compute_budget"], errors="coerce")).dropna(subset=["tokens"])
        pairs, group = paired_rows(iso, a, b)
        return pairs, group, "direct"
    best: tuple[Pairs, str] = (empty, "")
    for (width, layers), g in usable.groupby(["width", "layers"], sort=True):
        ra, rb = g[g["label"] == a], g[g["label"] == b]
        if ra.empty or rb.empty:
            continue
        x_of = ra.groupby("tokens")["train_flops"].mean()  # the cell's compute
        entries = []
        for _, row in ra.sort_values(["tokens", "seed"]).iterrows():
            own = rb[rb["seed"].astype(str) == str(row["seed"])].sort_values("train_flops")
            if len(own) < 2:
                continue
            log_c, log_l = np.log(own["train_flops"].to_numpy(float)), np.log(own["loss"].to_numpy(float))
            target = math.log(float(row["train_flops"]))
            if not log_c[0] <= target <= log_c[-1]:
                continue  # outside B's measured compute for this replicate
            loss_b = math.exp(float(np.interp(target, log_c, log_l)))
            partner = own.iloc[int(np.clip(np.searchsorted(log_c, target), 0, len(own) - 1))]["run_id"]
            entries.append((float(x_of[row["tokens"]]), str(row["seed"]), float(row["loss"]) - loss_b,
                            str(row["run_id"]), str(partner), float(row["loss"])))
        if len(entries) > len(best[0]):
            x, rep, d, run_a, run_b, loss_a = zip(*entries, strict=True)
            best = (Pairs(np.array(x), np.array(rep), np.array(d), list(run_a), list(run_b), np.array(loss_a)),
                    f"width={_plain(width)},layers={_plain(layers)}")
    return best[0], best[1], "interpolated" if len(best[0]) else ""


def _t_result(estimate: float, se: float, df: float) -> dict:
    """t interval and p's of an estimate with its SE and df: ci, p (two-sided), p_less (evidence that the true
    value is below 0), p_greater. A zero SE gives p 0 in the direction of a non-zero estimate."""
    if se > 0:
        t = estimate / se
        half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
        p_less, p_greater = float(stats.t.cdf(t, df)), float(stats.t.sf(t, df))
        return {"ci": [estimate - half, estimate + half], "p": min(1.0, 2 * min(p_less, p_greater)),
                "p_less": p_less, "p_greater": p_greater}
    p_less = 0.0 if estimate < 0 else 1.0
    p_greater = 0.0 if estimate > 0 else 1.0
    return {"ci": [estimate, estimate], "p": 0.0 if estimate != 0 else 1.0, "p_less": p_less, "p_greater": p_greater}


def _no_test(estimate: float | None) -> dict:
    """The fields of a test that cannot be run (no variance to test against): the estimate alone."""
    return {"ci": [None, None], "p": None, "p_less": None, "p_greater": None, "se": None, "df": None,
            "mean": estimate}


def t_test(values: np.ndarray) -> dict:
    """One-sample t of the mean against 0.

    Returns:
        {mean, ci (95%), p (two-sided), p_less, p_greater (one-sided: mean below / above 0), n, sd, se, df};
        ci, p's, sd, se and df are None for n < 2.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    mean = float(values.mean()) if n else None
    if n < 2:
        return {**_no_test(mean), "n": n, "sd": None}
    sd = float(values.std(ddof=1))
    se = sd / math.sqrt(n)
    return {"mean": mean, **_t_result(mean, se, n - 1), "n": n, "sd": sd, "se": se, "df": n - 1}


def welch_contrast(coef: np.ndarray, means: np.ndarray, var_means: np.ndarray, dfs: np.ndarray) -> dict:
    """t test of sum_k coef_k mean_k with independent groups of unequal variance (Welch-Satterthwaite).

    Args:
        coef: (K,) contrast coefficients.
        means: (K,) group means.
        var_means: (K,) variances of the group means (s_k^2 / n_k).
        dfs: (K,) degrees of freedom of each variance estimate.

    Returns:
        {mean (the contrast), se, df, ci, p, p_less, p_greater}.
    """
    coef, means = np.asarray(coef, dtype=float), np.asarray(means, dtype=float)
    terms = coef ** 2 * np.asarray(var_means, dtype=float)
    estimate = float(coef @ means)
    total = float(terms.sum())
    used = terms > 0
    # Satterthwaite: the df of a sum of scaled chi-squares with the same mean and variance
    df = total ** 2 / float(np.sum(terms[used] ** 2 / np.asarray(dfs, dtype=float)[used])) if total > 0 else \
        float(np.sum(dfs))
    se = math.sqrt(total)
    return {"mean": estimate, "se": se, "df": df, **_t_result(estimate, se, df)}


@functools.lru_cache(maxsize=32)
def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n sign patterns of n values, (2^n, n) of +-1 (cached: the simulations call this per grid)."""
    bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
    patterns = 1.0 - 2.0 * bits
    patterns.flags.writeable = False
    return patterns


def sign_flip_p(values: np.ndarray, weights: np.ndarray | None = None, max_n: int = 20) -> float | None:
    """Exact two-sided sign-flip permutation p of a (weighted) mean: all 2^n flips.

    Args:
        values: the differences.
        weights: per-value weights of the statistic sum_i w_i d_i (None: equal, the mean).
        max_n: None beyond this many values (2^n patterns).

    Returns:
        The share of sign patterns whose |statistic| reaches the observed one; None for n < 1 or n > max_n.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 1 or n > max_n:
        return None
    weighted = values if weights is None else values * np.asarray(weights, dtype=float)
    stat = np.abs(_sign_patterns(n) @ weighted)
    return float(np.mean(stat >= abs(weighted.sum()) * (1 - 1e-12)))


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
    return {"slope": slope, "df": df, **{k: v for k, v in _t_result(slope, se, df).items() if k in ("ci", "p")}}


def per_replicate_slopes(pairs: Pairs) -> np.ndarray:
    """Each replicate's own slope of d on log2 D (replicates with at least 2 budgets)."""
    slopes = []
    for rep in np.unique(pairs.replicate):
        here = pairs.replicate == rep
        lx = np.log2(pairs.x[here])
        if np.unique(lx).size >= 2:
            slopes.append(slope_test(lx, pairs.d[here])["slope"])
    return np.asarray(slopes, dtype=float)


def _trend_coefficients(budgets: np.ndarray) -> np.ndarray | None:
    """c_k of the least-squares slope of the budget means on log2 D (None below 2 budgets)."""
    lx = np.log2(np.asarray(budgets, dtype=float))
    centred = lx - lx.mean()
    sxx = float(centred @ centred)
    return centred / sxx if budgets.size >= 2 and sxx > 0 else None


def _budget_variances(n: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Variances of the budget means and their df; a budget with one pair borrows the pooled within-budget
    variance (and its df). None when no budget has two pairs."""
    has = n >= 2
    if not has.any():
        return None
    df_within = float(np.sum(n[has] - 1))
    var_within = float(np.sum((n[has] - 1) * sd[has] ** 2)) / df_within
    var = np.where(has, np.where(has, sd, 0.0) ** 2, var_within) / n
    return var, np.where(has, n - 1, df_within).astype(float)


def _estimates(pairs: Pairs, scheme: str) -> tuple[dict, dict]:
    """The pooled and trend tests of the design (module docstring).

    Returns:
        ({mean, se, df, ci, p, p_less, p_greater}, {slope, se, df, ci, p}); None fields where not estimable.
    """
    if scheme == SCHEME_SHARED:
        reps = np.unique(pairs.replicate)
        pooled = t_test(np.array([pairs.d[pairs.replicate == r].mean() for r in reps]))
        slopes = per_replicate_slopes(pairs)
        st = t_test(slopes) if slopes.size else _no_test(None)
        return pooled, {"slope": st["mean"], "se": st["se"], "df": st["df"], "ci": st["ci"], "p": st["p"]}
    budgets, inverse = np.unique(pairs.x, return_inverse=True)
    n = np.bincount(inverse).astype(float)
    means = np.bincount(inverse, weights=pairs.d) / n
    dev2 = np.bincount(inverse, weights=(pairs.d - means[inverse]) ** 2)
    sd = np.sqrt(dev2 / np.maximum(n - 1, 1))
    variances = _budget_variances(n, sd)
    k = budgets.size
    coef = _trend_coefficients(budgets)
    if variances is None:
        trend_mean = float(coef @ means) if coef is not None else None
        return _no_test(float(means.mean())), {**_no_test(None), "slope": trend_mean}
    var, dfs = variances
    pooled = welch_contrast(np.full(k, 1.0 / k), means, var, dfs)
    if coef is None:
        return pooled, {**_no_test(None), "slope": None}
    trend = welch_contrast(coef, means, var, dfs)
    trend["slope"] = trend.pop("mean")
    return pooled, trend


def holm(p_values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjustment at ALPHA (statsmodels): (reject, adjusted p).

    statsmodels' Holm branch calls gc.collect() on every call, a walk over every object of a process that holds
    torch (about 0.1 s); the objects that exist before the call are frozen out of that walk, so a simulation of
    thousands of verdicts does not spend its time there. The result is statsmodels' own.
    """
    gc.freeze()
    try:
        reject, adjusted, _, _ = multipletests(p_values, alpha=ALPHA, method="holm")
    finally:
        gc.unfreeze()
    return reject, adjusted


def analyse(pairs: Pairs, scheme: str) -> dict:
    """Per-budget, pooled and trend tests of one pair's paired differences (module docstring).

    Args:
        pairs: ``paired_rows`` output (non-empty).
        scheme: "shared" or "per-budget".

    Returns:
        {per_budget: [{x, delta_mean, delta_ci, sd, df, p_value, p_a_better, p_b_better, p_holm, holm_reject,
        sign_flip_p, n, ppl_a, ppl_b, ppl_rel}], pooled: {mean, se, df, ci, p, p_less, p_greater, sd,
        sign_flip_p, basis}, trend: {slope, se, df, ci, p, basis}, unit, n_units}.
    """
    per_budget = []
    for x in np.unique(pairs.x):
        here = pairs.x == x
        d = pairs.d[here]
        t = t_test(d)
        # perplexity summaries are geometric means over replicates: exp of the mean loss
        log_ppl_a = float(pairs.loss_a[here].mean())
        per_budget.append({"x": float(x), "delta_mean": t["mean"], "delta_ci": t["ci"], "sd": t["sd"],
                           "df": t["df"], "p_value": t["p"], "p_a_better": t["p_less"],
                           "p_b_better": t["p_greater"], "p_holm": None, "holm_reject": False,
                           "sign_flip_p": sign_flip_p(d), "n": int(d.size), "ppl_a": math.exp(log_ppl_a),
                           "ppl_b": math.exp(log_ppl_a - t["mean"]), "ppl_rel": math.expm1(t["mean"])})
    tested = [p for p in per_budget if p["p_value"] is not None]
    if tested:
        reject, adjusted = holm([p["p_value"] for p in tested])
        for p, r, adj in zip(tested, reject, adjusted, strict=True):
            p["p_holm"], p["holm_reject"] = float(adj), bool(r)
    pooled, trend = _estimates(pairs, scheme)
    if scheme == SCHEME_SHARED:
        units = np.array([pairs.d[pairs.replicate == r].mean() for r in np.unique(pairs.replicate)])
        pooled["sign_flip_p"] = sign_flip_p(units, max_n=MAX_SIGN_FLIP_UNITS)
        pooled["basis"] = "the replicates' mean differences, t across replicates"
        trend["basis"] = "each replicate's slope, t across replicates"
        unit, n_units = "replicate", int(units.size)
    else:
        budgets, inverse = np.unique(pairs.x, return_inverse=True)
        weights = 1.0 / (budgets.size * np.bincount(inverse)[inverse])  # the mean of the budget means
        pooled["sd"] = None
        pooled["sign_flip_p"] = sign_flip_p(pairs.d, weights, max_n=MAX_SIGN_FLIP_UNITS)
        pooled["basis"] = "mean of the budget means, SE from the within-budget variances, Welch-Satterthwaite df"
        trend["basis"] = ("slope of the budget means on log2 D, SE from the within-budget variances, "
                          "Welch-Satterthwaite df")
        unit, n_units = "pair", len(pairs)
    return {"per_budget": per_budget, "pooled": pooled, "trend": trend, "unit": unit, "n_units": n_units}
