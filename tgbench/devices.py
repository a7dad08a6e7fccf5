"""Where tensors live: device names, bf16 autocast, peak memory, and the torchrun process group.

Small helpers shared by training, evaluation and the benchmarks. A run is distributed when it is
started by `torchrun` (the RANK / WORLD_SIZE / LOCAL_RANK variables are set): each process then
trains on its own shard of every step's batches and torch DDP averages the gradients.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass

import torch

from tgbench.errors import UserError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory; the other ranks only compute."""
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """The torchrun layout from the environment (single process when WORLD_SIZE is unset or 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_process_group(dist_info: Distributed, device: torch.device) -> None:
    """Join the torchrun job's process group (NCCL on CUDA, gloo on CPU), once per process."""
    import torch.distributed as dist

    if dist_info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def resolve_device(name: str, dist_info: Distributed | None = None) -> torch.device:
    """A torch device from a setting: auto | cpu | mps | cuda | cuda:N.

    Under torchrun, "auto" and "cuda" mean this process's GPU (cuda:LOCAL_RANK).
    """
    dist_info = dist_info or Distributed()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available", "use --device cpu or auto")
    if name == "cuda" and dist_info.enabled:
        name = f"cuda:{dist_info.local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"unknown device '{name}'", "use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (or when asked); plain float32 otherwise."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated GPU memory on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
