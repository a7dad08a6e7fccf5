"""The tuning stage: every model at its own learning rate, chosen by a sweep before the grid.

A grid's [tune] table (`TuneConfig`) names the learning rates, the budget, the seeds and the extension cap of a
sweep. For every model (every width when the grid has several, every budget with `per_budget`), `sweep_specs`
makes one ordinary run spec per (LR, seed) under `GRID_DIR/tune/`; the grid's executor trains them like any run
(resumable, DONE runs skipped).

The rule is `choose`, a pure function of the losses and flags: per group, the LR with the lowest mean lexical
validation loss over the seeds, among the LRs none of whose seeds spiked, diverged or failed (the runs' curve
flags, `tgbench.results.flags`). A choice at the smallest or largest LR tried is not final while the group has
extensions left: the rule asks for the next LR beyond it (the sweep's own log spacing, every seed), up to
`max_extensions` per group. `collect` replays the rule over what the run directories hold, `extension_specs`
names the runs a request needs, and the executor (`tgbench.training.executor`) loops sweep -> collect ->
extension runs -> collect until nothing is asked. `write_tune` writes `tune.json` (a pure function of the
sweep's run directories), and the grid trains each model at its choice through the same per-model `train.lr`
override a grid file can set by hand.

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
from tgbench.results.flags import curve_flags
from tgbench.training.rundir import RunDir

TUNE_DIR = "tune"


TUNE_FILE = "tune.json"


RULE = ("lowest mean best lexical validation loss (nats/token, the validation subset every run checkpoints on) "
        "over the sweep's seeds, among the LRs none of whose seeds spiked, diverged or failed (the runs' curve "
        "flags); ties go to the smaller LR; a choice at the smallest or largest LR tried adds the next LR beyond "
        "it at the sweep's spacing (every seed) and chooses again, up to max_extensions times per model")

EXCLUDING = ("diverged", "spike", "failed")  # a seed with one of these flags rules its LR out


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


def _group_specs(grid: GridConfig, entry: ModelEntry, group: Group, lrs: list[float],
                 seeds: list[int]) -> list[RunSpec]:
    specs = []
    for lr in lrs:
        for seed in seeds:
            spec = run_spec(grid, entry, group.width, group.budget, seed, lr=lr)
            spec.run_id = sweep_run_id(group, grid.layers, seed, lr)
            spec.meta["lr_source"] = "sweep"
            specs.append(spec)
    return specs


def sweep_specs(grid: GridConfig, tune: TuneConfig | None = None) -> list[RunSpec]:
    """The sweep's runs, as ordinary run specs under `tune/` (smallest budget first, then model, LR, seed).

    Extensions beyond the sweep's edges are not among them: `extension_specs` names those once the rule asks.
    """
    tune = tune or settings(grid)
    specs = []
    for entry, group in sorted(groups(grid, tune), key=lambda eg: (eg[1].budget, eg[1].width)):
        specs += _group_specs(grid, entry, group, tune.sweep(grid.train.lr), tune.seeds)
    return specs


def most_extension_runs(grid: GridConfig, tune: TuneConfig | None = None) -> int:
    """The most runs the sweep's extensions can add: every group at its cap, every seed."""
    tune = tune or settings(grid)
    return len(groups(grid, tune)) * tune.max_extensions * len(tune.seeds)


# -- the choice ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extension:
    """An LR added beyond the sweep's smallest ("low") or largest ("high") LR, and why."""

    lr: float
    direction: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "direction": self.direction, "reason": self.reason}


def beyond(lrs: list[float], direction: str) -> float:
    """The next LR past the smallest ("low") or largest ("high") of ascending `lrs`, at the spacing of the two
    outermost (one more point of a log-spaced sweep), to 3 significant digits as the sweep's LRs are."""
    edge, inner = (lrs[0], lrs[1]) if direction == "low" else (lrs[-1], lrs[-2])
    return float(f"{edge * edge / inner:.3g}")


