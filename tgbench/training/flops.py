"""Training FLOPs of a batch: counted by its adapter, or measured with torch's FlopCounterMode.

Built-in adapters count them analytically (`Adapter.train_flops`, the formula of each architecture in its model
file). For an adapter that does not (a plug-in), the FLOPs are measured: one forward of the batch through
`adapter.loss` under `torch.utils.flop_counter.FlopCounterMode`, times `TRAIN_FLOPS_PER_FORWARD` (3: the backward
taken as 2 x the forward). The measured forward runs in eval mode without gradients and leaves the RNG state as
it found it, so it changes nothing in training; attention runs on SDPA's math path and oneDNN / cuDNN are off,
so fused kernels the counter does not see (CPU attention, LSTMs) run as the matmuls it counts.

A run (`BatchFlops`) measures once per distinct batch shape (the shapes of the batch's tensors), at most
`MAX_MEASURED_SHAPES` shapes; a batch of a further new shape is estimated from the measured FLOPs per lexical
token. Block-packed layouts have one or two shapes, so a run measures a forward or two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tgbench.adapter import TRAIN_FLOPS_PER_FORWARD, Adapter, Batch

COUNTED, MEASURED = "counted", "measured"
MAX_MEASURED_SHAPES = 8


@contextlib.contextmanager
def decomposed_kernels() -> Iterator[None]:
    """SDPA on its math path, oneDNN and cuDNN off: fused kernels run as the matmuls FlopCounterMode counts."""
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.mkldnn.enabled = onednn


def measured_forward_flops(adapter: Adapter, model: nn.Module, batch: Batch, epoch: int = 0) -> float:
    """FLOPs FlopCounterMode counts in one forward of `batch` through `adapter.loss` (eval mode, no gradient,
    decomposed kernels, RNG state restored); the batch is moved to the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
                torch.no_grad(), decomposed_kernels(), FlopCounterMode(display=False) as counter:
            adapter.loss(model, batch.to(device), epoch)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


def batch_flops(adapter: Adapter, model: nn.Module, batch: Batch, epoch: int = 0) -> tuple[float, str]:
    """Training FLOPs of one batch and how they were obtained: ("counted") the adapter's `train_flops`, else
    ("measured") 3 x a measured forward."""
    counted = adapter.train_flops(model, batch)
    if counted is not None:
        return float(counted), COUNTED
    return TRAIN_FLOPS_PER_FORWARD * measured_forward_flops(adapter, model, batch, epoch), MEASURED


def shape_key(batch: Batch) -> tuple:
    """The shapes of a batch's tensors: batches with equal keys cost the same measured FLOPs."""
    return tuple(sorted((name, tuple(value.shape)) for name, value in batch.tensors.items() if hasattr(value, "shape")))


class BatchFlops:
    """The training FLOPs of a run's batches; `method` says "measured" once any batch was not counted.

    Measured batches are measured once per shape (`shape_key`), at most `MAX_MEASURED_SHAPES` shapes; further
    shapes are scaled from the measured FLOPs per lexical token.
    """

    def __init__(self, adapter: Adapter, model: nn.Module) -> None:
        self.adapter = adapter
        self.model = model
        self.method = COUNTED
        self.measured: dict[tuple, tuple[float, int]] = {}  # shape -> (training FLOPs, lexical tokens)

    def __call__(self, batch: Batch, epoch: int = 0) -> float:
        counted = self.adapter.train_flops(self.model, batch)
        if counted is not None:
            return float(counted)
        self.method = MEASURED
        key = shape_key(batch)
        if key not in self.measured and len(self.measured) < MAX_MEASURED_SHAPES:
            flops = TRAIN_FLOPS_PER_FORWARD * measured_forward_flops(self.adapter, self.model, batch, epoch)
            self.measured[key] = (flops, batch.lexical_tokens)
        if key in self.measured:
            return self.measured[key][0]
        flops = sum(f for f, _ in self.measured.values())
        tokens = sum(t for _, t in self.measured.values())
        return flops / max(tokens, 1) * batch.lexical_tokens
