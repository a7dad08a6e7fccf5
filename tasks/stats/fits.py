"""Scaling-law fits of a grid's results table, the multipliers between models and every pair's verdict.

Pure numerics (numpy, scipy, pandas). The input is ``runs/<grid>/results.csv``; the output is the content of
``runs/<grid>/fits.json``, which the report reads. The pairs are the grid file's reference against its
baselines (`tgbench.plan.comparison`) unless given.

Three axes: training tokens D (equal data, the default verdict), training compute C (equal FLOPs: the
runs' counted `train_flops`; `tgbench.tasks.stats.paired.compute_pairs`) and non-embedding parameters N (equal
size). The multiplier of adapter A over adapter B at a measured x is m(x) = x_B(L_A(x)) / x, where x_B inverts B's
fitted curve: m_D > 1 means B needs m_D times more data to reach A's loss. Every label is fitted once; by
default the first label ("tg" when present) is compared with every other label of the grid.

fits.json layout (``fit_grid``, version 4)::

    {"version": 4, "reference": A, "pairs": [[A, B], [A, C], ...], "form": "kaplan" (the form the report draws),
     "design": {"seed_scheme": "per-budget" | "shared", "source": where that was read},
     "axis": "tokens" | "flops" | "params" (whose verdicts "verdicts" holds: `tgbench fit --axis`; auto: params
             for a grid of one budget and several widths, else tokens),
     "verdicts": [verdict], "power": [power], "flags": {run_id: [flag, ...]},
     "attribution": {"controls": {twin: model}, "memory_gains": [...], "gain_differences": [...],
                     "by_position": [...]} (tasks/stats/attribution.py: what a gap is made of),
     "by_axis": {"tokens": {"verdicts", "power", "notes"}, "flops": {...} (with train_flops), "params": {...}},
     "loss_column": "test_loss" | "best_val_loss" | "mixed", "n_resamples": int, "seed": int,
     "axes": {"data":    {label: {"width=W,layers=L": {form: fit}}},
              "params":  {label: {"tokens=D": {form: fit}}},
              "compute": {label: {"width=W,layers=L": {form: fit}}}  (x: a budget cell's mean training FLOPs)},
     "joint": {label: fit},
     "multipliers": {"data":    {A: {B: {"width=W,layers=L": {"interpolated": mult, form: mult}}}},
                     "params":  {A: {B: {"tokens=D": {"interpolated": mult, form: mult}}}},
                     "compute": {A: {B: {"width=W,layers=L": {...}}}} (k_C = C_B(L_A(C)) / C_A)},
     "points": [rows used], "notes": [why rows, axes or pairs were left out, interval caveats, lack of fit]}

    verdict, power = tasks/stats/verdicts.py (paired tests per measured budget with Holm, pooled with budget as a
           fixed effect, trend on log2 D; class, sentence and details; influential pairs with Cook's distance;
           flagged runs and the class without them; prospective power of "on average" and "every budget")
    fit  = PowerLawFit.to_dict() plus "lack_of_fit" (tasks/stats/multipliers.py; None without replicates): form,
           status ("ok" | "exactly determined, no interval" | "fit failed"; a saturating E or alpha on its bound
           is a failure with that reason, so no bound is shown as a fitted value), params, intervals (95%, see
           above), converged, reason, n_points, n_distinct, x, y, n_resamples, failed_fraction, huber_delta,
           interval_basis ("seeds" | "residuals" | "none"), seed_variance, df, interval_note
    mult = {"points": [{"x", "loss_a", "x_b", "value", "ci_low", "ci_high", "df", "status", "extrapolated"}],
            "range": [min, max] of the point values | null, "range_ci", "failed_fraction", "n_resamples",
            "interval_basis" ("analytic" for kaplan, "seeds" for interpolated and bootstrapped forms),
            "seed_variance", "interval_note"}; "interpolated" and "kaplan" are tasks/stats/multipliers.py's analytic
           multipliers (intervals that include lack of fit); other forms keep the seed bootstrap below.
"""


