"""The report's Tuning section: the learning-rate sweep from tune.json, and the caveat of untuned runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tgbench.core.files import read_json
from tgbench.plan.tune import TUNE_FILE
from tgbench.report.plots import Series, plot
from tgbench.results.columns import done_rows


# -- the report's Tuning section ----------------------------------------------------------------------------
def tuning_section(grid_dir: Path, palette: dict[str, str]) -> dict[str, Any] | None:
    """Validation loss against LR per model (mean with the seeds' min-max bars, a small dot per seed beside it,
    chosen LR ringed), from tune.json; the table of choices with the LRs the sweep added and the LRs it excluded.

    tune.json files from before seeds were flagged and sweeps extended (no `flags`, `excluded` or `extensions`)
    render the same way, without those notes.

    Returns:
        None when the grid directory has no tune.json; else plots, the chosen table and the warnings.
    """

    data = read_json(Path(grid_dir) / TUNE_FILE)
    if not data.get("groups"):
        return None
    seeds: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for p in data.get("points", []):
        loss = p.get("best_val_loss")
        if loss is not None and math.isfinite(loss):
            seeds.setdefault((p["label"], int(p["width"]), int(p["budget"])), []).append((p["lr"], loss))
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for group in data["groups"]:
        cells.setdefault((int(group["width"]), int(group["budget"])), []).append(group)
    plots = []
    for (width, budget), members in sorted(cells.items()):
        series = []
        for group in members:
            colour = palette.get(group["label"], "#555555")
            curve = [p for p in group["curve"] if p.get("mean") is not None and math.isfinite(p["mean"])]
            chosen = [(p["lr"], p["mean"]) for p in curve if p["lr"] == group.get("chosen")]
            series.append(Series(group["label"], colour, points=[(p["lr"], p["mean"]) for p in curve],
                                 errors=[(p["lr"], p["min"], p["max"]) for p in curve if p.get("min") is not None],
                                 line=[(p["lr"], p["mean"]) for p in curve], rings=chosen,
                                 dots=seeds.get((group["label"], width, budget), [])))
        plots.append(plot(series, title=f"LR sweep at width {width}, D = {budget:,} tokens",
                          xlabel="peak learning rate", ylabel="best validation loss (nats/token)",
                          note="line: mean of the seeds; dots: each seed; bars: min-max; ring: chosen LR"))
    rows = []
    for group in data["groups"]:
        curve = group["curve"]
        diverged = [p["lr"] for p in curve if p.get("diverged")]
        chosen = next((p for p in curve if p["lr"] == group.get("chosen")), {})
        rows.append({"label": group["label"], "width": group["width"], "budget": group["budget"],
                     "chosen": group.get("chosen"), "edge": group.get("edge", ""),
                     "seeds": max((p.get("seeds", 0) for p in curve), default=0), "sd": chosen.get("sd"),
                     "diverged": diverged, "note": group.get("note", ""),
                     "excluded": [{"lr": p["lr"], "why": "; ".join(p["excluded"])} for p in curve
                                  if p.get("excluded") and p["lr"] not in diverged],
                     "extensions": group.get("extensions", [])})
    tune = data.get("tune", {})
    return {"plots": plots, "rows": rows, "rule": data.get("rule", ""), "lrs": data.get("lrs", []),
            "warnings": data.get("warnings", []), "untuned": data.get("untuned", []),
            "n_runs": len(data.get("points", [])), "seeds": tune.get("seeds", []),
            "max_extensions": tune.get("max_extensions"), "n_extensions": len(data.get("extensions", []))}


def comparison_tuning(comparison_dir: Path, palette: dict[str, str]) -> list[dict[str, Any]]:
    """Each pooled grid's own Tuning section, for a comparison directory (`tgbench compare`; [] for a grid).

    Returns:
        [{"name": grid name, "tuning": its `tuning_section` or None, "caveat": why untuned}], in compare.toml order.
    """
    import tomllib

    meta_path = Path(comparison_dir) / "compare.toml"
    if not meta_path.is_file():
        return []
    meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    out = []
    for grid in meta.get("grids", []):
        name, path = str(grid.get("name", "")), Path(str(grid.get("path", "")))
        # a --by-grid comparison colours gru@A; the grid's own tune.json says gru
        colours = {**palette, **{k.removesuffix(f"@{name}"): v for k, v in palette.items() if k.endswith(f"@{name}")}}
        tuning = tuning_section(path, colours) if (path / TUNE_FILE).is_file() else None
        caveat = ""
        if tuning is None and (path / "results.csv").is_file():
            import pandas as pd

            caveat = tuning_caveat(pd.read_csv(path / "results.csv"))
        out.append({"name": name, "tuning": tuning, "caveat": caveat})
    return out


def tuning_caveat(frame) -> str:
    """The caveat beside the verdict of a grid whose runs were not trained at tuned LRs ('' when they were).

    Args:
        frame: The results table (its `lr` and `lr_source` columns; runs from before them count as untuned).
    """

    done = done_rows(frame)
    if done.empty:
        return ""
    sources = {str(s) for s in done.get("lr_source", []) if isinstance(s, str) and s}
    untuned = sorted({str(lab) for lab, s in zip(done["label"], done.get("lr_source", [None] * len(done)),
                                                  strict=True) if s != "tuned"})
    if "tuned" in sources:
        if not untuned:
            return ""
        return f"{', '.join(untuned)} trained at a learning rate set by hand, not tuned like the others"
    lrs = {float(v) for v in done.get("lr", []) if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if len(lrs) > 1:
        return "learning rates set by hand per model, not tuned per model"
    return "one learning rate for every model, not tuned per model"
