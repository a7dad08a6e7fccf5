"""The adapter contract proven by a model tgbench does not ship: examples/lstm_adapter.py.

It is trained, scored and evaluated through the normal CLI path, and the registry finds it by
file reference, module reference and entry point.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tgbench import registry
from tgbench.adapter import Vocab
from tgbench.cli.app import app
from tgbench.core.errors import UserError
from tgbench.plan.config import DataConfig, RunConfig, TrainConfig, to_toml

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lstm_adapter.py"


def write_corpus(path: Path, n_docs: int = 40) -> None:
    rng = np.random.default_rng(0)
    words = ["river", "stone", "music", "city", "north", "light", "garden", "winter", "song", "field"]
    lines = []
    for d in range(n_docs):
        lines += [f" = Article {d} = ", ""]
        sentences = [" ".join(rng.choice(words, int(rng.integers(4, 9)))).capitalize() + "."
                     for _ in range(int(rng.integers(3, 7)))]
        lines += [" ".join(sentences), ""]
    path.write_text("\n".join(lines) + "\n")


def test_external_lstm_adapter_trains_scores_and_evaluates_through_the_cli(tmp_path):
    write_corpus(tmp_path / "wiki.txt")
    config = RunConfig(
        model=f"{EXAMPLE}:LSTMAdapter",
        model_options={"width": 32, "layers": 1, "context": 64},
        data=DataConfig(corpus=str(tmp_path / "wiki.txt"), tokenizer="bpe-300", splitter="blingfire",
                        cache_dir=str(tmp_path / "cache"), valid_fraction=0.1, test_fraction=0.1),
        train=TrainConfig(epochs=2, batch_tokens=256, eval_tokens=1000, lr=5e-3, log_every=2),
    )
    (tmp_path / "run.toml").write_text(to_toml(config.to_dict()))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "run"),
                                  "--no-progress"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "DONE").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["flops_method"] == "measured" and summary["train_flops"] > 0  # no train_flops: FlopCounterMode
    evaluated = runner.invoke(app, ["eval", "--task", "ppl", "--run", str(tmp_path / "run")])
    assert evaluated.exit_code == 0, evaluated.output
    ppl = json.loads((tmp_path / "run" / "eval" / "ppl.json").read_text())["results"]["ppl"]
    assert 1.0 < ppl["lexical_ppl"] < 300  # learned something: chance is the 304-token vocabulary

    from tgbench.evaluation.loaded import load_run

    loaded = load_run(tmp_path / "run", device="cpu")
    documents = loaded.corpus.splits["test"].documents()
    scores = loaded.adapter.score(loaded.model, documents, loaded.vocab)
    assert [len(s) for s in scores] == [sum(len(x) for x in d) for d in documents]
    assert ppl["tokens"] == sum(len(s) for s in scores)


def test_registry_finds_file_module_and_entry_point_references(monkeypatch):
    cls = registry.get_adapter_class(f"{EXAMPLE}:LSTMAdapter")
    assert cls.name == "lstm"
    assert registry.get_adapter_class("tgbench.models.gpt2:GPT2Adapter").name == "gpt2"

    class FakeEntryPoint:
        name, value, dist = "lstm-plugin", "tgbench.models.gpt2:GPT2Adapter", None

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [FakeEntryPoint()])
    assert "lstm-plugin" in registry.available()
    assert registry.get_adapter_class("lstm-plugin").name == "gpt2"


def test_unknown_adapter_lists_known_names_and_suggests_the_closest():
    with pytest.raises(UserError) as err:
        registry.get_adapter_class("gtp2")
    assert "did you mean 'gpt2'" in err.value.fix and "gpt2-boundary" in err.value.fix
    with pytest.raises(UserError, match="is not a tgbench Adapter"):
        registry.get_adapter_class("tgbench.models.gpt2:GPT2Config")


def test_lstm_generate_is_greedy_and_stops():
    torch.manual_seed(0)
    cls = registry.get_adapter_class(f"{EXAMPLE}:LSTMAdapter")
    adapter = cls(width=16)
    vocab = Vocab(base_size=20)
    model = adapter.build(vocab).eval()
    out = adapter.generate(model, [np.array([1, 2, 3])], vocab, max_new_tokens=5)
    assert len(out) == 5 and all(0 <= t < 20 for t in out)