from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tgbench.core.errors import UserError
from tgbench.core.files import json_safe, write_text
from tgbench.plan.comparison import comparison_pairs, label_of, ordered_labels, read_grid_comparison
from tgbench.plan.config import SCHEME_SHARED
from tgbench.results.columns import DONE, fit_loss
from tgbench.results.flags import join_flags, split_flags, table_flags
from tgbench.tasks.stats.attribution import attribution, control_map
from tgbench.tasks.stats.bootstrap import BootstrapFit, bootstrap_fit, check_resamples, pair_multiplier, seed_resamples
from tgbench.tasks.stats.laws import (
    FIT_FORMS,
    STATUS_EXACT,
    PowerLawFit,
    _as_points,
    _failure,
    _single_threaded,
    fit_joint,
    get_form,
)
from tgbench.tasks.stats.multipliers import interpolated_multiplier, kaplan_multiplier, lack_of_fit
from tgbench.tasks.stats.paired import AUTO, AXES, COMPUTE, DATA, auto_axis, seed_scheme, size_gap_sentence, size_gaps
from tgbench.tasks.stats.verdicts import grid_verdicts

try:  # comes with scikit-learn (an lm-eval dependency); only used to keep BLAS single-threaded
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None


FITS_VERSION = 4  # 4: the verdict's classes, trend, influence and prospective power


REQUIRED_COLUMNS = ("run_id", "adapter", "width", "layers", "n_params", "tokens", "seed", "status",
                    "best_val_loss")


