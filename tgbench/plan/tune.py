"""The tuning stage: every model at its own learning rate, chosen by a sweep before the grid.

A grid's [tune] table (`TuneConfig`) names the learning rates, the budget and the seeds of a sweep. For every
model (every width when the grid has several, every budget with `per_budget`), `sweep_specs` makes one
ordinary run spec per (LR, seed) under `GRID_DIR/tune/`; the grid's executor trains them like any run
(resumable, DONE runs skipped). `choose` then picks, per group, the LR with the lowest mean lexical
validation loss over the seeds (a diverged run counts as +inf), `write_tune` writes `tune.json` (a pure
function of the sweep's run directories), and the grid trains each model at its choice through the same
per-model `train.lr` override a grid file can set by hand.

Models whose [[models]] entry sets `train.lr` keep it and are not swept.
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tgbench.core.console import print_error
from tgbench.core.errors import UserError
from tgbench.core.files import read_json, write_json
from tgbench.plan.config import TuneConfig
from tgbench.plan.expand import RunSpec, _slug, run_spec
from tgbench.plan.grid import GridConfig, ModelEntry
from tgbench.training.rundir import RunDir

TUNE_DIR = "tune"


TUNE_FILE = "tune.json"


RULE = ("lowest mean best lexical validation loss (nats/token, the validation subset every run checkpoints on) "
        "over the sweep's seeds; a diverged or failed run counts as +inf; ties go to the smaller LR")


def settings(grid: GridConfig) -> TuneConfig:
    """The grid's [tune] table, or the default sweep for a grid without one (`tgbench tune` alone)."""
    return grid.tune if grid.tune is not None else TuneConfig()


