"""Loading a grid (a file or a shipped preset) and the checks that fail before any training.

`load_grid` reads and validates every key and value; `check_data` fails on data settings that would fail
later (an unknown splitter or tokenizer, a missing corpus); `validate_models` builds every distinct model
config once; `context_parity` warns when a token-window model sees less history than a sentence memory's
span on the grid's corpus.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from tgbench.core.errors import UserError, unknown_name
from tgbench.data import DataConfig
from tgbench.data.corpus import cached_stats, source_identity, validate_config
from tgbench.data.split import check_splitter
from tgbench.plan.config import (
    read_toml,
    set_path,
)
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.registry import build_adapter

PRESETS = ("smoke", "demo", "cpu-study", "cpu-long", "cpu-peers", "cpu-params", "paper-data", "paper-params",
           "paper-ablations")


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
        text = resources.files("tgbench.plan").joinpath(f"presets/{preset}.toml").read_text(encoding="utf-8")
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

    validate_config(data)
    check_splitter(data.splitter)
    if not data.corpus.startswith("hf:"):
        source_identity(data.corpus)


def validate_models(grid: GridConfig) -> None:
    """Build every distinct adapter config once, so a bad option fails before any training."""

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
