"""isoFLOP grids: compute budgets in training FLOPs, each model's token budget solved from its counted FLOPs.

The central check trains a small isoFLOP grid (TG and GPT-2, whose FLOPs per token differ by ~10%) and reads each
run's counted `train_flops` back from its summary: every model of a compute budget must have trained the same
compute within 2%, which a shared token budget misses by the models' cost ratio.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from corpora import word_documents, write_plain
from tiny_runs import run_main, tiny_grid_dict
from typer.testing import CliRunner

from tgbench.cli.app import app
from tgbench.core.errors import UserError
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig, compute_slug
from tgbench.plan.isoflop import COUNTED, MEASURED
from tgbench.tasks.stats.fits import table_verdicts
from tgbench.tasks.stats.paired import compute_pairs
from tgbench.training.executor import run_grid

BUDGET = 3e8  # ~4.9k lexical tokens for GPT-2, ~5.3k for TG at width 16: ~40 steps of 128 tokens


def iso_dict(root: Path, budgets=(BUDGET,), seeds=(0,)) -> dict:
    """The tiny grid with compute budgets, on 600 short documents (~60 tokens each, ~1% of a run's subset: the
    granularity at which a run's subset, whole documents, can meet its compute budget)."""
    corpus = root / "corpus.txt"
    if not corpus.exists():
        write_plain(corpus, word_documents(600))
    raw = tiny_grid_dict(root, models=("tg", "gpt2"))
    raw.update(compute_budgets=list(budgets), seeds=list(seeds))
    return raw


def spread(values) -> float:
    return max(values) / min(values) - 1


def test_compute_slug_keeps_run_ids_readable():
    assert compute_slug(1e12) == "1e12"
    assert compute_slug(2.5e11) == "2.5e11"
    assert compute_slug(3e8) == "3e8"


@pytest.mark.parametrize("bad", [[-1.0], [0], [1e12, 1e12], [True]])
def test_bad_compute_budgets_are_errors_naming_the_value(tmp_path, bad):
    raw = iso_dict(tmp_path)
    raw["compute_budgets"] = bad
    with pytest.raises(UserError) as err:
        GridConfig.from_dict(raw)
    assert "compute_budgets" in err.value.message


def test_a_compute_budget_too_small_for_one_step_names_it_and_the_fix(tmp_path):
    grid = GridConfig.from_dict(iso_dict(tmp_path, budgets=(2e5,)))
    with pytest.raises(UserError) as err:
        expand(grid, encode=True)
    assert "too small" in err.value.message and "compute budget 2e5 FLOPs" in err.value.message
    assert "raise that compute budget" in err.value.fix


def test_a_compute_budget_beyond_the_training_split_is_an_error(tmp_path):
    grid = GridConfig.from_dict(iso_dict(tmp_path, budgets=(1e11,)))
    with pytest.raises(UserError) as err:
        expand(grid, encode=True)
    assert "compute budget 1e11 FLOPs" in err.value.message and "training split" in err.value.message


def test_the_solved_tokens_follow_each_models_cost_and_seeds_follow_the_compute_budget(tmp_path):
    grid = GridConfig.from_dict(iso_dict(tmp_path, budgets=(BUDGET, 2 * BUDGET), seeds=(0, 1)))
    specs = expand(grid, encode=True)
    assert {s.run_id for s in specs} >= {"tg-w16-l1-C3e8-s0", "gpt2-w16-l1-C6e8-s1"}
    for compute in (BUDGET, 2 * BUDGET):
        for seed in (0, 1):
            cell = {s.label: s for s in specs if s.meta["compute_budget"] == compute and s.seed == seed}
            assert set(cell) == {"tg", "gpt2"}
            # one replicate's models share both seeds, so their subsets are prefixes of one document order
            assert len({(s.config.train.data_seed, s.config.train.init_seed) for s in cell.values()}) == 1
            assert all(s.solved.how == COUNTED for s in cell.values())
            assert spread([s.solved.flops for s in cell.values()]) < 0.02
            # GPT-2 costs more per lexical token than TG at this shape: it gets fewer tokens
            assert cell["gpt2"].tokens < cell["tg"].tokens
    seeds = {s.config.train.data_seed for s in specs}
    assert len(seeds) == 4  # every (compute budget, replicate) its own cell


def test_dry_run_and_validate_show_the_tokens_each_model_gets(tmp_path, monkeypatch, capsys):
    raw = iso_dict(tmp_path)
    path = tmp_path / "iso.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    code, out = run_main(["validate", path], monkeypatch, capsys)
    assert code == 0, out
    # before the corpus is encoded the tokens are 6N estimates, and the output says so
    assert "isoFLOP" in out and "estimate" in out
    GridConfig.from_dict(raw)
    expand(GridConfig.from_dict(raw), encode=True)  # encodes the corpus
    code, out = run_main(["train-grid", path, "--dry-run"], monkeypatch, capsys)
    assert code == 0, out
    assert "tg-w16-l1-C3e8-s0" in out and "300 MFLOP" in out
    assert "equal compute: the runs of each compute budget are within" in out
    assert "different tokens and steps by design" in out and "equal steps" not in out


def test_an_isoflop_grid_trains_every_model_to_the_same_counted_compute(tmp_path):
    grid = GridConfig.from_dict(iso_dict(tmp_path, budgets=(BUDGET,), seeds=(0, 1)))
    out = tmp_path / "runs"
    frame = run_grid(grid, out, progress=False)
    assert (frame["status"] == "done").all()
    flops = {}
    for run_id in frame["run_id"]:
        summary = json.loads((out / run_id / "summary.json").read_text())
        assert summary["flops_method"] == "counted"
        flops[run_id] = summary["train_flops"]
    for seed in (0, 1):  # the trained compute, as the trainer counted it, not the plan's
        cell = [v for k, v in flops.items() if k.endswith(f"-s{seed}")]
        assert len(cell) == 2 and spread(cell) < 0.02
    assert all(abs(v / BUDGET - 1) < 0.02 for v in flops.values())
    csv = pd.read_csv(out / "results.csv")
    assert csv["compute_budget"].tolist() == [BUDGET] * 4
    assert (csv.groupby("label")["tokens"].first()["gpt2"] < csv.groupby("label")["tokens"].first()["tg"])
    config = (out / "tg-w16-l1-C3e8-s0" / "config.toml").read_text()
    assert "compute_budget = 300000000.0" in config
    # the verdict at equal compute pairs the runs of one (compute budget, replicate) directly
    rows = csv.assign(loss=csv["test_loss"].fillna(csv["best_val_loss"]))
    pairs, _, how = compute_pairs(rows, "gpt2", "tg")
    assert how == "direct" and len(pairs) == 2
    verdict = table_verdicts(rows, axis="flops", leave_one_out=False, with_power=False)["verdicts"][0]
    assert any("isoFLOP grid" in line and "paired directly" in line for line in verdict["details"]), verdict
    # and `tgbench fit --axis flops` on the grid directory writes it (the default token axis has no pairs here:
    # the models trained different tokens, so it must not fail)
    result = CliRunner().invoke(app, ["fit", str(out), "--axis", "flops", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    fits = json.loads((out / "fits.json").read_text())
    assert fits["verdicts"] and fits["verdicts"][0]["axis"] == "flops"
    assert CliRunner().invoke(app, ["fit", str(out), "--resamples", "20"]).exit_code == 0
    # the report's runs table gives each run's compute budget, its provenance the grid's
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "compute budget" in html and "compute_budgets" in html


def test_tuning_per_token_budget_is_refused_on_an_isoflop_grid(tmp_path):
    raw = iso_dict(tmp_path)
    raw["tune"] = {"per_budget": True}
    with pytest.raises(UserError) as err:
        GridConfig.from_dict(raw)
    assert "tune.per_budget" in err.value.message and "tune.budget" in err.value.fix


def test_a_compute_budget_whole_documents_cannot_meet_is_an_error_naming_the_fix(tmp_path):
    # the tiny grid's 80 documents of ~60 tokens: a ~450-token run moves in steps of >10%
    raw = tiny_grid_dict(tmp_path, models=("tg", "gpt2"))
    raw["compute_budgets"] = [3e7]
    with pytest.raises(UserError) as err:
        expand(GridConfig.from_dict(raw), encode=True)
    assert "compute budget 3e7 FLOPs" in err.value.message and "cannot be met within 2%" in err.value.message
    assert "shorter documents" in err.value.fix


def test_a_plugin_without_train_flops_is_solved_on_measured_flops(tmp_path):
    raw = iso_dict(tmp_path)
    lstm = Path(__file__).resolve().parent.parent / "examples" / "lstm_adapter.py"
    raw["models"].append({"adapter": f"{lstm}:LSTMAdapter", "options": {"context": 64}})
    specs = {s.label: s for s in expand(GridConfig.from_dict(raw), encode=True)}
    assert specs["lstm"].solved.how == MEASURED and specs["tg"].solved.how == COUNTED
    assert spread([s.solved.flops for s in specs.values()]) < 0.02
    assert len({s.tokens for s in specs.values()}) == 3  # three costs per token, three token budgets
