"""Equal optimizer steps: every built-in adapter's batches carry `batch_tokens` lexical tokens on average.

Markers ([BOS] [EOS] [EOD]) and padding never count, so at one budget every model trains the same number of
steps. The corpus tests run on ~200k-token subsets of the embedded and kjv corpora (encoded into a
temporary cache once per module, a few seconds); the full corpora are the slow version.
"""

from __future__ import annotations

import numpy as np
import pytest

from tgbench.adapter import Vocab, batch_ends
from tgbench.data import DataConfig, sources
from tgbench.data.corpus import load_corpus
from tgbench.models.gpt2 import block_lexical, pack_stream
from tgbench.models.gpt2_boundary import flatten_with_boundaries
from tgbench.plan.config import RunConfig
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.plan.steps import (
    batch_rng,
    epoch_documents,
    epoch_steps,
    estimate_reasons,
    grid_steps,
    step_warnings,
)
from tgbench.registry import build_adapter

ADAPTERS = ("gpt2", "gpt2-boundary", "gpt2-gist", "tg", "tg-span", "rmt", "txl")
BATCH_TOKENS = (1024, 2048)
MEAN_TOLERANCE = 0.02  # mean lexical tokens per step within 2% of batch_tokens
STEPS_TOLERANCE = 0.03  # optimizer steps of the models of one budget within 3% of each other


# -- the rule ---------------------------------------------------------------------------------------
def test_batch_ends_gives_round_total_over_batch_tokens_batches_of_whole_units():
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = rng.integers(0, int(rng.integers(1, 400)), size=int(rng.integers(1, 300)))
        batch_tokens = int(rng.integers(1, 3000))
        ends = batch_ends(counts, batch_tokens)
        total = int(counts.sum())
        expected = min(len(counts), max(1, int(np.floor(total / batch_tokens + 0.5))))
        assert len(ends) == expected and ends[-1] == len(counts)
        assert all(a < b for a, b in zip([0, *ends[:-1]], ends, strict=True))  # every batch has a unit
        if expected == round(total / batch_tokens) and expected >= 25:
            assert abs(total / len(ends) / batch_tokens - 1) <= 1 / (2 * expected) + 1e-12


def test_batch_ends_closes_at_the_boundary_nearest_the_cumulative_target():
    assert batch_ends([], 10) == []
    assert batch_ends([5, 5, 5, 5], 10) == [2, 4]
    assert batch_ends([3] * 10, 10) == [3, 7, 10]  # targets 10 and 20: boundaries 9 (not 12), 21 (not 18)
    assert batch_ends([30, 1, 1, 1, 30], 10) == [1, 2, 3, 4, 5]  # one unit per batch when units are scarce
    assert batch_ends([0, 0, 7, 0, 7], 7) == [3, 5]
    assert batch_ends([4, 4], 10**6) == [2]


