"""The default job (`make demo`): what a new user runs first, on the embedded corpus."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console

from tgbench.config import RunConfig, TrainConfig
from tgbench.data import DataConfig

console = Console()

# Small enough to finish in a few minutes on a 2-core CPU; large enough to learn visibly.
# A trained 8k byte-level BPE keeps the output layer (which dominates small models) cheap.
DEMO_DATA = DataConfig(corpus="embedded", tokenizer="bpe-8192")
DEMO_MODEL = {"width": 128, "layers": 4, "heads": 4, "context": 256, "dropout": 0.0, "attention_dropout": 0.0}
DEMO_TRAIN = TrainConfig(tokens=300_000, epochs=1, batch_tokens=4096, lr=1e-3, eval_tokens=20_000, seed=0)


def run_demo(out: Path) -> None:
    """Train one small GPT-2 on the embedded corpus and print its lexical validation perplexity."""
    from tgbench.train import train

    config = RunConfig(model="gpt2", model_options=dict(DEMO_MODEL), data=DEMO_DATA, train=DEMO_TRAIN)
    result = train(config, out / "gpt2")
    ppl = math.exp(result.best_val_loss)
    console.print(f"[bold]lexical validation perplexity[/bold]: {ppl:.1f} "
                  f"(vocabulary {8192 + 4}: chance level would be ~{8196})")
    console.print(f"results: {result.run_dir} (metrics.jsonl, summary.json, checkpoints/)")
