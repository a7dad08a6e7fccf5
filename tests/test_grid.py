"""Grids: expansion, validation, presets, a real tiny grid end to end (train, results, fits), executors."""

import json

import pandas as pd
import pytest

from tgbench.adapter import heads_for
from tgbench.core.errors import UserError
from tgbench.plan.compute import dry_run_table
from tgbench.plan.config import to_toml
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.validate import PRESETS, load_grid
from tgbench.results.table import write_results
from tgbench.training.executor import run_grid

TINY_TRAIN = {"epochs": 1, "batch_tokens": 128, "lr": 3e-3, "eval_tokens": 300, "log_every": 2,
              "checkpoint_every": 10}


def write_corpus(path, n_docs=60):
    import numpy as np

    rng = np.random.default_rng(1)
    words = ["red", "blue", "tree", "house", "river", "sings", "walks", "quickly", "old", "the"]
    lines = []
    for d in range(n_docs):
        lines += [f" = Doc {d} = ", ""]
        lines.append(" ".join(" ".join(rng.choice(words, int(rng.integers(4, 8)))).capitalize() + "."
                              for _ in range(int(rng.integers(3, 6)))))
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def tiny_grid(tmp_path, **overrides) -> dict:
    write_corpus(tmp_path / "wiki.txt")
    raw = {
        "name": "tiny", "design": "axes", "widths": [8, 16, 24], "layers": 1, "head_dim": 8,
        "budgets": [300, 600, 1200], "seeds": [0],
        "data": {"corpus": str(tmp_path / "wiki.txt"), "tokenizer": "bpe-300", "splitter": "blingfire",
                 "cache_dir": str(tmp_path / "cache"), "valid_fraction": 0.1, "test_fraction": 0.1},
        "train": dict(TINY_TRAIN),
        "models": [
            {"adapter": "tg", "options": {"stream_start": 4, "memory_slots": 4, "dropout": 0.0,
                                          "attention_dropout": 0.0}},
            {"adapter": "gpt2", "options": {"context": 64, "dropout": 0.0, "attention_dropout": 0.0}},
        ],
    }
    raw.update(overrides)
    return raw


def test_axes_and_cross_designs_expand_to_the_expected_cells(tmp_path):
    axes = GridConfig.from_dict(tiny_grid(tmp_path))
    specs = expand(axes)
    assert len(specs) == 2 * 5  # 3 budgets at the reference width + 2 more widths at the largest budget
    assert {(s.width, s.tokens) for s in specs if s.adapter == "tg"} == {
        (24, 300), (24, 600), (24, 1200), (8, 1200), (16, 1200)}
    cross = GridConfig.from_dict(tiny_grid(tmp_path, design="cross", seeds=[0, 1]))
    assert len(expand(cross)) == 2 * 9 * 2
    assert len({s.run_id for s in expand(cross)}) == 36
    assert heads_for(48, 64) == 1 and heads_for(96, 64) == 2 and heads_for(384, 64) == 6


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads_and_validates(preset):
    grid = load_grid(preset=preset)
    assert expand(grid)


@pytest.mark.slow
def test_paper_presets_reproduce_the_paper_parameter_counts():
    rows = {r["label"]: r for r in dry_run_table(load_grid(preset="paper-data"))}
    assert abs(rows["tg"]["n_params"] - 85.6e6) < 0.2e6 and abs(rows["gpt2"]["n_params"] - 84.9e6) < 0.2e6
    params = sorted({r["n_params"] for r in dry_run_table(load_grid(preset="paper-params")) if r["label"] == "gpt2"})
    assert 0.3e6 < params[0] < 0.4e6 and 20e6 < params[-1] < 22e6  # the paper: 0.34M-21.3M


@pytest.mark.parametrize("change, message", [
    ({"budget": [1]}, "unknown key"),
    ({"widths": "64"}, "widths"),
    ({"budgets": [-5, 10]}, "budgets"),
    ({"widths": [30], "head_dim": 8}, "not divisible"),
    ({"train": {**TINY_TRAIN, "lr": "fast"}}, "train.lr"),
    ({"models": [{"adapter": "gtp2"}]}, "did you mean 'gpt2'"),
    ({"models": [{"adapter": "gpt2", "options": {"widht": 3}}]}, "widht"),
])
def test_bad_grid_files_name_the_bad_key_or_value(tmp_path, change, message):
    path = tmp_path / "grid.toml"
    path.write_text(to_toml(tiny_grid(tmp_path, **change)))
    with pytest.raises(UserError) as err:
        load_grid(path)
    assert message in str(err.value)


def test_tiny_grid_trains_writes_results_and_fits_then_skips_done_runs(tmp_path):
    from tgbench.tasks.stats.fits import write_fits

    path = tmp_path / "grid.toml"
    path.write_text(to_toml(tiny_grid(tmp_path)))
    grid = load_grid(path)
    frame = run_grid(grid, tmp_path / "runs", progress=False)
    assert len(frame) == 10 and set(frame["status"]) == {"done"}
    assert frame["n_params"].notna().all() and frame["best_val_loss"].notna().all()
    results = pd.read_csv(tmp_path / "runs" / "results.csv")
    assert list(results["run_id"]) == list(frame["run_id"])
    fits = json.loads(write_fits(tmp_path / "runs", n_resamples=5).read_text())
    assert set(fits["axes"]["data"]) == {"tg", "gpt2"}
    assert fits["multipliers"]["data"]

    stamps = {d.name: (d / "DONE").stat().st_mtime_ns for d in (tmp_path / "runs").iterdir() if d.is_dir()}
    run_grid(grid, tmp_path / "runs", progress=False)
    again = {d.name: (d / "DONE").stat().st_mtime_ns for d in (tmp_path / "runs").iterdir() if d.is_dir()}
    assert again == stamps  # nothing retrained
    assert len(write_results(tmp_path / "runs")) == 10


@pytest.mark.slow
def test_submitit_local_executor_runs_one_job_per_run(tmp_path):
    raw = tiny_grid(tmp_path, widths=[8], budgets=[300], models=tiny_grid(tmp_path)["models"][1:])
    path = tmp_path / "grid.toml"
    path.write_text(to_toml(raw))
    frame = run_grid(load_grid(path), tmp_path / "runs", executor="slurm-local", progress=False)
    assert list(frame["status"]) == ["done"]
    assert (tmp_path / "runs" / "slurm").is_dir()


def test_each_budget_and_replicate_has_its_own_seeds_shared_by_every_model(tmp_path):
    grid = GridConfig.from_dict(tiny_grid(tmp_path, seeds=[0, 1]))
    seeds = {}
    for spec in expand(grid):
        train = spec.config.train
        assert train.seed == spec.seed and train.data_seed >= 0 and train.init_seed >= 0
        seeds.setdefault((spec.tokens, spec.seed), set()).add((train.data_seed, train.init_seed))
    assert all(len(v) == 1 for v in seeds.values())  # every model of a cell: the same data order and init
    distinct = {next(iter(v)) for v in seeds.values()}
    assert len(distinct) == len(seeds)  # no two (budget, replicate) cells share their seeds
    assert "data_seed = " in to_toml(expand(grid)[0].config.to_dict()["train"])  # recorded in config.toml
    shared = GridConfig.from_dict({**tiny_grid(tmp_path), "seed_scheme": "shared"})
    assert {s.config.train.data_order_seed for s in expand(shared)} == {0}
    with pytest.raises(UserError, match="seed_scheme"):
        GridConfig.from_dict({**tiny_grid(tmp_path), "seed_scheme": "independent"})