def test_a_large_unit_is_made_up_for_by_the_next_batches():
    counts = [2500, *[100] * 75]  # a long stream first (TG sorts them so), then short ones
    ends = batch_ends(counts, 1000)
    sizes = [sum(counts[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    assert len(sizes) == 10 and sizes[0] == 2500 and np.mean(sizes) == 1000
    assert all(size <= 1000 for size in sizes[1:])


# -- GPT-2 blocks: the cheap count is the batches' ----------------------------------------------------
@pytest.mark.parametrize("flatten", [pack_stream, flatten_with_boundaries], ids=["gpt2", "gpt2-boundary"])
def test_block_lexical_counts_the_lexical_targets_of_every_block(flatten):
    vocab = Vocab(base_size=50)
    rng = np.random.default_rng(1)
    for _ in range(30):
        docs = [[rng.integers(0, 50, size=int(rng.integers(1, 20))) for _ in range(int(rng.integers(0, 6)))]
                for _ in range(int(rng.integers(1, 12)))]
        stream, _ = flatten(docs, vocab)
        context = int(rng.integers(2, 40))
        counts = block_lexical(len(stream), np.flatnonzero(stream >= vocab.base_size), context)
        n_blocks = max(1, -(-(len(stream) - 1) // context))
        targets = np.full(n_blocks * context, vocab.pad_id)
        targets[: max(0, len(stream) - 1)] = stream[1:]
        assert counts.tolist() == (targets.reshape(n_blocks, context) < vocab.base_size).sum(axis=1).tolist()


# -- every built-in adapter on real corpora ------------------------------------------------------------
def adapter_for(name: str, corpus: str):
    """Preset-like settings: GPT-2 contexts of the embedded presets (256) and the kjv ones (512)."""
    options = {"context": 256 if corpus == "embedded" else 512} if name.startswith("gpt2") else {}
    return build_adapter(RunConfig(model=name, model_options={"width": 32, "layers": 2, **options}))


def measure(corpus, corpus_name: str, name: str, budget: int, batch_tokens: int, epochs=(0, 1), seed: int = 0
            ) -> dict:
    """Steps, lexical tokens and the cheap count of one adapter over a budget's epochs (the trainer's order)."""
    split = corpus.splits["train"]
    docs = split.documents(split.subset(budget, seed))
    adapter = adapter_for(name, corpus_name)
    out = {"steps": 0, "lexical": 0, "counted": 0, "content": 0}
    for epoch in epochs:
        ordered = epoch_documents(docs, seed, epoch)
        batches = adapter.batches(ordered, corpus.vocab, batch_tokens=batch_tokens, epoch=epoch,
                                  rng=batch_rng(seed, epoch))
        out["counted"] += adapter.count_batches(ordered, corpus.vocab, batch_tokens=batch_tokens, epoch=epoch,
                                                rng=batch_rng(seed, epoch))
        out["steps"] += len(batches)
        out["lexical"] += sum(b.lexical_tokens for b in batches)
        out["content"] += sum(len(s) for d in ordered for s in d)
    return out


def check_equal_steps(corpus, corpus_name: str, budget: int, epochs=(0, 1)) -> None:
    for batch_tokens in BATCH_TOKENS:
        steps = {}
        for name in ADAPTERS:
            got = measure(corpus, corpus_name, name, budget, batch_tokens, epochs)
            where = f"{name} on {corpus_name} at batch_tokens {batch_tokens}"
            assert got["counted"] == got["steps"], where  # the LR schedule's count is the batches'
            assert got["lexical"] == got["content"], where  # markers and padding never count
            per_step = got["lexical"] / got["steps"]
            assert abs(per_step / batch_tokens - 1) <= MEAN_TOLERANCE, f"{where}: {per_step:.0f} per step"
            steps[name] = got["steps"]
        assert max(steps.values()) <= (1 + STEPS_TOLERANCE) * min(steps.values()), (batch_tokens, steps)


SUBSET_DOCUMENTS = {"embedded": 2000, "kjv": 250}  # ~200k lexical training tokens each


@pytest.fixture(scope="module")
def subsets(tmp_path_factory) -> dict:
    """The first training documents of each corpus as a text file, encoded as the presets encode (bpe-8192,
    syntok) into a temporary cache: about 3 s."""
    root = tmp_path_factory.mktemp("equal-steps")
    out = {}
    for name, n in SUBSET_DOCUMENTS.items():
        try:
            documents, _ = sources.read_source(DataConfig(corpus=name))
        except Exception as err:  # noqa: BLE001 - a corpus package that is not installed
            pytest.skip(f"corpus {name} unavailable: {err}")
        path = root / f"{name}.txt"
        path.write_text("\n\n".join(d.text for d in documents["train"][:n]) + "\n", encoding="utf-8")
        data = DataConfig(corpus=str(path), tokenizer="bpe-8192", cache_dir=str(root / "cache"), workers=1)
        out[name] = load_corpus(data, progress=False)  # one process: faster than a pool at this size
    return out


@pytest.mark.parametrize("name", ["embedded", "kjv"])
def test_every_adapter_trains_batch_tokens_per_step_and_the_same_steps(subsets, name):
    check_equal_steps(subsets[name], name, budget=100_000)


def test_longer_streams_of_later_epochs_keep_the_rule(subsets):
    """The curriculum's epochs 5 and 10 make TG's kjv streams 42 and 54 sentences long (over 1,024 tokens)."""
    check_equal_steps(subsets["kjv"], "kjv", budget=100_000, epochs=(5, 10))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["embedded", "kjv"])
@pytest.mark.parametrize("budget", [100_000, 400_000])
def test_every_adapter_on_the_full_corpora(name, budget):
    """The real corpora (the default cache; encoded once, ~1 min) at the presets' budgets and later epochs."""
    corpus = load_corpus(DataConfig(corpus=name, tokenizer="bpe-8192"), progress=False)
    check_equal_steps(corpus, name, budget, epochs=(0, 1, 5))


# -- validate and --dry-run: the steps of every model and budget ----------------------------------------
def small_grid(tmp_path, **train):
    from test_grid import tiny_grid

    raw = tiny_grid(tmp_path, design="cross", widths=[16], seeds=[0, 1], budgets=[600, 1200])
    raw["train"].update(epochs=2, batch_tokens=64)
    raw["models"][1]["train"] = dict(train)
    return GridConfig.from_dict(raw)


def test_grid_steps_are_estimated_until_the_corpus_is_encoded_then_counted_as_the_trainer_counts(tmp_path):
    grid = small_grid(tmp_path)
    estimated = grid_steps(grid)
    assert [(r.label, r.tokens) for r in estimated] == [("tg", 600), ("gpt2", 600), ("tg", 1200), ("gpt2", 1200)]
    assert all(not r.counted and r.steps == [2 * round(r.tokens / 64)] * 2 for r in estimated)
    assert "not encoded yet" in estimate_reasons(estimated)[0]

    corpus = load_corpus(grid.data, progress=False)
    counted = grid_steps(grid)
    assert all(r.counted for r in counted) and not estimate_reasons(counted) and not step_warnings(counted)
    for spec in expand(grid):  # the count is the trainer's: its subset, its epochs, its batches
        split = corpus.splits["train"]
        docs = split.documents(split.subset(spec.tokens, spec.config.train.data_order_seed))
        steps = sum(epoch_steps(build_adapter(spec.config), docs, corpus.vocab, spec.config.train))
        row = next(r for r in counted if (r.label, r.tokens) == (spec.label, spec.tokens))
        assert steps in row.steps
    tg, gpt2 = counted[-2:]
    assert tg.steps == gpt2.steps and abs(tg.tokens_per_step / 64 - 1) < 0.05


def test_models_of_one_budget_with_different_steps_are_warned_about(tmp_path, capsys):
    from tgbench.cli.grid import print_steps

    grid = small_grid(tmp_path, batch_tokens=128)  # gpt2 takes half the steps
    load_corpus(grid.data, progress=False)
    print_steps(grid)
    flat = " ".join(capsys.readouterr().out.split())
    assert "optimizer steps per model and budget" in flat and "counted" in flat
    assert flat.count("warning: at D = ") == 2 and "gpt2" in flat and "tg takes 100% more than gpt2" in flat, flat


# -- results.csv and the report ------------------------------------------------------------------------
def test_results_and_the_runs_table_give_lexical_tokens_per_step(tmp_path):
    import pandas as pd
    from report_fixture import write_synthetic_grid

    from tgbench.report.page import render_report
    from tgbench.results.columns import LEXICAL_PER_STEP
    from tgbench.results.table import read_results, write_results

    grid = write_synthetic_grid(tmp_path / "grid", fits=False)
    frame = write_results(grid)
    done = frame[frame["status"] == "done"]
    assert np.allclose(done[LEXICAL_PER_STEP], done["tokens_seen"] / done["steps"])
    csv = grid / "results.csv"
    assert LEXICAL_PER_STEP in pd.read_csv(csv).columns
    pd.read_csv(csv).drop(columns=[LEXICAL_PER_STEP]).to_csv(csv, index=False)  # one written before the column
    again = read_results(grid)
    assert np.allclose(again.loc[again["status"] == "done", LEXICAL_PER_STEP], done["tokens_seen"] / done["steps"])
    runs = render_report(grid).split('<section id="runs"', 1)[1].split("</section>", 1)[0]
    assert ">steps</th>" in runs and ">tokens/step<span" in runs
