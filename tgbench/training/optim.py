"""The optimizer and learning-rate schedule every run uses: AdamW and linear warmup then cosine decay."""

from __future__ import annotations

import torch

from tgbench.plan.config import RunConfig


def make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW, no weight decay on 1-D tensors (biases, norms, gates).

    The multi-tensor (`foreach`) implementation is asked for on the CPU too, where torch would pick
    the per-tensor loop: it updates every parameter bit for bit as the loop does (checked by a test)
    and saves a fifth of the optimiser's time. (`fused=True` is ~3x faster still but rounds
    differently, about 1e-7 per step, so runs would no longer repeat earlier runs' numbers.)
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    devices = {p.device.type for p in model.parameters()}
    foreach = True if devices <= {"cpu", "cuda"} else None  # None: torch's choice (other backends)
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(config.train.beta1, config.train.beta2),
                             foreach=foreach)


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, total_steps: int):
    """Linear warmup from ~0, then cosine decay to `min_lr_fraction` of the peak."""
    warmup = min(total_steps - 1, max(1, round(config.train.warmup_fraction * total_steps)))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup), eta_min=config.train.lr * config.train.min_lr_fraction
    )
    if warmup <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
