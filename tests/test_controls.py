"""Memory controls and what a gap is made of: a grid's `controls = ["no-memory"]` adds each memory model's twin
through the adapter contract, fits.json gives each model's memory gain and the difference of two models' gains
(paired per replicate), and a pair's gap at a document's first sentence beside its gap over later sentences.

The truths are synthetic tables with known gains, run through `fit_grid` (the code `tgbench fit` runs); the twins
themselves are built and trained a step by every built-in memory adapter.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import synthetic_documents
from tiny_runs import tiny_grid_dict

from tgbench.adapter import Vocab
from tgbench.core.errors import UserError
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.registry import get_adapter_class
from tgbench.report.page import render_report
from tgbench.tasks.stats.attribution import attribution
from tgbench.tasks.stats.fits import fit_grid, summary_lines, write_fits
from tgbench.training.executor import run_grid

BUDGETS = (50_000, 100_000, 200_000)
VOCAB = Vocab(base_size=40)


def grid_of(controls, models=("tg", "gpt2", "txl")) -> GridConfig:
    return GridConfig.from_dict({"budgets": [1000], "seeds": [0, 1], "controls": list(controls),
                                 "models": [{"adapter": m} for m in models]})


def test_no_memory_controls_add_a_twin_per_memory_model_and_no_baseline():
    grid = grid_of(["no-memory"], ("tg", "gpt2", "rmt", "txl"))
    labels = [m.label for m in grid.models]
    assert labels == ["tg", "tg-no-memory", "gpt2", "rmt", "rmt-no-memory", "txl", "txl-no-memory"]
    twin = grid.models[1]
    assert twin.control_of == "tg" and twin.options == {"use_memory": False, "context_seeding": False}
    assert grid.control_pairs == {"tg-no-memory": "tg", "rmt-no-memory": "rmt", "txl-no-memory": "txl"}
    assert grid.comparison.pairs == [("tg", "gpt2"), ("tg", "rmt"), ("tg", "txl")]
    specs = [s for s in expand(grid) if s.label == "txl-no-memory"]
    assert len(specs) == 2 and specs[0].config.model_options["memory_tokens"] == 0
    assert specs[0].meta["control_of"] == "txl"
    # the resolved grid (as a grid directory keeps it) reads back with the same models, not twins of twins
    again = GridConfig.from_dict(grid.to_dict())
    assert [m.label for m in again.models] == labels


def test_a_control_no_model_offers_is_an_error_naming_it():
    with pytest.raises(UserError, match="no-cache"):
        grid_of(["no-cache"], ("tg", "gpt2"))
    with pytest.raises(UserError, match="names no model"):
        GridConfig.from_dict({"models": [{"adapter": "gpt2"}, {"adapter": "gpt2", "variant": "x",
                                                               "control_of": "lstm"}]})


@pytest.mark.parametrize("name", ["tg", "rmt", "txl"])
def test_every_builtin_memory_twin_builds_and_trains_a_step_and_its_units_are_independent(name):
    """The twin trains, and nothing of an earlier sentence reaches a later one: the later sentence's loss has no
    gradient with respect to the earlier sentences' input embeddings."""
    cls = get_adapter_class(name)
    adapter = cls(cls.config_class(width=32, layers=2, heads=2, dropout=0.0, attention_dropout=0.0,
                                   **cls.controls["no-memory"]))
    torch.manual_seed(0)
    model = adapter.build(VOCAB).train()
    docs = synthetic_documents(np.random.default_rng(3), 4, VOCAB.base_size)
    batch = adapter.batches(docs, VOCAB, batch_tokens=150, epoch=1, rng=np.random.default_rng(0))[0].to("cpu")
    loss = adapter.loss(model, batch, epoch=1).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # one document, scored: a sentence's log-probabilities do not change when an earlier sentence changes
    model.eval()
    doc = [np.arange(2, 9), np.arange(10, 16), np.arange(20, 27)]
    other = [np.arange(30, 37), np.arange(10, 16), np.arange(20, 27)]
    with torch.no_grad():
        first, second = (adapter.score(model, [d], VOCAB)[0] for d in (doc, other))
    n0 = len(doc[0])
    assert torch.allclose(first[n0:], second[n0:], atol=1e-5)


def synthetic(rng: np.random.Generator, gains: dict[str, float], gap_first: float = 0.0, gap_later: float = 0.0,
              replicates: int = 4, sd: float = 0.01) -> pd.DataFrame:
    """tg, txl and their twins; a twin's loss is its model's plus the model's gain. Position columns: tg's loss is
    txl's plus `gap_first` at sentence 1 and plus `gap_later` later."""
    rows = []
    for budget in BUDGETS:
        for r in range(replicates):
            base = 6.0 * (4e4 / budget) ** 0.2 + sd * rng.standard_normal()
            for label, control_of, shift in (("tg", "", 0.0), ("txl", "", 0.0), ("tg-no-memory", "tg", gains["tg"]),
                                             ("txl-no-memory", "txl", gains["txl"])):
                loss = base + shift + sd * rng.standard_normal()
                first = loss + 0.5 + (gap_first if label == "tg" else 0.0) + sd * rng.standard_normal()
                later = loss + (gap_later if label == "tg" else 0.0) + sd * rng.standard_normal()
                rows.append({"run_id": f"{label}-{budget}-s{r}", "adapter": label.split("-")[0], "label": label,
                             "variant": "", "width": 64, "layers": 2, "n_params": 1000, "tokens": budget,
                             "seed": r, "status": "done", "best_val_loss": loss, "test_loss": loss,
                             "seed_scheme": "per-budget", "control_of": control_of,
                             "ppl.loss_sentence_1": first, "ppl.tokens_sentence_1": 100,
                             "ppl.loss_sentence_2": later, "ppl.tokens_sentence_2": 100,
                             "ppl.loss_sentence_3-4": later, "ppl.tokens_sentence_3-4": 200})
    return pd.DataFrame(rows)


