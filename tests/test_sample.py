"""Sampling: the Sampler, `Adapter.sample` of every built-in adapter (greedy = generate, seeded = reproducible),
TG's sentence-by-sentence generation against the training layout, the greedy fallback for plug-ins, and the
`tgbench sample` command on a tiny trained grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import run_main, train_tiny_grid
from typer.testing import CliRunner

from tgbench.adapter import Adapter, Sampler, Vocab
from tgbench.cli.app import app
from tgbench.models.gpt2 import GPT2Adapter, GPT2Config
from tgbench.models.gpt2_boundary import GPT2BoundaryAdapter
from tgbench.models.gpt2_gist import GistConfig, GPT2GistAdapter
from tgbench.models.rmt import RMTAdapter, RMTConfig
from tgbench.models.streams import stream_batch
from tgbench.models.tg import TGAdapter, TGConfig, TGSpanAdapter, TGSpanConfig
from tgbench.models.txl import TXLAdapter, TXLConfig
from tgbench.registry import BUILTIN_ADAPTERS, get_adapter_class

VOCAB = Vocab(base_size=60)
SMALL = dict(width=32, layers=2, heads=2, dropout=0.0, attention_dropout=0.0)
ADAPTERS = {
    "gpt2": lambda: GPT2Adapter(GPT2Config(context=64, **SMALL)),
    "gpt2-boundary": lambda: GPT2BoundaryAdapter(GPT2Config(context=64, **SMALL)),
    "gpt2-gist": lambda: GPT2GistAdapter(GistConfig(context=64, **SMALL)),
    "tg": lambda: TGAdapter(TGConfig(memory_slots=4, max_sentence_tokens=10, **SMALL)),
    "tg-span": lambda: TGSpanAdapter(TGSpanConfig(memory_slots=4, span_tokens=5, **SMALL)),
    "rmt": lambda: RMTAdapter(RMTConfig(memory_tokens=4, max_sentence_tokens=10, **SMALL)),
    "txl": lambda: TXLAdapter(TXLConfig(memory_tokens=16, max_sentence_tokens=10, **SMALL)),
}
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lstm_adapter.py"


def build(adapter: Adapter, seed: int = 0):
    torch.manual_seed(seed)
    return adapter.build(VOCAB).eval()


def prompt(seed: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB.base_size, size=int(rng.integers(3, 8))) for _ in range(3)]


def test_sampler_is_greedy_at_temperature_0_and_reproducible_for_a_seed():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.9, float("-inf")])
    assert Sampler().pick(logits) == 1
    assert Sampler.seeded(temperature=5.0, top_k=1, seed=9).pick(logits) == 1  # top-1 is greedy at any T
    draws = [Sampler.seeded(2.0, 0, seed=s) for s in range(3)]
    a = [[d.pick(logits) for _ in range(50)] for d in draws]
    again = [[d.pick(logits) for _ in range(50)] for d in [Sampler.seeded(2.0, 0, seed=s) for s in range(3)]]
    assert a == again and a[0] != a[1]
    assert 4 not in {t for row in a for t in row}  # a masked (-inf) token is never drawn
    top2 = Sampler.seeded(50.0, 2, seed=0)
    assert {top2.pick(logits) for _ in range(200)} == {1, 3}  # only the two most likely, both reached


def test_every_builtin_adapter_is_covered():
    assert set(ADAPTERS) == set(BUILTIN_ADAPTERS)


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_every_builtin_adapter_samples_greedy_like_generate_and_reproducibly(name):
    adapter = ADAPTERS[name]()
    assert type(adapter).sampling_supported() and get_adapter_class(name) is type(adapter)
    model = build(adapter)
    p = prompt()
    greedy = adapter.sample(model, p, VOCAB, max_new_tokens=25, sampler=Sampler())
    assert [t for s in greedy for t in s] == adapter.generate(model, p, VOCAB, max_new_tokens=25)
    hot = [adapter.sample(model, p, VOCAB, max_new_tokens=25, sampler=Sampler.seeded(1.5, 0, seed=s)) for s in
           (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2]
    tokens = [t for s in hot[0] for t in s]
    assert 0 < len(tokens) <= 25 and all(0 <= t < VOCAB.base_size for t in tokens)
    if not adapter.sentence_boundaries:
        assert len(hot[0]) == 1  # GPT-2 marks no sentence ends


class Scripted(Sampler):
    """Closes a sentence ([EOS]) where the script says so, else takes the most likely content token;
    keeps every logits vector it was shown."""

    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.script = list(script)
        self.seen: list[torch.Tensor] = []

    def pick(self, logits: torch.Tensor) -> int:
        self.seen.append(logits.detach().clone())
        if self.script and self.script.pop(0) == "eos":
            return VOCAB.eos_id
        return int(logits[: VOCAB.base_size].argmax())


def test_tg_generates_sentence_by_sentence_as_in_training():
    """After a sampled [EOS] the sentence's vector is in memory and seeds the next sentence: the logits of the
    next sentence's first token equal those of the training layout of prompt + generated sentence."""
    adapter = ADAPTERS["tg"]()
    model = build(adapter, seed=3)
    p = prompt()
    sampler = Scripted(["tok", "tok", "tok", "eos", "tok", "tok", "eos", "tok"])
    sentences = adapter.sample(model, p, VOCAB, max_new_tokens=6, sampler=sampler)
    assert [len(s) for s in sentences] == [3, 2, 1]  # the prompt's last sentence continued, then 2 new ones
    first_of_next = sampler.seen[4]  # shown after the first [EOS]
    units = [*adapter.prompt_units(p[:-1]), np.append(p[-1], sentences[0]), np.array([0])]
    batch = stream_batch([units], VOCAB).to("cpu")
    with torch.no_grad():
        hidden = model.run(batch.tensors, batch.meta["steps"])["hidden"]
        expected = model.lm_head(hidden[len(batch.tensors["targets"]) - 2])
    torch.testing.assert_close(first_of_next[: VOCAB.base_size], expected[: VOCAB.base_size].float(),
                               rtol=1e-4, atol=1e-4)
    # --sentences: generation stops once that many sentences are finished
    two = adapter.sample(model, p, VOCAB, max_new_tokens=50, sampler=Scripted(["tok", "eos", "eos", "tok", "eos"]),
                         max_sentences=1)
    assert two == [sentences[0][:1]]
    skipped_empty = adapter.sample(model, p, VOCAB, max_new_tokens=50, max_sentences=2,
                                   sampler=Scripted(["eos", "tok", "tok", "eos", "tok", "eos", "tok"]))
    assert [len(s) for s in skipped_empty] == [0, 2, 1]  # an empty continuation is not a finished sentence


