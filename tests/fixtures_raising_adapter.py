"""A plug-in adapter for the researcher tests: GPT-2 whose loss raises IndexError at a chosen step.

Named by file reference (``adapter = "/abs/path/tests/fixtures_raising_adapter.py:RaisingGPT2Adapter"``), so
the exception is raised in a registered plug-in file, as a user's own adapter's bug would be.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tgbench.adapter import Batch, LossParts
from tgbench.models.gpt2 import GPT2Adapter, GPT2Config


@dataclass
class RaisingGPT2Config(GPT2Config):
    """GPT-2 settings plus the step whose loss raises."""

    raise_at_step: int = 2  # 1-based optimiser step whose loss raises IndexError


class RaisingGPT2Adapter(GPT2Adapter):
    """GPT-2 whose loss raises IndexError at step `raise_at_step` (tests only)."""

    name = "gpt2-raising"
    description = "GPT-2 whose loss raises IndexError at step raise_at_step (researcher tests)"
    config_class = RaisingGPT2Config

    def __init__(self, config: RaisingGPT2Config | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.steps = 0

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        self.steps += 1
        if self.steps >= self.config.raise_at_step:
            raise IndexError(f"Target 383 is out of bounds (step {self.steps})")
        return super().loss(model, batch, epoch)
