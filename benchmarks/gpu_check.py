"""The prepared GPU check: paper-size TG and GPT-2 training steps in bf16, and CPU-vs-CUDA loss parity.

At the paper's size (12 layers, width 768, 12 heads, GPT-2's 50,257-token BPE, about 20k lexical tokens
per step, GPT-2 context 1024) on the embedded corpus, for TG and our GPT-2:

1. parity: one batch, the same initial weights, the loss in float32 on the CPU and in float32 on CUDA
   (must agree to 1e-4 relative), and in bf16 autocast on CUDA (reported; must agree to 2%);
2. speed: `--steps` training steps as the trainer takes them (the trainer's loss module, bf16 autocast,
   gradient clipping, AdamW), after 3 warm-up steps: lexical tokens/s, sentences/s, peak GPU memory;
3. TG's sentence-step loop: 2 of those training steps under `torch.profiler`, giving the time per
   sentence step (step wall time / sentence steps of the batch), the share of device time outside
   matrix products (and inside attention), and how busy the device is over the step's wall time (a
   low figure means TG is launch-bound: the host cannot issue the loop's small kernels fast enough).

Fits in about 8 minutes on one GPU (most of it encoding the corpus with the GPT-2 tokenizer). Prints a
table and a final JSON line; with `--out DIR` it also writes DIR/gpu_check.json.

Run: `python -m benchmarks.gpu_check [--steps 20] [--out $OUT]`; `--quick` runs toy sizes on the CPU
(a smoke test of the script itself, figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    autocast,
    emit,
    make_adapter,
    make_optimizer,
    print_table,
    resolve_device,
    synchronize,
    synthetic_documents,
)
from tgbench.adapter import Batch, Vocab
from tgbench.training.trainer import _LossModule

PAPER = {"width": 768, "layers": 12, "heads": 12, "dropout": 0.0, "attention_dropout": 0.0}
BATCH_TOKENS = 20_000


def _setup(quick: bool):
    if quick:
        vocab = Vocab(base_size=64)
        docs = synthetic_documents(np.random.default_rng(0), 60, 64)
        return vocab, docs, {"width": 32, "layers": 2, "heads": 2, "dropout": 0.0, "attention_dropout": 0.0}, 512
    from tgbench.data import DataConfig, load_corpus

    corpus = load_corpus(DataConfig(corpus="embedded", tokenizer="gpt2", splitter="syntok"), progress=True)
    split = corpus.splits["train"]
    return corpus.vocab, split.documents(split.subset(600_000, 0)), dict(PAPER), BATCH_TOKENS


def _loss(adapter, model, batch: Batch, device: torch.device, bf16: bool) -> float:
    module = _LossModule(adapter, model)
    with torch.no_grad(), autocast(device, "bfloat16" if bf16 else "float32"):
        loss, _, _ = module(batch.to(device), 0)
    return float(loss)


def parity(name: str, adapter, vocab, batch: Batch, cuda: torch.device) -> dict[str, float]:
    """The same weights' loss on one batch: CPU float32, CUDA float32, CUDA bf16."""
    torch.manual_seed(0)
    model = adapter.build(vocab).eval()
    cpu = _loss(adapter, model, batch, torch.device("cpu"), bf16=False)
    model.to(cuda)
    fp32 = _loss(adapter, model, batch, cuda, bf16=False)
    bf16 = _loss(adapter, model, batch, cuda, bf16=True) if cuda.type == "cuda" else fp32
    return {"cpu_fp32": cpu, "cuda_fp32": fp32, "cuda_bf16": bf16,
            "rel_fp32": abs(fp32 - cpu) / abs(cpu), "rel_bf16": abs(bf16 - cpu) / abs(cpu)}


def _training_step(adapter, vocab, batches: list[Batch], device: torch.device):
    """A fresh model and one training step as the trainer takes it; returns (model, step, batches on device)."""
    torch.manual_seed(0)
    model = adapter.build(vocab).to(device).train()
    module = _LossModule(adapter, model)
    optimizer = make_optimizer(model)

    def step(batch: Batch) -> None:
        with autocast(device):
            loss, _, _ = module(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step, [b.to(device) for b in batches]


def speed(name: str, adapter, vocab, batches: list[Batch], device: torch.device, steps: int) -> dict[str, float]:
    """Training steps as the trainer takes them; tokens/s, sentences/s, peak memory."""
    model, step, batches = _training_step(adapter, vocab, batches, device)

    for batch in batches[:3]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    chosen = [batches[i % len(batches)] for i in range(steps)]
    synchronize(device)
    started = time.perf_counter()
    for batch in chosen:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"tokens_per_s": sum(b.lexical_tokens for b in chosen) / seconds,
            "sentences_per_s": sum(b.sentences for b in chosen) / seconds, "peak_memory_mb": peak,
            "steps": steps, "seconds": seconds, "n_params": adapter.n_params(model)}


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation")
ATTENTION_PREFIX = "aten::_scaled_dot_product"


