"""Configuration dataclasses and their TOML round trip.

A run is fully described by a `RunConfig`: which adapter (by name or reference), its model
settings, the data settings and the training settings. `config.toml` in a run directory is this
dataclass written out; reading it back gives an equal object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from tgbench.core.errors import UserError


@dataclass
class DataConfig:
    """Which corpus, and how it becomes token ids.

    Attributes:
        corpus: "embedded", "kjv", a path (WikiText dir/file, .txt plain text, .jsonl), or
            "hf:NAME[:CONFIG]" for a `datasets` hub name.
        splitter: Sentence splitter: "syntok", "blingfire" or "sat".
        tokenizer: "gpt2" (GPT-2 BPE) or "bpe-<N>" (byte-level BPE trained on the train split).
        max_sentence_tokens: Longer sentences are re-split into near-equal fragments.
        min_fragment_tokens: Shorter pieces are merged into a neighbour when it has room.
        min_document_sentences: Documents with fewer sentences are dropped (counted after sentences over
            `DROP_RULE_CAP` = 64 tokens are cut, whatever `max_sentence_tokens` is).
        text_field: JSONL field / hub column holding the text.
        valid_fraction: Share of documents hashed into valid, for sources without their own splits.
        test_fraction: Same for test.
        cache_dir: "" -> $TGBENCH_CACHE_DIR or ~/.cache/tgbench.
        workers: Processes that split and tokenise: 0 = one per available CPU core, 1 = this process
            only. Fewer for a small corpus: at least `MIN_CHUNKS_PER_WORKER` chunks of
            `ENCODE_CHUNK_DOCS` documents per worker. The result does not depend on it, so, like
            cache_dir, it is not part of the cache key.
    """

    corpus: str = "embedded"
    splitter: str = "syntok"
    tokenizer: str = "gpt2"
    max_sentence_tokens: int = 64
    min_fragment_tokens: int = 3
    min_document_sentences: int = 2
    text_field: str = "text"
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    cache_dir: str = ""
    workers: int = 0


@dataclass
class TrainConfig:
    """Training settings. Defaults follow the paper's release where it states them."""

    tokens: int = 0  # lexical-token budget D of the training subset; 0 = the whole training split
    epochs: int = 1  # passes over the training subset
    batch_tokens: int = 4096  # lexical tokens per optimiser step (the paper: about 20k)
    lr: float = 2.5e-4  # peak learning rate (the paper's release)
    warmup_fraction: float = 0.004  # share of the steps with a linear warmup from 0
    min_lr_fraction: float = 0.1  # cosine decays to this fraction of the peak
    weight_decay: float = 0.01  # AdamW's, on matrices only (not on biases, norms, gates)
    beta1: float = 0.9  # AdamW
    beta2: float = 0.999  # AdamW
    grad_clip: float = 1.0  # the gradient norm is clipped to this (0 = no clipping)
    eval_every: int = 0  # steps between validation passes; 0 = once per epoch
    eval_tokens: int = 50_000  # lexical tokens of the fixed validation subset used during training
    log_every: int = 10  # steps between metrics.jsonl records
    checkpoint_every: int = 50  # steps between `latest` checkpoints
    seed: int = 0  # the replicate; data order and initialisation follow data_seed / init_seed when set
    data_seed: int = -1  # seed of the training subset and its order; -1 = seed (grids set it per budget)
    init_seed: int = -1  # seed of the initialisation (torch, numpy, random); -1 = seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | float32 | bfloat16
    threads: int = 0  # torch CPU threads; 0 = torch's default
    grad_accumulation: int = 1  # batches per optimiser step per process (under torchrun: x world size)
    compile: bool = False  # torch.compile the training step (speed only: not part of the config hash)
    jobs: int = 0  # a grid's runs at once on this machine (`train-grid --jobs`); 0 = the GPU count, else 1

    @property
    def data_order_seed(self) -> int:
        """The seed of the training subset and its order."""
        return self.seed if self.data_seed < 0 else self.data_seed

    @property
    def initialisation_seed(self) -> int:
        """The seed of the model's initialisation (and of dropout)."""
        return self.seed if self.init_seed < 0 else self.init_seed

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_tokens", "eval_tokens", "log_every", "checkpoint_every", "grad_accumulation"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} = {getattr(self, name)} must be positive", f"set train.{name} > 0")
        for name in ("tokens", "eval_every", "threads", "jobs"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} = {getattr(self, name)} must not be negative", f"set train.{name} >= 0")
        if self.lr <= 0:
            raise UserError(f"train.lr = {self.lr} must be positive", "set a learning rate such as 2.5e-4")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"train.dtype = '{self.dtype}' is not supported", "use auto, float32 or bfloat16")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UserError(f"train.device = '{self.device}' is not a device", "use auto, cpu, cuda or cuda:N")
        for name in ("warmup_fraction", "min_lr_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"train.{name} = {getattr(self, name)} is outside [0, 1]",
                                f"set train.{name} between 0 and 1")


