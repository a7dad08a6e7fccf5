"""Grids of paired runs: expansion, execution (local or Slurm) and resume.

A grid TOML names adapters (with variants such as ablation switches), widths, token budgets and
seeds, plus shared data and training settings. `expand` turns it into `RunSpec`s; `run_grid`
trains them one after another (or submits one Slurm job per run through submitit), skipping runs
that are DONE with the same config hash, resuming interrupted ones and rerunning failed ones.
`run_grid` ends by writing the grid's results table (`tgbench.results.table.write_results`).
"""


from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from tgbench.core.errors import UserError, unknown_name
from tgbench.data import DataConfig
from tgbench.plan.comparison import comparison, label_of
from tgbench.plan.config import (
    GRID_CONTROLLED_TRAIN_KEYS,
    SCHEME_PER_BUDGET,
    SCHEME_SHARED,
    SEED_SCHEMES,
    TrainConfig,
    TuneConfig,
    from_dict,
)
from tgbench.registry import get_adapter_class


@dataclass
class ModelEntry:
    """One architecture of the grid: an adapter plus fixed options (a variant is a named option set).

    Attributes:
        adapter: Adapter name or reference.
        variant: Name of this option set (the label becomes adapter/variant).
        options: Fields of the adapter's config.
        train: Training settings of this model only, over the grid's [train] (e.g. {lr = 1e-3}); a tuning
            stage sets `lr` the same way. `tokens` and `seed` come from the grid's budgets and seeds.
        label: How run ids, tables, legends and `fit --pair` name it. Default: the adapter's `name` (for a
            plug-in given as path.py:Class, the class's `name`), plus /variant.
        control_of: The label of the model this entry is a control twin of ("": not a control). The grid's
            `controls` adds such entries itself; one written by hand (e.g. a plug-in's own ablation) counts the
            same way: fits.json gives the model's gain over it (twin minus model, paired per replicate).
    """

    adapter: str
    variant: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    control_of: str = ""

    def __post_init__(self) -> None:
        if not self.label:

            self.label = label_of(adapter_label(self.adapter), self.variant)


def adapter_label(adapter: str) -> str:
    """The label of an adapter: its registered name, or the `name` of a plug-in class (path.py:Class,
    module:Class); a plug-in that does not load keeps its reference (the error comes when it is built)."""
    if ":" not in adapter:
        return adapter

    try:
        cls = get_adapter_class(adapter)
    except UserError:
        return adapter
    return cls.name or cls.__name__


