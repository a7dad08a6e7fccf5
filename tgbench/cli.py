"""The `tgbench` command line: thin Typer functions over the dataclass configs.

Errors a user can cause raise `UserError`; `main` prints them as one message with the fix and
exits with status 2 (no traceback unless `--debug`).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tgbench.console import print_table
from tgbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and compare sentence-level language models (Thought Gestalt vs GPT-2).")
data_app = typer.Typer(no_args_is_help=True, help="Inspect corpora.")
app.add_typer(data_app, name="data")
console = Console()
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        import tgbench

        console.print(f"tgbench {tgbench.__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also after the command).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug


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
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}' is not KEY=VALUE", "write it as --set detach_memory=true")
        out[key.strip()] = parse_value(value.strip())
    return out


CorpusOpt = Annotated[str | None, typer.Option(
    "--corpus", help="embedded | kjv | PATH | hf:NAME[:CONFIG]", show_default="embedded")]
TokenizerOpt = Annotated[str | None, typer.Option(
    "--tokenizer", help="gpt2 | bpe-N (trained on the train split)", show_default="gpt2")]
SplitterOpt = Annotated[str | None, typer.Option("--splitter", help="syntok | blingfire | sat", show_default="syntok")]
LoggerOpt = Annotated[list[str] | None, typer.Option(
    "--logger", help="Also log to tensorboard (event files in the run dir) or wandb (offline unless WANDB_MODE "
                     "is set); repeatable. metrics.jsonl (csv) is always written.", show_default="csv")]


def _data_config(base, corpus, tokenizer, splitter):
    import dataclasses

    updates = {k: v for k, v in (("corpus", corpus), ("tokenizer", tokenizer), ("splitter", splitter)) if v}
    return dataclasses.replace(base, **updates)


@app.command()
def train(
    model: Annotated[str | None, typer.Option(
        help="Adapter name, package.module:Class or path/to/file.py:Class.", show_default="gpt2")] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/single"),
    config: Annotated[Path | None, typer.Option(
        help="A run config TOML (e.g. a run's config.toml); options given here override it.")] = None,
    width: Annotated[int | None, typer.Option(help="Model width d.", show_default="768")] = None,
    layers: Annotated[int | None, typer.Option(help="Number of blocks.", show_default="12")] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads.", show_default="0 = ceil(width / 64)")] = None,
    context: Annotated[int | None, typer.Option(
        help="Context length (GPT-2 style adapters).", show_default="1024")] = None,
    tokens: Annotated[int | None, typer.Option(
        parser=token_count, metavar="<int>", help="Training-token budget D (lexical tokens): 300000, 3e5 or 300k.",
        show_default="0 = the whole training split")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs over the subset.", show_default="1")] = None,
    batch_tokens: Annotated[int | None, typer.Option(
        parser=token_count, metavar="<int>", help="Lexical tokens per step.", show_default="4096")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.", show_default="2.5e-4")] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds data order, init and dropout.", show_default="0")] = None,
    corpus: CorpusOpt = None,
    tokenizer: TokenizerOpt = None,
    splitter: SplitterOpt = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N", show_default="auto")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="auto (bf16 autocast on CUDA) | float32 | bfloat16", show_default="auto")] = None,
    grad_accumulation: Annotated[int | None, typer.Option(
        help="Batches per optimiser step per process (under torchrun the step takes world size x this).",
        show_default="1")] = None,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the training step.", show_default="no-compile")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="KEY=VALUE (repeatable): a model option (detach_memory=true), or a training or data "
                      "setting (train.warmup_fraction=0.05, data.splitter=blingfire).")] = None,
    resume: Annotated[str, typer.Option(help="auto (resume / skip if DONE) | never (start over)")] = "auto",
    progress: Annotated[bool, typer.Option(
        help="Show progress: a bar on a terminal, timestamped lines when stdout is a file.")] = True,
    logger: LoggerOpt = None,
) -> None:
    """Train one model and write its run directory."""
    import dataclasses

    from tgbench.config import RunConfig, apply_run_settings, load_run_config
    from tgbench.train import train as run_training

    run_config = load_run_config(config) if config else RunConfig()
    if model is not None:
        run_config.model = model
    options = dict(run_config.model_options)
    for key, value in (("width", width), ("layers", layers), ("heads", heads), ("context", context)):
        if value is not None:
            options[key] = value
    train_updates = {k: v for k, v in dict(tokens=tokens, epochs=epochs, batch_tokens=batch_tokens, lr=lr,
                                             seed=seed, device=device, dtype=dtype,
                                             grad_accumulation=grad_accumulation, compile=compile_).items()
                     if v is not None}
    run_config = dataclasses.replace(
        run_config,
        model_options=options,
        data=_data_config(run_config.data, corpus, tokenizer, splitter),
        train=dataclasses.replace(run_config.train, **train_updates),
    )
    run_config = apply_run_settings(run_config, parse_assignments(set_))
    result = run_training(run_config, out, resume=resume, progress=progress, loggers=logger or ())
    if result.status == "skipped":
        console.print(f"{out} is already DONE with these settings (use --resume never to retrain)", soft_wrap=True)
    import math

    ppl = math.exp(result.best_val_loss) if math.isfinite(result.best_val_loss) else float("nan")
    console.print(f"[bold]lexical validation perplexity[/bold] {ppl:.2f} (loss {result.best_val_loss:.4f} nats/token)")
    console.print(f"run directory: {result.run_dir}")


@data_app.command("stats")
def data_stats(
    source: Annotated[str, typer.Argument(help="embedded | kjv | PATH | hf:NAME[:CONFIG]")] = "embedded",
    tokenizer: TokenizerOpt = None,
    splitter: SplitterOpt = None,
) -> None:
    """Documents, sentences, tokens and splitting events per split, and how long documents and sentences are."""
    from tgbench.data import DataConfig, corpus_stats, document_shape, load_corpus, mean_sentence_tokens
    from tgbench.data.corpus import DROP_RULE_CAP

    corpus = load_corpus(_data_config(DataConfig(), source, tokenizer, splitter))
    stats = corpus_stats(corpus)
    table = Table(title=f"{source} ({corpus.tokenizer.name} tokens, {corpus.config.splitter} sentences)")
    columns = {"documents": "docs", "sentences": "sentences", "lexical_tokens": "tokens",
               "mean_sentence_tokens": "mean len", "sentences_resplit": "re-split", "fragments_merged": "merged",
               "documents_dropped": "dropped", "replaced_bytes": "bad bytes"}
    table.add_column("split")
    for header in columns.values():
        table.add_column(header, justify="right")
    for split, figures in stats.items():
        row = [getattr(figures, c) for c in columns]
        table.add_row(split, *[f"{v:.1f}" if isinstance(v, float) else f"{v:,}" for v in row])
    table.caption = ("re-split: sentences over the token cap cut into fragments; merged: fragments under the "
                     "minimum joined to a neighbour; dropped: documents with fewer than "
                     f"{corpus.config.min_document_sentences} sentences (counted after a {DROP_RULE_CAP}-token cap)")
    print_table(table, console)
    shape = Table(title="document shape: sentences per document, tokens per sentence")
    shape.add_column("split")
    for header in ("docs", "sent/doc mean", "median", "p90", "max", "tok/sent mean", "median", "p90"):
        shape.add_column(header, justify="right")
    for split in stats:
        s = document_shape(corpus.splits[split])
        shape.add_row(split, f"{s.documents:,}", *[f"{v:.1f}" for v in (s.sentences_mean, s.sentences_median,
                                                                         s.sentences_p90)],
                      f"{s.sentences_max:,}", *[f"{v:.1f}" for v in (s.tokens_mean, s.tokens_median, s.tokens_p90)])
    from tgbench.models.tg import TGConfig

    tg = TGConfig()
    shape.caption = (f"a sentence memory is used only from a document's second sentence on; TG's default memory holds "
                     f"{tg.memory_slots} sentences ({tg.memory_slots} x {mean_sentence_tokens(corpus):.1f} = "
                     f"{tg.memory_slots * mean_sentence_tokens(corpus):,.0f} tokens of this corpus) and trains on "
                     f"streams of {tg.stream_start}")
    print_table(shape, console)
    console.print(f"cache key {corpus.key}")


@app.command()
def adapters(
    options: Annotated[str | None, typer.Option(
        "--options", metavar="NAME", help="Every option of adapter NAME (a name or a reference) with its type, "
                                          "default and help.")] = None,
) -> None:
    """List every adapter with its description and origin (or one adapter's options)."""
    from tgbench.registry import available, get_adapter_class

    if options is not None:
        _adapter_options(options)
        return

    table = Table(title="adapters")
    for column in ("name", "description", "origin", "target"):
        table.add_column(column)
    for name, entry in available().items():
        try:
            description = get_adapter_class(name).description
        except Exception as err:  # a broken third-party adapter must not hide the others
            description = f"[red]fails to load: {err}"
        table.add_row(name, description, entry.origin, entry.target)
    print_table(table, console)


def _adapter_options(name: str) -> None:
    from rich.markup import escape

    from tgbench.options import adapter_options

    cls, found = adapter_options(name)
    config_class = getattr(cls, "config_class", None)
    title = f"options of {cls.name or name} ({getattr(config_class, '__name__', '?')})"
    from rich import box

    # Names, types and defaults are never cut; the help column wraps to what the terminal (or 80 columns) leaves.
    table = Table(title=title, caption="set with --set NAME=VALUE or a grid's options = {NAME = VALUE}",
                  box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
    table.add_column("option", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("default", no_wrap=True)
    table.add_column("help", overflow="fold", ratio=1)
    for option in found:
        default = '""' if option.default == "" else repr(option.default) if isinstance(option.default, str) \
            else str(option.default).lower() if isinstance(option.default, bool) else str(option.default)
        table.add_row(option.name, escape(option.type), escape(default), escape(option.help))
    console.print(table)
    if not found:
        console.print(f"adapter '{name}' declares no config dataclass: its options are its constructor's keywords")


@app.command()
def tasks() -> None:
    """List every tgbench task with its metrics and origin (any lm-eval task name or YAML works too)."""
    from tgbench.registry import TASK_ALIASES, available_tasks, get_task

    table = Table(title="tasks (and any lm-eval task name or YAML path)")
    for column in ("name", "aliases", "description", "metrics", "origin", "target"):
        table.add_column(column)
    for name, entry in available_tasks().items():
        aliases = ", ".join(a for a, n in TASK_ALIASES.items() if n == name)
        try:
            task = get_task(name)
            description = task.description
            metrics = ", ".join(f"{m.name} ({'+' if m.higher_is_better else '-'})" for m in task.metrics
                                if m.higher_is_better is not None)
        except Exception as err:  # a broken third-party task must not hide the others
            description, metrics = f"[red]fails to load: {err}", ""
        table.add_row(name, aliases, description, metrics, entry.origin, entry.target)
    print_table(table, console)
    console.print("+ higher is better, - lower is better; how to add a task: docs/tasks.md", soft_wrap=True)


@app.command("train-grid")
def train_grid(
    config: Annotated[Path | None, typer.Argument(help="Grid TOML file.")] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped grid: smoke, demo, paper-data, ...")] = None,
    out: Annotated[Path | None, typer.Option(help="Grid directory.", show_default="runs/<grid name>")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the runs and a compute estimate.")] = False,
    executor: Annotated[str, typer.Option(help="local | slurm | slurm-local")] = "local",
    progress: Annotated[bool, typer.Option(
        help="Show the live table on a terminal; a timestamped line per run start/finish when stdout is a file.")
    ] = True,
    logger: LoggerOpt = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Grid setting KEY=VALUE over the file (repeatable), by dotted key: "
                      "train.warmup_fraction=0.05, data.tokenizer=bpe-4096, seeds=[0,1]; recorded in grid.toml "
                      "and every run's config.toml.")] = None,
    jobs: Annotated[int | None, typer.Option(
        help="Runs at once on this machine, each in its own process: on CPU each gets cores / N threads, with "
             "CUDA each its own GPU.", show_default="the grid's train.jobs; 0 = the GPU count, else 1")] = None,
) -> None:
    """Train every run of a grid (skips DONE runs, resumes interrupted ones, reruns failed ones)."""
    from tgbench.grid import dry_run_table, fmt_duration, fmt_flops, load_grid, run_grid

    grid = load_grid(config, preset, settings=parse_assignments(set_))
    if dry_run:
        import torch

        from tgbench.train import CPU_FLOPS_PER_CORE

        rows = dry_run_table(grid)
        sweep = [r for r in rows if r["stage"] == "tune"]
        title = f"grid '{grid.name}': {len(rows) - len(sweep)} runs" + (
            f" after a tuning sweep of {len(sweep)}" if sweep else "")
        table = Table(title=title)
        for column in ("stage", "run_id", "n_params", "tokens", "epochs", "lr", "compute", "CPU time"):
            table.add_column(column, justify="left" if column in ("stage", "run_id") else "right")
        for row in rows:
            table.add_row(row["stage"], row["run_id"], f"{row['n_params']:,}", f"{row['tokens']:,}",
                          str(row["epochs"]), row["lr"], fmt_flops(row["flops"]), fmt_duration(row["cpu_seconds"]))
        print_table(table, console)
        total = sum(r["flops"] for r in rows)
        tuning = sum(r["flops"] for r in sweep)
        console.print(f"total compute ~{fmt_flops(total)} (6 N D, N with embeddings, attention ignored)"
                      + (f", of which the tuning sweep ~{fmt_flops(tuning)} ({tuning / total:.0%})" if sweep else "")
                      + f"; on this machine's CPU ~{fmt_duration(sum(r['cpu_seconds'] for r in rows))} of training "
                      f"one run at a time, at {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s per thread x "
                      f"{torch.get_num_threads()} threads (evaluation not included)", soft_wrap=True)
        if torch.cuda.is_available():
            console.print(f"a GPU ({torch.cuda.get_device_name(0)}) is available: on it the grid runs far "
                          "faster; its time is not estimated", soft_wrap=True)
        _print_parity(grid)
        return
    target = out or Path("runs") / grid.name
    frame = run_grid(grid, target, executor=executor, progress=progress, jobs=jobs, loggers=logger or ())
    counts = frame["status"].value_counts().to_dict()
    console.print(f"grid '{grid.name}' in {target}: {counts}; results: {target / 'results.csv'}")
    if counts.get("failed"):
        raise typer.Exit(1)


def _print_parity(grid) -> None:
    """Context-parity warnings of a grid (a GPT-2 that sees less history than TG's memory), or why none were checked."""
    from rich.markup import escape

    from tgbench.grid import parity_notes

    for kind, line in parity_notes(grid):
        prefix = {"warning": "[yellow]warning:[/yellow] ", "note": "note: "}.get(kind, "")
        console.print(prefix + escape(line), soft_wrap=True)


@app.command()
def tune(
    config: Annotated[Path | None, typer.Argument(help="Grid TOML file.")] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped grid: demo, cpu-study, ...")] = None,
    out: Annotated[Path | None, typer.Option(help="Grid directory.", show_default="runs/<grid name>")] = None,
    executor: Annotated[str, typer.Option(help="local | slurm | slurm-local")] = "local",
    jobs: Annotated[int | None, typer.Option(
        help="Sweep runs at once on this machine.", show_default="the grid's train.jobs")] = None,
    progress: Annotated[bool, typer.Option(help="Show the live table.")] = True,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Grid setting KEY=VALUE over the file (repeatable), e.g. tune.lrs=[1e-3,2e-3,4e-3].")] = None,
) -> None:
    """Train a grid's learning-rate sweep and write tune.json (a grid without [tune] gets its LR x 1/4 .. 4).

    Every model (every width when the grid has several; every budget with per_budget = true) trains at every
    LR and seed of the sweep; the chosen LR is the lowest mean validation loss. Resumable: DONE runs are skipped.
    """
    from tgbench.grid import load_grid
    from tgbench.tune import run_tune

    grid = load_grid(config, preset, settings=parse_assignments(set_))
    target = out or Path("runs") / grid.name
    result = run_tune(grid, target, executor=executor, progress=progress, jobs=jobs)
    table = Table(title=f"learning rates chosen for '{grid.name}'")
    for column in ("model", "width", "D", "chosen LR", "mean val loss"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for choice in result.choices:
        best = next(p for p in choice.curve() if p["lr"] == choice.chosen)
        edge = {"low": " (smallest tried)", "high": " (largest tried)"}.get(choice.edge, "")
        table.add_row(choice.group.label, str(choice.group.width), f"{choice.group.budget:,}",
                      f"{choice.chosen:.3g}{edge}", f"{best['mean']:.4f}")
    print_table(table, console)
    console.print(f"tune.json: {target / 'tune.json'}", soft_wrap=True)
    if grid.tune is None:
        console.print("this grid has no [tune] table: train-grid trains at its own LR unless you add one",
                      soft_wrap=True, markup=False)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="Grid or run TOML file to check.")]) -> None:
    """Check a grid (or run) file without running it; names any bad key or value.

    Checks every key and type, every model option against its adapter, the splitter and tokenizer
    names and that a corpus path exists (a hub corpus is not contacted). Warns when a GPT-2 of the grid has
    a shorter context than TG's memory span on the corpus (read from the corpus cache).
    """
    from tgbench.config import load_run_config, read_toml
    from tgbench.grid import check_data, expand, load_grid

    raw = read_toml(config)
    if "models" in raw:
        grid = load_grid(config)
        check_data(grid.data)
        sweep = ""
        if grid.tune is not None:
            from tgbench.tune import sweep_specs

            sweep = f" after a tuning sweep of {len(sweep_specs(grid))} runs"
        console.print(f"[green]ok[/green]: grid '{grid.name}' with {len(expand(grid))} runs{sweep}")
        _print_parity(grid)
    else:
        from tgbench.registry import resolved

        run_config = resolved(load_run_config(config))
        check_data(run_config.data)
        console.print(f"[green]ok[/green]: run config for '{run_config.model}'")