# Model options added after run directories were written, with the value that reproduces those runs: at that
# value they are left out of the config hash, so a grid does not retrain its finished runs, and a run's
# config.toml written before the option reads back with that value (`registry.with_earlier_options`), also
# where the option's default is another (rmt's memory_mask: its runs before the option were causal).
LATER_MODEL_OPTIONS: dict[str, Any] = {"sentence_head_dropout": 0.0, "scaled_residual_init": True,
                                       "memory_mask": "causal", "memory_norm": "final"}


@dataclass
class TuneConfig:
    """A grid's learning-rate sweep (its [tune] table): every model trains at every LR before the grid.

    Attributes:
        lrs: The peak learning rates to try. Empty: `points` log-spaced from `lr_min` to `lr_max`, or, without
            those, the grid's [train] lr times 1/4, 1/2, 1, 2 and 4.
        lr_min: Lowest LR of a log-spaced sweep.
        lr_max: Highest LR of a log-spaced sweep.
        points: LRs in a log-spaced sweep.
        budget: Lexical training tokens per sweep run; 0 = the grid's middle budget (the lower of the two
            middle ones for an even count).
        seeds: Seeds per LR (at least 2 by default, so one seed's luck cannot choose); the choice is the lowest
            mean over them among the LRs none of whose seeds spiked, diverged or failed.
        max_extensions: How many LRs the sweep may add per model when its choice is the smallest or largest LR
            tried: each adds the next LR beyond it at the sweep's own spacing (every seed) and chooses again;
            0 = only warn.
        per_budget: Tune at every budget of the grid (then `budget` is not used).
        per_width: Tune at every width when the grid has several; false = at the reference width only, and
            every width trains at that choice.
    """

    lrs: list[float] = field(default_factory=list)
    lr_min: float = 0.0
    lr_max: float = 0.0
    points: int = 4
    budget: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    max_extensions: int = 2
    per_budget: bool = False
    per_width: bool = True

    def __post_init__(self) -> None:
        if any(lr <= 0 for lr in self.lrs) or len(set(self.lrs)) != len(self.lrs):
            raise UserError(f"tune.lrs = {self.lrs} must be distinct positive learning rates",
                            "write e.g. lrs = [7.5e-4, 1.5e-3, 3e-3, 6e-3]")
        if self.lrs and (self.lr_min or self.lr_max):
            raise UserError("tune sets both lrs and lr_min / lr_max", "keep one of the two ways of naming the sweep")
        if (self.lr_min or self.lr_max) and not 0 < self.lr_min < self.lr_max:
            raise UserError(f"tune.lr_min = {self.lr_min} and tune.lr_max = {self.lr_max} must satisfy "
                            "0 < lr_min < lr_max", "e.g. lr_min = 5e-4, lr_max = 8e-3")
        if self.points < 2:
            raise UserError(f"tune.points = {self.points} must be at least 2", "set points = 4")
        if self.budget < 0:
            raise UserError(f"tune.budget = {self.budget} must not be negative",
                            "give lexical tokens per sweep run, or 0 for the grid's middle budget")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"tune.seeds = {self.seeds} must be distinct seeds", "write e.g. seeds = [0, 1]")
        if self.max_extensions < 0:
            raise UserError(f"tune.max_extensions = {self.max_extensions} must not be negative",
                            "set 0 to only warn about a choice at the sweep's edge, or e.g. 2")

    def sweep(self, grid_lr: float) -> list[float]:
        """The learning rates of the sweep, ascending."""
        if self.lrs:
            return sorted(float(lr) for lr in self.lrs)
        if self.lr_min:
            import numpy as np

            return [float(f"{lr:.3g}") for lr in np.geomspace(self.lr_min, self.lr_max, self.points)]
        return [float(f"{grid_lr * factor:.3g}") for factor in (0.25, 0.5, 1.0, 2.0, 4.0)]


