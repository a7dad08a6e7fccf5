"""Grids of paired runs: expansion, execution (local or Slurm) and resume.

A grid TOML names adapters (with variants such as ablation switches), widths, token budgets and
seeds, plus shared data and training settings. `expand` turns it into `RunSpec`s; `run_grid`
trains them one after another (or submits one Slurm job per run through submitit), skipping runs
that are DONE with the same config hash, resuming interrupted ones and rerunning failed ones.
`run_grid` ends by writing the grid's results table (`tgbench.results.write_results`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from tgbench.adapter import heads_for
from tgbench.config import (
    GRID_CONTROLLED_TRAIN_KEYS,
    RunConfig,
    TrainConfig,
    TuneConfig,
    from_dict,
    read_toml,
    set_path,
    to_toml,
)
from tgbench.data import DataConfig
from tgbench.errors import UserError, unknown_name
from tgbench.results import write_results
from tgbench.runs import RunDir, make_dir, write_text
from tgbench.tracking import check_loggers, duration, grid_line, make_trackers

PRESETS = ("smoke", "demo", "cpu-study", "cpu-long", "cpu-peers", "paper-data", "paper-params", "paper-ablations")


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
    """

    adapter: str
    variant: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            from tgbench.comparison import label_of

            self.label = label_of(adapter_label(self.adapter), self.variant)