@app.command()
def fit(
    grid_dir: Annotated[Path, typer.Argument(help="Grid directory (holds results.csv or run dirs).")],
    pair: Annotated[list[str] | None, typer.Option(
        help="A,B: how much more data/params B needs to reach A's loss; repeat for several pairs "
             "(default: the grid file's reference against each of its baselines).")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples per fitted group (0 for no intervals).",
                                           show_default=True)] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.", show_default=True)] = 0,
    form: Annotated[str, typer.Option(help="Fit form the report draws (kaplan, saturating or a registered one).",
                                      show_default=True)] = "kaplan",
) -> None:
    """Fit scaling laws, multipliers and the verdict of every pair; writes fits.json and prints them."""
    import json

    from tgbench.results import check_grid_dir, refresh_results
    from tgbench.tasks.scaling import check_resamples, summary_lines, write_fits

    check_resamples(resamples)
    pairs = None
    if pair:
        pairs = []
        for text in pair:
            parts = [p.strip() for p in text.split(",")]
            if len(parts) != 2 or not all(parts):
                raise UserError(f"--pair {text!r} is not two labels A,B", "write it as --pair tg,gpt2")
            pairs.append(tuple(parts))
    check_grid_dir(grid_dir, "fit")
    refresh_results(grid_dir)  # a directory holding only a results.csv (a committed report's) is fitted as it is
    _check_csv(grid_dir / "results.csv")
    compared = None
    if pairs is None and (grid_dir / "results.csv").is_file():
        import pandas as pd

        from tgbench.comparison import read_grid_comparison

        labels = pd.read_csv(grid_dir / "results.csv", usecols=["label"], dtype=str)["label"].dropna()
        compared = read_grid_comparison(grid_dir, labels)
    try:
        path = write_fits(grid_dir, pairs=pairs, n_resamples=resamples, seed=seed, form=form,
                          reference=compared.reference if compared else None,
                          baselines=list(compared.baselines) if compared else None)
    except ValueError as err:
        raise UserError(f"cannot fit {grid_dir}: {err}", "check results.csv for missing or bad losses") from err
    fits = json.loads(path.read_text())
    for line in summary_lines(fits):
        console.print(line, soft_wrap=True, markup=False)
    compared = ", ".join(f"{a} vs {b}" for a, b in fits.get("pairs", [])) or "no pairs"
    console.print(f"fits written to {path} ({compared})", soft_wrap=True, markup=False)


