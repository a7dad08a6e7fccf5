"""Module paths of earlier tgbench versions, mapped onto where their code lives now.

tgbench 0.1 kept every module at the top of the package (tgbench.train, tgbench.grid, ...). The code now sits
in one folder per pipeline stage; plug-ins, notebooks and scripts written against the old paths keep working:
importing an old path gives the new module (`MOVED`), or, for a module whose code was split over several,
a module holding the names of all of them (`SPLIT`). Three old paths are now stage packages of their own
(tgbench.results, tgbench.report, tgbench.cli): their `__init__` re-exports the old module's names.

tgbench's own code never imports an old path (tests/test_modules.py checks this).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

MOVED: dict[str, str] = {
    "tgbench.errors": "tgbench.core.errors",
    "tgbench.files": "tgbench.core.files",
    "tgbench.console": "tgbench.core.console",
    "tgbench.devices": "tgbench.core.devices",
    "tgbench.config": "tgbench.plan.config",
    "tgbench.options": "tgbench.plan.options",
    "tgbench.comparison": "tgbench.plan.comparison",
    "tgbench.parallel": "tgbench.training.workers",
    "tgbench.tracking": "tgbench.training.tracking",
    "tgbench.flags": "tgbench.results.flags",
    "tgbench.compare": "tgbench.results.pooling",
    "tgbench.api": "tgbench.results.api",
    "tgbench.evaluate": "tgbench.evaluation.evaluate",
    "tgbench.scoring": "tgbench.evaluation.scoring",
    "tgbench.lmeval": "tgbench.evaluation.lmeval",
    "tgbench.export": "tgbench.evaluation.export",
    "tgbench.sections": "tgbench.report.task_sections",
    "tgbench.plots": "tgbench.report.plots",
    "tgbench.cli_eval": "tgbench.cli.evaluate",
    "tgbench.bench": "tgbench.cli.bench",
    "tgbench.demo": "tgbench.cli.demo",
    "tgbench.tasks.multipliers": "tgbench.tasks.stats.multipliers",
}

SPLIT: dict[str, tuple[str, ...]] = {
    "tgbench.grid": ("tgbench.plan.grid", "tgbench.plan.expand", "tgbench.plan.validate", "tgbench.plan.compute",
                     "tgbench.training.current", "tgbench.training.executor", "tgbench.training.board"),
    "tgbench.tune": ("tgbench.plan.tune", "tgbench.training.executor", "tgbench.report.tuning"),
    "tgbench.train": ("tgbench.training.trainer", "tgbench.training.optim", "tgbench.training.advice",
                      "tgbench.plan.compute"),
    "tgbench.runs": ("tgbench.training.rundir", "tgbench.training.checkpoints", "tgbench.evaluation.loaded",
                     "tgbench.task", "tgbench.core.files"),
    "tgbench.sample": ("tgbench.evaluation.sample", "tgbench.cli.sample"),
    "tgbench.tasks.verdicts": ("tgbench.tasks.stats.verdicts", "tgbench.tasks.stats.paired",
                               "tgbench.tasks.stats.power"),
    "tgbench.tasks.scaling": ("tgbench.tasks.stats.fits", "tgbench.tasks.stats.laws",
                              "tgbench.tasks.stats.bootstrap"),
}


def union_module(name: str, sources: tuple[str, ...]) -> types.ModuleType:
    """A module called `name` holding every name of `sources` (the first module defining a name wins)."""
    module = types.ModuleType(name, f"Earlier path of {', '.join(sources)} (see tgbench.moved).")
    for source in reversed(sources):
        for key, value in vars(importlib.import_module(source)).items():
            if not key.startswith("__"):
                setattr(module, key, value)
    return module


class _Alias(importlib.abc.Loader):
    """Loads an old path as its new module (the same object) or as the union of the modules it was split into."""

    def __init__(self, name: str) -> None:
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if self.name in MOVED:
            return importlib.import_module(MOVED[self.name])
        return union_module(self.name, SPLIT[self.name])

    def exec_module(self, module: types.ModuleType) -> None:
        pass

    def get_code(self, fullname: str):
        """The new module's code, so `python -m <old path>` runs it."""
        target = MOVED.get(fullname) or SPLIT[fullname][0]
        return importlib.util.find_spec(target).loader.get_code(target)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED or fullname in SPLIT:
            return importlib.util.spec_from_loader(fullname, _Alias(fullname))
        return None


def install() -> None:
    """Put the finder on `sys.meta_path` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
