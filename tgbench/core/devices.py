"""Where tensors live: device names, bf16 autocast, per-run peak memory, and the torchrun process group.

Small helpers shared by training, evaluation and the benchmarks. A run is distributed when it is
started by `torchrun` (the RANK / WORLD_SIZE / LOCAL_RANK variables are set): each process then
trains on its own shard of every step's batches and torch DDP averages the gradients.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from dataclasses import dataclass

import torch

from tgbench.core.errors import UserError


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
        if device.index is None:  # newer torch's set_device wants an index: "cuda" means the current GPU
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (or when asked); plain float32 otherwise."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_peak_flops(device: torch.device, dtype: str = "float32", n: int = 1024, repeats: int = 5) -> float:
    """This machine's measured matmul FLOP/s: the median of `repeats` n x n x n products, in the precision a
    run's `dtype` setting trains in (bf16 under autocast on CUDA, float32 otherwise).

    The yardstick of a run's achieved FLOP/s; measured in the process that trained, so it sees the same threads
    and neighbours (about 0.2 s on a 2-core CPU).
    """
    import time
    from statistics import median

    with autocast_context(device, dtype):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
    return 2 * n**3 / median(times)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU (a wall-clock reading after it then includes that work); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated GPU memory on CUDA; on CPU the peak resident set size.

    On Linux the CPU figure is VmHWM, the peak since the process started (a fresh worker's own, unlike
    `ru_maxrss`, which a spawned child inherits from its parent) or since `reset_peak_memory`.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak_kib = _proc_status_kib("VmHWM")
    if peak_kib is None:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return peak_kib / 1024


def reset_peak_memory() -> None:
    """Start measuring peak memory afresh (GPU: torch's peak stats; Linux CPU: VmHWM via /proc/self/clear_refs).

    Where the CPU peak cannot be reset (other systems, a restricted /proc), `peak_memory_mb` keeps
    reporting the process's peak so far.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # 5: reset the peak resident set size to the current one (Linux >= 4.0)
    except OSError:
        pass


def _proc_status_kib(field: str) -> float | None:
    """A `kB` field of /proc/self/status (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RunMemory:
    """The peak memory one training run adds, the same whether runs share a process (a grid run one after
    another) or not (`--jobs` workers).

    On CUDA: the peak of allocated GPU memory since the run started. On CPU: the peak resident set size
    during the run minus the resident set size when it started (model, optimiser state and activations; the
    corpus loaded before, and memory an earlier run of the process left with the allocator, are not
    counted). Where the CPU peak cannot be reset (not Linux, a restricted /proc), the figure is None rather
    than the process's lifetime peak, which would repeat the largest earlier run.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        reset_peak_memory()
        if device.type == "cuda":
            self.start_mb, self.available = 0.0, True
            return
        rss, peak = _proc_status_kib("VmRSS"), _proc_status_kib("VmHWM")
        self.available = device.type == "cpu" and rss is not None and peak is not None and peak - rss < 1024
        self.start_mb = (rss or 0.0) / 1024

    def peak_mb(self) -> float | None:
        if not self.available:
            return None
        return max(0.0, peak_memory_mb(self.device) - self.start_mb)
