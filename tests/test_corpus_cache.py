"""The encoded corpus: end-to-end encoding, the cache, its key, and token-budget subsets."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest

from tgbench.data import DataConfig, Split, corpus_key, corpus_stats, load_corpus
from tgbench.data import corpus as corpus_module
from tgbench.errors import UserError

WORDS = "alpha beta gamma delta river stone garden city music light".split()


def _sentence(rng: np.random.Generator) -> str:
    words = rng.choice(WORDS, size=int(rng.integers(4, 12)))
    return " ".join(words).capitalize() + "."


def write_plain_corpus(path, n_docs: int = 80, seed: int = 0) -> list[str]:
    """Plain text: documents of 1-5 sentences between blank lines (the 1-sentence ones get dropped)."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        sentences = [f"Document {i} begins here."] + [_sentence(rng) for _ in range(int(rng.integers(0, 5)))]
        docs.append(" ".join(sentences))
    path.write_text("\n\n".join(docs) + "\n")
    return docs


@pytest.fixture
def config(tmp_path):
    corpus = tmp_path / "corpus.txt"
    write_plain_corpus(corpus)
    return DataConfig(
        corpus=str(corpus), cache_dir=str(tmp_path / "cache"), valid_fraction=0.2, test_fraction=0.2
    )


def test_encoding_is_lossless_and_stats_are_consistent(config):
    corpus = load_corpus(config, progress=False)
    texts = {doc.split(" begins")[0]: doc.strip() for doc in open(config.corpus).read().split("\n\n")}
    dropped = 0
    for name in ("train", "valid", "test"):
        split, stats = corpus.splits[name], corpus.stats[name]
        assert len(split) == stats.documents > 0
        assert split.n_sentences == stats.sentences and split.lexical_tokens == stats.lexical_tokens
        assert split.tokens.dtype == np.int32 and split.sentence_offsets.dtype == np.int64
        assert split.document_tokens().sum() == split.lexical_tokens
        for doc in split.documents():
            assert len(doc) >= config.min_document_sentences
            text = corpus.tokenizer.decode(np.concatenate(doc))
            assert texts[text.split(" begins")[0]] == text  # every kept document decodes back exactly
            assert corpus.tokenizer.decode(doc[1]).startswith(" ")  # later sentences carry their space
        dropped += stats.documents_dropped
    kept = sum(len(s) for s in corpus.splits.values())
    assert kept + dropped == 80 and dropped > 0
    assert corpus_stats(corpus) == corpus.stats
    assert corpus.vocab == corpus.tokenizer.vocab


def test_second_load_uses_the_cache(config, monkeypatch):
    started = time.perf_counter()
    first = load_corpus(config, progress=False)
    encode_seconds = time.perf_counter() - started

    def fail(*args, **kwargs):
        raise AssertionError("re-encoded despite a cache entry")

    monkeypatch.setattr(corpus_module, "encode_documents", fail)
    started = time.perf_counter()
    second = load_corpus(config, progress=False)
    assert time.perf_counter() - started < max(encode_seconds, 0.5)
    assert second.key == first.key and second.path == first.path
    for name in ("train", "valid", "test"):
        for field in ("tokens", "sentence_offsets", "document_offsets"):
            np.testing.assert_array_equal(
                getattr(second.splits[name], field), getattr(first.splits[name], field)
            )
    assert second.stats == first.stats
    files = sorted(os.listdir(first.path))
    assert files == ["meta.json", "test.npz", "train.npz", "valid.npz"]  # no temp files left behind


def test_incomplete_cache_entry_is_rebuilt(config):
    first = load_corpus(config, progress=False)
    (first.path / "train.npz").write_bytes(b"truncated")
    again = load_corpus(config, progress=False)
    np.testing.assert_array_equal(again.splits["train"].tokens, first.splits["train"].tokens)


def test_cache_key_tracks_every_setting_and_the_source(config, tmp_path):
    base = corpus_key(config)
    changed = [
        dataclasses.replace(config, splitter="blingfire"),
        dataclasses.replace(config, tokenizer="bpe-300"),
        dataclasses.replace(config, max_sentence_tokens=32),
        dataclasses.replace(config, min_fragment_tokens=2),
        dataclasses.replace(config, min_document_sentences=3),
        dataclasses.replace(config, valid_fraction=0.1),
    ]
    keys = {corpus_key(c) for c in changed}
    assert base not in keys and len(keys) == len(changed)
    assert corpus_key(dataclasses.replace(config, cache_dir=str(tmp_path / "other"))) == base
    with open(config.corpus, "a") as f:
        f.write("\nOne more line. And another.\n")
    assert corpus_key(config) != base


def test_trained_bpe_is_cached_and_reloaded(config):
    config = dataclasses.replace(config, tokenizer="bpe-300", splitter="blingfire")
    first = load_corpus(config, progress=False)
    assert (first.path / "tokenizer.json").is_file()
    assert first.vocab.base_size <= 300
    second = load_corpus(config, progress=False)
    assert second.tokenizer is not first.tokenizer
    assert second.tokenizer.encode(" alpha beta river.") == first.tokenizer.encode(" alpha beta river.")
    assert second.tokenizer.decode(second.splits["valid"].tokens).startswith("Document")


