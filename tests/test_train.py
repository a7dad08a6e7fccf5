"""The trainer: run-directory contents, learning, exact resume, skip/refuse rules, failures."""

import json
import os
import signal

import pytest
from safetensors.torch import load_file

from tgbench.core.errors import Interrupted, TrainingFailed, UserError
from tgbench.models.gpt2 import GPT2Adapter
from tgbench.plan.config import RunConfig, TrainConfig, load_run_config
from tgbench.registry import resolved
from tgbench.results.columns import COMPUTE_COLUMNS
from tgbench.results.table import collect_row
from tgbench.training.rundir import RunDir
from tgbench.training.trainer import train

MODEL = {"width": 32, "layers": 2, "heads": 4, "context": 32, "dropout": 0.1, "attention_dropout": 0.1}


def config(**train_overrides) -> RunConfig:
    settings = dict(epochs=2, batch_tokens=64, lr=3e-3, log_every=2, checkpoint_every=4, eval_every=6, seed=3)
    settings.update(train_overrides)
    return RunConfig(model="gpt2", model_options=dict(MODEL), train=TrainConfig(**settings))


def losses(run_dir):
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in RunDir(run_dir).read_metrics()]


def test_run_directory_holds_every_file_and_the_model_learns(tmp_path, tiny_corpus):
    result = train(config(), tmp_path / "run", corpus=tiny_corpus, progress=False)
    run = RunDir(result.run_dir)
    assert result.status == "done" and run.done
    for name in ("config.toml", "metrics.jsonl", "summary.json", "checkpoints/latest.safetensors",
                 "checkpoints/latest.json", "checkpoints/best.safetensors", "checkpoints/best.json"):
        assert (run.path / name).exists(), name
    records = run.read_metrics()
    train_records = [r for r in records if "train_loss" in r]
    assert train_records[0]["train_lexical_loss"] > train_records[-1]["train_lexical_loss"]
    assert all(r["tokens_per_s"] > 0 and r["sentences_per_s"] > 0 for r in train_records)
    assert result.best_val_loss < 3.6  # ln(44) ~ 3.8 is chance level
    assert load_run_config(run.config_path) == resolved(config())
    summary = json.loads(run.summary_path.read_text())
    assert summary["flops_method"] == "counted" and summary["train_seconds"] > 0
    assert summary["flops_per_token"] == pytest.approx(summary["train_flops"] / summary["tokens"])
    # Every block is computed whole (padding too), the attention square and the output layer on top of 6N.
    assert summary["train_flops"] > summary["flops_6nd"] > 0
    # This process's CPU time and page faults over the session (getrusage), the kernel's share of it.
    assert summary["cpu_user_s"] > 0 and summary["cpu_system_s"] >= 0 and summary["minor_page_faults"] >= 0
    assert summary["system_fraction"] == pytest.approx(
        summary["cpu_system_s"] / (summary["cpu_user_s"] + summary["cpu_system_s"]))
    assert summary["cpu_user_s"] + summary["cpu_system_s"] <= 2 * summary["wall_s_this_session"] * os.cpu_count()
    row = collect_row(run.path)  # results.csv's row
    assert {c: row[c] for c in COMPUTE_COLUMNS} == {c: summary[c] for c in COMPUTE_COLUMNS}