@dataclass
class RunConfig:
    """Everything that determines a run's numbers."""

    model: str = "gpt2"  # adapter name, package.module:Class or path/to/file.py:Class
    model_options: dict[str, Any] = field(default_factory=dict)  # fields of the adapter's config
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable hash of everything that changes the numbers (what a grid compares to skip runs)."""
        settings = self.to_dict()
        for volatile in ("device", "threads", "compile", "jobs"):
            settings["train"].pop(volatile, None)
        if settings["train"].get("grad_accumulation") == 1:  # runs from before the setting keep their hash
            settings["train"].pop("grad_accumulation")
        for name in ("data_seed", "init_seed"):  # -1 (= seed): runs from before the settings keep their hash
            if settings["train"].get(name) == -1:
                settings["train"].pop(name)
        for name, default in LATER_MODEL_OPTIONS.items():  # runs from before the option keep their hash
            if settings["model_options"].get(name, default) == default:
                settings["model_options"].pop(name, None)
        for volatile in ("cache_dir", "workers"):  # where and how fast the corpus is encoded, not what it holds
            settings["data"].pop(volatile, None)
        blob = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        return from_dict(cls, raw, source)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a TOML value fits a field annotation (bool is not an int; an int is a float)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is list or annotation is list:
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation this checker does not understand: the dataclass validates it


_NOUNS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings"), dict: ("a table", "tables")}
_EXAMPLES = {bool: "true or false", int: "a whole number such as 3", float: "a number such as 0.1",
             str: 'a quoted string such as "x"', dict: "a table such as { width = 64 }"}


def describe_type(annotation: Any, plural: bool = False) -> str:
    """A field annotation in words: `list[int]` -> "a list of integers", `int | None` -> "an integer"."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(describe_type(a, plural) for a in args)
    if origin is list or annotation is list:
        args = typing.get_args(annotation)
        return "lists" if plural else f"a list of {describe_type(args[0], plural=True)}" if args else "a list"
    if origin is dict:
        annotation = dict
    if annotation in _NOUNS:
        return _NOUNS[annotation][1 if plural else 0]
    return _type_name(annotation)