def adapter_label(adapter: str) -> str:
    """The label of an adapter: its registered name, or the `name` of a plug-in class (path.py:Class,
    module:Class); a plug-in that does not load keeps its reference (the error comes when it is built)."""
    if ":" not in adapter:
        return adapter
    from tgbench.registry import get_adapter_class

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
    seeds: list[int] = field(default_factory=lambda: [0])
    reference_width: int = 0  # axes design: 0 = the largest width
    # "per-budget": every (budget, replicate) gets its own data-order and init seed, the same for every model
    # (cells independent, models paired); "shared": a replicate's seed at every budget (tgbench <= 0.2)
    seed_scheme: str = "per-budget"
    reference: str = ""  # the label every other is compared with ("": tg when present, else the first model)
    baselines: list[str] = field(default_factory=list)  # the labels compared with it ([]: every other)
    models: list[ModelEntry] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig | None = None  # a learning-rate sweep before the grid (tgbench/tune.py)

    def __post_init__(self) -> None:
        if self.seed_scheme not in ("per-budget", "shared"):
            raise UserError(f"seed_scheme = '{self.seed_scheme}' is not a seed scheme",
                            "use seed_scheme = \"per-budget\" (the default) or \"shared\"")
        if self.design not in ("cross", "axes"):
            raise UserError(f"design = '{self.design}' is not a grid design", "use design = \"cross\" or \"axes\"")
        for name in ("widths", "budgets"):
            values = getattr(self, name)
            if not values or any((not isinstance(v, int)) or v <= 0 for v in values):
                raise UserError(f"{name} = {values} must be a non-empty list of positive integers",
                                f"fix {name} in the grid file")
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
        for index, entry in enumerate(self.models):
            model_train(self, entry, f"models[{index}].train")  # unknown keys and bad values fail here
        self._check_comparison()

    def _check_comparison(self) -> None:
        labels = [m.label for m in self.models]  # repeated labels are `expand`'s error (it names the fix)
        if self.reference and self.reference not in labels:
            raise unknown_name("reference", self.reference, labels)
        for baseline in self.baselines:
            if baseline not in labels:
                raise unknown_name("baseline", baseline, labels)
            if baseline == self.reference:
                raise UserError(f"baselines lists the reference '{baseline}'", "list only the labels compared with it")

    @property
    def comparison(self):
        """The grid's `tgbench.comparison.Comparison` over its model labels."""
        from tgbench.comparison import comparison

        labels = [m.label for m in self.models]
        return comparison(labels, self.reference, self.baselines, labels)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "grid") -> GridConfig:
        """A grid from a grid file's content; unknown keys and wrong types are errors that name the key."""
        return from_dict(cls, raw, source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_train(grid: GridConfig, entry: ModelEntry, where: str = "") -> TrainConfig:
    """A model's training settings: the grid's [train] with the model's own `train` table over it."""
    where = where or f"models[{grid.models.index(entry)}].train"
    for key in GRID_CONTROLLED_TRAIN_KEYS:
        if key in entry.train:
            raise UserError(f"{where}.{key} cannot be set per model: the grid sets it for every run",
                            "use the grid's budgets and seeds" if key == "tokens" else "use the grid's seeds")
    return from_dict(TrainConfig, {**dataclasses.asdict(grid.train), **entry.train}, where)


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def replicate_seeds(replicate: int, tokens: int) -> tuple[int, int]:
    """(data-order seed, init seed) of one (budget, replicate): a hash of both, the same for every model.

    Distinct budgets get unrelated seeds, so a replicate's runs at two budgets share neither their data subset
    nor their initialisation (cells are independent); every model of a cell gets the same two (models paired).
    """
    return tuple(zlib.crc32(f"{what}|replicate={replicate}|tokens={tokens}".encode()) & 0x7FFFFFFF
                 for what in ("data", "init"))


def expand(grid: GridConfig, lr_for=None) -> list[RunSpec]:
    """Every run of the grid, in a stable order (budget-major so small runs come first).

    Args:
        grid: The grid.
        lr_for: `(entry, width, tokens) -> float | None`, a tuned learning rate for a model's run (None: the
            model's own or the grid's); it is applied as the model's `train.lr` override.
    """
    reference = grid.reference_width or max(grid.widths)
    if grid.design == "axes" and reference not in grid.widths:
        raise UserError(f"reference_width = {reference} is not one of widths {grid.widths}",
                        "pick one of the widths, or 0 for the largest")
    cells = []
    for tokens in sorted(grid.budgets):
        for width in sorted(grid.widths):
            on_data_axis = width == reference
            on_param_axis = tokens == max(grid.budgets)
            if grid.design == "axes" and not (on_data_axis or on_param_axis):
                continue
            cells.append((tokens, width))
    specs = []
    for tokens, width in cells:
        for seed in grid.seeds:
            for entry in grid.models:
                tuned = lr_for(entry, width, tokens) if lr_for is not None else None
                spec = run_spec(grid, entry, width, tokens, seed, lr=tuned)
                spec.run_id = _slug(f"{entry.label}-w{width}-l{grid.layers}-D{tokens}-s{seed}")
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
             lr: float | None = None) -> RunSpec:
    """One model's run at (width, tokens, seed); `lr` (tuned, or a sweep point) overrides its learning rate.

    The run's config.toml records `lr_source`: "tuned" when `lr` is given, "model" when the model's
    `train` table sets it, "grid" when it is the grid's [train] lr.
    """
    heads = heads_for(width, grid.head_dim)
    options = {"width": width, "layers": grid.layers, "heads": heads, **entry.options}
    overrides = dict(entry.train)
    source = "model" if "lr" in overrides else "grid"
    if lr is not None:
        overrides["lr"], source = float(lr), "tuned"
    data_seed, init_seed = replicate_seeds(seed, tokens) if grid.seed_scheme == "per-budget" else (-1, -1)
    train = dataclasses.replace(model_train(grid, dataclasses.replace(entry, train=overrides),
                                            f"models[{grid.models.index(entry)}].train"), tokens=tokens, seed=seed,
                                data_seed=data_seed, init_seed=init_seed)
    config = RunConfig(model=entry.adapter, model_options=options, data=grid.data, train=train)
    meta = {"lr_source": source, "train_overrides": sorted(overrides)}
    return RunSpec("", entry.label, entry.adapter, entry.variant, width, grid.layers, heads, tokens, seed,
                   config, meta)


def grid_variants(grid: dict[str, Any]) -> dict[str, str]:
    """run_id -> variant from a grid file's content ({} when it cannot be expanded)."""
    try:
        return {s.run_id: s.variant for s in expand(GridConfig.from_dict(grid))}
    except (UserError, TypeError, ValueError, KeyError):
        return {}