@dataclass
class Choice:
    """The outcome of one group: every LR's losses and flags over seeds, and the chosen LR.

    `chosen` is None while runs are missing, while the rule asks for an extension (`extend`), and when every LR
    diverged or failed.
    """

    group: Group
    lrs: list[float]
    losses: dict[float, list[float | None]]  # per LR, one loss per seed (None: not trained yet; inf: diverged)
    flags: dict[float, list[list[str]]] = field(default_factory=dict)  # per LR, each seed's run flags
    seeds: list[int] = field(default_factory=list)
    chosen: float | None = None
    edge: str = ""  # "low" / "high" when the chosen LR is the smallest / largest of the sweep
    extend: Extension | None = None  # the LR the rule asks to train before it chooses
    extensions: list[Extension] = field(default_factory=list)  # the LRs added beyond the sweep so far
    note: str = ""  # how the choice was made when every LR had a flagged seed

    def seed_flags(self, lr: float) -> list[list[str]]:
        return self.flags.get(lr) or [[] for _ in self.losses[lr]]

    def excluded(self, lr: float) -> list[str]:
        """Why `lr` cannot be chosen, one "seed S: flag, ..." per flagged seed (empty: it can be)."""
        reasons = []
        for i, (loss, flags) in enumerate(zip(self.losses[lr], self.seed_flags(lr), strict=True)):
            found = [f for f in EXCLUDING if f in flags]
            if loss is not None and not math.isfinite(loss) and not {"diverged", "failed"} & set(found):
                found.append("diverged")  # a non-finite loss is a divergence whatever its curve says
            if found:
                reasons.append(f"seed {self.seeds[i] if i < len(self.seeds) else i}: {', '.join(found)}")
        return reasons

    def curve(self) -> list[dict[str, Any]]:
        rows = []
        added = {e.lr: e.direction for e in self.extensions}
        for lr in self.lrs:
            done = [v for v in self.losses[lr] if v is not None]
            finite = [v for v in done if math.isfinite(v)]
            mean = _mean_loss(done) if len(done) == len(self.losses[lr]) else math.nan
            # JSON has no infinity: an LR with a diverged seed has no mean, and `diverged` says why
            rows.append({"lr": lr, "mean": mean if math.isfinite(mean) else None,
                         "min": min(finite) if finite else None, "max": max(finite) if finite else None,
                         "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                         "range": max(finite) - min(finite) if len(finite) > 1 else None,
                         "seeds": len(done), "diverged": len(done) - len(finite),
                         "losses": [v if v is not None and math.isfinite(v) else None for v in self.losses[lr]],
                         "flags": self.seed_flags(lr), "excluded": self.excluded(lr), "added": added.get(lr)})
        return rows


def _mean_loss(losses: list[float]) -> float:
    return math.inf if any(not math.isfinite(v) for v in losses) else float(np.mean(losses))


def _edge(lrs: list[float], lr: float) -> str:
    if len(lrs) < 2:
        return ""
    return "low" if lr == lrs[0] else "high" if lr == lrs[-1] else ""


def choose(group: Group, losses: dict[float, list[float | None]],
           flags: dict[float, list[list[str]]] | None = None, seeds: list[int] | None = None,
           extensions_left: int = 0) -> Choice:
    """The rule: the LR with the lowest mean loss over seeds among the LRs none of whose seeds spiked, diverged
    or failed; ties to the smaller LR. At the edge of the LRs tried, with extensions left, it asks for one more.

    Args:
        group: What is being tuned.
        losses: Per LR, one loss per seed; None for a run not trained yet (no choice is made then), +inf for a
            failed or diverged one.
        flags: Per LR, each seed's run flags ("spike", "diverged", "failed"; others are ignored); none by default.
        seeds: The seeds, in the order of the losses (for the reasons an LR is excluded).
        extensions_left: How many more LRs the group may add beyond its edges.

    Returns:
        The choice. With extensions left, a best LR at the smallest or largest LR tried is not chosen: `extend`
        asks for the next LR beyond it instead; so does a sweep in which every LR has a flagged seed (the next LR
        below: a smaller LR is the usual cure for spikes). Without extensions left such a sweep chooses among the
        LRs whose seeds only spiked (`note` says so), or nothing when every LR diverged or failed.
    """
    lrs = sorted(losses)
    seeds = list(seeds) if seeds is not None else list(range(max((len(v) for v in losses.values()), default=0)))
    choice = Choice(group, lrs, dict(losses), dict(flags or {}), seeds)
    if not lrs or any(v is None for values in losses.values() for v in values):
        return choice
    means = {lr: _mean_loss(losses[lr]) for lr in lrs}
    eligible = [lr for lr in lrs if math.isfinite(means[lr]) and not choice.excluded(lr)]
    if eligible:
        best = min(eligible, key=lambda lr: (means[lr], lr))
        edge = _edge(lrs, best)
        if edge and extensions_left > 0 and beyond(lrs, edge) not in lrs:
            where = "smallest" if edge == "low" else "largest"
            choice.extend = Extension(beyond(lrs, edge), edge, f"the best LR so far, {best:.3g}, is the {where} tried")
            return choice
        choice.chosen, choice.edge = best, edge
        return choice
    if extensions_left > 0 and len(lrs) > 1 and beyond(lrs, "low") not in lrs:
        choice.extend = Extension(beyond(lrs, "low"), "low", "every LR tried has a seed that spiked, diverged or "
                                  "failed")
        return choice
    spiked_only = [lr for lr in lrs if math.isfinite(means[lr])
                   and not any({"diverged", "failed"} & set(f) for f in choice.seed_flags(lr))]
    if spiked_only:  # else every LR diverged or failed: nothing to choose
        best = min(spiked_only, key=lambda lr: (means[lr], lr))
        choice.chosen, choice.edge = best, _edge(lrs, best)
        choice.note = ("every LR tried has a seed that spiked, diverged or failed; chosen among those whose seeds "
                       "only spiked")
    return choice