def _example(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is list or annotation is list:
        args = typing.get_args(annotation)
        item = args[0] if args else None
        sample = {int: "[64, 128]", float: "[0.1, 0.2]", str: '["a", "b"]'}.get(item, "[...]")
        return f"{describe_type(annotation)} such as {sample}"
    if origin is dict:
        annotation = dict
    return _EXAMPLES.get(annotation, describe_type(annotation))


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Coerce TOML values to the annotated type, or raise a UserError naming the key and the expected type."""
    if not _matches(value, annotation):
        got = type(value).__name__
        if isinstance(value, list):
            odd = sorted({type(v).__name__ for v in value})
            got = f"a list of {', '.join(odd)}" if odd else "an empty list"
        raise UserError(
            f"{where} = {value!r} has the wrong type ({got}); it must be {describe_type(annotation)}",
            f"give {where} {_example(annotation)}",
        )
    if annotation is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types.

    Args:
        cls: The dataclass.
        raw: Its values as read from TOML (or typed on the command line).
        where: How errors name the table: "config" for the top level, "train", "data", "model option".
    """
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table, got {type(raw).__name__}", f"write [{where}] as a TOML table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        import difflib

        hints = [difflib.get_close_matches(k, known, n=1) for k in unknown]
        hint = "; ".join(f"'{k}' -> did you mean '{h[0]}'?" for k, h in zip(unknown, hints, strict=True) if h)
        what = f"unknown {where}(s)" if " " in where else f"unknown key(s) in {where}"
        raise UserError(
            f"{what}: {', '.join(unknown)}",
            (hint + "; " if hint else "") + f"known keys: {', '.join(known)}",
        )
    values = {}
    hints = typing.get_type_hints(cls)

    def name_of(key: str) -> str:
        if where == "config":
            return key
        return f"{where} {key}" if " " in where else f"{where}.{key}"

    for name, value in raw.items():
        annotation = hints[name]
        item = (typing.get_args(annotation) or (None,))[0] if typing.get_origin(annotation) is list else None
        optional = [a for a in typing.get_args(annotation) if a is not type(None)]
        if (typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(optional) == 1
                and dataclasses.is_dataclass(optional[0]) and value is not None):
            annotation = optional[0]  # an optional table, e.g. a grid's [tune]
        if dataclasses.is_dataclass(annotation):  # a table ([train], [data]) is named by its key alone
            values[name] = from_dict(annotation, value, name)
        elif dataclasses.is_dataclass(item):  # an array of tables, e.g. a grid's [[models]]
            if not isinstance(value, list):
                raise UserError(f"{name_of(name)} must be an array of tables, got {type(value).__name__}",
                                f"write [[{name}]] blocks")
            values[name] = [from_dict(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
        else:
            values[name] = _check_type(value, annotation, name_of(name))
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid {where}: {err}", "check the values in the config") from err


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist", "give the path of an existing TOML file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"'{path}' is not a TOML file: it is not UTF-8 text (byte {err.start})",
                        "give a TOML text file (a grid file or a run's config.toml)") from err
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"'{path}' is not valid TOML: {err}", "fix the syntax at the position named") from err


# How a grid seeds its replicates (results.csv records it per run; the verdict analyses each design its own way).
SCHEME_PER_BUDGET = "per-budget"  # each (budget, replicate) its own data-order and init seeds, the same for every model
SCHEME_SHARED = "shared"  # a replicate's seed at every budget (grids of tgbench <= 0.2)
SEED_SCHEMES = (SCHEME_PER_BUDGET, SCHEME_SHARED)

GRID_FILE = "grid.toml"  # a grid directory's copy of its grid, as resolved when it was trained


def read_grid_file(grid_dir: Path) -> dict[str, Any]:
    """The grid.toml of a grid directory as a dict ({} when it is missing or unreadable: a results.csv copied on
    its own, a directory of pooled grids)."""
    try:
        return tomllib.loads((Path(grid_dir) / GRID_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def to_toml(settings: dict[str, Any]) -> str:
    """TOML text of a nested dict; None values are dropped (TOML has no null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return tomli_w.dumps(clean(settings))


GRID_CONTROLLED_TRAIN_KEYS = ("tokens", "seed", "data_seed", "init_seed")  # a grid sets these per run


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `raw["a"]["b"] = value` for `dotted = "a.b"`, creating tables on the way (a `--set` on a file)."""
    *tables, key = dotted.split(".")
    node = raw
    for name in tables:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: '{name}' is not a table", f"set {name} itself, e.g. --set {name}=...")
        node = child
    node[key] = value


def apply_run_settings(config: RunConfig, assignments: dict[str, Any]) -> RunConfig:
    """A run config with `--set` assignments applied: `train.X` / `data.X` go to those tables (checked like a
    config file's keys), any other key is a model option.

    Args:
        config: The run's settings so far.
        assignments: Parsed `--set KEY=VALUE` pairs, e.g. {"train.warmup_fraction": 0.05, "detach_memory": True}.
    """
    raw = config.to_dict()
    for key, value in assignments.items():
        table, _, name = key.partition(".")
        if table in ("train", "data") and name:
            set_path(raw, key, value)
        else:
            raw["model_options"][key.removeprefix("model.")] = value
    return RunConfig.from_dict(raw)


def load_run_config(path: Path) -> RunConfig:
    raw = read_toml(path)
    raw = {k: v for k, v in raw.items() if k != "meta"}  # provenance written beside the settings
    return RunConfig.from_dict(raw)