def test_gpt2_boundary_sentences_end_at_its_own_eos():
    adapter = ADAPTERS["gpt2-boundary"]()
    model = build(adapter)
    sentences = adapter.sample(model, prompt(), VOCAB, max_new_tokens=5,
                               sampler=Scripted(["tok", "eos", "tok", "tok", "eos", "tok", "tok"]))
    assert [len(s) for s in sentences] == [1, 2, 2]
    always_eos = adapter.sample(model, prompt(), VOCAB, max_new_tokens=5, sampler=Scripted(["eos"] * 100))
    assert sum(map(len, always_eos)) == 0  # a model that only ends sentences still stops


def test_a_plugin_without_sample_gets_the_greedy_fallback():
    cls = get_adapter_class(f"{EXAMPLE}:LSTMAdapter")
    assert not cls.sampling_supported()
    adapter = cls(width=16)
    vocab = Vocab(base_size=20)
    torch.manual_seed(0)
    model = adapter.build(vocab).eval()
    p = [np.array([1, 2, 3])]
    out = adapter.sample(model, p, vocab, max_new_tokens=6, sampler=Sampler.seeded(2.0, 0, seed=1))
    assert out == [adapter.generate(model, p, vocab, max_new_tokens=6)]


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    return train_tiny_grid(root, root / "grid", budgets=(800,))


def test_tgbench_sample_from_a_trained_run(grid_dir):
    from tgbench.evaluation.loaded import load_run
    from tgbench.evaluation.sample import render, sample_run
    from tgbench.evaluation.scoring import as_document, text_sentences

    runner = CliRunner()
    tg_run = grid_dir / "tg-w16-l1-D800-s0"
    args = ["sample", "--run", str(tg_run), "--prompt", "Alpha beta gamma. River stone", "--max-tokens", "30",
            "--temperature", "0.9", "--top-k", "20", "--seed", "5", "--sentences", "2"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output  # deterministic for a seed
    assert "temperature 0.9, top-k 20, seed 5" in first.output and "the model's own [EOS]" in first.output
    assert "prompt | Alpha beta gamma. River stone" in first.output
    loaded = load_run(tg_run, device="cpu")
    result = sample_run(tg_run, "Alpha beta gamma. River stone", max_tokens=30, temperature=0.9, top_k=20, seed=5,
                        sentences=2, run=loaded)
    assert first.output.splitlines() == render(result)
    assert result.boundaries == "model" and not result.greedy_fallback
    assert sum(1 for s in result.sentences[1:] if s) <= 2 and result.new_tokens <= 30
    greedy = sample_run(tg_run, "Alpha beta gamma.", max_tokens=20, run=loaded)
    document = as_document(text_sentences("Alpha beta gamma.", loaded.corpus.tokenizer, loaded.config.data))
    ids = loaded.adapter.generate(loaded.model, document, loaded.vocab, max_new_tokens=20)
    assert greedy.text == loaded.corpus.tokenizer.decode(ids)

    gpt2 = runner.invoke(app, ["sample", "--run", str(grid_dir / "gpt2-w16-l1-D800-s0"), "--prompt", "Alpha",
                               "--max-tokens", "25"])
    assert gpt2.exit_code == 0, gpt2.output
    assert "greedy" in gpt2.output and "split by the run's splitter" in gpt2.output


def test_sample_render_numbers_sentences_and_names_the_fallback():
    from tgbench.evaluation.sample import SampleResult, render

    result = SampleResult(Path("r"), "lstm", "best", 10, "Hi there.", ["", " One.", " Two"], "model", True, 3,
                          settings={"temperature": 0.0})
    lines = render(result)
    assert "does not implement sample()" in lines[1]
    assert lines[-3:] == ["  ...  | (the model ended the prompt sentence)", "  [1]  | One.", "  [2]  | Two"]
    split = dataclasses.replace(result, boundaries="splitter", continues_prompt=False, greedy_fallback=False,
                                sentences=[" A.", " B."])
    assert render(split)[-2:] == ["  [1]  | A.", "  [2]  | B."]


@pytest.mark.parametrize("flag, value, message", [
    ("--max-tokens", "0", "--max-tokens 0 must be positive"),
    ("--temperature", "-1", "--temperature -1.0 must be 0"),
    ("--top-k", "-2", "--top-k -2 must not be negative"),
])
def test_bad_sample_settings_are_one_error_line(tmp_path, flag, value, message, monkeypatch, capsys):
    code, output = run_main(["sample", "--run", tmp_path, flag, value], monkeypatch, capsys)
    assert code == 2 and message in output and "fix:" in output and "Traceback" not in output, output