def test_split_with_no_documents_names_it(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("One doc. Two sentences.\n\nAnother doc. Also two.\n")
    config = DataConfig(
        corpus=str(corpus), cache_dir=str(tmp_path / "c"), valid_fraction=0.01, test_fraction=0.01
    )
    with pytest.raises(UserError, match=r"split '(valid|test)' has no documents: 0 read") as info:
        load_corpus(config, progress=False)
    assert "larger corpus" in info.value.fix


def test_missing_path_fails_before_anything_else(tmp_path):
    with pytest.raises(UserError, match="corpus path not found"):
        load_corpus(DataConfig(corpus=str(tmp_path / "absent.txt"), cache_dir=str(tmp_path)), progress=False)


def test_split_offsets_and_documents():
    split = Split.from_documents([[[1, 2], [3]], [[4, 5, 6]], [[7], [8], [9, 10]]])
    assert len(split) == 3 and split.n_sentences == 6 and split.lexical_tokens == 10
    assert split.sentence_offsets.tolist() == [0, 2, 3, 6, 7, 8, 10]
    assert split.document_offsets.tolist() == [0, 2, 3, 6]
    assert split.document_tokens().tolist() == [3, 3, 4]
    assert [s.tolist() for s in split.document(2)] == [[7], [8], [9, 10]]
    assert [[s.tolist() for s in d] for d in split.documents([1, 0])] == [[[4, 5, 6]], [[1, 2], [3]]]
    assert np.shares_memory(split.document(0)[0], split.tokens)  # views, not copies


def _uniform_split(n_docs: int = 50) -> Split:
    rng = np.random.default_rng(1)
    return Split.from_documents([[list(range(int(rng.integers(5, 40))))] for _ in range(n_docs)])


def test_subset_takes_whole_documents_up_to_the_budget():
    split = _uniform_split()
    lengths = split.document_tokens()
    chosen = split.subset(300, seed=3)
    assert chosen == split.subset(300, seed=3)
    assert chosen != split.subset(300, seed=4)
    total = lengths[chosen].sum()
    assert total >= 300 and total - lengths[chosen[-1]] < 300  # the last one may overshoot, no more
    assert len(set(chosen)) == len(chosen)
    # Same seed: a smaller budget is a prefix of a larger one (nested data-scaling subsets).
    assert split.subset(600, seed=3)[: len(chosen)] == chosen
    everything = split.subset(0, seed=3)
    assert sorted(everything) == list(range(len(split))) and everything[: len(chosen)] == chosen
    assert split.subset(None, seed=3) == everything
    assert len(split.subset(split.lexical_tokens, seed=0)) == len(split)


def test_subset_budget_larger_than_the_split_names_both_numbers():
    split = _uniform_split()
    with pytest.raises(UserError, match=rf"{split.lexical_tokens + 1:,}.*{split.lexical_tokens:,}"):
        split.subset(split.lexical_tokens + 1, seed=0)
    with pytest.raises(UserError, match="negative"):
        split.subset(-5, seed=0)


@pytest.mark.slow
def test_embedded_corpus_encodes_in_under_a_minute(tmp_path):
    started = time.perf_counter()
    corpus = load_corpus(DataConfig(cache_dir=str(tmp_path)), progress=False)
    seconds = time.perf_counter() - started
    assert seconds < 60
    stats = corpus_stats(corpus)
    assert 0.8e6 < sum(s.lexical_tokens for s in stats.values()) < 1.2e6
    assert 20 < stats["train"].mean_sentence_tokens < 35
    assert all(s.documents > 300 for s in stats.values())


def test_a_smaller_sentence_cap_keeps_the_same_documents_and_tokens(tmp_path):
    """The half-length ablation re-encodes at its own cap; every split keeps the same content tokens."""
    from tgbench.config import RunConfig
    from tgbench.registry import resolved

    rng = np.random.default_rng(3)
    docs = []
    for i in range(60):  # some documents are one long sentence: dropped at every cap
        long = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 60))))
        sentences = [f"Doc {i} {long}."] + [_sentence(rng) for _ in range(int(rng.integers(0, 3)))]
        docs.append(" ".join(sentences))
    (tmp_path / "long.txt").write_text("\n\n".join(docs) + "\n")
    base = DataConfig(corpus=str(tmp_path / "long.txt"), tokenizer="bpe-300", splitter="blingfire",
                      cache_dir=str(tmp_path / "cache"), valid_fraction=0.2, test_fraction=0.2)
    half = resolved(RunConfig(model="tg", model_options={"width": 16, "layers": 2, "max_sentence_tokens": 8},
                              data=base))
    assert half.data.max_sentence_tokens == 8
    assert resolved(RunConfig(model="tg", data=base)).data.max_sentence_tokens == 64
    assert resolved(RunConfig(model="tg-span", model_options={"max_sentence_tokens": 8}, data=base)).data == base
    full, short = load_corpus(base, progress=False), load_corpus(half.data, progress=False)
    assert short.stats["train"].sentences_resplit > full.stats["train"].sentences_resplit
    for name in ("train", "valid", "test"):
        a, b = full.splits[name], short.splits[name]
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.document_tokens(), b.document_tokens())
        assert np.diff(b.sentence_offsets).max() <= 8
        assert full.stats[name].documents_dropped == short.stats[name].documents_dropped
