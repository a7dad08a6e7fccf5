"""The report: a grid directory's files (grid.toml, results.csv, fits.json, run directories) as one HTML page.

    page.py           render_report / write_report: the page is a list of sections (sections.py) in a template
    sections.py       every block of the page as a section object, in page order (a new block: one function)
    files.py          what the report reads, parsed once (GridFiles)
    verdict.py        each pair's verdict from fits.json, with its multipliers
    figures.py        the scaling, multiplier and training-curve plots
    tables.py         the runs, ablation, fits and throughput tables and the provenance
    tuning.py         the learning-rate sweep from tune.json
    task_sections.py  a task's own section (what a Task.report_section returns) and the generic one
    plots.py          SVG plots and colours
    templates/        the page template and one partial per section kind
"""

_OLD_MODULE = ("tgbench.report.page", "tgbench.report.files", "tgbench.report.verdict", "tgbench.report.figures",
               "tgbench.report.tables")  # the module tgbench.report of tgbench 0.1


def __getattr__(name: str):
    # Names of the earlier module tgbench.report (see tgbench.moved), imported on first use only.
    import importlib
    import importlib.util

    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a module of this folder
        return importlib.import_module(f"{__name__}.{name}")
    for module in _OLD_MODULE:
        found = importlib.import_module(module)
        if hasattr(found, name):
            return getattr(found, name)
    raise AttributeError(f"module 'tgbench.report' has no attribute {name!r}")