def load_grid(path: Path | None = None, preset: str | None = None,
              settings: dict[str, Any] | None = None) -> GridConfig:
    """Read a grid file or a shipped preset, validating every key and value.

    Args:
        path: A grid TOML file.
        preset: Or the name of a shipped preset.
        settings: `--set` assignments over the file, by dotted key (e.g. {"train.warmup_fraction": 0.05}).
    """
    if (path is None) == (preset is None):
        raise UserError("give either a grid file or --preset NAME", f"presets: {', '.join(PRESETS)}")
    if preset is not None:
        if preset not in PRESETS:
            raise unknown_name("preset", preset, PRESETS)
        text = resources.files("tgbench").joinpath(f"presets/{preset}.toml").read_text(encoding="utf-8")
        import tomllib

        raw, source = tomllib.loads(text), f"preset {preset}"
    else:
        raw, source = read_toml(path), str(path)
    for key, value in (settings or {}).items():
        set_path(raw, key, value)
    grid = GridConfig.from_dict(raw, source)
    validate_models(grid)
    return grid


def check_data(data: DataConfig) -> None:
    """Fail now on data settings that would fail later: an unknown splitter or tokenizer, a missing corpus.

    A hub corpus (``hf:NAME``) is not contacted; its errors come when it is first read.
    """
    from tgbench.data.corpus import source_identity, validate_config
    from tgbench.data.split import check_splitter

    validate_config(data)
    check_splitter(data.splitter)
    if not data.corpus.startswith("hf:"):
        source_identity(data.corpus)


def validate_models(grid: GridConfig) -> None:
    """Build every distinct adapter config once, so a bad option fails before any training."""
    from tgbench.registry import build_adapter

    seen = set()
    for spec in expand(grid):
        key = (spec.adapter, repr(sorted(spec.config.model_options.items())))
        if key in seen:
            continue
        seen.add(key)
        build_adapter(spec.config)


# -- estimates ---------------------------------------------------------------------------------
# -- context parity ----------------------------------------------------------------------------
def context_parity(grid: GridConfig, mean_sentence_tokens: float, mean_document_tokens: float | None = None
                   ) -> list[tuple[str, str]]:
    """Compare every token-window model's context (GPT-2) with the memory span of the grid's sentence-memory
    models (TG: memory_slots x mean tokens per sentence): a shorter context sees less history than TG.

    Args:
        grid: The grid.
        mean_sentence_tokens: The corpus's mean lexical tokens per sentence.
        mean_document_tokens: The corpus's mean tokens per document, quoted in a warning (whether it matters).

    Returns:
        ("warning", line) per model whose context is shorter than the longest memory span, else one
        ("ok", line) when the grid pairs both kinds; [] when it does not.
    """
    from tgbench.registry import build_adapter

    contexts: dict[str, Any] = {}
    for spec in expand(grid):
        if spec.label not in contexts:
            contexts[spec.label] = build_adapter(spec.config).effective_context(mean_sentence_tokens)
    memories = {label: c for label, c in contexts.items() if c is not None and c.kind == "memory"}
    windows = {label: c for label, c in contexts.items() if c is not None and c.kind == "window"}
    if not memories or not windows:
        return []
    longest = max(memories, key=lambda label: memories[label].tokens)
    span = memories[longest].tokens
    documents = f"; its documents average {mean_document_tokens:,.0f} tokens" if mean_document_tokens else ""
    slots = f"{span / mean_sentence_tokens:.0f} slots x {mean_sentence_tokens:.1f} tokens per sentence of this corpus"
    lines = [("warning", f"{label} (context {context.tokens:,.0f} tokens) sees less history than {longest}'s memory "
                         f"span ({slots} = {span:,.0f} tokens{documents}): give {label} a context of at least "
                         f"{math.ceil(span):,} tokens, or say in the grid file why the pairing is intended")
             for label, context in windows.items() if context.tokens < span]
    if not lines:
        shortest = min(windows, key=lambda label: windows[label].tokens)
        lines = [("ok", f"context parity: every GPT-2-style context ({shortest}: {windows[shortest].tokens:,.0f} "
                        f"tokens at the shortest) covers {longest}'s memory span ({slots} = {span:,.0f} tokens)")]
    return lines