def _check_csv(path: Path) -> None:
    """A results table that cannot be read is an error naming it (not a pandas traceback)."""
    import pandas as pd

    try:
        pd.read_csv(path, nrows=1)
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"'{path}' is not a results table ({type(err).__name__}: {_one_line(err)})",
                        "delete it and rerun `tgbench fit` beside the run directories, which rebuilds it") from err


@app.command()
def report(
    grid_dirs: Annotated[list[Path], typer.Argument(
        help="Grid directory (grid.toml, results.csv, fits.json, runs); several: one report over all of them.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="HTML file to write (default: GRID_DIR/report.html, or OUT/report.html).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="With several grids: the comparison directory (pooled results.csv, fits.json, report).",
        show_default="compare-A-B beside the first grid")] = None,
    by_grid: Annotated[bool, typer.Option(
        "--by-grid", help="With several grids: keep each grid's runs under their own labels (tg@A, tg@B) "
                          "instead of pooling them by label.")] = False,
    resamples: Annotated[int, typer.Option(help="With several grids: bootstrap resamples of the pooled fits.",
                                           show_default=True)] = 200,
    logger: Annotated[list[str] | None, typer.Option(
        "--logger", help="wandb: also log the report (with results.csv and fits.json) as a W&B artifact.")] = None,
) -> None:
    """Render a grid's results as one self-contained HTML file (verdict, plots, tables, provenance).

    Given several grid directories, their runs are pooled by label (each keeps its grid of origin) into one
    comparison directory, fitted together and reported as one grid; runs whose data or tokenizer settings
    differ are never pooled under one label (the error names the setting; --by-grid keeps them apart).
    """
    from tgbench.tracking import check_loggers

    loggers = check_loggers(logger or ())
    if len(grid_dirs) == 1:
        from tgbench.report import write_report

        path, where = write_report(grid_dirs[0], output), grid_dirs[0]
    else:
        from tgbench.compare import write_comparison
        from tgbench.report import render_report
        from tgbench.runs import write_text
        from tgbench.tasks.scaling import check_resamples

        check_resamples(resamples)
        files = write_comparison(grid_dirs, out, by_grid=by_grid, resamples=resamples)
        path, where = Path(output) if output is not None else files.path / "report.html", files.path
        write_text(path, render_report(files))
        console.print(f"{len(grid_dirs)} grids pooled in {files.path} (results.csv, fits.json)", soft_wrap=True)
    console.print(f"report written to {path}", soft_wrap=True)
    if "wandb" in loggers:
        from tgbench.tracking import log_report_to_wandb

        log_report_to_wandb(path, where)


