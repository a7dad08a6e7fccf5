"""tgbench: an evaluation and benchmarking harness for sentence-level language models.

In Python: `tgbench.load_results(grid_dir)` (the results table as a pandas DataFrame) and
`tgbench.load_fits(grid_dir)` (fits.json); see tgbench/api.py and docs/python.md.
"""

__version__ = "0.1.0"

__all__ = ["load_fits", "load_results"]


def __getattr__(name: str):
    # Imported on first use, so `import tgbench` (and the CLI) stays light.
    if name in ("load_results", "load_fits"):
        from tgbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'tgbench' has no attribute {name!r}")