def resolve_pairs(labels: Sequence[str], pairs: Sequence[Sequence[str]] | None = None, *,
                  reference: str | None = None, baselines: Sequence[str] | None = None,
                  controls: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The (A, B) pairs to compare: the given ones, checked, or the reference against every baseline.

    Args:
        labels: the labels in the results table (adapter, or adapter/variant).
        pairs: pairs (A, B) to fit; None for the default (``verdicts.comparison_pairs``): ``reference`` ("tg"
            when present, else the first label) against ``baselines`` (every other label).
        reference: the default pairs' A.
        baselines: the default pairs' B labels.
        controls: control twins' labels, left out of the default baselines (their model is their comparison).

    Returns:
        The pairs, without duplicates, in the given order.

    Raises:
        UserError: for a pair that is not two different labels of the table (the fix names the known labels).
    """
    known = ordered_labels(labels)
    if pairs is None:
        pairs = comparison_pairs(known, reference, baselines, controls)
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
        out["lack_of_fit"] = json_safe(lack_of_fit(x, np.log(y), np.log(fit.predict(x)), len(fit.params)))
    return out


def _verdicts_of_rows(results: pd.DataFrame, rows: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                      leave_one_out: bool = True, with_power: bool = True, axis: str = DATA.name) -> dict:
    """The verdicts of every pair on every axis the table measures; ``verdicts`` / ``power`` are `axis`'s.

    Equal data always; equal compute when results.csv has train_flops; equal size when the runs span widths.
    """
    if axis == AUTO:
        axis = auto_axis(rows)
    if axis not in AXES:
        raise UserError(f"--axis {axis} is not an axis", f"use one of {', '.join(AXES)} (or {AUTO})")
    scheme, source = seed_scheme(results)
    flags = run_flags(rows) if leave_one_out else {}
    by_axis, notes = {}, []
    for name, spec in AXES.items():
        verdicts, power, axis_notes = grid_verdicts(rows, pairs, scheme, leave_one_out, with_power, flags, axis=spec)
        if name == axis or verdicts or (name == COMPUTE.name and "train_flops" in rows.columns):
            # an axis with no verdict keeps its notes when the runs measure it, so the report can say why
            by_axis[name] = {"verdicts": verdicts, "power": power, "notes": axis_notes}
            notes.extend(axis_notes if name == axis else [])
    chosen = by_axis[axis]
    return {"design": {"seed_scheme": scheme, "source": source}, "axis": axis, "verdicts": chosen["verdicts"],
            "power": chosen["power"], "by_axis": by_axis, "flags": flags, "notes": notes}


def table_verdicts(results: pd.DataFrame, pairs: Sequence[Sequence[str]] | None = None, *, axis: str = AUTO,
                   reference: str | None = None, baselines: Sequence[str] | None = None,
                   leave_one_out: bool = True, with_power: bool = True) -> dict:
    """The ``design``, ``verdicts`` and ``power`` of fits.json alone, by the code ``fit_grid`` runs.

    For simulations of the decision rule: the same rows, pairs and tests as ``tgbench fit``, without the
    curve fits. ``leave_one_out`` / ``with_power`` False skip ``influential`` (and the flags) / ``power``
    (neither changes the class).
    """
    notes: list[str] = []
    rows, _ = _usable_rows(results, notes)
    pairs = resolve_pairs(_row_labels(results), pairs, reference=reference, baselines=baselines,
                          controls=list(control_map(rows)))
    out = _verdicts_of_rows(results, rows, pairs, leave_one_out, with_power, axis)
    out["notes"] = notes + out["notes"]
    return out


def _with_compute(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a ``compute`` column: each (label, width, layers, budget) cell's mean training FLOPs, so the
    cells of the compute axis are the budgets' cells (a run's own FLOPs differ from its replicates' by a few
    percent: the batches differ). NaN without train_flops."""
    flops = pd.to_numeric(df["train_flops"], errors="coerce") if "train_flops" in df.columns else \
        pd.Series(np.nan, index=df.index)
    cell = df.assign(_flops=flops).groupby(["label", "width", "layers", "tokens"])["_flops"].transform("mean")
    return df.assign(compute=cell.where(cell > 0))


@_single_threaded
def fit_grid(results: pd.DataFrame, pairs: Sequence[Sequence[str]] | None = None, n_resamples: int = 200,
             seed: int = 0, *, reference: str | None = None, baselines: Sequence[str] | None = None,
             axis: str = AUTO) -> dict:
    """Fit every label's data, parameter and compute axes, the joint form, and the pairs' multipliers with
    intervals; the verdicts at equal data, equal compute and equal size.

    Args:
        results: the grid's results table (one row per run; see REQUIRED_COLUMNS, plus optional
            ``variant`` and ``test_loss``).
        pairs: (A, B) label pairs; a multiplier says how much more data / parameters B needs to reach A's loss.
            None: the first label ("tg" when present) against every other label (``resolve_pairs``).
        n_resamples: bootstrap resamples per axis group (0 for none; at most MAX_RESAMPLES).
        seed: seed of the bootstrap; the output is deterministic for a seed.
        reference: A of the default pairs (None: "tg" when present, else the first label).
        baselines: B labels of the default pairs (None: every other label).
        axis: whose verdicts lead fits.json's ``verdicts`` ("tokens": equal data; "flops": equal compute;
            "params": equal size; "auto", the default: "params" for a grid of one budget and several widths, else
            "tokens"); ``by_axis`` holds every axis the table measures.

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
    pairs = resolve_pairs(_row_labels(results), pairs, reference=reference, baselines=baselines,
                          controls=list(control_map(df)))
    paired = _verdicts_of_rows(results, df, pairs, axis=axis)
    notes.extend(paired["notes"])
    attributed = attribution(df, pairs, paired["design"]["seed_scheme"], paired["flags"])
    notes.extend(attributed.pop("notes"))
    df = _with_compute(df)
    if paired["design"]["seed_scheme"] == SCHEME_SHARED:
        notes.append("seeds are shared across budgets (seed_scheme shared): the multipliers' and fits' intervals "
                     "treat cells as independent and are only indicative; the verdict tests per replicate")
    axis_spec = {"data": (["width", "layers"], "tokens"), "params": (["tokens"], "n_params"),
                 "compute": (["width", "layers"], "compute")}
    axes: dict[str, dict] = {name: {} for name in axis_spec}
    fitted: dict[str, dict] = {name: {} for name in axis_spec}  # axis -> label -> key -> {form: BootstrapFit}
    ranges: dict[str, dict] = {name: {} for name in axis_spec}  # axis -> label -> key -> (x distinct, (min, max))
    caveats: dict[str, list[str]] = {}  # interval caveat -> groups it applies to

    for axis, (group_cols, x_col) in axis_spec.items():
        for (label, *gvals), g in df.groupby(["label", *group_cols], sort=True):
            key = ",".join(f"{c}={json_safe(v)}" for c, v in zip(group_cols, gvals, strict=True))
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

    multipliers: dict[str, dict] = {name: {} for name in axis_spec}
    has_compute = bool(df["compute"].notna().any())
    if not pairs:
        notes.append(f"no multipliers: they compare two labels and the table has {len(set(df['label']))}")
    for a_label, b_label in pairs:
        for axis in axis_spec:
            fa, fb = fitted[axis].get(a_label, {}), fitted[axis].get(b_label, {})
            shared = sorted(set(fa) & set(fb))
            if not shared and axis == "compute" and not has_compute:
                continue  # runs from before FLOPs were counted: no compute axis, nothing to say per pair
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
    points = [{c: json_safe(v) for c, v in row.items()} for row in df[point_cols].to_dict(orient="records")]
    return json_safe({
        "version": FITS_VERSION,
        "reference": pairs[0][0] if pairs else None,
        "pairs": [list(p) for p in pairs],
        "design": paired["design"],
        "axis": paired["axis"],
        "verdicts": paired["verdicts"],
        "power": paired["power"],
        "by_axis": paired["by_axis"],
        "flags": paired["flags"],
        "attribution": attributed,
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
               baselines: Sequence[str] | None = None, axis: str = AUTO) -> Path:
    """Read ``grid_dir/results.csv`` and write ``grid_dir/fits.json`` atomically (temp file + os.replace).

    Args:
        grid_dir: the grid directory.
        pairs: (A, B) label pairs to compare; None: `reference` against `baselines` (see fit_grid), which the
            directory's grid.toml names when neither is given.
        n_resamples: bootstrap resamples per axis group.
        seed: seed of the bootstrap.
        form: the fit form the report draws (a registered FitForm; default the paper's Kaplan form).
        reference: the default pairs' A (the grid file's `reference`); None: tg when present, else the first label.
        baselines: the default pairs' Bs (the grid file's `baselines`); None: every other label.
        axis: whose verdicts lead (`fit_grid`).

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
    results = pd.read_csv(csv)
    if pairs is None and reference is None and baselines is None:  # the grid file names the comparison
        compared = read_grid_comparison(grid_dir, _row_labels(results))
        if compared is not None:
            reference, baselines = compared.reference, list(compared.baselines)
    fits = fit_grid(results, pairs=pairs, n_resamples=n_resamples, seed=seed, reference=reference,
                    baselines=baselines, axis=axis)
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
    for name, entry in (fits.get("by_axis") or {}).items():
        if name == fits.get("axis"):
            continue
        for verdict in entry.get("verdicts", []):
            lines.append(f"verdict {AXES[name].at} {verdict['a']} vs {verdict['b']}: {verdict['sentence']}")
    attributed = fits.get("attribution") or {}
    for split in attributed.get("by_position", []):
        lines.append(f"by sentence position {split['a']} vs {split['b']}: {split['sentence']}.")
    for gain in attributed.get("memory_gains", []):
        lines.append(f"memory gain: {gain['sentence']}.")
    for diff in attributed.get("gain_differences", []):
        lines.append(f"difference of gains: {diff['sentence']}.")
    for power in fits.get("power", []):
        lines.append(f"power {power['sentence']}")
    form = fits.get("form", "kaplan")
    # the runs' sizes (fits.json's points), for the parameter gap beside m_N
    points = pd.DataFrame(fits.get("points") or [])
    if not {"label", "width", "layers", "n_params"} <= set(points.columns):
        points = None
    for axis, by_a in (fits.get("multipliers") or {}).items():
        name = {"data": "m_D", "params": "m_N", "compute": "k_C"}[axis]
        what, at = {"data": ("training tokens", "D"), "params": ("non-embedding parameters", "N"),
                    "compute": ("training FLOPs", "C")}[axis]
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
                                shown.append(f"{at} = {p['x']:,.0f}: {p.get('status')}")
                                continue
                            ci = (f" [{p['ci_low']:.2f}, {p['ci_high']:.2f}]" if p.get("ci_low") is not None
                                  else "")
                            extra = " (extrapolated)" if p.get("extrapolated") else ""
                            shown.append(f"{at} = {p['x']:,.0f}: {p['value']:.2f}{ci}{extra}")
                        # in words, as the report's card: what the number is a ratio of, and which way is whose
                        lines.append(f"{name} {b} over {a} ({group}, {kind}): the {what} {b} needs to reach {a}'s "
                                     f"loss, as a multiple of {a}'s at {a}'s {at} (above 1: {a} needs less): "
                                     + "; ".join(shown))
    # what equal width means in N, beside m_N, for every pair compared along N (with or without an m_N)
    along_n = {(v["a"], v["b"]) for v in ((fits.get("by_axis") or {}).get("params") or {}).get("verdicts", [])}
    along_n |= {(a, b) for a, by_b in ((fits.get("multipliers") or {}).get("params") or {}).items() for b in by_b}
    for a, b in (fits.get("pairs") or []) if points is not None else []:
        gap = size_gap_sentence(size_gaps(points, a, b), a, b) if (a, b) in along_n else ""
        if gap:
            lines.append(f"N of {a} and {b}: {gap}; the size axis pairs equal widths, N read as {a}'s")
    return lines
