"""What the commands share: value parsers, the data and logger flags, and flags derived from config dataclasses.

A flag that sets a config field is derived from that field (`field_flags`): its name, type, default and help
come from the dataclass (`tgbench.plan.options`), so a default is written once, in the config. Every help
text passes through `help_text`, which escapes Rich markup: `[tune]` in a help string prints as written.

This module imports no torch and no model code, so `tgbench --help` starts in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape

from tgbench.core.errors import UserError
from tgbench.plan.config import DataConfig
from tgbench.plan.options import Option, config_options


def help_text(text: str) -> str:
    """Help shown literally: Rich would read `[tune]` as a markup tag and drop it."""
    return escape(text)


def token_count(value: str | int) -> int:
    """A whole number of tokens written as 100000, 100_000, 1e5, 100k or 1.5M (the parser of --tokens)."""
    if isinstance(value, int):
        return value
    text = str(value).strip().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:].lower(), 1)
    try:
        parsed = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of tokens (write 100000, 1e5 or 100k)") from None
    if not parsed.is_integer():
        raise typer.BadParameter(f"{value!r} is not a whole number of tokens")
    return int(parsed)


def parse_value(text: str) -> Any:
    """A TOML scalar (`true`, `3`, `0.5`, `"x"`), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """`--set KEY=VALUE` items as {key: parsed value}."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}' is not KEY=VALUE", "write it as --set detach_memory=true")
        out[key.strip()] = parse_value(value.strip())
    return out


# -- flags derived from config fields ------------------------------------------------------------------
@dataclass(frozen=True)
class FieldFlag:
    """A command-line flag that sets one config field.

    Attributes:
        field: The field's name (also the keyword the command function receives).
        flag: The flag as typed ("--batch-tokens"; "--compile/--no-compile" for a boolean).
        parser: A parser for the value (--tokens 100k), or None for Typer's own.
        metavar: Shown instead of the type.
    """

    field: str
    flag: str = ""
    parser: Callable[[str], Any] | None = None
    metavar: str | None = None


def _default_text(option: Option) -> str:
    default = option.default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default and not 1e-3 <= abs(default) < 1e6:
        mantissa, exponent = f"{default:e}".split("e")  # 2.5e-4 rather than 0.00025
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f'"{default}"' if default == "" else str(default)


def field_parameter(option: Option, flag: FieldFlag) -> inspect.Parameter:
    """One keyword parameter of a command: the field's flag with its help and default, None when not given."""
    python_type = {"int": int, "float": float, "str": str, "bool": bool}.get(option.type.split(" ")[0], str)
    name = flag.flag or "--" + option.name.replace("_", "-")
    help_ = help_text(option.help[:1].upper() + option.help[1:]) if option.help else None
    info = typer.Option(name, help=help_, show_default=_default_text(option), parser=flag.parser,
                        metavar=flag.metavar)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[python_type | None, info])


def field_flags(config_class: type, flags: Sequence[FieldFlag]) -> list[inspect.Parameter]:
    """The flags that set `flags`' fields of `config_class`, in the given order."""
    options = {o.name: o for o in config_options(config_class)}
    return [field_parameter(options[f.field], f) for f in flags]


def with_parameters(function: Callable, parameters: Sequence[inspect.Parameter]) -> Callable:
    """`function` with `parameters` added to its signature (Typer builds the command's flags from it)."""
    signature = inspect.signature(function, eval_str=True)  # Typer reads a set __signature__ as it is
    own = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    function.__signature__ = signature.replace(parameters=[*own, *parameters])
    function.__annotations__ = {**function.__annotations__, **{p.name: p.annotation for p in parameters}}
    return function


# -- the data and logger flags of several commands ------------------------------------------------------
DATA_FLAGS = (FieldFlag("corpus"), FieldFlag("tokenizer"), FieldFlag("splitter"))


def data_flags() -> list[inspect.Parameter]:
    """--corpus, --tokenizer, --splitter: DataConfig's fields."""
    return field_flags(DataConfig, DATA_FLAGS)


def with_data_flags(base: DataConfig, values: dict[str, Any]) -> DataConfig:
    """`base` with the data flags that were given (`values` holds every keyword of the command)."""
    updates = {f.field: values[f.field] for f in DATA_FLAGS if values.get(f.field)}
    return dataclasses.replace(base, **updates)


LoggerOpt = Annotated[list[str] | None, typer.Option(
    "--logger", help="Also log to tensorboard (event files in the run dir) or wandb (offline unless WANDB_MODE "
                     "is set); repeatable. metrics.jsonl (csv) is always written.", show_default="csv")]
