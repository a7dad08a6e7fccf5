"""Is A better than B? Paired tests of the loss difference at the measured budgets, a class, power.

The method is /work/shared/statistics.md ("How tgbench decides"), summarised here.

Design
------
- The replicate is the unit. A replicate fixes the data order and the initialisation, and every model of a
  replicate gets the same ones, so A's and B's runs of one (budget, replicate) are a pair: d = L_A - L_B
  (nats/token, the loss ``tgbench.results.fit_loss`` picks). Negative d: A is better. A is the first label
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
  the residual SD it is measured with and is not named (``tgbench.flags``' cell-outlier flag names it).
- ``flagged``: the pair's runs that ``tgbench.flags`` flags; flags never drop runs. When there are any,
  ``without_flagged`` gives the class without their pairs.

Power (prospective only: no "observed power", which is a function of p)
---------------------------------------------------------------------
From the pooled within-budget SD of d (``sd_within``; df = sum_k (n_k - 1)), at the design's replicates per
budget: the minimum detectable difference at 80% power for "on average" (the pooled test, two-sided 5%;
"shared": from the SD of the replicates' mean differences) and for "every budget" (the IUT: the product over
budgets of the one-sided power at 5%, noncentral t; with shared seeds the budgets' tests are positively
correlated and the product is a lower bound of their joint power); and the replicates per budget needed for
80% power to show the observed per-budget differences as "every budget" (when they share a sign) and as a
crossing (when the endpoints' differences differ in sign).

Measured error rates
--------------------
Simulated results tables through ``tgbench.tasks.scaling.table_verdicts`` (the code of ``tgbench fit``), made by
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

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.outliers_influence import OLSInfluence

from tgbench.comparison import DEFAULT_REFERENCE

ALPHA = 0.05
POWER_TARGET = 0.8
MAX_REPLICATES = 10_000  # replicates needed above this is reported as null ("not within reach")
MAX_SIGN_FLIP_UNITS = 16  # 2^16 sign patterns: exact and cheap; beyond that the t p stands alone
SCHEME_SHARED = "shared"
SCHEME_PER_BUDGET = "per-budget"
SCHEMES = (SCHEME_SHARED, SCHEME_PER_BUDGET)
NOT_DISTINGUISHABLE = "not distinguishable"
CHANGES = "difference changes with D, neither side shown"


def class_every(label: str) -> str:
    """Class 1: every per-budget one-sided test rejects for ``label``."""
    return f"{label} better at every measured budget"


def class_crossing(small: str, large: str) -> str:
    """Class 2: ``small`` shown better at small D, ``large`` at large D."""
    return f"crossing: {small} better at small D, {large} better at large D"


def class_grows(label: str) -> str:
    """Class 3: the pooled test favours ``label`` and the trend moves d further in its favour."""
    return f"{label} better, gap grows with D"


def class_shrinks(label: str) -> str:
    """Class 3: the pooled test favours ``label`` and the trend moves d towards the other side."""
    return f"{label} better, gap shrinks with D"


def class_average(label: str) -> str:
    """Class 4: the pooled test favours ``label``, the trend does not reject."""
    return f"{label} better on average"


def verdict_classes(a: str, b: str) -> list[str]:
    """Every verdict class of a pair, with the labels filled in, from A best to B best."""
    return [class_every(a), class_grows(a), class_shrinks(a), class_average(a), class_crossing(b, a),
            class_crossing(a, b), CHANGES, NOT_DISTINGUISHABLE, class_average(b), class_shrinks(b), class_grows(b),
            class_every(b)]


def class_rank(cls: str, a: str, b: str) -> int:
    """The class's place from B best (0) to A best (4): B every, B better overall, neither side overall
    (crossings, changes with D, not distinguishable), A better overall (on average, gap grows or shrinks),
    A every (module docstring: why these share ranks)."""
    if cls == class_every(a):
        return 4
    if cls in (class_grows(a), class_shrinks(a), class_average(a)):
        return 3
    if cls in (class_grows(b), class_shrinks(b), class_average(b)):
        return 1
    if cls == class_every(b):
        return 0
    if cls in (class_crossing(a, b), class_crossing(b, a), CHANGES, NOT_DISTINGUISHABLE):
        return 2
    raise ValueError(f"not a verdict class of {a} vs {b}: {cls!r}")


def comparison_pairs(labels: Sequence[str], reference: str | None = None,
                     baselines: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The default (A, B) pairs: the reference against every baseline.

    Args:
        labels: the labels of the results table, in reading order.
        reference: the label every other one is compared with; None: "tg" when present, else the first label.
        baselines: the labels compared with the reference; None: every other label.

    Returns:
        [(reference, baseline), ...] in the order of ``baselines`` (or of ``labels``).
    """
    labels = list(dict.fromkeys(str(lab) for lab in labels))
    if not labels:
        return []
    if reference is None:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in labels else labels[0]
    others = [lab for lab in labels if lab != reference] if baselines is None else list(baselines)
    return [(reference, other) for other in others if other != reference]


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
    """An integral float as an int, for group names ("width=128")."""
    return int(value) if float(value).is_integer() else float(value)


# ----------------------------------------------------------------------------------------------------------
# tests


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
        reject, adjusted, _, _ = multipletests([p["p_value"] for p in tested], alpha=ALPHA, method="holm")
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


