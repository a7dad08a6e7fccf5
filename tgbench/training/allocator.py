"""Keep freed memory in the process: glibc malloc settings for training processes, and the CPU time they save.

A training step allocates and frees the same large buffers (activations, gradients, logits) at every step.
With glibc's defaults a buffer above the mmap threshold is allocated with `mmap` and returned with `munmap`
when freed, and a freed heap top above the trim threshold is given back with `brk`: the next step faults
every page of it in again (zero-filled by the kernel). On the demo grid that was ~17% of the CPU time spent in
the kernel and ~140 million minor page faults. `keep_freed_memory` raises both thresholds so freed buffers stay
in the process and are reused; peak resident memory grows by at most what one step frees (measured: +0.6 GB
at the demo sizes, see benchmarks/RESULTS.md).

Every process that trains calls it first: the CLI's entry point, each `--jobs` worker and the benchmarks.
Set `TGBENCH_MALLOC=default` to keep glibc's defaults (to compare, or where memory is tight). On a C library
other than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

GIB = 1 << 30
MIB = 1 << 20
SETTINGS = ((M_MMAP_THRESHOLD, GIB), (M_TRIM_THRESHOLD, GIB), (M_TOP_PAD, 64 * MIB))
ENV = "TGBENCH_MALLOC"

_applied: bool | None = None  # what the first call did (later calls repeat nothing)


def _libc() -> Any | None:
    """glibc's handle with `mallopt`, or None on another C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory(libc: Any | None = None) -> bool:
    """Make glibc malloc keep freed buffers in the process instead of returning them to the OS.

    Sets `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` to 1 GiB and `M_TOP_PAD` to 64 MiB through `mallopt`. Call it
    early, before the first large allocation (mallopt's thresholds only affect later allocations). Idempotent
    within a process.

    Args:
        libc: The C library to call (tests pass a stand-in); found with ctypes when None.

    Returns:
        True when the settings were applied; False when `TGBENCH_MALLOC=default` is set, the C library is not
        glibc, or glibc refused a setting.
    """
    global _applied
    if libc is None and _applied is not None:
        return _applied
    if os.environ.get(ENV, "").strip().lower() == "default":
        applied = False
    else:
        libc = libc if libc is not None else _libc()
        applied = libc is not None and all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
    if libc is None or _applied is None:
        _applied = applied
    return applied


def cpu_usage(who: int = resource.RUSAGE_SELF) -> dict[str, float]:
    """This process's (or its waited-for children's) CPU time and minor page faults so far.

    Args:
        who: `resource.RUSAGE_SELF` or `resource.RUSAGE_CHILDREN`.

    Returns:
        `cpu_user_s`, `cpu_system_s` and `minor_page_faults`.
    """
    usage = resource.getrusage(who)
    return {"cpu_user_s": usage.ru_utime, "cpu_system_s": usage.ru_stime, "minor_page_faults": usage.ru_minflt}


def usage_since(start: dict[str, float], who: int = resource.RUSAGE_SELF) -> dict[str, float]:
    """`cpu_usage` since `start` (an earlier `cpu_usage`), with `system_fraction` (system / all CPU time).

    Args:
        start: An earlier `cpu_usage` of the same `who`.
        who: `resource.RUSAGE_SELF` or `resource.RUSAGE_CHILDREN`.

    Returns:
        `cpu_user_s`, `cpu_system_s`, `minor_page_faults` (an int) and `system_fraction` (None without CPU time).
    """
    now = cpu_usage(who)
    delta = {key: now[key] - start[key] for key in now}
    delta["minor_page_faults"] = int(delta["minor_page_faults"])
    total = delta["cpu_user_s"] + delta["cpu_system_s"]
    delta["system_fraction"] = delta["cpu_system_s"] / total if total > 0 else None
    return delta


def usage_line(usage: dict[str, float]) -> str:
    """One line for a run's or a grid's end: CPU time, the kernel's share, minor page faults.

    Args:
        usage: What `usage_since` returns (or sums of its fields).

    Returns:
        E.g. "CPU 812.4 s user + 14.1 s system (1.7% in the kernel), 1,234,567 minor page faults".
    """
    user, system = usage["cpu_user_s"], usage["cpu_system_s"]
    share = f"{100 * system / (user + system):.1f}%" if user + system > 0 else "-"
    return (f"CPU {user:,.1f} s user + {system:,.1f} s system ({share} in the kernel), "
            f"{int(usage['minor_page_faults']):,} minor page faults")


def runs_usage(grid_dir: Path) -> dict[str, float] | None:
    """The CPU time and minor page faults of a grid's runs, summed over their summary.json files.

    Each run's figures are those of the session that finished it (see `usage_since`), in whichever process trained
    it (this one or a `--jobs` worker); runs finished before these fields existed are left out.

    Args:
        grid_dir: A grid directory (its runs, and its tuning sweep's under tune/).

    Returns:
        `cpu_user_s`, `cpu_system_s`, `minor_page_faults` and `runs` (how many runs were counted), or None when no
        run has the fields.
    """
    total = {"cpu_user_s": 0.0, "cpu_system_s": 0.0, "minor_page_faults": 0, "runs": 0}
    for path in sorted(Path(grid_dir).glob("**/summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or summary.get("cpu_system_s") is None:
            continue
        for key in ("cpu_user_s", "cpu_system_s", "minor_page_faults"):
            total[key] += summary[key]
        total["runs"] += 1
    return total if total["runs"] else None