def parity_notes(grid: GridConfig) -> list[tuple[str, str]]:
    """`context_parity` on the grid's corpus statistics from the corpus cache; when the corpus is not encoded
    yet, one ("note", line) saying the check needs it (nothing is encoded here: a dry run stays quick)."""
    from tgbench.data.corpus import cached_stats

    try:
        stats = cached_stats(grid.data)
    except UserError as err:  # e.g. a preset's placeholder corpus path: the dry run still shows the runs
        return [("note", f"context parity not checked: {err.message}")]
    if stats is None:
        return [("note", f"context parity not checked: corpus '{grid.data.corpus}' is not encoded yet with these "
                         f"data settings (the grid's first run encodes and caches it; so does `tgbench data stats "
                         f"{grid.data.corpus} --tokenizer {grid.data.tokenizer} --splitter {grid.data.splitter}` "
                         "when the other data settings are the defaults)")]
    tokens = sum(s.lexical_tokens for s in stats.values())
    sentences = sum(s.sentences for s in stats.values())
    documents = sum(s.documents for s in stats.values())
    if not sentences:
        return []
    return context_parity(grid, tokens / sentences, tokens / max(documents, 1))


def parameter_counts(spec: RunSpec) -> tuple[int, int]:
    """(non-embedding, all) parameters, counted on the meta device (no memory, no init cost)."""
    import torch

    from tgbench.adapter import Vocab
    from tgbench.data.tokenizer import base_vocab_size
    from tgbench.registry import build_adapter

    adapter = build_adapter(spec.config)
    with torch.device("meta"):
        model = adapter.build(Vocab(base_vocab_size(spec.config.data.tokenizer)))
    return adapter.n_params(model), sum(p.numel() for p in model.parameters())


def parameter_count(spec: RunSpec) -> int:
    """Non-embedding parameters, counted on the meta device (no memory, no init cost)."""
    return parameter_counts(spec)[0]


# -- execution ---------------------------------------------------------------------------------
def plugin_code_change(spec: RunSpec, run_dir: RunDir) -> str | None:
    """How a plug-in adapter's code differs from the code the run recorded (None for built-in adapters,
    unchanged code, or a run that recorded none): such a run is retrained, not skipped."""
    from tgbench.registry import adapter_code, code_change

    if not run_dir.config_path.exists():
        return None
    code = adapter_code(spec.adapter)
    return code_change(run_dir.read_meta().get("adapter_code"), code) if code["origin"] == "plug-in" else None


def run_one(spec: RunSpec, grid_dir: Path, corpus=None, progress: bool = True, on_log=None) -> str:
    """Train one run of a grid; returns its final status. Failed runs are rerun from scratch."""
    from tgbench.registry import resolved
    from tgbench.train import TrainingFailed, train

    run_dir = RunDir(grid_dir / spec.run_id)
    # A failed run, or one whose settings or plug-in adapter code changed, starts over; others resume or skip.
    changed = run_dir.config_path.exists() and run_dir.read_config().hash() != resolved(spec.config).hash()
    if not changed and (change := plugin_code_change(spec, run_dir)) is not None:
        from rich.console import Console

        Console(stderr=True).print(f"run {spec.run_id}: the adapter's code changed ({change}); retraining it",
                                   soft_wrap=True, markup=False)
        changed = True
    resume = "never" if run_dir.failed or changed else "auto"
    try:
        result = train(spec.config, run_dir.path, resume=resume, progress=progress, corpus=corpus, on_log=on_log,
                       labels={"label": spec.label, "variant": spec.variant, **spec.meta}, loggers=spec.loggers,
                       advice=False)
    except TrainingFailed as err:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]run {spec.run_id} failed:[/bold red] {err}; the grid goes on")
        return "failed"
    return result.status