app.command("compare", help="One report over several grid directories (the same as `tgbench report A B ...`).")(
    report)


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="Where the runs go (default: runs/<preset>).")] = None,
    preset: Annotated[str, typer.Option(help="The grid to run end to end: demo (~13 min on 2 cores) or "
                                             "cpu-study (~42 min), tuning sweeps included; any preset works.",
                                        show_default=True)] = "demo",
) -> None:
    """The default job on the embedded corpus: train the grid, evaluate, fit, report."""
    from tgbench.demo import run_demo

    run_demo(out or Path("runs") / preset, preset=preset)


def _register_plugins() -> None:
    """Commands that live in their own modules (imported lazily inside each)."""
    from tgbench.cli_eval import eval_command, export_command

    app.command("eval", help="Evaluate runs: ppl, reversal, or any lm-eval task.")(eval_command)
    app.command("export", help="Write a GPT-2 run as a Hugging Face checkpoint.")(export_command)
    from tgbench.bench import bench_command

    app.command("bench", help="Throughput and memory benchmarks (ratios measured side by side).")(bench_command)
    from tgbench.sample import sample_command

    app.command("sample", help="Generate text from a run's checkpoint (sentence by sentence for TG).")(sample_command)


_register_plugins()


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts, exits) of click and of the click copy newer Typer versions vendor."""
    import click

    def family(name: str, *known: type) -> tuple[type, ...]:
        typer_own = [c for c in type.mro(typer.BadParameter) if c.__name__ == name]
        return tuple({*known, *typer_own}) if name == "ClickException" else known

    return (family("ClickException", click.ClickException),
            (click.exceptions.Abort, typer.Abort), (click.exceptions.Exit, typer.Exit))


def _given_value(param) -> str | None:
    """The command-line value given for a click parameter, so an error can name it."""
    if param is None:
        return None
    args = sys.argv[1:]
    given = None
    for i, arg in enumerate(args):  # the last occurrence wins, as in click
        for opt in getattr(param, "opts", ()):
            if arg == opt and i + 1 < len(args):
                given = args[i + 1]
            elif arg.startswith(opt + "="):
                given = arg[len(opt) + 1 :]
    return given


def _take_debug_flag() -> None:
    """`--debug` anywhere before a `--` (`tgbench train ... --debug` as well as `tgbench --debug train ...`)."""
    args = sys.argv[1:]
    end = args.index("--") if "--" in args else len(args)
    if "--debug" in args[:end]:
        _state["debug"] = True
        sys.argv = [sys.argv[0], *[a for a in args[:end] if a != "--debug"], *args[end:]]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or "(no message)"


def main() -> None:
    """Console entry point: run the app, turning user errors into one clear message."""
    import errno

    from tgbench.console import print_error

    usage_errors, aborts, exits = _click_errors()
    _take_debug_flag()
    try:
        code = app(standalone_mode=False)  # without standalone mode, click returns a typer.Exit's code
    except UserError as err:
        if _state["debug"]:
            raise
        print_error(err.message, err.fix)
        sys.exit(2)
    except aborts:
        sys.exit(130)
    except exits as err:
        sys.exit(err.exit_code)
    except usage_errors as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            err.show()
            sys.exit(0)
        context = getattr(err, "ctx", None)
        command = context.command_path if context is not None else "tgbench"
        message = err.format_message()
        value = _given_value(getattr(err, "param", None))
        if value is not None and repr(value) not in message:
            message = f"{message} (got {value!r})"
        print_error(message, f"see `{command} --help` for the options and their types")
        sys.exit(2)
    except KeyboardInterrupt:
        print_error("interrupted", label="stopped")
        sys.exit(130)
    except Exception as err:
        from tgbench.train import Interrupted, TrainingFailed

        if isinstance(err, Interrupted):
            where = ", ".join(f"{d}/checkpoints" for d in err.run_dirs) or f"{err.run_dir} (no run had started)"
            print_error(f"signal {err.signum}; checkpoint written in {where}",
                        "resume with the same command (--resume auto)", label="interrupted")
            sys.exit(130)
        if isinstance(err, TrainingFailed):
            print_error(str(err), label="run failed")
            sys.exit(1)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) and not _state["debug"]:
            # writers without their own disk-full message (the corpus cache, lm-eval outputs)
            print_error(f"disk full: {err}", "free disk space, then rerun the same command")
            sys.exit(2)
        if _state["debug"]:
            raise
        from tgbench.registry import user_code_frame

        frame = user_code_frame(err)
        if frame is not None:  # a plug-in (adapter or task) raised: its author can fix it, tgbench cannot
            file, line, function = frame
            print_error(f"plug-in code raised {type(err).__name__}: {_one_line(err)} (at {file}:{line}, in "
                        f"{function})", "fix the code at that line; rerun with --debug for the full traceback")
            sys.exit(2)
        print_error(f"{type(err).__name__}: {_one_line(err)}",
                    "rerun with --debug for the traceback, and please report it", label="internal error")
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
