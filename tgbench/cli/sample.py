"""`tgbench sample`: text generated from a run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def sample_command(
    run: Annotated[Path, typer.Option(help="Run directory (its best checkpoint is used).")],
    prompt: Annotated[str, typer.Option(help="Text to continue (\"\" starts a document).")] = "",
    max_tokens: Annotated[int, typer.Option(help="Most content tokens to generate.")] = 100,
    temperature: Annotated[float, typer.Option(help="0 = greedy; else sample from softmax(logits / T).")] = 0.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the sampler: the same seed gives the same text.")] = 0,
    sentences: Annotated[int, typer.Option(help="Stop after N finished sentences (0 = no limit).")] = 0,
    checkpoint: Annotated[str, typer.Option(help="best | latest")] = "best",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Generate text from a run, sentence by sentence for TG-family models (sentence boundaries shown)."""
    from tgbench.evaluation.sample import render, sample_run

    result = sample_run(run, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, seed=seed,
                        sentences=sentences, checkpoint=checkpoint, device=device)
    console = Console()
    for line in render(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