def classify(result: dict, a: str, b: str) -> str:
    """The verdict class from ``analyse`` output (rules in the module docstring)."""
    per = result["per_budget"]
    if per and all(p["n"] >= 2 and p["p_value"] is not None for p in per):
        for label, key in ((a, "p_a_better"), (b, "p_b_better")):
            if all(p[key] < ALPHA for p in per):
                return class_every(label)
    cross = crossing_sides(result, a, b)
    if cross:
        return class_crossing(cross[0], cross[1])
    pooled, trend = result["pooled"], result["trend"]
    trend_rejects = trend["p"] is not None and trend["p"] < ALPHA
    if pooled["p"] is not None and pooled["p"] < ALPHA:
        label = a if pooled["mean"] < 0 else b
        if not trend_rejects:
            return class_average(label)
        # the gap grows when d moves further to the winner's side: the slope has the sign of the pooled mean
        return class_grows(label) if np.sign(trend["slope"]) == np.sign(pooled["mean"]) else class_shrinks(label)
    return CHANGES if trend_rejects else NOT_DISTINGUISHABLE


# ----------------------------------------------------------------------------------------------------------
# influence


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


# ----------------------------------------------------------------------------------------------------------
# power (prospective)


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
    """A budget for sentences: 100000 -> 100k, 1500000 -> 1.5M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
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


# ----------------------------------------------------------------------------------------------------------
# the pair's fits.json entries


def _p(p: float | None) -> str:
    """A p value for sentences, two significant digits."""
    return "n/a" if p is None else f"{p:.2g}"


def _sentence(v: dict) -> str:
    """The short sentence: the class and its key numbers (the rest is in ``details``)."""
    a, b = v["a"], v["b"]
    per = v["per_budget"]
    lo, hi = v["delta_ci"]
    ci = f", 95% CI [{lo:+.3f}, {hi:+.3f}]" if lo is not None else ""
    p = f", p = {_p(v['p_value'])}" if v["p_value"] is not None else ""
    signs = ", ".join(f"{_si(q['x'])} {q['delta_mean']:+.3f}" for q in per)
    text = (f"{v['class']}: {a} - {b} = {v['delta_mean']:+.3f} nats averaged over {len(per)} budget(s){ci}{p}; "
            f"{a} lower at {sum(1 for q in per if q['delta_mean'] < 0)} of {len(per)} budgets ({signs})")
    if v["trend_slope"] is not None and v["trend_p"] is not None and v["class"] in (
            class_grows(a), class_shrinks(a), class_grows(b), class_shrinks(b), CHANGES):
        text += f"; {v['trend_slope']:+.3f} nats per doubling of D (p = {_p(v['trend_p'])})"
    if v["class"] in (class_every(a), class_every(b)):
        key = "p_a_better" if v["class"] == class_every(a) else "p_b_better"
        text += f"; every one-sided p is at most {max(q[key] for q in per):.2g}"
    if v["crossing_basis"] == "endpoints":
        first, last = per[0], per[-1]
        text += (f"; one-sided p {_p(min(first['p_a_better'], first['p_b_better']))} at {_si(first['x'])}, "
                 f"{_p(min(last['p_a_better'], last['p_b_better']))} at {_si(last['x'])}")
    elif v["crossing_basis"] == "holm":
        shown = ", ".join(f"{_si(q['x'])} (Holm p {_p(q['p_holm'])})" for q in per if q["holm_reject"])
        text += f"; Holm over the budgets: {shown}"
    return text + "."


def _details(v: dict, scheme: str) -> list[str]:
    """Everything the short sentence leaves out, one sentence each."""
    a, b = v["a"], v["b"]
    per = v["per_budget"]
    out = []
    if scheme == SCHEME_SHARED:
        out.append(f"seeds are shared across budgets: the pooled and trend tests use one number per replicate "
                   f"({v['n_replicates']} replicates, df = {v['n_replicates'] - 1})")
    else:
        out.append(f"each (budget, replicate) has its own seeds: {v['n_pairs']} independent pairs at "
                   f"{len(per)} budget(s)")
    for q in per:
        if q["p_value"] is None:
            out.append(f"D = {_si(q['x'])}: {a} - {b} = {q['delta_mean']:+.3f} nats (n = {q['n']}, no test)")
            continue
        lo, hi = q["delta_ci"]
        out.append(f"D = {_si(q['x'])}: {a} - {b} = {q['delta_mean']:+.3f} nats [{lo:+.3f}, {hi:+.3f}], "
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
        out.append(f"trend ({v['trend_basis']}): {v['trend_slope']:+.3f} nats per doubling of D "
                   f"[{lo:+.3f}, {hi:+.3f}], df = {v['trend_df']:.1f}, p = {_p(v['trend_p'])}")
    max_n = max((q["n"] for q in per), default=0)
    if 0 < max_n <= 4:
        out.append(f"with {max_n} replicates the exact sign-flip p of one budget is at least {2.0 / 2 ** max_n:.2g}, "
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
                 with_power: bool = True, flags: dict[str, list[str]] | None = None) -> dict | None:
    """The ``verdicts`` entry of one pair, plus its ``power`` entry.

    Args:
        rows: usable runs (label, width, layers, tokens, seed, loss, run_id).
        a, b: the labels (d = A - B).
        scheme: the table's seed scheme.
        leave_one_out: fill ``influential`` (refits the pooled mean and trend once per pair).
        with_power: compute the ``power`` entry (None otherwise).
        flags: run_id -> flags (``tgbench.flags``); flagged runs of the pair are listed, and when there are any
            the class without their pairs is given as ``without_flagged``.

    Returns:
        {"verdict": {...}, "power": {...}}, or None when A and B share no (budget, replicate).
    """
    pairs, group = paired_rows(rows, a, b)
    if not len(pairs):
        return None
    result = analyse(pairs, scheme)
    cls = classify(result, a, b)
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
        other = classify(analyse(pairs.subset(keep), scheme), a, b) if keep.any() else NOT_DISTINGUISHABLE
        verdict["without_flagged"] = {"class": other, "excluded": sorted(out_runs)}
    verdict["sentence"] = _sentence(verdict)
    verdict["details"] = _details(verdict, scheme)
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
