"""Shared pieces of the benchmarks: the demo-preset setup, data, timing and reporting.

Devices, autocast and optimizers are the trainer's own (`tgbench.core.devices`,
`tgbench.training.optim.make_optimizer` with the benchmark preset's [train] settings), so a benchmark
measures what training runs.

Every benchmark compares contenders *side by side in one process*: the contenders alternate within
each repetition and the figure reported is the median over repetitions, so a ratio holds on a noisy
shared machine where absolute numbers drift. `quick=True` swaps the embedded corpus for a tiny
synthetic one and the demo models for toy sizes (smoke tests; the figures mean nothing then).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tgbench.adapter import Adapter, Batch, Document, Vocab
from tgbench.core.devices import autocast_context, matmul_peak_flops, resolve_device  # noqa: F401 (shared)
from tgbench.plan.config import RunConfig, TrainConfig
from tgbench.training.allocator import keep_freed_memory

keep_freed_memory()  # as every training process does (tgbench's CLI, --jobs workers): see tgbench.training.allocator

PRESET = "cpu-study"  # the demo's size (width 128, 4 layers), with GPT-2 + boundaries too
QUICK_WIDTH = 32  # quick mode: toy models
QUICK_LAYERS = 2


@dataclass
class Setup:
    """The data and model settings one benchmark run uses.

    Attributes:
        vocab: Special-token ids over the tokenizer's vocabulary.
        train: Training documents (a fixed subset, the same for every contender).
        test: Test documents (for scoring).
        options: Adapter name -> constructor options (width, layers, heads, context, dropout 0, ...).
        batch_tokens: Lexical tokens per training batch.
        device: Where models and batches live.
        describe: What was loaded, for the report.
    """

    vocab: Vocab
    train: list[Document]
    test: list[Document]
    options: dict[str, dict[str, Any]]
    batch_tokens: int
    device: torch.device
    describe: dict[str, Any]


def synthetic_documents(rng: np.random.Generator, n_docs: int, vocab_size: int, max_sentences: int = 8
                        ) -> list[Document]:
    """Tiny documents of 2..max_sentences sentences of 3..20 tokens (quick mode only)."""
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(2, max_sentences + 1))
        docs.append([rng.integers(0, vocab_size, int(rng.integers(3, 21))).astype(np.int64) for _ in range(n)])
    return docs


def demo_options(width: int | None = None, preset: str = PRESET) -> tuple[dict[str, dict[str, Any]], int, Any]:
    """Adapter options of a preset (default cpu-study: the demo's size) at its largest width, and its batch tokens.

    Args:
        width: The width to take (None: the preset's largest).
        preset: The preset whose models and [train] batch size a benchmark measures (the one it compares with).

    Returns:
        Adapter name -> options, the preset's lexical tokens per batch, and the grid.
    """
    from tgbench.plan.expand import expand
    from tgbench.plan.validate import load_grid

    grid = load_grid(preset=preset)
    width = width or max(grid.widths)
    specs = [s for s in expand(grid) if s.width == width]
    options: dict[str, dict[str, Any]] = {}
    for spec in specs:
        options.setdefault(spec.adapter, dict(spec.config.model_options))
    return options, grid.train.batch_tokens, grid


def load_setup(quick: bool = False, device: str = "auto", train_tokens: int = 200_000, preset: str = PRESET
               ) -> Setup:
    """A preset's TG/GPT-2 size and batch size (cpu-study: the demo's size) on its corpus; toy sizes when quick.

    Args:
        quick: Tiny synthetic corpus and toy models (for smoke tests).
        device: "auto", "cpu", "cuda", ...
        train_tokens: Lexical tokens of the training subset (the demo's largest budget by default).
        preset: The preset whose models, data and batch tokens are measured.
    """
    dev = resolve_device(device)
    options, batch_tokens, grid = demo_options(preset=preset)
    if quick:
        vocab = Vocab(base_size=64)
        rng = np.random.default_rng(0)
        train, test = synthetic_documents(rng, 40, 64), synthetic_documents(rng, 8, 64)
        for opts in options.values():
            opts.update(width=QUICK_WIDTH, layers=QUICK_LAYERS, heads=1)
            if "context" in opts:
                opts["context"] = 64
        batch_tokens = 256
        describe = {"corpus": "synthetic (quick)", "vocab": vocab.size}
    else:
        from tgbench.data import load_corpus

        corpus = load_corpus(grid.data, progress=False)
        vocab = corpus.vocab
        split = corpus.splits["train"]
        train = split.documents(split.subset(train_tokens, 0))
        test = corpus.splits["test"].documents()
        describe = {"preset": preset, "corpus": grid.data.corpus, "tokenizer": grid.data.tokenizer, "vocab": vocab.size,
                    "train_documents": len(train), "test_documents": len(test)}
    return Setup(vocab, train, test, options, batch_tokens, dev, describe)


def make_adapter(name: str, options: dict[str, Any], **overrides: Any) -> Adapter:
    from tgbench.registry import get_adapter_class

    return get_adapter_class(name)(**{**options, **overrides})


def build_model(adapter: Adapter, vocab: Vocab, device: torch.device, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return adapter.build(vocab).to(device).train()


def preset_train() -> TrainConfig:
    """The benchmark preset's [train] settings (learning rate, betas, weight decay, dtype)."""
    from tgbench.plan.validate import load_grid

    return load_grid(preset=PRESET).train


def make_optimizer(model: torch.nn.Module, train: TrainConfig | None = None) -> torch.optim.Optimizer:
    """The trainer's AdamW (`tgbench.training.optim.make_optimizer`: no decay on 1-D tensors) with the preset's
    settings."""
    from tgbench.training.optim import make_optimizer as trainer_optimizer

    return trainer_optimizer(model, RunConfig(train=train or preset_train()))


def autocast(device: torch.device, dtype: str = "auto"):
    """The trainer's autocast (`tgbench.core.devices.autocast_context`): bf16 on CUDA for "auto", else float32."""
    return autocast_context(device, dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each contender once per repetition, in rotating order; each call returns its own seconds."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotate so no contender always runs first
            times[name].append(contenders[name]())
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table (markdown-compatible, so it can be pasted into RESULTS.md)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Print the final JSON line (every figure) and return the result."""
    print(json.dumps(result, sort_keys=True, default=_jsonable))
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def batch_stats(batches: Sequence[Batch]) -> dict[str, int]:
    return {"lexical_tokens": sum(b.lexical_tokens for b in batches),
            "computed_slots": sum(b.computed_slots for b in batches)}