def test_interrupted_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, tiny_corpus, monkeypatch):
    reference = train(config(), tmp_path / "ref", corpus=tiny_corpus, progress=False)
    calls = {"n": 0}
    original = GPT2Adapter.loss

    def interrupting_loss(self, model, batch, epoch):
        calls["n"] += 1
        if calls["n"] == 7:  # mid-epoch, between two checkpoints
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch, epoch)

    monkeypatch.setattr(GPT2Adapter, "loss", interrupting_loss)
    with pytest.raises(Interrupted):
        train(config(), tmp_path / "cut", corpus=tiny_corpus, progress=False)
    assert not RunDir(tmp_path / "cut").done
    monkeypatch.setattr(GPT2Adapter, "loss", original)
    resumed = train(config(), tmp_path / "cut", corpus=tiny_corpus, progress=False)
    assert losses(resumed.run_dir) == losses(reference.run_dir)
    assert resumed.summary["train_flops"] == reference.summary["train_flops"]  # the checkpoint kept the sum
    ours = load_file(str(resumed.run_dir / "checkpoints/latest.safetensors"))
    theirs = load_file(str(reference.run_dir / "checkpoints/latest.safetensors"))
    assert all((ours[k] == theirs[k]).all() for k in theirs if k.startswith("model."))


def test_done_runs_are_skipped_and_a_different_config_is_refused(tmp_path, tiny_corpus):
    train(config(epochs=1), tmp_path / "run", corpus=tiny_corpus, progress=False)
    again = train(config(epochs=1), tmp_path / "run", corpus=tiny_corpus, progress=False)
    assert again.status == "skipped"
    with pytest.raises(UserError, match="different settings"):
        train(config(epochs=1, lr=1e-3), tmp_path / "run", corpus=tiny_corpus, progress=False)


def test_non_finite_loss_marks_the_run_failed(tmp_path, tiny_corpus, monkeypatch):
    original = GPT2Adapter.loss

    def exploding(self, model, batch, epoch):
        parts = original(self, model, batch, epoch)
        parts.loss = parts.loss * float("nan")
        return parts

    monkeypatch.setattr(GPT2Adapter, "loss", exploding)
    with pytest.raises(TrainingFailed, match="nan"):
        train(config(), tmp_path / "run", corpus=tiny_corpus, progress=False)
    run = RunDir(tmp_path / "run")
    assert run.failed and not run.done
    assert "error" in run.read_metrics()[-1]


def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, tiny_corpus, monkeypatch):
    calls = {"n": 0}
    original = GPT2Adapter.loss

    def interrupting_loss(self, model, batch, epoch):
        calls["n"] += 1
        if calls["n"] == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch, epoch)

    monkeypatch.setattr(GPT2Adapter, "loss", interrupting_loss)
    with pytest.raises(Interrupted):
        train(config(), tmp_path / "run", corpus=tiny_corpus, progress=False)
    monkeypatch.setattr(GPT2Adapter, "loss", original)
    latest = tmp_path / "run/checkpoints/latest.safetensors"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated
    previous_step = json.loads((tmp_path / "run/checkpoints/previous.json").read_text())["state"]["step"]
    result = train(config(), tmp_path / "run", corpus=tiny_corpus, progress=False)
    assert result.status == "done" and previous_step == 8


def test_cli_train_records_every_model_setting_in_config_toml(tmp_path, monkeypatch):
    """`tgbench train --model tg` writes the full resolved settings, defaults included."""
    import tomllib

    from corpora import word_documents, write_plain
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_plain(tmp_path / "corpus.txt", word_documents(120))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", "tg", "--width", "16", "--layers", "2", "--tokens", "400",
                                      "--batch-tokens", "200", "--corpus", str(corpus), "--tokenizer", "bpe-300",
                                      "--splitter", "blingfire", "--device", "cpu", "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    recorded = tomllib.loads((out / "config.toml").read_text())["model_options"]
    assert recorded["detach_memory"] is False and recorded["use_memory"] is True
    assert recorded["memory_slots"] == 40 and recorded["loss_reduction"] == "steps"
    assert recorded["heads"] == 1  # heads = 0 resolves to ceil(16 / 64) = 1
    # The recorded settings round-trip: the same command resumes (skips) rather than refusing the run.
    again = CliRunner().invoke(app, ["train", "--config", str(out / "config.toml"), "--out", str(out),
                                     "--no-progress"])
    assert again.exit_code == 0 and "already DONE" in " ".join(again.output.split()), again.output