def tune_budget(grid: GridConfig, tune: TuneConfig) -> int:
    """Tokens per sweep run: the [tune] budget, else the grid's middle budget (the lower middle of an even count)."""
    budgets = sorted(grid.budgets)
    return tune.budget or budgets[(len(budgets) - 1) // 2]


def _reference_width(grid: GridConfig) -> int:
    return grid.reference_width or max(grid.widths)


def per_width(grid: GridConfig, tune: TuneConfig) -> bool:
    return tune.per_width and len(set(grid.widths)) > 1


@dataclass(frozen=True)
class Group:
    """One choice of the sweep: a model at one width and budget."""

    label: str
    width: int
    budget: int


def tuned_entries(grid: GridConfig) -> list[ModelEntry]:
    """The models the sweep tunes: every one whose entry does not set its own `train.lr`."""
    return [entry for entry in grid.models if "lr" not in entry.train]


def groups(grid: GridConfig, tune: TuneConfig | None = None) -> list[tuple[ModelEntry, Group]]:
    """Every (model, width, budget) the sweep chooses an LR for."""
    tune = tune or settings(grid)
    widths = sorted(set(grid.widths)) if per_width(grid, tune) else [_reference_width(grid)]
    budgets = sorted(set(grid.budgets)) if tune.per_budget else [tune_budget(grid, tune)]
    return [(entry, Group(entry.label, width, budget))
            for entry in tuned_entries(grid) for width in widths for budget in budgets]


def sweep_run_id(group: Group, layers: int, seed: int, lr: float) -> str:
    return f"{TUNE_DIR}/" + _slug(f"{group.label}-w{group.width}-l{layers}-D{group.budget}-s{seed}-lr{lr:.3g}")


def sweep_specs(grid: GridConfig, tune: TuneConfig | None = None) -> list[RunSpec]:
    """The sweep's runs, as ordinary run specs under `tune/` (smallest budget first, then model, LR, seed)."""
    tune = tune or settings(grid)
    specs = []
    for entry, group in sorted(groups(grid, tune), key=lambda eg: (eg[1].budget, eg[1].width)):
        for lr in tune.sweep(grid.train.lr):
            for seed in tune.seeds:
                spec = run_spec(grid, entry, group.width, group.budget, seed, lr=lr)
                spec.run_id = sweep_run_id(group, grid.layers, seed, lr)
                spec.meta["lr_source"] = "sweep"
                specs.append(spec)
    return specs


# -- the choice ----------------------------------------------------------------------------------------------
@dataclass
class Choice:
    """The outcome of one group: every LR's losses over seeds and the chosen LR (None while runs are missing)."""

    group: Group
    lrs: list[float]
    losses: dict[float, list[float | None]]  # per LR, one loss per seed (None: not trained yet; inf: diverged)
    chosen: float | None = None
    edge: str = ""  # "low" / "high" when the chosen LR is the smallest / largest of the sweep

    def curve(self) -> list[dict[str, Any]]:
        rows = []
        for lr in self.lrs:
            done = [v for v in self.losses[lr] if v is not None]
            finite = [v for v in done if math.isfinite(v)]
            mean = _mean_loss(done) if len(done) == len(self.losses[lr]) else math.nan
            # JSON has no infinity: an LR with a diverged seed has no mean, and `diverged` says why
            rows.append({"lr": lr, "mean": mean if math.isfinite(mean) else None,
                         "min": min(finite) if finite else None, "max": max(finite) if finite else None,
                         "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                         "seeds": len(done), "diverged": len(done) - len(finite)})
        return rows


def _mean_loss(losses: list[float]) -> float:
    return math.inf if any(not math.isfinite(v) for v in losses) else float(np.mean(losses))


def choose(group: Group, losses: dict[float, list[float | None]]) -> Choice:
    """The rule: the LR with the lowest mean loss over seeds (+inf for a diverged seed); ties to the smaller LR.

    Args:
        group: What is being tuned.
        losses: Per LR, one loss per seed; None for a run not trained yet (no choice is made then).

    Returns:
        The choice, with `edge` set when it is the smallest or largest LR of the sweep.
    """
    lrs = sorted(losses)
    choice = Choice(group, lrs, losses)
    if not lrs or any(v is None for values in losses.values() for v in values):
        return choice
    means = {lr: _mean_loss(losses[lr]) for lr in lrs}
    best = min(lrs, key=lambda lr: (means[lr], lr))
    if not math.isfinite(means[best]):
        return choice  # every LR diverged: nothing to choose
    choice.chosen = best
    if len(lrs) > 1:
        choice.edge = "low" if best == lrs[0] else "high" if best == lrs[-1] else ""
    return choice


def edge_warning(choice: Choice) -> tuple[str, str] | None:
    """(message, fix) when the chosen LR is at the edge of the sweep, so the optimum may lie beyond it."""
    if not choice.edge or choice.chosen is None:
        return None
    g = choice.group
    where = f"{g.label} (width {g.width}, D {g.budget:,})"
    if choice.edge == "low":
        beyond = choice.lrs[0] ** 2 / choice.lrs[1]  # one more step of the sweep's own spacing
        return (f"{where}: the chosen LR {choice.chosen:.3g} is the smallest of the sweep, so its best LR may be "
                f"lower", f"extend [tune] lrs below {choice.lrs[0]:.3g} (e.g. add {beyond:.3g}) and rerun")
    beyond = choice.lrs[-1] ** 2 / choice.lrs[-2]
    return (f"{where}: the chosen LR {choice.chosen:.3g} is the largest of the sweep, so its best LR may be higher",
            f"extend [tune] lrs above {choice.lrs[-1]:.3g} (e.g. add {beyond:.3g}) and rerun")


def _run_loss(run: RunDir) -> float | None:
    """A sweep run's loss: its best validation loss when DONE, +inf when it FAILED, None otherwise."""
    if run.done:
        value = read_json(run.summary_path).get("best_val_loss")
        return float(value) if value is not None and math.isfinite(float(value)) else math.inf
    if run.failed:
        return math.inf
    return None


# -- tune.json -----------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What the sweep chose, and how to look a grid run's LR up."""

    grid: GridConfig
    tune: TuneConfig
    choices: list[Choice]
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def lr_for(self, entry: ModelEntry, width: int, tokens: int) -> float | None:
        """The tuned LR of a grid run (None for a model that sets its own `train.lr`)."""
        if "lr" in entry.train:
            return None
        width = width if per_width(self.grid, self.tune) else _reference_width(self.grid)
        budget = tokens if self.tune.per_budget else tune_budget(self.grid, self.tune)
        for choice in self.choices:
            if choice.group == Group(entry.label, width, budget):
                return choice.chosen
        raise UserError(f"tune.json has no choice for {entry.label} at width {width}, D {budget}",
                        "rerun the sweep (tgbench tune GRID, or train-grid with the [tune] table)")

    def keys(self) -> list[str]:
        """How `chosen` nests: by label, then width and budget when tuned per width / budget."""
        return ["label"] + (["width"] if per_width(self.grid, self.tune) else []) + (
            ["budget"] if self.tune.per_budget else [])

    def chosen(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys = self.keys()
        for choice in self.choices:
            path = [choice.group.label] + [str(getattr(choice.group, k)) for k in keys[1:]]
            node = out
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = choice.chosen
        return out

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        points = []
        for choice in self.choices:
            for lr in choice.lrs:
                for seed, loss in zip(self.tune.seeds, choice.losses[lr], strict=True):
                    run_id = sweep_run_id(choice.group, self.grid.layers, seed, lr)
                    points.append({"run_id": run_id, "label": choice.group.label, "width": choice.group.width,
                                   "budget": choice.group.budget, "lr": lr, "seed": seed,
                                   "best_val_loss": None if loss is None or not math.isfinite(loss) else loss,
                                   "status": "missing" if loss is None else "done" if math.isfinite(loss)
                                   else "diverged"})
        return {
            "rule": RULE, "keys": self.keys(), "chosen": self.chosen(), "points": points,
            "groups": [{"label": c.group.label, "width": c.group.width, "budget": c.group.budget,
                        "chosen": c.chosen, "edge": c.edge, "curve": c.curve()} for c in self.choices],
            "warnings": [{"message": m, "fix": f} for m, f in self.warnings],
            "tune": dataclasses.asdict(self.tune), "lrs": self.tune.sweep(self.grid.train.lr),
            "epochs": self.grid.train.epochs, "untuned": [e.label for e in self.grid.models if "lr" in e.train],
        }


def collect(grid: GridConfig, out: Path, tune: TuneConfig | None = None) -> TuneResult:
    """The sweep's outcome from its run directories (runs not trained yet leave their group unchosen)."""
    tune = tune or settings(grid)
    choices = []
    for _, group in groups(grid, tune):
        losses = {lr: [_run_loss(RunDir(Path(out) / sweep_run_id(group, grid.layers, seed, lr)))
                       for seed in tune.seeds] for lr in tune.sweep(grid.train.lr)}
        choices.append(choose(group, losses))
    result = TuneResult(grid, tune, choices)
    result.warnings = [w for w in (edge_warning(c) for c in choices) if w is not None]
    return result


def write_tune(grid: GridConfig, out: Path, tune: TuneConfig | None = None, warn: bool = True) -> TuneResult:
    """Write `tune.json` from the sweep's run directories and print its warnings.

    Raises:
        UserError: A group has no usable LR (every LR diverged, or runs are missing).
    """
    result = collect(grid, out, tune)
    write_json(Path(out) / TUNE_FILE, result.to_dict())
    if warn:
        for message, fix in result.warnings:
            print_error(message, fix, label="warning")
    for choice in result.choices:
        if choice.chosen is None:
            g = choice.group
            missing = any(v is None for values in choice.losses.values() for v in values)
            raise UserError(
                f"the sweep chose no LR for {g.label} (width {g.width}, D {g.budget:,}): "
                + ("some of its runs have not finished" if missing else "every LR of the sweep diverged"),
                "rerun to finish the sweep" if missing else "add smaller LRs to [tune] lrs")
    return result


def warn_unused_tune(out: Path) -> None:
    """A tune.json beside a grid without [tune] is not applied: say so, rather than leave it looking used."""
    if (Path(out) / TUNE_FILE).is_file():
        print_error(f"{Path(out) / TUNE_FILE} is not used: this grid has no [tune] table, so every model trains at "
                    "its [train] / [[models]] learning rate", "add a [tune] table with the same lrs to the grid file "
                    "to train each model at its chosen LR", label="warning")
