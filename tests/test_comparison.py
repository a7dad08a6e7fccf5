"""A grid's comparison: reference and baselines from the grid file, their defaults, label order and colours."""

from __future__ import annotations

import pandas as pd
import pytest

from tgbench.core.errors import UserError
from tgbench.plan.comparison import comparison, grid_comparison
from tgbench.plan.grid import GridConfig
from tgbench.report.plots import PALETTE, colours
from tgbench.report.sections import ablation_table, throughput_table


def test_defaults_tg_when_present_else_the_first_model_listed():
    assert comparison(["gpt2", "tg", "rmt"], order=["gpt2", "tg", "rmt"]).pairs == [("tg", "gpt2"), ("tg", "rmt")]
    plain = comparison(["gpt2", "lstm"], order=["lstm", "gpt2"])
    assert plain.reference == "lstm" and plain.labels == ("lstm", "gpt2")
    chosen = comparison(["gpt2", "tg", "lstm"], reference="lstm", baselines=["gpt2"], order=["tg", "gpt2", "lstm"])
    assert chosen.pairs == [("lstm", "gpt2")] and chosen.labels == ("lstm", "tg", "gpt2")
    # labels that are not in the grid file follow alphabetically
    assert comparison(["b", "a", "x"], order=["x"]).labels == ("x", "a", "b")


def test_grid_file_reference_and_baselines_are_checked():
    models = [{"adapter": "gpt2"}, {"adapter": "tg"}, {"adapter": "tg", "variant": "detach"}]
    grid = GridConfig.from_dict({"models": models, "reference": "tg/detach", "baselines": ["gpt2"]})
    assert grid.comparison.pairs == [("tg/detach", "gpt2")]
    assert grid_comparison(grid.to_dict()).pairs == [("tg/detach", "gpt2")]  # what grid.toml records
    with pytest.raises(UserError, match="did you mean 'gpt2'"):
        GridConfig.from_dict({"models": models, "reference": "gpt"})
    with pytest.raises(UserError, match="baselines lists the reference"):
        GridConfig.from_dict({"models": models, "reference": "tg", "baselines": ["tg"]})
    labelled = GridConfig.from_dict({"models": [{"adapter": "gpt2", "label": "small-gpt"}, {"adapter": "tg"}]})
    assert [m.label for m in labelled.models] == ["small-gpt", "tg"]


def test_colours_follow_the_order_and_never_repeat():
    labels = [f"m{i}" for i in range(20)]
    palette = colours(labels)
    assert [palette[f"m{i}"] for i in range(len(PALETTE))] == list(PALETTE)
    assert len(set(palette.values())) == 20
    assert colours(["lstm", "gpt2"]) == {"lstm": PALETTE[0], "gpt2": PALETTE[1]}


def _frame(rows):
    return pd.DataFrame([{"run_id": f"{lab}-{w}-{d}", "label": lab, "width": w, "layers": 1, "tokens": d,
                          "status": "done", "test_ppl": ppl, "sentences_per_s": 10.0, "tokens_per_s": tps,
                          "peak_memory_mb": 100.0}
                         for lab, w, d, ppl, tps in rows])


def test_ablations_are_variants_of_the_reference_and_throughput_follows_the_baseline():
    frame = _frame([("lstm", 32, 1000, 50.0, 100.0), ("lstm/wide", 32, 1000, 45.0, 80.0),
                    ("gpt2", 32, 1000, 40.0, 200.0)])
    table = ablation_table(frame, "lstm")
    assert not table["paper"] and [r["label"] for r in table["rows"]] == ["lstm", "lstm/wide"]
    assert table["rows"][1]["delta"] == "-5.00"
    assert ablation_table(frame, "gpt2")["rows"] == []  # no variants of gpt2, and it is not TG
    assert len(ablation_table(frame, "tg")["rows"]) > 5  # TG's paper ablations are listed even when not run
    rows = {r["label"]: r["ratio"] for r in throughput_table(frame, "gpt2", ["lstm", "lstm/wide", "gpt2"])}
    assert rows == {"lstm": "0.50", "lstm/wide": "0.40", "gpt2": "1.00"}