def test_fits_give_each_memory_gain_and_the_difference_of_gains():
    fits = fit_grid(synthetic(np.random.default_rng(0), {"tg": 0.10, "txl": 0.02}), n_resamples=0)
    assert fits["pairs"] == [["tg", "txl"]]  # the twins are not baselines
    attributed = fits["attribution"]
    gains = {g["model"]: g for g in attributed["memory_gains"]}
    assert gains["tg"]["gain"] == pytest.approx(0.10, abs=0.01)
    assert gains["txl"]["gain"] == pytest.approx(0.02, abs=0.01)
    assert gains["tg"]["class"] == "tg better at every measured budget"  # the memory helps at every budget
    (diff,) = attributed["gain_differences"]
    assert diff["models"] == ["tg", "txl"]
    assert diff["difference"] == pytest.approx(0.08, abs=0.01)
    assert diff["ci"][0] > 0 and diff["p_value"] < 0.01
    assert "tg's memory" in diff["class"]
    lines = "\n".join(summary_lines(fits))
    assert "memory gain: tg's memory is worth +0.10" in lines and "difference of gains" in lines


def test_equal_gains_are_not_called_different():
    """Over 60 synthetic grids with equal gains, the difference's CI misses zero at about the test's alpha."""
    misses = 0
    for seed in range(60):  # `attribution` is what fit_grid runs for fits.json's attribution
        df = synthetic(np.random.default_rng(seed), {"tg": 0.05, "txl": 0.05})
        attributed = attribution(df.assign(loss=df["test_loss"]), [("tg", "txl")], "per-budget")
        lo, hi = attributed["gain_differences"][0]["ci"]
        misses += not lo <= 0.0 <= hi
    assert misses <= 9  # 5% expected (3 of 60); 9 is beyond the binomial's 99th percentile


def test_the_gap_at_sentence_one_is_split_from_the_gap_later():
    fits = fit_grid(synthetic(np.random.default_rng(1), {"tg": 0.0, "txl": 0.0}, gap_first=-0.09, gap_later=-0.10),
                    n_resamples=0)
    (split,) = fits["attribution"]["by_position"]
    assert (split["a"], split["b"]) == ("tg", "txl")
    assert split["sentence_1"]["mean"] == pytest.approx(-0.09, abs=0.01)
    assert split["later"]["mean"] == pytest.approx(-0.10, abs=0.01)
    assert split["context"]["mean"] == pytest.approx(-0.01, abs=0.01)
    assert "first sentence" in split["sentence"]


def test_a_table_without_controls_or_positions_has_an_empty_attribution():
    df = synthetic(np.random.default_rng(2), {"tg": 0.1, "txl": 0.0})
    df = df[df["control_of"] == ""].drop(columns=[c for c in df.columns if c.startswith("ppl.")] + ["control_of"])
    attributed = fit_grid(df, n_resamples=0)["attribution"]
    assert attributed["memory_gains"] == [] and attributed["by_position"] == [] and attributed["controls"] == {}


def test_the_report_shows_memory_gains_and_the_position_split(tmp_path):
    synthetic(np.random.default_rng(4), {"tg": 0.10, "txl": 0.02}, gap_first=-0.05, gap_later=-0.08).to_csv(
        tmp_path / "results.csv", index=False)
    write_fits(tmp_path, n_resamples=0)
    html = render_report(tmp_path)
    assert "What the memory is worth" in html
    assert "tg&#39;s memory is worth +0.10" in html or "tg's memory is worth +0.10" in html
    assert "By sentence position" in html and "first sentence" in html


def test_a_trained_grid_with_controls_writes_memory_gains(tmp_path):
    """End to end: train-grid with controls trains the twin, results.csv says whose control it is, fit gives the
    gain. Two replicates at two budgets of a tiny grid (the numbers mean nothing; the plumbing is the point)."""
    raw = tiny_grid_dict(tmp_path, models=("tg", "gpt2"))
    raw.update(controls=["no-memory"], seeds=[0, 1])
    out = tmp_path / "grid"
    run_grid(GridConfig.from_dict(raw), out, progress=False)
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    twin = results[results["label"] == "tg-no-memory"]
    assert len(twin) == 4 and set(twin["control_of"]) == {"tg"} and set(twin["status"]) == {"done"}
    write_fits(out, n_resamples=0)
    fits = json.loads((out / "fits.json").read_text())
    assert fits["pairs"] == [["tg", "gpt2"]]
    (gain,) = fits["attribution"]["memory_gains"]
    assert (gain["model"], gain["twin"], gain["n_pairs"]) == ("tg", "tg-no-memory", 4)
