"""A plug-in adapter for the reliability tests: GPT-2 whose training loss turns NaN at a chosen step.

Named in a grid or on the command line by file reference,
``adapter = "/abs/path/tests/fixtures_nan_adapter.py:NaNGPT2Adapter"``, so it also exercises the
registry's plug-in path. The NaN is real: it is
back-propagated, so from that step on the gradients and weights are NaN too, exactly what a diverging
run does to the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tgbench.adapter import Batch, LossParts
from tgbench.models.gpt2 import GPT2Adapter, GPT2Config


@dataclass
class NaNGPT2Config(GPT2Config):
    """GPT-2 settings plus the step at which the loss goes bad."""

    nan_at_step: int = 3  # 1-based optimiser step whose loss (and every later one) is NaN


class NaNGPT2Adapter(GPT2Adapter):
    """GPT-2 whose loss is multiplied by NaN from step `nan_at_step` on (tests only)."""

    name = "gpt2-nan"
    description = "GPT-2 whose training loss becomes NaN at step nan_at_step (reliability tests)"
    config_class = NaNGPT2Config

    def __init__(self, config: NaNGPT2Config | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.steps = 0  # one adapter instance trains one run, so this counts that run's steps

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        parts = super().loss(model, batch, epoch)
        self.steps += 1
        if self.steps >= self.config.nan_at_step:
            parts.loss = parts.loss * float("nan")  # keeps the graph: backward spreads the NaN to the weights
        return parts
