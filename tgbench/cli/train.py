"""`tgbench train`: one run, with its flags derived from the run's config dataclasses.

Each setting flag sets one field: --model of `RunConfig`, --tokens ... --compile of `TrainConfig`, --corpus,
--tokenizer and --splitter of `DataConfig`, and --width, --layers, --heads and --context of the adapter's
options (help and defaults from GPT-2's config, the default adapter). Any other setting is a `--set KEY=VALUE`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tgbench.cli.flags import (
    FieldFlag,
    LoggerOpt,
    data_flags,
    field_flags,
    field_parameter,
    parse_assignments,
    token_count,
    with_data_flags,
    with_parameters,
)
from tgbench.plan.config import RunConfig, TrainConfig
from tgbench.plan.options import source_options

console = Console()

TRAIN_FLAGS = (FieldFlag("tokens", parser=token_count, metavar="<int>"), FieldFlag("epochs"),
               FieldFlag("batch_tokens", parser=token_count, metavar="<int>"), FieldFlag("lr"), FieldFlag("seed"),
               FieldFlag("device"), FieldFlag("dtype"), FieldFlag("grad_accumulation"),
               FieldFlag("compile", "--compile/--no-compile"))
MODEL_FLAGS = ("width", "layers", "heads", "context")  # options most adapters have; any other: --set NAME=VALUE
DEFAULT_ADAPTER_CONFIG = ("tgbench.models.gpt2", "GPT2Config")  # RunConfig.model's default adapter


def model_flags() -> list:
    """--width, --layers, --heads, --context with the default adapter's defaults and help (read from its file)."""
    options = source_options(*DEFAULT_ADAPTER_CONFIG)
    return [field_parameter(options[name], FieldFlag(name)) for name in MODEL_FLAGS]


def train_command(
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/single"),
    config: Annotated[Path | None, typer.Option(
        help="A run config TOML (e.g. a run's config.toml); options given here override it.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="KEY=VALUE (repeatable): a model option (detach_memory=true), or a training or data "
                      "setting (train.warmup_fraction=0.05, data.splitter=blingfire).")] = None,
    resume: Annotated[str, typer.Option(help="auto (resume / skip if DONE) | never (start over)")] = "auto",
    progress: Annotated[bool, typer.Option(
        help="Show progress: a bar on a terminal, timestamped lines when stdout is a file.")] = True,
    logger: LoggerOpt = None,
    **settings: Any,
) -> None:
    """Train one model and write its run directory."""
    from tgbench.plan.config import apply_run_settings, load_run_config
    from tgbench.training.trainer import train

    run_config = load_run_config(config) if config else RunConfig()
    if settings.get("model") is not None:
        run_config.model = settings["model"]
    options = dict(run_config.model_options)
    options.update({key: settings[key] for key in MODEL_FLAGS if settings.get(key) is not None})
    train_updates = {f.field: settings[f.field] for f in TRAIN_FLAGS if settings.get(f.field) is not None}
    run_config = dataclasses.replace(run_config, model_options=options,
                                     data=with_data_flags(run_config.data, settings),
                                     train=dataclasses.replace(run_config.train, **train_updates))
    run_config = apply_run_settings(run_config, parse_assignments(set_))
    result = train(run_config, out, resume=resume, progress=progress, loggers=logger or ())
    if result.status == "skipped":
        console.print(f"{out} is already DONE with these settings (use --resume never to retrain)", soft_wrap=True)
    ppl = math.exp(result.best_val_loss) if math.isfinite(result.best_val_loss) else float("nan")
    console.print(f"[bold]lexical validation perplexity[/bold] {ppl:.2f} (loss {result.best_val_loss:.4f} nats/token)")
    console.print(f"run directory: {result.run_dir}")


with_parameters(train_command, [*field_flags(RunConfig, [FieldFlag("model")]), *model_flags(),
                                *field_flags(TrainConfig, TRAIN_FLAGS), *data_flags()])
