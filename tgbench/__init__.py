"""tgbench: an evaluation and benchmarking harness for sentence-level language models.

In Python: `tgbench.load_results(grid_dir)` (the results table as a pandas DataFrame) and
`tgbench.load_fits(grid_dir)` (fits.json); see tgbench/api.py and docs/python.md.
"""

__version__ = "0.1.0"

__all__ = ["load_fits", "load_results"]


def __getattr__(name: str):
    # PEP 562 lazy attributes: tgbench.api (pandas and the results code) is imported on first use only, so
    # `import tgbench` stays light and no module that imports the package imports the API with it.
    if name in ("load_results", "load_fits"):
        import importlib

        return getattr(importlib.import_module("tgbench.api"), name)
    raise AttributeError(f"module 'tgbench' has no attribute {name!r}")
