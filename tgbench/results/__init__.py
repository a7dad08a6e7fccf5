"""Results: every run directory of a grid as one row of results.csv, and what is read from that table.

    columns.py  the table's vocabulary: fixed columns, <task>.<metric> columns, Metric, which loss counts
    table.py    building, refreshing and reading results.csv from the run directories
    flags.py    flags on runs (spikes, divergence, cell outliers): never silent drops
    pooling.py  several grids' tables pooled into one comparison directory (`tgbench report A B`)
    api.py      tgbench.load_results / tgbench.load_fits for notebooks and scripts
"""

_OLD_MODULE = ("tgbench.results.table", "tgbench.results.columns")  # the module tgbench.results of tgbench 0.1


def __getattr__(name: str):
    # Names of the earlier module tgbench.results (see tgbench.moved), imported on first use only: importing
    # them here eagerly would load the whole table code whenever any module of this folder is imported.
    import importlib
    import importlib.util

    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a module of this folder
        return importlib.import_module(f"{__name__}.{name}")
    for module in _OLD_MODULE:
        found = importlib.import_module(module)
        if hasattr(found, name):
            return getattr(found, name)
    raise AttributeError(f"module 'tgbench.results' has no attribute {name!r}")
