"""A grid expanded into its runs: one `RunSpec` per (model, width, budget, replicate), with run ids and seeds.

The replicate is the unit of replication: a (budget, replicate) cell gets its own data-order and
initialisation seeds, the same for every model (`replicate_seeds`), so models are paired within a cell and
cells are independent. `SEED_SCHEMES` names that design and the older one (one seed per replicate at every
budget); the results table records which one each run used, and the verdict analyses each accordingly.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from tgbench.adapter import heads_for
from tgbench.core.errors import UserError
from tgbench.plan.config import (
    SCHEME_PER_BUDGET,
    RunConfig,
)
from tgbench.plan.grid import GridConfig, ModelEntry, compute_slug, model_train
from tgbench.plan.isoflop import solve_tokens


@dataclass
class RunSpec:
    """One run of a grid (or of its tuning sweep): where it goes, what it is, and its settings.

    `meta` is provenance written into the run's config.toml beside `label` and `variant` (e.g. `lr_source`).
    `loggers` are the run's trackers besides metrics.jsonl ("tensorboard", "wandb"; not part of its settings).
    """

    run_id: str
    label: str
    adapter: str
    variant: str
    width: int
    layers: int
    heads: int
    tokens: int
    seed: int
    config: RunConfig
    meta: dict[str, Any] = field(default_factory=dict)
    loggers: tuple[str, ...] = ()
    solved: Any = None  # an isoFLOP grid's run: how its token budget was solved (`tgbench.plan.isoflop.Solved`)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def replicate_seeds(replicate: int, tokens: int, compute: float = 0.0) -> tuple[int, int]:
    """(data-order seed, init seed) of one (budget, replicate): a hash of both, the same for every model.

    Distinct budgets get unrelated seeds, so a replicate's runs at two budgets share neither their data subset
    nor their initialisation (cells are independent); every model of a cell gets the same two (models paired).
    An isoFLOP grid's budget is its compute budget (`compute`, then `tokens` is not used): its models train on
    different token budgets, and one seed makes their subsets prefixes of one seeded document order.
    """
    budget = f"compute={compute_slug(compute)}" if compute else f"tokens={tokens}"
    return tuple(zlib.crc32(f"{what}|replicate={replicate}|{budget}".encode()) & 0x7FFFFFFF
                 for what in ("data", "init"))


def expand(grid: GridConfig, lr_for=None, encode: bool = False, solve: bool = True) -> list[RunSpec]:
    """Every run of the grid, in a stable order (budget-major so small runs come first).

    An isoFLOP grid (`compute_budgets`) has a run per (compute budget, width, replicate, model) whose token budget
    is solved from the model's counted FLOPs (`tgbench.plan.isoflop.solve_tokens`); its run id names the compute
    budget (`-C1e12-`) and its meta records `compute_budget` and `solved` holds the solution.

    Args:
        grid: The grid.
        lr_for: `(entry, width, tokens) -> float | None`, a tuned learning rate for a model's run (None: the
            model's own or the grid's); it is applied as the model's `train.lr` override.
        encode: Encode the corpus when an isoFLOP grid needs it to count FLOPs (training); False estimates the
            token budgets of a corpus not yet encoded (dry run, validate).
        solve: False leaves an isoFLOP grid's token budgets unsolved (0, `solved` None): for what needs only run ids
            and labels (the report's expected runs, the variants), which solving would slow down. Never train these.
    """
    iso = bool(grid.compute_budgets)
    budgets = grid.compute_budgets if iso else grid.budgets
    reference = grid.reference_width or max(grid.widths)
    if grid.design == "axes" and reference not in grid.widths:
        raise UserError(f"reference_width = {reference} is not one of widths {grid.widths}",
                        "pick one of the widths, or 0 for the largest")
    cells = []
    for budget in sorted(budgets):
        for width in sorted(grid.widths):
            on_data_axis = width == reference
            on_param_axis = budget == max(budgets)
            if grid.design == "axes" and not (on_data_axis or on_param_axis):
                continue
            cells.append((budget, width))
    specs = []
    for budget, width in cells:
        for seed in grid.seeds:
            for entry in grid.models:
                if iso:
                    solved = solve_tokens(run_spec(grid, entry, width, 0, seed, compute=budget), budget,
                                          encode) if solve else None
                    tokens, name = solved.tokens if solved else 0, f"C{compute_slug(budget)}"
                else:
                    tokens, name = budget, f"D{budget}"
                tuned = lr_for(entry, width, tokens) if lr_for is not None else None
                spec = run_spec(grid, entry, width, tokens, seed, lr=tuned, compute=budget if iso else 0.0)
                if iso:
                    spec.solved = solved
                spec.run_id = _slug(f"{entry.label}-w{width}-l{grid.layers}-{name}-s{seed}")
                specs.append(spec)
    _check_unique_labels(grid)
    return specs


def _check_unique_labels(grid: GridConfig) -> None:
    """Two [[models]] entries with one label would write one run directory twice (one run silently lost)."""
    first: dict[str, int] = {}
    for index, entry in enumerate(grid.models):
        slug = _slug(entry.label)
        if slug not in first:
            first[slug] = index
            continue
        other = grid.models[first[slug]]
        differ = sorted(k for k in {*entry.options, *other.options} if entry.options.get(k) != other.options.get(k))
        how = f"they differ only in {', '.join(differ)}" if differ else "they are identical"
        raise UserError(
            f"models[{first[slug]}] and models[{index}] both give run ids '{slug}-w...' (adapter "
            f"'{entry.adapter}', variant '{entry.variant}'; {how}): one run directory would hold both",
            f"give each of them a distinct variant = \"...\" (e.g. variant = \"{_variant_hint(entry, differ)}\"), "
            "or delete the duplicate entry")


def _variant_hint(entry: ModelEntry, differ: list[str]) -> str:
    if differ:
        return _slug(f"{differ[0]}{entry.options.get(differ[0], 'default')}")
    return "b"


def run_spec(grid: GridConfig, entry: ModelEntry, width: int, tokens: int, seed: int,
             lr: float | None = None, compute: float = 0.0) -> RunSpec:
    """One model's run at (width, tokens, seed); `lr` (tuned, or a sweep point) overrides its learning rate.

    The run's config.toml records `lr_source`: "tuned" when `lr` is given, "model" when the model's
    `train` table sets it, "grid" when it is the grid's [train] lr; and `compute_budget` when `compute` (the
    isoFLOP grid's budget the run's `tokens` were solved for) is given, whose seeds it then takes.
    """
    heads = heads_for(width, grid.head_dim)
    options = {"width": width, "layers": grid.layers, "heads": heads, **entry.options}
    overrides = dict(entry.train)
    source = "model" if "lr" in overrides else "grid"
    if lr is not None:
        overrides["lr"], source = float(lr), "tuned"
    data_seed, init_seed = replicate_seeds(seed, tokens, compute) if grid.seed_scheme == SCHEME_PER_BUDGET else (-1, -1)
    train = dataclasses.replace(model_train(grid, dataclasses.replace(entry, train=overrides),
                                            f"models[{grid.models.index(entry)}].train"), tokens=tokens, seed=seed,
                                data_seed=data_seed, init_seed=init_seed)
    config = RunConfig(model=entry.adapter, model_options=options, data=grid.data, train=train)
    meta = {"lr_source": source, "train_overrides": sorted(overrides)}
    if entry.control_of:
        meta["control_of"] = entry.control_of
    if compute:
        meta["compute_budget"] = float(compute)
    return RunSpec("", entry.label, entry.adapter, entry.variant, width, grid.layers, heads, tokens, seed,
                   config, meta)


def grid_variants(grid: dict[str, Any]) -> dict[str, str]:
    """run_id -> variant from a grid file's content ({} when it cannot be expanded)."""
    try:
        return {s.run_id: s.variant for s in expand(GridConfig.from_dict(grid), solve=False)}
    except (UserError, TypeError, ValueError, KeyError):
        return {}