def _where(group: Group) -> str:
    return f"{group.label} (width {group.width}, D {group.budget:,})"


def edge_warning(choice: Choice) -> tuple[str, str] | None:
    """(message, fix) when the chosen LR is at the edge of the sweep (after any extensions it was allowed), so
    the optimum may lie beyond it."""
    if not choice.edge or choice.chosen is None:
        return None
    added = len(choice.extensions)
    after = f" after {added} extension{'s' if added != 1 else ''} of the sweep" if added else ""
    more = "raise [tune] max_extensions, or " if added else ""
    if choice.edge == "low":
        return (f"{_where(choice.group)}: the chosen LR {choice.chosen:.3g} is the smallest of the sweep{after}, so "
                f"its best LR may be lower", f"{more}extend [tune] lrs below {choice.lrs[0]:.3g} (e.g. add "
                f"{beyond(choice.lrs, 'low'):.3g}) and rerun")
    return (f"{_where(choice.group)}: the chosen LR {choice.chosen:.3g} is the largest of the sweep{after}, so its "
            f"best LR may be higher", f"{more}extend [tune] lrs above {choice.lrs[-1]:.3g} (e.g. add "
            f"{beyond(choice.lrs, 'high'):.3g}) and rerun")


def choice_warnings(choice: Choice) -> list[tuple[str, str]]:
    """Every warning of a choice: an edge the extensions could not leave, a choice among flagged LRs."""
    found = [w for w in (edge_warning(choice),) if w is not None]
    if choice.note and choice.chosen is not None:
        found.append((f"{_where(choice.group)}: {choice.note} ({choice.chosen:.3g})",
                      "look at those runs' curves under tune/, or add smaller LRs to [tune] lrs"))
    return found


def _run_loss(run: RunDir) -> float | None:
    """A sweep run's loss: its best validation loss when DONE, +inf when it FAILED, None otherwise."""
    if run.done:
        value = read_json(run.summary_path).get("best_val_loss")
        return float(value) if value is not None and math.isfinite(float(value)) else math.inf
    if run.failed:
        return math.inf
    return None


def _run_flags(run: RunDir) -> list[str]:
    """A sweep run's curve flags (spike, diverged) when DONE, ["failed"] when it FAILED, [] otherwise."""
    if run.done:
        return curve_flags(run.read_metrics())
    return ["failed"] if run.failed else []


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
            added = {e.lr: e.direction for e in choice.extensions}
            for lr in choice.lrs:
                for seed, loss, flags in zip(self.tune.seeds, choice.losses[lr], choice.seed_flags(lr), strict=True):
                    run_id = sweep_run_id(choice.group, self.grid.layers, seed, lr)
                    points.append({"run_id": run_id, "label": choice.group.label, "width": choice.group.width,
                                   "budget": choice.group.budget, "lr": lr, "seed": seed,
                                   "best_val_loss": None if loss is None or not math.isfinite(loss) else loss,
                                   "status": "missing" if loss is None else "done" if math.isfinite(loss)
                                   else "diverged", "flags": flags, "added": added.get(lr)})
        def group(c: Choice) -> dict[str, Any]:
            return {"label": c.group.label, "width": c.group.width, "budget": c.group.budget}

        return {
            "rule": RULE, "keys": self.keys(), "chosen": self.chosen(), "points": points,
            "groups": [{**group(c), "chosen": c.chosen, "edge": c.edge, "note": c.note,
                        "extensions": [e.to_dict() for e in c.extensions], "curve": c.curve()} for c in self.choices],
            "extensions": [{**group(c), **e.to_dict()} for c in self.choices for e in c.extensions],
            "warnings": [{"message": m, "fix": f} for m, f in self.warnings],
            "tune": dataclasses.asdict(self.tune), "lrs": self.tune.sweep(self.grid.train.lr),
            "epochs": self.grid.train.epochs, "untuned": [e.label for e in self.grid.models if "lr" in e.train],
        }


