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

from tgbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and compare sentence-level language models (Thought Gestalt vs GPT-2).")
data_app = typer.Typer(no_args_is_help=True, help="Inspect corpora.")
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    _state["debug"] = debug


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


CorpusOpt = Annotated[str | None, typer.Option("--corpus", help="embedded | PATH | hf:NAME[:CONFIG]")]
TokenizerOpt = Annotated[str | None, typer.Option("--tokenizer", help="gpt2 | bpe-N (trained on the train split)")]
SplitterOpt = Annotated[str | None, typer.Option("--splitter", help="syntok | blingfire | sat")]


def _data_config(base, corpus, tokenizer, splitter):
    import dataclasses

    updates = {k: v for k, v in (("corpus", corpus), ("tokenizer", tokenizer), ("splitter", splitter)) if v}
    return dataclasses.replace(base, **updates)


@app.command()
def train(
    model: Annotated[str | None, typer.Option(
        help="Adapter name, package.module:Class or path/to/file.py:Class [default: gpt2].")] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/single"),
    config: Annotated[Path | None, typer.Option(help="A run config TOML (e.g. a run's config.toml).")] = None,
    width: Annotated[int | None, typer.Option(help="Model width d.")] = None,
    layers: Annotated[int | None, typer.Option(help="Number of blocks.")] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads.")] = None,
    context: Annotated[int | None, typer.Option(help="Context length (GPT-2 style adapters).")] = None,
    tokens: Annotated[int | None, typer.Option(help="Training-token budget D (lexical tokens); 0 = all.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs over the subset.")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Lexical tokens per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds data order, init and dropout.")] = None,
    corpus: CorpusOpt = None,
    tokenizer: TokenizerOpt = None,
    splitter: SplitterOpt = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Model option KEY=VALUE (repeatable).")] = None,
    resume: Annotated[str, typer.Option(help="auto (resume / skip if DONE) | never (start over)")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train one model and write its run directory."""
    import dataclasses

    from tgbench.config import RunConfig, load_run_config
    from tgbench.train import train as run_training

    run_config = load_run_config(config) if config else RunConfig()
    if model is not None:
        run_config.model = model
    options = dict(run_config.model_options)
    for key, value in (("width", width), ("layers", layers), ("heads", heads), ("context", context)):
        if value is not None:
            options[key] = value
    options.update(parse_assignments(set_))
    train_updates = {k: v for k, v in dict(tokens=tokens, epochs=epochs, batch_tokens=batch_tokens, lr=lr,
                                             seed=seed, device=device, dtype=dtype).items() if v is not None}
    run_config = dataclasses.replace(
        run_config,
        model_options=options,
        data=_data_config(run_config.data, corpus, tokenizer, splitter),
        train=dataclasses.replace(run_config.train, **train_updates),
    )
    result = run_training(run_config, out, resume=resume, progress=progress)
    if result.status == "skipped":
        console.print(f"{out} is already DONE with these settings (use --resume never to retrain)", soft_wrap=True)
    import math

    ppl = math.exp(result.best_val_loss) if math.isfinite(result.best_val_loss) else float("nan")
    console.print(f"[bold]lexical validation perplexity[/bold] {ppl:.2f} (loss {result.best_val_loss:.4f} nats/token)")
    console.print(f"run directory: {result.run_dir}")


@data_app.command("stats")
def data_stats(
    source: Annotated[str, typer.Argument(help="embedded | PATH | hf:NAME[:CONFIG]")] = "embedded",
    tokenizer: TokenizerOpt = None,
    splitter: SplitterOpt = None,
) -> None:
    """Documents, sentences, tokens and splitting events per split."""
    from tgbench.data import DataConfig, corpus_stats, load_corpus

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
                     "minimum joined to a neighbour; dropped: documents with too few sentences")
    console.print(table)
    console.print(f"cache key {corpus.key}")


@app.command()
def adapters() -> None:
    """List every adapter with its description and origin."""
    from tgbench.registry import available, get_adapter_class

    table = Table(title="adapters")
    for column in ("name", "description", "origin", "target"):
        table.add_column(column)
    for name, entry in available().items():
        try:
            description = get_adapter_class(name).description
        except Exception as err:  # a broken third-party adapter must not hide the others
            description = f"[red]fails to load: {err}"
        table.add_row(name, description, entry.origin, entry.target)
    console.print(table)


@app.command("train-grid")
def train_grid(
    config: Annotated[Path | None, typer.Argument(help="Grid TOML file.")] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped grid: smoke, demo, paper-data, ...")] = None,
    out: Annotated[Path | None, typer.Option(help="Grid directory [default: runs/<grid name>].")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the runs and a compute estimate.")] = False,
    executor: Annotated[str, typer.Option(help="local | slurm | slurm-local")] = "local",
    progress: Annotated[bool, typer.Option(help="Show the live table.")] = True,
) -> None:
    """Train every run of a grid (skips DONE runs, resumes interrupted ones, reruns failed ones)."""
    from tgbench.grid import dry_run_table, load_grid, run_grid

    grid = load_grid(config, preset)
    if dry_run:
        rows = dry_run_table(grid)
        table = Table(title=f"grid '{grid.name}': {len(rows)} runs")
        for column in ("run_id", "n_params", "tokens", "epochs", "pflops"):
            table.add_column(column, justify="left" if column == "run_id" else "right")
        for row in rows:
            table.add_row(row["run_id"], f"{row['n_params']:,}", f"{row['tokens']:,}", str(row["epochs"]),
                          f"{row['pflops']:.4f}")
        console.print(table)
        console.print(f"total compute ~{sum(r['pflops'] for r in rows):.3f} PFLOP (6 N D, attention ignored)")
        return
    target = out or Path("runs") / grid.name
    frame = run_grid(grid, target, executor=executor, progress=progress)
    counts = frame["status"].value_counts().to_dict()
    console.print(f"grid '{grid.name}' in {target}: {counts}; results: {target / 'results.csv'}")
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="Grid or run TOML file to check.")]) -> None:
    """Check a grid (or run) file without running it; names any bad key or value."""
    from tgbench.config import load_run_config, read_toml
    from tgbench.grid import expand, load_grid

    raw = read_toml(config)
    if "models" in raw:
        grid = load_grid(config)
        console.print(f"[green]ok[/green]: grid '{grid.name}' with {len(expand(grid))} runs")
    else:
        run_config = load_run_config(config)
        from tgbench.registry import build_adapter

        build_adapter(run_config)
        console.print(f"[green]ok[/green]: run config for '{run_config.model}'")


@app.command()
def fit(
    grid_dir: Annotated[Path, typer.Argument(help="Grid directory (holds results.csv or run dirs).")],
    pair: Annotated[str, typer.Option(help="A,B: how much more data/params B needs to reach A's loss.")] = "tg,gpt2",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 200,
) -> None:
    """Fit scaling laws and multipliers; writes fits.json."""
    from tgbench.grid import write_results
    from tgbench.tasks.scaling import write_fits

    if not grid_dir.is_dir():
        raise UserError(f"grid directory '{grid_dir}' does not exist", "run tgbench train-grid first")
    write_results(grid_dir)
    first, _, second = pair.partition(",")
    try:
        path = write_fits(grid_dir, pair=(first.strip(), second.strip()), n_resamples=resamples)
    except ValueError as err:
        raise UserError(f"cannot fit {grid_dir}: {err}", "check results.csv for missing or bad losses") from err
    console.print(f"fits written to {path}")


@app.command()
def demo(out: Annotated[Path, typer.Option(help="Where the demo's runs go.")] = Path("runs/demo")) -> None:
    """The default job on the embedded corpus."""
    from tgbench.demo import run_demo

    run_demo(out)


def _register_plugins() -> None:
    """Commands that live in their own modules (imported lazily inside each)."""
    from tgbench.cli_eval import eval_command, export_command

    app.command("eval", help="Evaluate runs: ppl, reversal, or any lm-eval task.")(eval_command)
    app.command("export", help="Write a GPT-2 run as a Hugging Face checkpoint.")(export_command)
    from tgbench.report import report_command

    app.command("report", help="Render a grid's results as one self-contained HTML file.")(report_command)
    from tgbench.bench import bench_command

    app.command("bench", help="Throughput and memory benchmarks (ratios measured side by side).")(bench_command)


_register_plugins()


def main() -> None:
    """Console entry point: run the app, turning user errors into one clear message."""
    import errno

    import click

    try:
        code = app(standalone_mode=False)  # without standalone mode, click returns a typer.Exit's code
    except UserError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/bold red] {err.message}")
        if err.fix:
            err_console.print(f"[bold]fix:[/bold] {err.fix}")
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as err:
        from tgbench.train import Interrupted, TrainingFailed

        if isinstance(err, Interrupted):
            err_console.print(f"[bold yellow]interrupted[/bold yellow] (signal {err.signum}); checkpoint written in "
                              f"{err.run_dir}/checkpoints. Resume with the same command (--resume auto).")
            sys.exit(130)
        if isinstance(err, TrainingFailed):
            err_console.print(f"[bold red]run failed:[/bold red] {err}")
            sys.exit(1)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) and not _state["debug"]:
            # writers without their own disk-full message (the corpus cache, lm-eval outputs)
            err_console.print(f"[bold red]error:[/bold red] disk full: {err}")
            err_console.print("[bold]fix:[/bold] free disk space, then rerun the same command")
            sys.exit(2)
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]internal error:[/bold red] {type(err).__name__}: {err}")
        err_console.print("rerun with --debug for the traceback, and please report it")
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