def _slurm_entry(spec: RunSpec, grid_dir: str) -> str:  # spec.loggers travel with the spec
    return run_one(spec, Path(grid_dir), progress=False)


def run_grid(grid: GridConfig, out: Path, *, executor: str = "local", progress: bool = True,
             slurm: dict[str, Any] | None = None, jobs: int | None = None,
             loggers: Sequence[str] = ()) -> pd.DataFrame:
    """Run every run of the grid into `out` and regenerate `results.csv`.

    A grid with a [tune] table first trains its learning-rate sweep (`out/tune/`, through the same executor),
    writes `tune.json`, and then trains every model at its chosen learning rate.

    Args:
        grid: The grid.
        out: Grid directory (`grid.toml`, one directory per run, `results.csv`).
        executor: "local" (on this machine: one run after another, or `jobs` at once) or "slurm" (one
            submitit job per run; "slurm-local" uses submitit's local executor, for testing).
        progress: Show the live table on a terminal; when stdout is not one, a timestamped line per run start
            and finish with the count done/total, and the final table.
        slurm: submitit parameters (partition, timeout_min, gpus_per_node, ...).
        jobs: Runs at once on this machine (see `tgbench.parallel`); None = the grid's `train.jobs`
            (0 there = the GPU count with CUDA, else 1).
        loggers: Trackers of every run besides metrics.jsonl ("tensorboard", "wandb"; see tgbench.tracking).
    """
    check_data(grid.data)  # before any directory is made or run trained
    if executor not in ("local", "slurm", "slurm-local"):
        raise unknown_name("executor", executor, ("local", "slurm", "slurm-local"))
    make_dir(out)
    make_trackers(loggers, plain_lines=False)  # a missing tensorboard / wandb fails before the first run
    write_text(out / "grid.toml", to_toml(grid.to_dict()))
    stage = {"executor": executor, "progress": progress, "slurm": slurm, "jobs": jobs, "loggers": loggers,
             "corpus": []}  # the corpus is loaded once, by the first stage that needs it
    lr_for = None
    if grid.tune is not None:
        from tgbench.tune import sweep_specs, write_tune

        execute_specs(sweep_specs(grid), out, grid, title="tuning sweep", **stage)
        lr_for = write_tune(grid, out).lr_for
    else:
        from tgbench.tune import warn_unused_tune

        warn_unused_tune(out)
    specs = expand(grid, lr_for)
    execute_specs(specs, out, grid, **stage)
    return write_results(out, {spec.run_id: spec.variant for spec in specs})


def execute_specs(specs: list[RunSpec], out: Path, grid: GridConfig, *, executor: str = "local",
                  progress: bool = True, slurm: dict[str, Any] | None = None, jobs: int | None = None,
                  loggers: Sequence[str] = (), corpus: list | None = None, title: str = "grid") -> None:
    """Train `specs` into `out`: every stage of a grid (the tuning sweep, the grid) goes through here.

    Args:
        specs: The runs.
        out: Grid directory; each run goes to `out / spec.run_id`.
        grid: Their grid (its data settings, its `train.jobs`).
        executor: local | slurm | slurm-local.
        progress: Show the live table.
        slurm: submitit parameters.
        jobs: Runs at once on this machine (None = the grid's `train.jobs`).
        loggers: Trackers of every run besides metrics.jsonl.
        corpus: A one-element cache of the loaded corpus shared between stages (filled when empty).
        title: The live table's title.
    """
    from tgbench.data import load_corpus
    from tgbench.parallel import execute, resolve_jobs

    specs = [dataclasses.replace(spec, loggers=tuple(check_loggers(loggers))) for spec in specs]
    if executor in ("slurm", "slurm-local"):
        _run_submitit(specs, out, executor, slurm or {})
        return
    jobs = resolve_jobs(grid.train.jobs if jobs is None else jobs, specs)
    # One process: the corpus is loaded once for every run of every stage. Workers read it from the cache
    # execute() fills.
    corpus = corpus if corpus is not None else []
    if jobs == 1 and not corpus:
        corpus.append(load_corpus(grid.data, progress=progress))
    board = _Board(specs, out, jobs, title)
    with board.live(progress):
        execute(specs, out, jobs=jobs, board=board, corpus=corpus[0] if jobs == 1 else None, progress=progress)
    board.print_final(progress)


