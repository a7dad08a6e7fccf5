"""Per-model training overrides, `--set train.X`, and the training diagnostics in metrics.jsonl."""

import tomllib

import pytest
from test_grid import tiny_grid

from tgbench.core.errors import UserError
from tgbench.core.files import read_json
from tgbench.plan.config import RunConfig, TrainConfig, apply_run_settings, to_toml
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.validate import load_grid
from tgbench.training.executor import run_grid
from tgbench.training.rundir import RunDir
from tgbench.training.trainer import gradient_summary, train


def one_cell_grid(tmp_path, **overrides) -> dict:
    """Two models, one width, one budget, one seed: the smallest real grid."""
    return tiny_grid(tmp_path, design="cross", widths=[8], budgets=[300], **overrides)


def test_model_train_tables_override_the_grid_and_are_checked(tmp_path):
    raw = one_cell_grid(tmp_path)
    raw["models"][0]["train"] = {"lr": 1e-3, "warmup_fraction": 0.1}
    specs = {s.label: s for s in expand(GridConfig.from_dict(raw))}
    assert specs["tg"].config.train.lr == 1e-3 and specs["tg"].config.train.warmup_fraction == 0.1
    assert specs["gpt2"].config.train.lr == 3e-3 and specs["gpt2"].config.train.warmup_fraction == 0.004
    assert specs["tg"].meta == {"lr_source": "model", "train_overrides": ["lr", "warmup_fraction"]}
    assert specs["gpt2"].meta == {"lr_source": "grid", "train_overrides": []}

    for bad, message in (({"lrr": 1e-3}, "models[0].train: lrr"), ({"lr": "fast"}, "models[0].train.lr"),
                         ({"tokens": 5}, "cannot be set per model"), ({"lr": -1.0}, "train.lr")):
        raw["models"][0]["train"] = bad
        with pytest.raises(UserError) as err:
            GridConfig.from_dict(raw)
        assert message in str(err.value), str(err.value)


def test_grid_set_and_model_overrides_are_recorded_in_each_runs_config_toml(tmp_path):
    raw = one_cell_grid(tmp_path)
    raw["models"][1]["train"] = {"lr": 1e-3, "batch_tokens": 96}
    path = tmp_path / "grid.toml"
    path.write_text(to_toml(raw))
    grid = load_grid(path, settings={"train.warmup_fraction": 0.05, "seeds": [2]})
    frame = run_grid(grid, tmp_path / "runs", progress=False)
    assert set(frame["status"]) == {"done"}
    recorded = {r: tomllib.loads((tmp_path / "runs" / r / "config.toml").read_text()) for r in frame["run_id"]}
    by_label = {c["meta"]["label"]: c for c in recorded.values()}
    assert all(c["train"]["warmup_fraction"] == 0.05 and c["train"]["seed"] == 2 for c in recorded.values())
    assert by_label["gpt2"]["train"]["lr"] == 1e-3 and by_label["gpt2"]["train"]["batch_tokens"] == 96
    assert by_label["gpt2"]["meta"]["lr_source"] == "model"
    assert by_label["tg"]["train"]["lr"] == 3e-3 and by_label["tg"]["meta"]["lr_source"] == "grid"
    assert tomllib.loads((tmp_path / "runs/grid.toml").read_text())["train"]["warmup_fraction"] == 0.05
    assert set(frame["lr_source"]) == {"model", "grid"} and set(frame["lr"]) == {1e-3, 3e-3}


def test_set_names_training_and_data_settings_and_checks_them():
    config = apply_run_settings(RunConfig(), {"train.warmup_fraction": 0.05, "data.splitter": "blingfire",
                                              "detach_memory": True, "train.lr": 1})
    assert config.train.warmup_fraction == 0.05 and config.data.splitter == "blingfire"
    assert config.model_options["detach_memory"] is True and isinstance(config.train.lr, float)
    with pytest.raises(UserError, match="unknown key.*train: warmup"):
        apply_run_settings(RunConfig(), {"train.warmup": 0.05})
    with pytest.raises(UserError, match="train.epochs"):
        apply_run_settings(RunConfig(), {"train.epochs": "two"})


def test_cli_train_set_train_key_lands_in_config_toml(tmp_path, monkeypatch):
    from corpora import word_documents, write_plain
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_plain(tmp_path / "corpus.txt", word_documents(80))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", "gpt2", "--width", "16", "--layers", "1", "--tokens", "300",
                                      "--batch-tokens", "150", "--corpus", str(corpus), "--tokenizer", "bpe-300",
                                      "--splitter", "blingfire", "--device", "cpu", "--out", str(out),
                                      "--no-progress", "--set", "train.warmup_fraction=0.05",
                                      "--set", "train.grad_clip=0.5", "--set", "context=32"])
    assert result.exit_code == 0, result.output
    recorded = tomllib.loads((out / "config.toml").read_text())
    assert recorded["train"]["warmup_fraction"] == 0.05 and recorded["train"]["grad_clip"] == 0.5
    assert recorded["model_options"]["context"] == 32


MODEL = {"width": 16, "layers": 1, "heads": 2, "context": 32, "dropout": 0.0, "attention_dropout": 0.0}


@pytest.mark.parametrize("clip, clipped", [(1e-4, 1.0), (1e6, 0.0)])
def test_metrics_record_grad_norm_before_clipping_clipped_fraction_and_lr(tmp_path, tiny_corpus, clip, clipped):
    config = RunConfig(model="gpt2", model_options=dict(MODEL), train=TrainConfig(
        epochs=1, batch_tokens=64, lr=3e-3, log_every=2, checkpoint_every=100, grad_clip=clip))
    train(config, tmp_path / "run", corpus=tiny_corpus, progress=False)
    records = [r for r in RunDir(tmp_path / "run").read_metrics() if "train_loss" in r]
    assert len(records) >= 2
    for record in records:
        assert record["grad_norm"] > 1e-3 and record["grad_norm_max"] >= record["grad_norm"] * (1 - 1e-6)
        assert record["clipped_fraction"] == clipped and record["lr"] > 0
    assert records[0]["lr"] != records[-1]["lr"]  # the schedule moves
    summary = read_json(tmp_path / "run/summary.json")
    assert summary["max_grad_norm"] == max(r["grad_norm_max"] for r in records)
    assert summary["clipped_fraction"] == clipped


def test_gradient_summary_weights_each_window_by_its_steps():
    records = [{"step": 10, "grad_norm_max": 2.0, "clipped_fraction": 1.0},
               {"step": 20, "grad_norm_max": 5.0, "clipped_fraction": 0.0},
               {"step": 25, "grad_norm_max": 1.0, "clipped_fraction": 0.0}]
    assert gradient_summary(records) == {"max_grad_norm": 5.0, "clipped_fraction": 10 / 25}
    assert gradient_summary([{"step": 10}]) == {"max_grad_norm": None, "clipped_fraction": None}


def test_docs_grids_md_names_every_grid_key():
    import dataclasses
    from pathlib import Path

    from tgbench.data import DataConfig
    from tgbench.plan.config import TuneConfig
    from tgbench.plan.grid import ModelEntry

    text = (Path(__file__).parent.parent / "docs" / "grids.md").read_text()
    for cls in (GridConfig, ModelEntry, DataConfig, TrainConfig, TuneConfig):
        missing = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in text]
        assert not missing, f"docs/grids.md does not document {cls.__name__}: {missing}"
