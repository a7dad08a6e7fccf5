"""Who is compared with whom: a grid's reference label and its baselines, and the reading order of labels.

A grid file names its comparison (``reference = "lstm"``, optional ``baselines = ["gpt2"]``). Without a
reference the default is the paper's subject, ``tg``, when the grid has it, else the first model listed;
without baselines every other label is one. Pairs (reference, baseline), the verdict, the ablation
section (variants of the reference), the throughput baseline and the colours (grid order) follow it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tgbench.plan.config import read_grid_file

DEFAULT_REFERENCE = "tg"  # the paper's model: the reference of a grid that has it and names none


@dataclass(frozen=True)
class Comparison:
    """The reference label, the baselines compared with it, and every label in reading order."""

    reference: str
    baselines: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(reference, baseline) for every baseline."""
        return [(self.reference, b) for b in self.baselines]


def comparison(labels: Iterable[object], reference: str = "", baselines: Sequence[str] = (),
               order: Sequence[str] = (), controls: Iterable[str] = ()) -> Comparison:
    """The comparison of a set of labels.

    Args:
        labels: The labels that have runs (results.csv's `label` column, or a grid's model labels).
        reference: The grid's `reference` ("" for the default: tg when present, else the first label in order).
        baselines: The grid's `baselines` (empty: every other label that is not a control).
        order: The grid's model labels in file order; labels not in it follow alphabetically.
        controls: Labels of control twins (a grid's `controls`): compared with their own model (the memory
            gains of `tgbench.tasks.stats.attribution`), never a default baseline.

    Returns:
        The comparison; labels in reading order, the reference first.
    """
    present = {str(x) for x in labels if str(x) not in ("", "nan", "None")}
    listed = [lab for lab in dict.fromkeys(order) if lab in present]
    ordered = listed + sorted(present - set(listed))
    if not reference:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in present else (ordered[0] if ordered else "")
    ordered = [reference, *[lab for lab in ordered if lab != reference]] if reference in present else ordered
    controls = set(controls)
    chosen = [b for b in baselines if b in present and b != reference] if baselines else \
        [lab for lab in ordered if lab != reference and lab not in controls]
    return Comparison(reference, tuple(chosen), tuple(ordered))


def grid_comparison(grid: dict, labels: Iterable[object] | None = None) -> Comparison:
    """The comparison a grid file (its parsed TOML) names, over `labels` (default: its models' labels)."""
    models = [m for m in grid.get("models", []) if isinstance(m, dict)]
    order = [str(m.get("label") or label_of(m.get("adapter", ""), m.get("variant"))) for m in models]
    # the twins a grid adds are labelled "<label>-<control>" (`tgbench.plan.grid.add_controls`)
    controls = {lab for lab, m in zip(order, models, strict=True) if m.get("control_of")}
    controls |= {f"{lab}-{c}" for lab in order for c in grid.get("controls") or []}
    return comparison(order if labels is None else labels, str(grid.get("reference") or ""),
                      [str(b) for b in grid.get("baselines") or []], order, controls)


def label_of(adapter: object, variant: object = "") -> str:
    """A run's label from its adapter and variant: the adapter, or adapter/variant for a named option set
    (e.g. tg/no-memory). Grids label a plug-in by its class's `name` (`tgbench.plan.grid.ModelEntry`)."""
    if variant is None or (isinstance(variant, float) and math.isnan(variant)) or str(variant).strip() == "":
        return str(adapter)
    return f"{adapter}/{variant}"


def read_grid_comparison(grid_dir: Path, labels: Iterable[object]) -> Comparison | None:
    """The comparison of a grid directory's grid.toml over `labels` (the labels with runs); None without a
    readable grid.toml (the fits then take their default: tg when present, else the first label)."""
    grid = read_grid_file(grid_dir)
    return grid_comparison(grid, labels) if grid else None


def comparison_pairs(labels: Sequence[str], reference: str | None = None,
                     baselines: Sequence[str] | None = None, controls: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The default (A, B) pairs of some labels: the reference against every baseline.

    Args:
        labels: the labels of the results table, in reading order.
        reference: the label every other one is compared with; None: "tg" when present, else the first label.
        baselines: the labels compared with the reference; None: every other label that is not a control.
        controls: control twins' labels (results.csv's `control_of` is set for their runs).
    """
    labels = list(dict.fromkeys(str(lab) for lab in labels))
    return comparison(labels, reference or "", baselines or (), order=labels, controls=controls).pairs


def ordered_labels(labels: Iterable[object], order: Iterable[str] = ()) -> list[str]:
    """Distinct labels in reading order: the reference first, then the grid's model order `order`, then the
    rest alphabetically."""
    return list(comparison(labels, order=list(order)).labels)