def _run_submitit(specs: list[RunSpec], out: Path, executor: str, params: dict[str, Any]) -> None:
    import submitit

    folder = out / "slurm"
    if executor == "slurm-local":
        ex = submitit.LocalExecutor(folder=folder)
        params = {k: v for k, v in params.items() if k in ("timeout_min",)}
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(**({"timeout_min": 24 * 60} | params))
    jobs = [ex.submit(_slurm_entry, spec, str(out)) for spec in specs]
    for job in jobs:
        job.result()


class _Board:
    """The live table: every run's state, where it runs, tokens and loss (several runs at once with --jobs)."""

    def __init__(self, specs: list[RunSpec], out: Path, jobs: int = 1, title: str = "grid") -> None:
        self.specs = specs
        self.jobs = jobs
        self.title = title
        self.state = {s.run_id: RunDir(out / s.run_id).status() for s in specs}
        self.where: dict[str, str] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self._live = None
        self._last = 0.0
        self.plain = False  # timestamped lines instead of the live table (stdout is not a terminal)
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    def live(self, enabled: bool):
        """A live-updating table on a terminal; in a log the final table is printed once (`print_final`)."""
        from contextlib import nullcontext

        from rich.console import Console
        from rich.live import Live

        if not enabled or not Console().is_terminal:
            self.plain = enabled
            return nullcontext()
        self._live = Live(self._live_table(), refresh_per_second=2, transient=False)
        return self._live

    def _live_table(self):
        from rich.console import Console

        return self.table(rows=max(3, Console().height - 8))  # title, header, borders, caption, progress

    def print_final(self, enabled: bool) -> None:
        from rich.console import Console

        from tgbench.console import print_table

        if enabled and not Console().is_terminal:
            print_table(self.table())

    def start(self, run_id: str, where: str) -> None:
        """A run starts: the table shows it running; a log gets `[done/total] RUN start`."""
        self.state[run_id] = "running"
        self.where[run_id] = where
        self._started[run_id] = time.monotonic()
        if self.plain:
            grid_line("start" if self.jobs == 1 else f"start ({where})", run_id, self.finished_count(),
                      len(self.specs))
        self.refresh()

    def update(self, run_id: str, record: dict[str, Any]) -> None:
        self.latest.setdefault(run_id, {}).update(record)
        if time.monotonic() - self._last > 0.5:
            self.refresh()

    def finish(self, run_id: str, status: str) -> None:
        """A run ends with `status`: a log gets `[done/total] RUN STATUS: val_loss ..., wall time`."""
        self.state[run_id] = status
        self._finished.add(run_id)
        if self.plain:
            record = self.latest.get(run_id, {})
            detail = [f"val_loss {_fmt(record['val_loss'])}"] if record.get("val_loss") is not None else []
            if run_id in self._started:
                detail.append(duration(time.monotonic() - self._started[run_id]))
            grid_line(status, run_id, self.finished_count(), len(self.specs), ", ".join(detail))
        self.refresh()

    def finished_count(self) -> int:
        """Runs of this grid that are over in this session (done, skipped, failed or interrupted)."""
        return len(self._finished)

    def refresh(self) -> None:
        self._last = time.monotonic()
        if self._live is not None:
            self._live.update(self._live_table())

    def visible(self, rows: int | None) -> list[RunSpec]:
        """The runs shown when only `rows` fit: a window that scrolls with the first running (or pending) run."""
        if rows is None or len(self.specs) <= rows:
            return list(self.specs)
        rows = max(rows, 3)
        states = [self.state[s.run_id] for s in self.specs]
        focus = next((i for i, st in enumerate(states) if st == "running"),
                     next((i for i, st in enumerate(states) if st not in ("done", "skipped", "failed")), 0))
        start = min(max(0, focus - rows // 3), len(self.specs) - rows)
        return self.specs[start: start + rows]

    def table(self, rows: int | None = None):
        """The table of every run, or of a window of `rows` runs (a live table taller than the terminal
        cannot be redrawn, so it scrolls with the running run and counts the others in its caption)."""
        from collections import Counter

        from rich.table import Table

        running = sum(state == "running" for state in self.state.values())
        title = self.title if self.jobs == 1 else f"{self.title}: {running} of {self.jobs} workers busy"
        table = Table(title=title, show_lines=False)
        columns = ("run", "state", "tokens", "train loss", "val loss") + (("where",) if self.jobs > 1 else ())
        for column in columns:
            # Run ids fold onto a second line on a narrow terminal rather than being cut.
            table.add_column(column, justify="left" if column in ("run", "where") else "right",
                             overflow="fold" if column == "run" else "ellipsis")
        colours = {"done": "green", "skipped": "green", "failed": "red", "running": "yellow"}
        shown = self.visible(rows)
        if len(shown) < len(self.specs):
            first = self.specs.index(shown[0]) + 1
            counts = Counter(self.state[s.run_id] for s in self.specs)
            table.caption = (f"runs {first}-{first + len(shown) - 1} of {len(self.specs)}: "
                             + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        for spec in shown:
            record = self.latest.get(spec.run_id, {})
            state = self.state[spec.run_id]
            cells = [spec.run_id, f"[{colours.get(state, 'white')}]{state}",
                     f"{record.get('tokens', 0):,}/{spec.tokens:,}",
                     _fmt(record.get("train_lexical_loss")), _fmt(record.get("val_loss"))]
            if self.jobs > 1:
                cells.append(self.where.get(spec.run_id, "") if state == "running" else "")
            table.add_row(*cells)
        return table


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def dry_run_table(grid: GridConfig) -> list[dict[str, Any]]:
    """The runs to train, the tuning sweep's first, with parameter counts, a compute estimate (6 N D FLOPs, N
    with embeddings: the output layer costs as much as any matrix) and the wall time that makes on this
    machine's CPU, one run at a time (`cpu_seconds`).

    Each row's `stage` is "tune" or "grid"; `lr` is the run's peak LR, or "tuned" for a grid run whose LR the
    sweep will choose; `pflops` counts non-embedding parameters (as the paper's N), `flops` all of them.
    """
    from tgbench.train import cpu_seconds, training_flops

    counts: dict[tuple, tuple[int, int]] = {}
    totals: dict[str, int] = {}

    def count(spec: RunSpec) -> int:
        key = (spec.adapter, repr(sorted(spec.config.model_options.items())))
        if key not in counts:
            counts[key] = parameter_counts(spec)
        totals[spec.run_id] = counts[key][1]
        return counts[key][0]

    rows = []
    if grid.tune is not None:
        from tgbench.tune import dry_run_rows

        rows += dry_run_rows(grid, count)
    for spec in expand(grid):
        n = count(spec)
        tuned = grid.tune is not None and "lr" not in spec.meta["train_overrides"]
        rows.append({"stage": "grid", "run_id": spec.run_id, "label": spec.label, "width": spec.width,
                     "layers": spec.layers, "heads": spec.heads, "n_params": n, "tokens": spec.tokens,
                     "seed": spec.seed, "epochs": spec.config.train.epochs,
                     "lr": "tuned" if tuned else f"{spec.config.train.lr:.3g}",
                     "pflops": 6 * n * spec.tokens * spec.config.train.epochs / 1e15})
    for row in rows:
        row["total_params"] = totals[row["run_id"]]
        row["flops"] = training_flops(row["total_params"], row["tokens"] * row["epochs"])
        row["cpu_seconds"] = cpu_seconds(row["flops"])
    return rows


def fmt_flops(flops: float) -> str:
    """FLOPs in the unit that keeps 3 significant digits readable: 412 GFLOP, 3.1 TFLOP, 2.4 PFLOP."""
    for scale, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def fmt_duration(seconds: float) -> str:
    """A wall time as 40 s, 12 min, 3.5 h or 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


