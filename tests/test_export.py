"""Hugging Face export, and the cross-check: lm-eval's own `hf` model on the exported checkpoint and
our `tgbench` model on the run give the same rolling log-likelihoods."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from corpora import write_family_corpus

from tgbench import lmeval as ev
from tgbench.core.errors import UserError

transformers = pytest.importorskip("transformers")

TEXTS = [
    "The son of Anna is Tom. The father of Tom is Anna.",
    "Mary went to the market with John. They bought bread and milk.\nThe house of Emma is near the river.",
    "Paul likes the sea. The son of Paul is Jack.",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny GPT-2 run (with dropout, so eval-mode handling matters) and its export."""
    from tgbench.evaluation.export import export_hf
    from tgbench.plan.config import DataConfig, RunConfig, TrainConfig
    from tgbench.training.trainer import train

    root = tmp_path_factory.mktemp("export")
    write_family_corpus(root / "wiki.txt", ["Anna", "Tom", "Mary", "John", "Paul", "Emma", "Jack"], seed=1,
                        template=" The son of {f} is {s}. {f} went to the market with {s}. They bought bread and milk.")
    config = RunConfig(
        model="gpt2", model_options=dict(width=32, layers=2, heads=4, context=32, dropout=0.1, attention_dropout=0.1),
        data=DataConfig(corpus=str(root / "wiki.txt"), tokenizer="bpe-400", splitter="blingfire",
                        cache_dir=str(root / "cache"), valid_fraction=0.1, test_fraction=0.1),
        train=TrainConfig(epochs=1, batch_tokens=256, eval_tokens=500, lr=3e-3, device="cpu"),
    )
    run_dir = train(config, root / "run", progress=False).run_dir
    out = export_hf(run_dir, root / "hf")
    return SimpleNamespace(run_dir=run_dir, hf=out, root=root)


def test_export_layout_and_special_ids(exported):
    from tgbench.evaluation.loaded import load_run

    run = load_run(exported.run_dir, device="cpu")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in exported.hf.iterdir()}
    config = json.loads((exported.hf / "config.json").read_text())
    assert config["vocab_size"] == run.vocab.size and config["n_positions"] == 32
    tok = transformers.AutoTokenizer.from_pretrained(str(exported.hf))
    assert tok.bos_token_id == tok.eos_token_id == run.vocab.eod_id and tok.pad_token_id == run.vocab.pad_id
    for text in TEXTS:
        assert tok(text, add_special_tokens=False).input_ids == run.corpus.tokenizer.encode(text)


def test_gpt2_tokenizer_export_matches_tiktoken(tmp_path):
    from tgbench.data.tokenizer import gpt2_tokenizer
    from tgbench.evaluation.export import export_tokenizer

    ours = gpt2_tokenizer()
    export_tokenizer(ours, ours.vocab, tmp_path)
    assert (tmp_path / "vocab.json").exists() and (tmp_path / "merges.txt").exists()
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in [*TEXTS, "Hello world", "  spaces\n\nand ünïcödé 123,456!"]:
        assert theirs(text, add_special_tokens=False).input_ids == ours.encode(text)
    assert theirs.convert_tokens_to_ids("[EOD]") == ours.vocab.eod_id == 50260
    assert theirs.eos_token_id == ours.vocab.eod_id


def test_non_gpt2_runs_are_refused(monkeypatch, tmp_path):
    import tgbench.evaluation.export
    from tgbench.evaluation.export import export_hf

    class OtherAdapter:
        name = "tg"

    fake = SimpleNamespace(adapter=OtherAdapter(), config=SimpleNamespace(model="tg"))
    monkeypatch.setattr(tgbench.evaluation.export, "load_run", lambda *a, **k: fake)
    with pytest.raises(UserError, match="only plain gpt2 runs"):
        export_hf(tmp_path / "run", tmp_path / "hf")


def test_hf_model_on_the_export_agrees_with_tgbench_on_the_run(exported, tmp_path):
    """lm-eval's `hf` model vs our `tgbench` model, same local rolling task, per-document totals."""
    from lm_eval import simple_evaluate
    pytest.importorskip("accelerate")  # lm-eval's hf model imports it
    from lm_eval.models.huggingface import HFLM

    from tgbench.evaluation.loaded import load_run

    long_text = " ".join(TEXTS * 3)  # > 32 tokens: several rolling windows
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in [*TEXTS, long_text]) + "\n")
    (tmp_path / "rolling.yaml").write_text(
        "task: cross_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'docs.jsonl'}\ntest_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n')
    manager = ev.task_manager([tmp_path])

    def totals(lm):
        out = simple_evaluate(model=lm, tasks=["cross_rolling"], task_manager=manager, bootstrap_iters=0,
                              log_samples=True, random_seed=None, numpy_random_seed=None, torch_random_seed=None,
                              fewshot_random_seed=None)
        samples = sorted(out["samples"]["cross_rolling"], key=lambda s: s["doc_id"])
        return np.array([float(np.ravel(s["filtered_resps"])[0]) for s in samples])

    run = load_run(exported.run_dir, device="cpu")
    ours = totals(ev.TGBenchLM(loaded=run, progress=False))
    hf = HFLM(pretrained=str(exported.hf), device="cpu", batch_size=2, dtype=torch.float32)
    assert hf.prefix_token_id == run.vocab.eod_id and hf.max_length == 32
    theirs = totals(hf)
    tokens = np.array([len(run.corpus.tokenizer.encode(t)) for t in [*TEXTS, long_text]])
    assert tokens[-1] > 32
    print("per-token difference", np.abs(ours - theirs) / tokens)
    assert np.all(np.abs(ours - theirs) / tokens <= 1e-3), (ours, theirs)
    assert np.all(ours < 0)