def _read_runs(out: Path, group: Group, layers: int, seeds: list[int],
               lr: float) -> tuple[list[float | None], list[list[str]]]:
    runs = [RunDir(Path(out) / sweep_run_id(group, layers, seed, lr)) for seed in seeds]
    return [_run_loss(run) for run in runs], [_run_flags(run) for run in runs]


def collect(grid: GridConfig, out: Path, tune: TuneConfig | None = None) -> TuneResult:
    """The sweep's outcome from its run directories, replaying the rule with its extensions.

    Per group the rule runs on the sweep's LRs; while it asks for an extension whose runs have all finished, that
    LR joins and the rule runs again. A group whose runs are not all trained yet, or whose requested extension is
    not, is left unchosen (`extend` names the LR an extension needs).
    """
    tune = tune or settings(grid)
    choices = []
    for _, group in groups(grid, tune):
        losses: dict[float, list[float | None]] = {}
        flags: dict[float, list[list[str]]] = {}
        extensions: list[Extension] = []
        lrs = tune.sweep(grid.train.lr)
        while True:
            for lr in lrs:
                if lr not in losses:
                    losses[lr], flags[lr] = _read_runs(out, group, grid.layers, tune.seeds, lr)
            choice = choose(group, losses, flags, tune.seeds, tune.max_extensions - len(extensions))
            choice.extensions = list(extensions)
            request = choice.extend
            if request is None or any(v is None for v in _read_runs(out, group, grid.layers, tune.seeds,
                                                                    request.lr)[0]):
                break  # chosen, or the extension's runs are still to train
            extensions.append(request)
            lrs = [*lrs, request.lr]
        choices.append(choice)
    result = TuneResult(grid, tune, choices)
    result.warnings = [w for c in choices for w in choice_warnings(c)]
    return result


def extension_specs(grid: GridConfig, result: TuneResult) -> list[RunSpec]:
    """The runs the rule asks for (every seed at each requested LR beyond a sweep's edge), as run specs."""
    entries = {group: entry for entry, group in groups(grid, result.tune)}
    specs = []
    for choice in result.choices:
        if choice.extend is not None:
            specs += _group_specs(grid, entries[choice.group], choice.group, [choice.extend.lr], result.tune.seeds)
    return specs


def write_tune(grid: GridConfig, out: Path, tune: TuneConfig | None = None, warn: bool = True) -> TuneResult:
    """Write `tune.json` from the sweep's run directories and print its warnings.

    Raises:
        UserError: A group has no usable LR (every LR diverged, or runs, an extension's included, are missing).
    """
    result = collect(grid, out, tune)
    write_json(Path(out) / TUNE_FILE, result.to_dict())
    if warn:
        for message, fix in result.warnings:
            print_error(message, fix, label="warning")
    for choice in result.choices:
        if choice.chosen is None:
            g = choice.group
            missing = choice.extend is not None or any(v is None for values in choice.losses.values() for v in values)
            extra = f" (the sweep's extension to LR {choice.extend.lr:.3g})" if choice.extend is not None else ""
            raise UserError(
                f"the sweep chose no LR for {_where(g)}: "
                + (f"some of its runs have not finished{extra}" if missing else "every LR of the sweep diverged"),
                "rerun to finish the sweep" if missing else "add smaller LRs to [tune] lrs")
    return result


def warn_unused_tune(out: Path) -> None:
    """A tune.json beside a grid without [tune] is not applied: say so, rather than leave it looking used."""
    if (Path(out) / TUNE_FILE).is_file():
        print_error(f"{Path(out) / TUNE_FILE} is not used: this grid has no [tune] table, so every model trains at "
                    "its [train] / [[models]] learning rate", "add a [tune] table with the same lrs to the grid file "
                    "to train each model at its chosen LR", label="warning")
