"""Progress in log files (plain timestamped lines when stdout is not a terminal), the `time` stamp of every
metrics record, and the optional trackers: TensorBoard event files read back, W&B offline mode."""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import re
from pathlib import Path

import pytest
from tiny_runs import tiny_grid_dict

from tgbench.core.errors import UserError
from tgbench.plan.config import RunConfig, TrainConfig
from tgbench.plan.grid import GridConfig
from tgbench.training.executor import run_grid
from tgbench.training.rundir import RunDir
from tgbench.training.tracking import ProgressLines, RunInfo, check_loggers, duration, grid_line
from tgbench.training.trainer import train

MODEL = {"width": 16, "layers": 1, "heads": 2, "context": 32, "dropout": 0.0, "attention_dropout": 0.0}
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def config(**train) -> RunConfig:
    settings = dict(epochs=2, batch_tokens=64, lr=3e-3, log_every=2, checkpoint_every=4, eval_every=6, seed=1)
    settings.update(train)
    return RunConfig(model="gpt2", model_options=dict(MODEL), train=TrainConfig(**settings))


def test_train_prints_timestamped_lines_when_stdout_is_a_file(tmp_path, tiny_corpus, capsys):
    """Under pytest stdout is not a terminal, as in `tgbench train ... > log.txt`."""
    result = train(config(), tmp_path / "run", corpus=tiny_corpus, progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(re.match(STAMP + " ", line) for line in lines), lines[:3]
    total = result.steps
    start = lines[0]
    assert "run run start: model gpt2 (16 x 1)" in start and f"{total:,} steps planned" in start
    steps = [line for line in lines if re.search(r" step \d+/", line) and " loss " in line]
    records = [r for r in RunDir(result.run_dir).read_metrics() if "train_loss" in r]
    assert len(steps) == len(records)  # one line per log step
    for line, record in zip(steps, records, strict=True):
        assert f"step {record['step']}/{total}" in line and f"tokens {record['tokens']:,}" in line
        assert f"loss {record['train_lexical_loss']:.4f}" in line and f"lr {record['lr']:.3e}" in line
        assert re.search(r"tok/s [\d,]+ .*eta (\d+s|\d+m\d\ds)$", line), line
    vals = [r for r in RunDir(result.run_dir).read_metrics() if "val_loss" in r]
    assert sum(" val step " in line for line in lines) == len(vals) >= 2
    assert any("checkpoint best at step" in line for line in lines)
    assert any("checkpoint latest at step" in line for line in lines)
    assert re.search(rf"run run done: {total} steps, .* best val_loss {result.best_val_loss:.4f}", lines[-1])


def test_no_progress_prints_nothing_and_every_metrics_record_has_a_wall_clock_time(tmp_path, tiny_corpus, capsys):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    result = train(config(), tmp_path / "run", corpus=tiny_corpus, progress=False)
    assert capsys.readouterr().out == ""
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    records = RunDir(result.run_dir).read_metrics()
    times = [dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in records]
    assert all(before <= t <= after for t in times)
    assert times == sorted(times)


def test_eta_is_the_remaining_steps_at_the_mean_step_time():
    clock = iter([100.0, 100.0, 110.0]).__next__  # start reads it twice (its time, its line)
    lines = ProgressLines(stream=io.StringIO(), clock=clock)
    lines.start(RunInfo(Path("r"), {"model": "tg", "train": {}}, {}, total_steps=100, start_step=20))
    assert lines.eta(30) == pytest.approx(10.0 / 10 * 70)  # 10 s for 10 steps, 70 steps to go
    assert duration(65) == "1m05s" and duration(7300) == "2h01m" and duration(float("nan")) == "?"


def test_a_grid_prints_one_line_per_run_start_and_finish_with_the_count(tmp_path, capsys):
    grid = GridConfig.from_dict(tiny_grid_dict(tmp_path, budgets=(400,)))
    run_grid(grid, tmp_path / "grid", progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if re.match(STAMP, line)]
    ids = ["tg-w16-l1-D400-s0", "gpt2-w16-l1-D400-s0"]
    assert [re.sub(STAMP + " ", "", line).split(":")[0] for line in lines] == [
        f"[0/2] {ids[0]} start", f"[1/2] {ids[0]} done", f"[1/2] {ids[1]} start", f"[2/2] {ids[1]} done"]
    assert "val_loss" in lines[1]
    run_grid(grid, tmp_path / "grid", progress=True)  # again: both are skipped
    again = [line for line in capsys.readouterr().out.splitlines() if re.match(STAMP, line)]
    assert [line.split(" ", 1)[1] for line in again] == [f"[1/2] {ids[0]} skipped", f"[2/2] {ids[1]} skipped"]
    out = io.StringIO()
    expected = "1970-01-01T00:00:00.000Z [3/4] x failed: boom"
    assert grid_line("failed", "x", 3, 4, "boom", stream=out, when=0.0) == expected


def test_unknown_logger_is_a_user_error():
    with pytest.raises(UserError, match="unknown logger 'tensorbord'") as caught:
        check_loggers(["tensorbord"])
    assert "tensorboard" in caught.value.fix
    assert check_loggers(["csv,tensorboard", "tensorboard"]) == ["csv", "tensorboard"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_events_hold_every_metric_as_logged(tmp_path, tiny_corpus):
    from tgbench.training.tracking import read_tensorboard

    result = train(config(), tmp_path / "run", corpus=tiny_corpus, progress=False, loggers=["tensorboard"])
    scalars = read_tensorboard(result.run_dir)
    records = RunDir(result.run_dir).read_metrics()
    train_records = [r for r in records if "train_loss" in r]
    assert scalars["train/loss"] == [(r["step"], pytest.approx(r["train_loss"])) for r in train_records]
    assert scalars["train/lexical_loss"] == [(r["step"], pytest.approx(r["train_lexical_loss"]))
                                             for r in train_records]
    assert scalars["train/lr"] == [(r["step"], pytest.approx(r["lr"])) for r in train_records]
    assert scalars["val/loss"] == [(r["step"], pytest.approx(r["val_loss"])) for r in records if "val_loss" in r]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_from_the_cli(tmp_path, monkeypatch):
    from corpora import word_documents, write_plain
    from typer.testing import CliRunner

    from tgbench.cli.app import app
    from tgbench.training.tracking import read_tensorboard

    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_plain(tmp_path / "corpus.txt", word_documents(60))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", "gpt2", "--width", "16", "--layers", "1", "--context", "32",
                                      "--tokens", "400", "--batch-tokens", "100", "--corpus", str(corpus),
                                      "--tokenizer", "bpe-300", "--splitter", "blingfire", "--device", "cpu",
                                      "--out", str(out), "--logger", "tensorboard"])
    assert result.exit_code == 0, result.output
    assert "steps planned" in result.output  # CliRunner's stdout is not a terminal: plain lines
    assert read_tensorboard(out)["val/loss"]


@pytest.mark.slow  # starting W&B's service takes 10-40 s here
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_run_holds_config_metrics_and_the_run_artifact(tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train(config(epochs=1), tmp_path / "run", corpus=tiny_corpus, progress=False, loggers=["wandb"])
    offline = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((result.run_dir / "wandb").iterdir())
    (log,) = offline[0].glob("*.wandb")
    data = log.read_bytes()  # the offline run's record log (protobuf records; their strings are stored as they are)
    for key in ("model_options", "batch_tokens", "eval_tokens"):  # the run's config as W&B config
        assert key.encode() in data, key
    for record in RunDir(result.run_dir).read_metrics():  # every metric as logged
        for key in record:
            if key not in ("step", "time"):
                assert key.encode() in data, key
    for name in (b"run-run", b"config.toml", b"summary.json", b"best_val_ppl"):  # the artifact and the summary
        assert name in data, name
