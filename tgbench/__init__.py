"""tgbench: an evaluation and benchmarking harness for sentence-level language models.

The package follows the pipeline, one folder per stage (docs/modules.md has a line per module):

    adapter.py, task.py, registry.py   the two contracts (an architecture, an evaluation) and how
                                       implementations are found by name
    core/        errors, atomic files, terminal output, devices
    data/        corpus -> sentences -> token ids, cached
    plan/        settings and grid files -> the runs to train (seeds, tuning sweeps, compute, checks)
    training/    a run's life: the trainer, its directory and checkpoints, executors, workers, live board
    evaluation/  a trained run: load it, score text, run tasks (lm-eval too), sample, export
    results/     run directories -> results.csv, flags, pooling grids, the Python API
    report/      results.csv + fits.json -> one HTML page
    cli/         the `tgbench` command, one module per command group
    ../models/   the architectures (installed as tgbench.models)
    ../tasks/    the evaluation tasks and the statistics of the fits and verdicts (tgbench.tasks)

In Python: `tgbench.load_results(grid_dir)` (the results table as a pandas DataFrame) and
`tgbench.load_fits(grid_dir)` (fits.json); see tgbench/results/api.py and docs/python.md.
"""

from tgbench import moved

__version__ = "0.1.0"

__all__ = ["load_fits", "load_results"]

moved.install()  # module paths of earlier versions (tgbench.train, tgbench.grid, ...) keep importing


def __getattr__(name: str):
    # PEP 562 lazy attributes: tgbench.results.api (pandas and the results code) is imported on first use only, so
    # `import tgbench` stays light and no module that imports the package imports the API with it.
    if name in ("load_results", "load_fits"):
        import importlib

        return getattr(importlib.import_module("tgbench.results.api"), name)
    raise AttributeError(f"module 'tgbench' has no attribute {name!r}")
