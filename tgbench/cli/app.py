"""The `tgbench` command: one Typer app built from the command modules, and its error policy.

Commands are plain functions in one module per command group (tgbench/cli/*.py) and are registered here in the
order `tgbench --help` lists them. Their help is escaped (`tgbench.cli.flags.help_text`), so Rich never eats a
bracketed word such as `[tune]`.

Errors a user can cause raise `UserError`; `main` prints them as one message with the fix and exits with
status 2 (no traceback unless `--debug`). An exception raised in plug-in code is the plug-in author's to fix: it
is reported with its file and line. Anything else is an internal error (exit 1).
"""

from __future__ import annotations

import errno
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

import tgbench
from tgbench.cli import analysis, bench, demo, evaluate, grid, info, sample, train
from tgbench.cli.flags import help_text
from tgbench.core.console import one_line, print_error
from tgbench.core.errors import Interrupted, TrainingFailed, UserError, plugin_error_message
from tgbench.training.allocator import keep_freed_memory

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and compare sentence-level language models (Thought Gestalt vs GPT-2).")
data_app = typer.Typer(no_args_is_help=True, help="Inspect corpora.")
app.add_typer(data_app, name="data")
console = Console()
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        console.print(f"tgbench {tgbench.__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also after the command).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug


def register(group: typer.Typer, name: str, command: Callable, help: str | None = None) -> None:
    """Add a command under `name`, its help (the docstring unless given) escaped for Rich."""
    group.command(name, help=help_text(help or inspect.getdoc(command) or ""))(command)


register(app, "train", train.train_command)
register(app, "train-grid", grid.train_grid_command)
register(app, "tune", grid.tune_command)
register(app, "validate", grid.validate_command)
register(app, "eval", evaluate.eval_command, "Evaluate runs: ppl, reversal, or any lm-eval task.")
register(app, "fit", analysis.fit_command)
register(app, "report", analysis.report_command)
register(app, "compare", analysis.report_command,
         "One report over several grid directories (the same as `tgbench report A B ...`).")
register(app, "sample", sample.sample_command, "Generate text from a run's checkpoint (sentence by sentence for TG).")
register(app, "export", evaluate.export_command, "Write a GPT-2 run as a Hugging Face checkpoint.")
register(app, "adapters", info.adapters_command)
register(app, "tasks", info.tasks_command)
register(data_app, "stats", info.data_stats_command)
register(app, "bench", bench.bench_command, "Throughput and memory benchmarks (ratios measured side by side).")
register(app, "demo", demo.demo_command)


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts, exits) of click and of the click copy newer Typer versions vendor."""

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


def main() -> None:
    """Console entry point: run the app, turning user errors into one clear message."""
    keep_freed_memory()  # before any large allocation: freed training buffers stay in the process
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
        if isinstance(err, Interrupted):
            print_error(f"signal {err.signum}; {interrupted_where(err)}",
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
        plugin = plugin_error_message(err)
        if plugin is not None:  # a plug-in (adapter or task) raised: its author can fix it, tgbench cannot
            print_error(plugin, "fix the code at that line; rerun with --debug for the full traceback")
            sys.exit(2)
        print_error(f"{type(err).__name__}: {one_line(err)}",
                    "rerun with --debug for the traceback, and please report it", label="internal error")
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def interrupted_where(err: Interrupted) -> str:
    """Where the interrupted runs' checkpoints are; only directories that hold one are named as such (a run
    stopped during its worker's start-up, or before its first checkpoint, has nothing to resume from)."""
    saved = [d for d in err.run_dirs if any((Path(d) / "checkpoints").glob("*"))]
    unsaved = [d for d in err.run_dirs if d not in saved]
    parts = []
    if saved:
        parts.append("checkpoint written in " + ", ".join(f"{d}/checkpoints" for d in saved))
    if unsaved:
        parts.append("no checkpoint yet (stopped before the first one) for " + ", ".join(str(d) for d in unsaved))
    return "; ".join(parts) or f"no run had started in {err.run_dir}"


if __name__ == "__main__":
    main()
