"""`tgbench adapters`, `tgbench tasks`, `tgbench data stats`: what tgbench knows and what a corpus holds."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tgbench.cli.flags import FieldFlag, field_flags, with_data_flags, with_parameters
from tgbench.core.console import print_table
from tgbench.plan.config import DataConfig

console = Console()


def data_stats_command(
    source: Annotated[str, typer.Argument(help="embedded | kjv | PATH | hf:NAME[:CONFIG]")] = "embedded",
    **settings: Any,
) -> None:
    """Documents, sentences, tokens and splitting events per split, and how long documents and sentences are."""
    from tgbench.data import corpus_stats, document_shape, load_corpus, mean_sentence_tokens
    from tgbench.data.corpus import DROP_RULE_CAP
    from tgbench.models.tg import TGConfig

    corpus = load_corpus(with_data_flags(DataConfig(), {**settings, "corpus": source}))
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
    tg = TGConfig()
    shape.caption = (f"a sentence memory is used only from a document's second sentence on; TG's default memory holds "
                     f"{tg.memory_slots} sentences ({tg.memory_slots} x {mean_sentence_tokens(corpus):.1f} = "
                     f"{tg.memory_slots * mean_sentence_tokens(corpus):,.0f} tokens of this corpus) and trains on "
                     f"streams of {tg.stream_start}")
    print_table(shape, console)
    # its own line, after whatever a progress bar left on the terminal, with a separator a script can split on
    console.print(f"\ncache key: {corpus.key}", soft_wrap=True)


def adapters_command(
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
    from tgbench.plan.options import config_options
    from tgbench.registry import get_adapter_class

    cls = get_adapter_class(name)
    config_class = getattr(cls, "config_class", None)
    found = config_options(config_class)
    title = f"options of {cls.name or name} ({getattr(config_class, '__name__', '?')})"

    defaults = ['""' if option.default == "" else repr(option.default) if isinstance(option.default, str)
                else str(option.default).lower() if isinstance(option.default, bool) else str(option.default)
                for option in found]
    if not console.is_terminal:
        # Piped or redirected: one option per line, never wrapped (a table squeezed into 80 columns left its help
        # a 20-character column), so grep and less read it whole.
        console.print(title, soft_wrap=True)
        for option, default in zip(found, defaults, strict=True):
            console.print(f"  {escape(option.name)} ({escape(option.type)}, default {escape(default)}): "
                          f"{escape(option.help)}", soft_wrap=True, highlight=False)
        console.print("set with --set NAME=VALUE or a grid's options = {NAME = VALUE}", soft_wrap=True)
        if not found:
            console.print(f"adapter '{name}' declares no config dataclass: its options are its constructor's "
                          "keywords", soft_wrap=True)
        return
    # Names, types and defaults are never cut; the help column wraps to what the terminal leaves.
    table = Table(title=title, caption="set with --set NAME=VALUE or a grid's options = {NAME = VALUE}",
                  box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
    table.add_column("option", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("default", no_wrap=True)
    table.add_column("help", overflow="fold", ratio=1)
    for option, default in zip(found, defaults, strict=True):
        table.add_row(option.name, escape(option.type), escape(default), escape(option.help))
    console.print(table)
    if not found:
        console.print(f"adapter '{name}' declares no config dataclass: its options are its constructor's keywords")


def tasks_command() -> None:
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


with_parameters(data_stats_command, field_flags(DataConfig, [FieldFlag("tokenizer"), FieldFlag("splitter")]))
