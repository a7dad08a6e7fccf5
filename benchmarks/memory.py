"""Peak memory of a TG training step against stream length S, with and without activation checkpointing.

For S in {30, 66, 138} a batch holds k = round(138 / S) streams of exactly S real sentences (the
training split's sentences in order, documents concatenated and cut into S-sentence streams), so
every batch carries about the same tokens (~138 sentences, ~4k tokens) and only the stream length
changes, as when the trainer fills a fixed token budget with longer streams. A step is forward
through `adapter.loss` plus backward (gradients included, optimiser state not).

Measured in a fresh process per configuration (the parent only collects the figures): on CUDA,
`torch.cuda.max_memory_allocated` above the allocation before the step; on the CPU, peak RSS
(ru_maxrss) above the RSS just before the step. ru_maxrss is process-wide and monotonic, hence one
process per configuration and no warm-up step; large tensors are mmapped by the allocator and given
back when freed, so RSS follows the live tensors closely.

Run: `python -m benchmarks.memory [--quick] [--device auto]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import autocast, build_model, emit, load_setup, make_adapter, print_table, resolve_device
from tgbench.models.streams import stream_batch

STREAM_LENGTHS = (30, 66, 138)


def sentence_streams(documents, adapter, vocab, S: int, n_streams: int) -> list[list[np.ndarray]]:
    """`n_streams` streams of exactly S consecutive sentence units of the concatenated documents."""
    units = [u for doc in documents for u in adapter.units(doc, vocab)]
    if len(units) < S * n_streams:
        raise ValueError(f"need {S * n_streams} sentences, the documents have {len(units)}")
    return [units[i * S : (i + 1) * S] for i in range(n_streams)]


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(quick: bool, device: str, S: int, n_streams: int, ckpt: bool) -> dict[str, Any]:
    """One configuration, in a fresh process: peak bytes of one forward + backward above the level before it."""
    setup = load_setup(quick=quick, device=device)
    dev = setup.device
    adapter = make_adapter("tg", setup.options["tg"], checkpoint_steps=ckpt)
    model = build_model(adapter, setup.vocab, dev)
    streams = sentence_streams(setup.train, adapter, setup.vocab, S, n_streams)
    batch = stream_batch(streams, setup.vocab).to(dev)
    # A two-sentence step first: lazy imports and first-call allocations (e.g. the checkpoint
    # machinery) would otherwise count; its own peak is far below the measured one.
    warm = stream_batch([streams[0][:2]], setup.vocab).to(dev)
    with autocast(dev):
        adapter.loss(model, warm, 0).loss.backward()
    model.zero_grad(set_to_none=True)
    del warm
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        base = current_rss_bytes()
    with autocast(dev):
        loss = adapter.loss(model, batch, 0).loss
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # Linux reports KiB
    return {"S": S, "checkpointing": ckpt, "streams": n_streams, "sentences": batch.sentences,
            "lexical_tokens": batch.lexical_tokens, "peak_mb": peak / 2**20}


def run_child(quick: bool, device: str, S: int, n_streams: int, ckpt: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.memory", "--child", f"{S},{n_streams},{int(ckpt)}",
               "--device", device] + (["--quick"] if quick else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(quick: bool = False, device: str = "auto", lengths: tuple[int, ...] = ()) -> dict[str, Any]:
    """Measure every (S, checkpointing) pair, each in its own process; print a table and the final JSON line.

    Args:
        quick: Toy sizes and short streams (smoke test).
        device: "auto", "cpu" or "cuda".
        lengths: Stream lengths S (default 30, 66, 138; 3, 6, 12 when quick).
    """
    dev = resolve_device(device)
    lengths = lengths or ((3, 6, 12) if quick else STREAM_LENGTHS)
    per_batch = max(lengths)
    records = [run_child(quick, str(dev), S, max(1, round(per_batch / S)), ckpt)
               for S in lengths for ckpt in (False, True)]
    by = {(r["S"], r["checkpointing"]): r["peak_mb"] for r in records}
    lo, hi = min(lengths), max(lengths)
    result = {
        "benchmark": "memory",
        "quick": quick,
        "device": str(dev),
        "method": "torch.cuda.max_memory_allocated" if dev.type == "cuda"
        else "peak RSS (ru_maxrss) above RSS before the step, one fresh process per configuration",
        "records": records,
        **{f"peak_mb_S{S}_{'ckpt' if c else 'plain'}": mb for (S, c), mb in by.items()},
        "ratio_ckpt_longest_vs_shortest": by[(hi, True)] / by[(lo, True)],
        "ratio_plain_longest_vs_shortest": by[(hi, False)] / by[(lo, False)],
        "ratio_ckpt_vs_plain_longest": by[(hi, True)] / by[(hi, False)],
    }
    print_table(f"TG training-step peak memory on {dev} ({result['method']})",
                ["S", "streams", "sentences", "lexical tokens", "plain MB", "checkpointed MB"],
                [(r["S"], r["streams"], r["sentences"], r["lexical_tokens"], by[(r["S"], False)], r["peak_mb"])
                 for r in records if r["checkpointing"]])
    print(f"checkpointed peak at S={hi} / S={lo}: {result['ratio_ckpt_longest_vs_shortest']:.3f}")
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # "S,streams,checkpointing"
    args = parser.parse_args()
    if args.child:
        S, n_streams, ckpt = (int(v) for v in args.child.split(","))
        print(json.dumps(child(args.quick, args.device, S, n_streams, bool(ckpt))))
    else:
        main(quick=args.quick, device=args.device)


if __name__ == "__main__":
    cli()