def sentence_loop(adapter, vocab, batches: list[Batch], device: torch.device, steps: int = 2) -> dict[str, float]:
    """Where a TG training step's time goes: per sentence step, outside matmuls, device busy over wall."""
    from torch.profiler import ProfilerActivity, profile

    model, step, batches = _training_step(adapter, vocab, batches, device)

    step(batches[0])  # warm-up
    chosen = [batches[i % len(batches)] for i in range(1, steps + 1)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for batch in chosen:
            step(batch)
        synchronize(device)
        wall = time.perf_counter() - started
    on_device = device.type == "cuda"

    def self_time(event) -> float:  # microseconds on the device (CUDA) or on the CPU
        if on_device:
            return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))
        return float(event.self_cpu_time_total)

    events = prof.key_averages()
    total = sum(self_time(e) for e in events) or float("nan")
    matmul = sum(self_time(e) for e in events if e.key in MATMUL_OPS)
    attention = sum(self_time(e) for e in events if e.key.startswith(ATTENTION_PREFIX))
    sentence_steps = sum(len(b.meta["steps"]) for b in chosen)
    return {"steps": steps, "wall_s_per_step": wall / steps, "sentence_steps_per_batch": sentence_steps / steps,
            "ms_per_sentence_step": 1e3 * wall / sentence_steps,
            "share_outside_matmul": 1 - matmul / total, "share_attention": attention / total,
            "device_busy_fraction": total / 1e6 / wall if on_device else float("nan"),
            "timed_on": "device" if on_device else "cpu"}


def main(quick: bool = False, steps: int = 20, out: Path | None = None) -> dict[str, Any]:
    device = resolve_device("cpu" if quick else "auto")
    vocab, docs, options, batch_tokens = _setup(quick)
    result: dict[str, Any] = {"benchmark": "gpu_check", "quick": quick, "device": str(device),
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                              "torch": torch.__version__, "options": options, "batch_tokens": batch_tokens}
    rows = []
    for name in ("tg", "gpt2"):
        adapter = make_adapter(name, {**options, **({"context": 1024 if not quick else 64} if name == "gpt2" else {})})
        batches = adapter.batches(docs, vocab, batch_tokens=batch_tokens, epoch=0, rng=np.random.default_rng([0, 0, 1]))
        same = parity(name, adapter, vocab, batches[0], device)
        fast = speed(name, adapter, vocab, batches[: max(4, min(len(batches), steps))], device, steps)
        result[name] = {"parity": same, "speed": fast}
        rows.append((name, fast["n_params"], fast["tokens_per_s"], fast["sentences_per_s"], fast["peak_memory_mb"],
                     same["rel_fp32"], same["rel_bf16"]))
        if name == "tg":
            result["tg"]["sentence_loop"] = sentence_loop(adapter, vocab, batches[:4], device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["parity_ok"] = all(result[n]["parity"]["rel_fp32"] < 1e-4 and result[n]["parity"]["rel_bf16"] < 0.02
                              for n in ("tg", "gpt2"))
    print_table(f"GPU check on {result['gpu'] or device} (bf16 autocast, {steps} steps after 3 warm-up)",
                ["model", "params", "lexical tokens/s", "sentences/s", "peak MB", "|CUDA-CPU| fp32", "|bf16-CPU|"],
                rows)
    loop = result["tg"]["sentence_loop"]
    print(f"TG sentence-step loop: {loop['ms_per_sentence_step']:.2f} ms per sentence step "
          f"({loop['sentence_steps_per_batch']:.0f} per batch, {loop['wall_s_per_step']:.3f} s per training step); "
          f"{100 * loop['share_outside_matmul']:.0f}% of {loop['timed_on']} time outside matmuls "
          f"({100 * loop['share_attention']:.0f}% in attention); device busy "
          f"{100 * loop['device_busy_fraction']:.0f}% of the wall time")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    main(quick=args.quick, steps=args.steps, out=args.out)


if __name__ == "__main__":
    cli()
