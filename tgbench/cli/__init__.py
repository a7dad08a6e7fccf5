"""The `tgbench` command: app.py builds it from one module per command group and owns the error policy.

    app.py       the Typer app, `main` (one-line errors with their fix, exit codes), the global flags
    flags.py     parsing shared by the commands (--tokens 100k, --set KEY=VALUE) and flags derived from configs
    train.py     tgbench train
    grid.py      tgbench train-grid, tune, validate
    evaluate.py  tgbench eval, export
    analysis.py  tgbench fit, report, compare
    info.py      tgbench adapters, tasks, data stats
    sample.py    tgbench sample
    bench.py     tgbench bench
    demo.py      tgbench demo (the default job end to end)
"""


def __getattr__(name: str):
    # `tgbench.cli:main` (the console script of earlier installs) and the other names of the earlier module
    # tgbench.cli (see tgbench.moved), imported on first use only: `import tgbench.cli.flags` stays light.
    import importlib

    found = importlib.import_module("tgbench.cli.app")
    if hasattr(found, name):
        return getattr(found, name)
    raise AttributeError(f"module 'tgbench.cli' has no attribute {name!r}")