@dataclass
class GridConfig:
    """A grid: models x widths x budgets x seeds, on shared data and training settings.

    `design = "cross"` runs every width at every budget; `"axes"` runs the data axis (every budget)
    at `reference_width` and the parameter axis (every width) at the largest budget, as the paper did.
    """

    name: str = "grid"
    description: str = ""
    design: str = "cross"
    widths: list[int] = field(default_factory=lambda: [64])
    layers: int = 2
    head_dim: int = 64  # heads = ceil(width / head_dim), at least 1 (the paper's small-width heads are unknown)
    budgets: list[int] = field(default_factory=lambda: [100_000])
    # an isoFLOP design: training FLOPs per run (e.g. [1e12, 3e12]); when given, each model's token budget is
    # solved from its counted FLOPs per lexical token (tgbench.plan.isoflop) and `budgets` gives no grid runs
    compute_budgets: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    reference_width: int = 0  # axes design: 0 = the largest width
    # per-budget: every (budget, replicate) gets its own data-order and init seed, the same for every model
    # (cells independent, models paired); shared: a replicate's seed at every budget (tgbench <= 0.2)
    seed_scheme: str = SCHEME_PER_BUDGET
    reference: str = ""  # the label every other is compared with ("": tg when present, else the first model)
    baselines: list[str] = field(default_factory=list)  # the labels compared with it ([]: every other)
    models: list[ModelEntry] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig | None = None  # a learning-rate sweep before the grid (tgbench.plan.tune)
    # control twins to add for every model whose adapter offers them (`Adapter.controls`), e.g. ["no-memory"]:
    # the twin is labelled "<label>-<control>", trains like the model (tuned on its own) and is not a baseline
    controls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.seed_scheme not in SEED_SCHEMES:
            raise UserError(f"seed_scheme = '{self.seed_scheme}' is not a seed scheme",
                            f"use seed_scheme = \"{SCHEME_PER_BUDGET}\" (the default) or \"{SCHEME_SHARED}\"")
        if self.design not in ("cross", "axes"):
            raise UserError(f"design = '{self.design}' is not a grid design", "use design = \"cross\" or \"axes\"")
        for name in ("widths", "budgets"):
            values = getattr(self, name)
            if not values or any((not isinstance(v, int)) or v <= 0 for v in values):
                raise UserError(f"{name} = {values} must be a non-empty list of positive integers",
                                f"fix {name} in the grid file")
        check_compute_budgets(self.compute_budgets)
        if self.compute_budgets and self.tune is not None and self.tune.per_budget:
            # a sweep per token budget has no budget to match: each model's tokens differ at one compute budget
            raise UserError("tune.per_budget = true on a grid with compute_budgets: its runs have no shared token "
                            "budget to tune at", "drop per_budget; the sweep then trains at tune.budget lexical "
                            "tokens (0: the middle of budgets) and every compute budget uses its choice")
        if not self.seeds:
            raise UserError("seeds = [] names no seed", "give seeds = [0] or more seeds")
        for name in ("widths", "budgets", "seeds"):
            values = getattr(self, name)
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:  # a repeated value gives repeated run ids: one run directory for two runs
                raise UserError(f"{name} = {values} lists {', '.join(map(str, repeated))} more than once",
                                f"list each value of {name} once")
        if self.layers <= 0 or self.head_dim <= 0:
            raise UserError(f"layers = {self.layers} and head_dim = {self.head_dim} must be positive",
                            "fix them in the grid file")
        if not self.models:
            raise UserError("the grid names no models", "add [[models]] tables with adapter = \"gpt2\" etc.")
        self.models = add_controls(self.models, self.controls)
        for index, entry in enumerate(self.models):
            model_train(self, entry, f"models[{index}].train")  # unknown keys and bad values fail here
        self._check_comparison()

    def _check_comparison(self) -> None:
        labels = [m.label for m in self.models]  # repeated labels are `expand`'s error (it names the fix)
        # a model may be named by the string its entry gives as `adapter` (e.g. "examples/lstm_adapter.py:
        # LSTMAdapter" for the label "lstm"), when that string names one model only
        by_adapter: dict[str, list[str]] = {}
        for m in self.models:
            by_adapter.setdefault(m.adapter, []).append(m.label)
        aliases = {adapter: found[0] for adapter, found in by_adapter.items() if len(found) == 1}
        if self.reference and self.reference not in labels:
            self.reference = aliases.get(self.reference, self.reference)
        self.baselines = [b if b in labels else aliases.get(b, b) for b in self.baselines]
        if any(name not in labels for name in [*([self.reference] if self.reference else []), *self.baselines]):
            self._check_adapters()  # a misspelt adapter makes the right reference look unknown: name the typo
        if self.reference and self.reference not in labels:
            raise unknown_name("reference", self.reference, labels)
        for baseline in self.baselines:
            if baseline not in labels:
                raise unknown_name("baseline", baseline, labels)
            if baseline == self.reference:
                raise UserError(f"baselines lists the reference '{baseline}'", "list only the labels compared with it")

    def _check_adapters(self) -> None:
        """Every model's adapter must be known (the registry's error, naming the model entry)."""
        for index, m in enumerate(self.models):
            try:
                get_adapter_class(m.adapter)
            except UserError as err:
                raise UserError(f"models[{index}]: {err.message}", err.fix) from err

    @property
    def comparison(self):
        """The grid's `tgbench.plan.comparison.Comparison` over its model labels (control twins are compared
        with their model, not with the reference, unless `baselines` names them)."""

        labels = [m.label for m in self.models]
        return comparison(labels, self.reference, self.baselines, labels, self.control_pairs)

    @property
    def control_pairs(self) -> dict[str, str]:
        """control twin's label -> the label of the model it controls."""
        return {m.label: m.control_of for m in self.models if m.control_of}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "grid") -> GridConfig:
        """A grid from a grid file's content; unknown keys and wrong types are errors that name the key."""
        return from_dict(cls, raw, source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def add_controls(models: list[ModelEntry], controls: list[str]) -> list[ModelEntry]:
    """The models with a control twin added after each model whose adapter offers each named control.

    A twin already present (the grid file as a grid directory keeps it, resolved) is not added twice. Models
    without the control (GPT-2 has no memory to remove) get no twin.

    Raises:
        UserError: for a control no adapter of the grid offers, or a hand-written `control_of` that names no model.
    """
    labels = {m.label for m in models}
    for m in models:
        if m.control_of and m.control_of not in labels:
            raise UserError(f"models[{models.index(m)}].control_of = '{m.control_of}' names no model of the grid",
                            f"give the label of the model it controls: one of {', '.join(sorted(labels))}")
    offered: dict[str, set[str]] = {}
    out: list[ModelEntry] = []
    for entry in models:
        out.append(entry)
        if entry.control_of:
            continue
        try:
            available = get_adapter_class(entry.adapter).controls
        except UserError:
            available = {}  # an adapter that does not load fails where it is built, with its own message
        for name in controls:
            if name not in available:
                continue
            offered.setdefault(name, set()).add(entry.label)
            label = f"{entry.label}-{name}"
            if label in labels:
                continue
            out.append(ModelEntry(adapter=entry.adapter, variant=f"{entry.variant}-{name}".strip("-"),
                                  options={**entry.options, **available[name]}, train=dict(entry.train),
                                  label=label, control_of=entry.label))
            labels.add(label)
    for name in controls:
        if name not in offered:
            raise UserError(f"controls lists '{name}', which none of the grid's models offers",
                            "built-in memory models (tg, rmt, txl) offer \"no-memory\"; a plug-in declares its own "
                            "in its adapter's `controls`")
    return out


def model_train(grid: GridConfig, entry: ModelEntry, where: str = "") -> TrainConfig:
    """A model's training settings: the grid's [train] with the model's own `train` table over it."""
    where = where or f"models[{grid.models.index(entry)}].train"
    for key in GRID_CONTROLLED_TRAIN_KEYS:
        if key in entry.train:
            raise UserError(f"{where}.{key} cannot be set per model: the grid sets it for every run",
                            "use the grid's budgets and seeds" if key == "tokens" else "use the grid's seeds")
    return from_dict(TrainConfig, {**dataclasses.asdict(grid.train), **entry.train}, where)


def compute_slug(compute: float) -> str:
    """A compute budget as run ids write it: 1e12 -> "1e12", 2.5e11 -> "2.5e11" (no "+" for a slug to mangle)."""
    mantissa, _, exponent = f"{compute:.4g}".partition("e")
    return mantissa + (f"e{int(exponent)}" if exponent else "")


def check_compute_budgets(values: list[float]) -> None:
    """Positive, finite, each once; raises a UserError that names the bad value."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"compute_budgets = {values} holds {value!r}, not a positive number of training FLOPs",
                            "give training FLOPs per run, e.g. compute_budgets = [1e12, 3e12]")
    slugs = [compute_slug(v) for v in values]
    repeated = sorted({s for s in slugs if slugs.count(s) > 1})
    if repeated:  # two budgets one run id apart would write one run directory twice
        raise UserError(f"compute_budgets = {values} lists {', '.join(repeated)} more than once (to 4 digits)",
                        "list each compute budget once")
