"""Training under torchrun (DDP, gloo on CPU) computes what one process computes with the same global batch;
the cheap batch count agrees with the batches; each epoch's batches are built once."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from corpora import word_documents, write_plain

from tgbench.core.files import read_json
from tgbench.data import DataConfig
from tgbench.plan.config import RunConfig, TrainConfig, to_toml
from tgbench.registry import build_adapter
from tgbench.training.rundir import RunDir
from tgbench.training.trainer import train

TINY = {"width": 16, "layers": 2, "heads": 2, "dropout": 0.0, "attention_dropout": 0.0}


def _config(adapter: str, corpus, grad_accumulation: int) -> RunConfig:
    options = dict(TINY, context=32) if adapter.startswith("gpt2") else dict(TINY)
    return RunConfig(model=adapter, model_options=options,
                     data=DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire"),
                     train=TrainConfig(tokens=3000, epochs=2, batch_tokens=100, lr=3e-3, log_every=1,
                                       eval_every=5, eval_tokens=400, checkpoint_every=4, seed=1,
                                       device="cpu", grad_accumulation=grad_accumulation))


def _records(run_dir, key):
    return [(r["step"], r[key]) for r in RunDir(run_dir).read_metrics() if key in r]


@pytest.mark.parametrize("adapter", ["tg", "gpt2"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(adapter, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(cache))
    corpus = write_plain(tmp_path / "corpus.txt", word_documents(80))
    single = train(_config(adapter, corpus, grad_accumulation=2), tmp_path / "single", progress=False)
    assert single.status == "done" and single.steps >= 8

    config_path = tmp_path / "ddp.toml"
    config_path.write_text(to_toml(_config(adapter, corpus, grad_accumulation=1).to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tgbench.cli", "train", "--config", str(config_path), "--out", str(tmp_path / "ddp"),
               "--no-progress"]
    env = {**os.environ, "TGBENCH_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ddp = RunDir(tmp_path / "ddp")
    assert ddp.done and read_json(ddp.summary_path)["world_size"] == 2
    assert read_json(ddp.summary_path)["tokens"] == single.summary["tokens"]  # both processes' tokens counted
    for key in ("train_loss", "train_lexical_loss", "val_loss"):
        one, two = _records(single.run_dir, key), _records(ddp.path, key)
        assert [s for s, _ in one] == [s for s, _ in two] and len(one) >= 2, key
        np.testing.assert_allclose([v for _, v in two], [v for _, v in one], rtol=2e-4, err_msg=key)
    # rank 0 alone wrote the metrics: one record per logged step, not two
    steps = [s for s, _ in _records(ddp.path, "train_loss")]
    assert len(steps) == len(set(steps))
    # the same command again finds the run DONE and leaves it alone
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already DONE" in " ".join(again.stdout.split()), again.stderr[-2000:]


@pytest.mark.parametrize("adapter", ["tg", "gpt2", "gpt2-boundary", "gpt2-gist"])
def test_cheap_batch_count_matches_the_batches(adapter, tiny_corpus):
    options = dict(TINY, context=16) if adapter.startswith("gpt2") else dict(TINY)
    built = build_adapter(RunConfig(model=adapter, model_options=options))
    docs = tiny_corpus.splits["train"].documents()
    for epoch in range(3):
        for batch_tokens in (50, 200, 10_000):
            count = built.count_batches(docs, tiny_corpus.vocab, batch_tokens=batch_tokens, epoch=epoch,
                                        rng=np.random.default_rng([epoch, 1]))
            batches = built.batches(docs, tiny_corpus.vocab, batch_tokens=batch_tokens, epoch=epoch,
                                    rng=np.random.default_rng([epoch, 1]))
            assert count == len(batches), (adapter, epoch, batch_tokens)


def test_each_epoch_is_batched_once(tiny_corpus, tmp_path, monkeypatch):
    from tgbench.models.gpt2 import GPT2Adapter

    calls = []
    original = GPT2Adapter.batches

    def counting(self, documents, vocab, **kwargs):
        calls.append(kwargs["epoch"])
        return original(self, documents, vocab, **kwargs)

    monkeypatch.setattr(GPT2Adapter, "batches", counting)
    config = RunConfig(model="gpt2", model_options=dict(TINY, context=16),
                       train=TrainConfig(epochs=3, batch_tokens=64, log_every=5, eval_every=0, seed=0))
    result = train(config, tmp_path / "run", corpus=tiny_corpus, progress=False)
    assert result.status == "done" and calls == [0, 1, 2]


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_corpus, tmp_path):
    def run(name, compiled):
        config = RunConfig(model="gpt2", model_options=dict(TINY, context=16),
                           train=TrainConfig(epochs=1, batch_tokens=64, log_every=1, eval_every=0, seed=0,
                                             compile=compiled))
        return train(config, tmp_path / name, corpus=tiny_corpus, progress=False)

    eager, compiled = run("eager", False), run("compiled", True)
    assert eager.summary["config_hash"] == compiled.summary["config_hash"]  # speed only: same run
    np.testing.assert_allclose([v for _, v in _records(compiled.run_dir, "train_loss")],
                               [v for _, v in _records(eager.run_dir, "train_loss")], rtol=1e-3)


def test_grad_accumulation_one_keeps_old_hashes_and_compile_is_not_hashed():
    import hashlib
    import json

    base = RunConfig(model="gpt2")
    # the hash of a run written before the two settings existed: its settings never held them
    old = base.to_dict()
    for key in ("device", "threads", "grad_accumulation", "compile", "jobs", "data_seed", "init_seed"):
        old["train"].pop(key, None)
    for key in ("cache_dir", "workers"):
        old["data"].pop(key, None)
    assert base.hash() == hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert base.hash() == RunConfig(model="gpt2", train=TrainConfig(compile=True)).hash()
    assert base.hash() != RunConfig(model="gpt2", train=TrainConfig(grad_accumulation=2)).hash()
