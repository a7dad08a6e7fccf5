"""`tgbench bench`: run the throughput and memory benchmarks of `benchmarks/` in this process.

Each benchmark is a module `benchmarks.NAME` with `main(quick=..., device=...)`; this command is the
same as `python -m benchmarks.NAME` (run from the repository root, where `benchmarks/` lives).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tgbench.core.errors import UserError, unknown_name

BENCHMARKS = ("train_throughput", "score_throughput", "padding", "memory", "data_pipeline", "compile",
              "grid_throughput")
NO_DEVICE = ("padding", "data_pipeline", "grid_throughput")  # counts slots / CPU data work / whole grids


def _import(name: str):
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as err:
        if err.name not in ("benchmarks", f"benchmarks.{name}"):
            raise
        # Installed tgbench, run outside the checkout: the benchmarks live next to the package source.
        root = Path(__file__).resolve().parent.parent
        if not (root / "benchmarks" / f"{name}.py").exists():
            raise UserError("the benchmarks/ folder is not available",
                            "run `tgbench bench` from a checkout of the tgbench repository") from err
        sys.path.insert(0, str(root))
        return importlib.import_module(f"benchmarks.{name}")


def run_benchmarks(name: str = "all", quick: bool = False, device: str = "auto") -> dict[str, dict[str, Any]]:
    """Run one benchmark (or "all") and return each one's figures (its final JSON line as a dict)."""
    names = BENCHMARKS if name == "all" else (name,)
    for n in names:
        if n not in BENCHMARKS:
            raise unknown_name("benchmark", n, (*BENCHMARKS, "all"))
    results = {}
    for n in names:
        module = _import(n)
        kwargs: dict[str, Any] = {"quick": quick}
        if n not in NO_DEVICE:
            kwargs["device"] = device
        results[n] = module.main(**kwargs)
    return results


def bench_command(
    name: Annotated[str, typer.Argument(help=f"Benchmark: {', '.join(BENCHMARKS)} or all.")] = "all",
    quick: Annotated[bool, typer.Option("--quick", help="Tiny synthetic sizes (a smoke test; figures mean nothing).")]
    = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Run the benchmarks: each prints a table and a final JSON line with every figure."""
    run_benchmarks(name, quick=quick, device=device)
