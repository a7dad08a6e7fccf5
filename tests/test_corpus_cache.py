"""The encoded corpus: end-to-end encoding, the cache, its key, and token-budget subsets."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest

from tgbench.core.errors import UserError
from tgbench.data import DataConfig, Split, corpus_key, corpus_stats, load_corpus
from tgbench.data import corpus as corpus_module

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
    from tgbench.plan.config import RunConfig
    from tgbench.registry import resolved

    rng = np.random.default_rng(3)
    docs = []
    for i in range(60):  # some are one long sentence: dropped (or kept, as fragments of the fixed count cap) alike
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


# -- parallel encoding -----------------------------------------------------------------------------
def _small_chunks(monkeypatch) -> None:
    """Chunks of 4 documents: the tiny corpus makes enough chunks for two workers."""
    monkeypatch.setattr(corpus_module, "ENCODE_CHUNK_DOCS", 4)


@pytest.mark.parametrize("tokenizer", ["bpe-300", "gpt2"])
def test_parallel_encoding_is_identical_to_serial(config, monkeypatch, tmp_path, tokenizer):
    _small_chunks(monkeypatch)
    submitted = []

    class CountingPool(corpus_module.EncodingPool):
        def submit(self, texts):
            submitted.append(len(texts))
            return super().submit(texts)

    monkeypatch.setattr(corpus_module, "EncodingPool", CountingPool)
    serial = load_corpus(
        dataclasses.replace(config, tokenizer=tokenizer, workers=1, cache_dir=str(tmp_path / "serial")), progress=False
    )
    assert submitted == []  # workers=1 encodes in this process
    parallel = load_corpus(
        dataclasses.replace(config, tokenizer=tokenizer, workers=2, cache_dir=str(tmp_path / "parallel")),
        progress=False,
    )
    assert sum(submitted) == 80  # every document went through a worker
    assert parallel.key == serial.key
    for name in ("train", "valid", "test"):
        for field, array in serial.splits[name].arrays().items():
            other = parallel.splits[name].arrays()[field]
            assert other.dtype == array.dtype and np.array_equal(other, array), (name, field)
        # The cache files themselves, byte for byte (meta.json differs only in the encoding time).
        assert (serial.path / f"{name}.npz").read_bytes() == (parallel.path / f"{name}.npz").read_bytes()
    assert parallel.stats == serial.stats
    assert sum(s.documents_dropped for s in parallel.stats.values()) > 0
    if tokenizer != "gpt2":
        assert (serial.path / "tokenizer.json").read_bytes() == (parallel.path / "tokenizer.json").read_bytes()


def test_workers_change_neither_the_cache_key_nor_the_run_hash(config):
    from tgbench.plan.config import RunConfig

    keys = {corpus_key(dataclasses.replace(config, workers=n)) for n in (0, 1, 2, 7)}
    assert keys == {corpus_key(config)}
    hashes = {RunConfig(model="tg", data=dataclasses.replace(config, workers=n)).hash() for n in (0, 1, 7)}
    assert len(hashes) == 1
    assert RunConfig(model="tg", data=dataclasses.replace(config, max_sentence_tokens=32)).hash() not in hashes
    with pytest.raises(UserError, match="workers"):
        load_corpus(dataclasses.replace(config, workers=-1), progress=False)


def test_worker_count_follows_the_setting_and_the_corpus_size():
    per_worker = corpus_module.MIN_CHUNKS_PER_WORKER
    assert corpus_module.resolve_workers(0, 10**6) == corpus_module.available_cpus()
    assert corpus_module.resolve_workers(3, 10**6) == 3
    assert corpus_module.resolve_workers(1, 10**6) == 1
    assert corpus_module.resolve_workers(8, 2 * per_worker) == 2  # a small corpus gets fewer workers
    assert corpus_module.resolve_workers(0, per_worker - 1) == 1  # ... or none: encoded in this process


def test_ctrl_c_while_encoding_in_parallel_stops_the_workers_and_caches_nothing(config, monkeypatch):
    import multiprocessing

    _small_chunks(monkeypatch)
    workers = []
    add = corpus_module._SplitBuilder.add

    def add_then_interrupt(self, chunk):
        add(self, chunk)
        workers.extend(multiprocessing.active_children())
        raise KeyboardInterrupt  # as if Ctrl-C came while the parent collected the first chunk

    monkeypatch.setattr(corpus_module._SplitBuilder, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(dataclasses.replace(config, workers=2), progress=False)
    assert workers and not any(process.is_alive() for process in workers)
    assert not list((corpus_module.cache_root(config) / "corpus").rglob("meta.json"))
