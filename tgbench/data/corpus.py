"""The encoded corpus: documents -> sentences -> token ids, stored flat and cached. One concept, one file.

`load_corpus` reads a source (`tgbench.data.sources`), splits every document into sentences
(`tgbench.data.split`), tokenises them in batches, enforces the sentence-length window, drops
documents with too few sentences, and stores each split as three flat numpy arrays. The result is
cached under a key that hashes the source identity and every setting that changes the encoding,
so a grid of runs tokenises once.

Encoding streams: documents go out in chunks of `ENCODE_CHUNK_DOCS`, to worker processes when
``DataConfig.workers`` allows (at most `EncodingPool.max_in_flight` chunks at a time), and each
chunk comes back as compact int32/int64 arrays that are appended in document order. The result is
the same, byte for byte, for any number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tgbench.adapter import Vocab
from tgbench.core.console import progress_bar
from tgbench.core.errors import UserError, unknown_name
from tgbench.core.files import atomic_path
from tgbench.data import sources
from tgbench.data.split import SPLITTERS, cap_and_merge, check_splitter, split_sentences
from tgbench.data.tokenizer import (
    Tokenizer,
    load_tokenizer,
    make_tokenizer,
    parse_tokenizer_spec,
    tokenizer_from_str,
)
from tgbench.plan.config import DataConfig

FORMAT_VERSION = 3  # bump whenever the encoding or the cache layout changes (3: the drop rule counts after a cap)
# The drop rule counts a document's sentences after sentences over this many tokens are cut (the default
# `max_sentence_tokens`, fixed so that every cap keeps the same documents).
DROP_RULE_CAP = 64
SPLITS = sources.SPLITS
ENCODE_CHUNK_DOCS = 256  # documents per tokenizer batch (and per worker task and progress-bar step)
MIN_CHUNKS_PER_WORKER = 4  # a worker takes a second or more to start: not worth it for less work than this


class Split:
    """One split, stored flat so it caches and slices cheaply.

    Attributes:
        tokens: int32, every content token id of the split, concatenated.
        sentence_offsets: int64, sentence j is ``tokens[sentence_offsets[j]:sentence_offsets[j + 1]]``.
        document_offsets: int64, document i is sentences ``document_offsets[i]:document_offsets[i + 1]``.
    """

    def __init__(
        self, tokens: np.ndarray, sentence_offsets: np.ndarray, document_offsets: np.ndarray
    ) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int32)
        self.sentence_offsets = np.asarray(sentence_offsets, dtype=np.int64)
        self.document_offsets = np.asarray(document_offsets, dtype=np.int64)

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[Sequence[int]]]) -> Split:
        """Build a split from documents given as lists of sentences of token ids."""
        sentences = [np.asarray(s, dtype=np.int32) for doc in documents for s in doc]
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        sentence_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        doc_lengths = np.array([len(doc) for doc in documents], dtype=np.int64)
        document_offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
        tokens = np.concatenate(sentences) if sentences else np.zeros(0, dtype=np.int32)
        return cls(tokens, sentence_offsets, document_offsets)

    def __len__(self) -> int:
        return len(self.document_offsets) - 1

    def document(self, i: int) -> list[np.ndarray]:
        """The sentences of document `i` (views into `tokens`)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for a split of {len(self)} documents")
        i %= len(self)
        so, first, last = self.sentence_offsets, self.document_offsets[i], self.document_offsets[i + 1]
        return [self.tokens[so[j] : so[j + 1]] for j in range(first, last)]

    def documents(self, indices: Sequence[int] | None = None) -> list[list[np.ndarray]]:
        """Several documents, in the order of `indices` (all, in stored order, when None)."""
        return [self.document(int(i)) for i in (range(len(self)) if indices is None else indices)]

    @property
    def n_sentences(self) -> int:
        return len(self.sentence_offsets) - 1

    @property
    def lexical_tokens(self) -> int:
        return int(len(self.tokens))

    def document_tokens(self) -> np.ndarray:
        """Lexical tokens per document (int64, one entry per document)."""
        bounds = self.sentence_offsets[self.document_offsets]
        return np.diff(bounds)

    def subset(self, budget_tokens: int | None, seed: int) -> list[int]:
        """Whole documents in a seeded random order, taken until their tokens reach the budget.

        The order depends only on `seed`, so a smaller budget's subset is a prefix of a larger one's
        (nested data-scaling subsets), and every model given the same seed sees the same documents.

        Args:
            budget_tokens: Lexical tokens wanted; the last document may overshoot. 0/None: all documents.
            seed: Seed of the order.

        Raises:
            UserError: if the budget exceeds the split's lexical tokens.
        """
        if budget_tokens is not None and budget_tokens < 0:
            raise UserError(f"token budget must not be negative, got {budget_tokens}")
        order = np.random.default_rng(seed).permutation(len(self))
        if not budget_tokens:
            return [int(i) for i in order]
        total = self.lexical_tokens
        if budget_tokens > total:
            raise UserError(
                f"token budget {budget_tokens:,} exceeds the {total:,} lexical tokens of the training split",
                "lower the budget or use a larger corpus",
            )
        reached = np.cumsum(self.document_tokens()[order])
        n = int(np.searchsorted(reached, budget_tokens)) + 1  # first prefix whose sum reaches the budget
        return [int(i) for i in order[:n]]

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "tokens": self.tokens,
            "sentence_offsets": self.sentence_offsets,
            "document_offsets": self.document_offsets,
        }


@dataclass
class SplitStats:
    """What encoding did to one split (counts after caps, merges and drops)."""

    documents: int = 0
    sentences: int = 0
    lexical_tokens: int = 0
    mean_sentence_tokens: float = 0.0
    sentences_resplit: int = 0
    fragments_merged: int = 0
    documents_dropped: int = 0
    replaced_bytes: int = 0


@dataclass
class EncodedCorpus:
    """A tokenised corpus: three splits, their statistics and the tokenizer that made them.

    Attributes:
        config: The settings it was built from.
        key: Cache key (hash of source identity and settings).
        tokenizer: Encodes prompts for evaluation with the same vocabulary.
        vocab: ``tokenizer.vocab``: base size plus specials.
        splits: "train", "valid", "test".
        stats: Per-split `SplitStats`.
        path: Cache directory it lives in (None if not cached).
    """

    config: DataConfig
    key: str
    tokenizer: Tokenizer
    vocab: Vocab
    splits: dict[str, Split]
    stats: dict[str, SplitStats]
    path: Path | None = None


# -- cache key -------------------------------------------------------------------------------------
def cache_root(config: DataConfig) -> Path:
    """The cache directory: config.cache_dir, else $TGBENCH_CACHE_DIR, else ~/.cache/tgbench."""
    root = config.cache_dir or os.environ.get("TGBENCH_CACHE_DIR", "") or "~/.cache/tgbench"
    return Path(root).expanduser()


def source_identity(corpus: str) -> Any:
    """What identifies the source's content: the hub name, or each file's path, size and mtime."""
    if corpus.startswith("hf:"):
        return {"hf": corpus[3:]}
    if corpus not in sources.NAMED_CORPORA and not Path(corpus).expanduser().exists():
        raise UserError(
            f"corpus path not found: {Path(corpus).expanduser()}",
            "pass an existing WikiText directory/file, .txt or .jsonl file, 'embedded', 'kjv' or 'hf:NAME'",
        )
    identity = []
    for file in sources.source_files(corpus):
        st = file.stat()
        identity.append({"path": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {corpus if corpus in sources.NAMED_CORPORA else "files": identity}


def corpus_key(config: DataConfig) -> str:
    """Hash of everything that determines the encoded corpus (not cache_dir, not workers)."""
    settings = dataclasses.asdict(config)
    settings.pop("cache_dir")
    settings.pop("workers")
    settings.pop("corpus")
    blob = json.dumps(
        {"format": FORMAT_VERSION, "source": source_identity(config.corpus), "settings": settings},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def validate_config(config: DataConfig) -> None:
    """Fail fast on unknown names, before any reading."""
    if config.splitter not in SPLITTERS:
        raise unknown_name("splitter", config.splitter, SPLITTERS)
    parse_tokenizer_spec(config.tokenizer)
    if config.min_document_sentences < 1:
        raise UserError(f"min_document_sentences must be at least 1, got {config.min_document_sentences}")
    if config.workers < 0:
        raise UserError(f"workers must be 0 (one per CPU core) or more, got {config.workers}")


# -- encoding --------------------------------------------------------------------------------------
# One chunk of documents goes through `_encode_chunk`, in this process or in a worker; the parent
# appends the chunks' arrays in document order (`_SplitBuilder`). Serial and parallel encoding run
# the same code on the same chunks, so their results are identical.


@dataclass
class _EncodedChunk:
    """A chunk of documents after encoding: the kept documents, flat, and what happened to them.

    Arrays rather than lists of lists: they are cheap to send between processes and to hold.
    """

    tokens: np.ndarray  # int32, the kept documents' tokens, concatenated
    sentence_tokens: np.ndarray  # int64, tokens per kept sentence
    document_sentences: np.ndarray  # int64, sentences per kept document
    sentences_resplit: int
    fragments_merged: int
    documents_dropped: int


def _encode_chunk(texts: Sequence[str], tokenizer: Tokenizer, config: DataConfig) -> _EncodedChunk:
    """Sentence-split, tokenise (one batch), cap/merge and filter a chunk of documents' texts."""
    pieces = [split_sentences(text, config.splitter) for text in texts]
    flat_ids = tokenizer.encode_batch([p for doc_pieces in pieces for p in doc_pieces])
    tokens: list[int] = []
    sentence_tokens: list[int] = []
    document_sentences: list[int] = []
    resplit = merged = dropped = 0
    position = 0
    for doc_pieces in pieces:
        ids = flat_ids[position : position + len(doc_pieces)]
        position += len(doc_pieces)
        sentences, n_resplit, n_merged = cap_and_merge(ids, config.max_sentence_tokens, config.min_fragment_tokens)
        resplit += n_resplit
        merged += n_merged
        # Sentences counted after the reference cap cuts long ones: a long document without punctuation
        # is kept as several fragments, and the kept documents (so every content token of every split)
        # do not depend on the model's own cap, e.g. for the half-length ablation.
        counted = sentences if config.max_sentence_tokens == DROP_RULE_CAP else cap_and_merge(
            ids, DROP_RULE_CAP, config.min_fragment_tokens)[0]
        if sum(1 for s in counted if len(s)) < config.min_document_sentences:
            dropped += 1
            continue
        document_sentences.append(len(sentences))
        for sentence in sentences:
            sentence_tokens.append(len(sentence))
            tokens.extend(sentence)
    return _EncodedChunk(
        np.array(tokens, dtype=np.int32),
        np.array(sentence_tokens, dtype=np.int64),
        np.array(document_sentences, dtype=np.int64),
        resplit,
        merged,
        dropped,
    )


def _concatenate_releasing(pieces: list[np.ndarray], dtype: Any) -> np.ndarray:
    """``np.concatenate(pieces)``, emptying `pieces` as it copies, so memory peaks at about one copy."""
    out = np.empty(sum(len(piece) for piece in pieces), dtype=dtype)
    position = 0
    pieces.reverse()
    while pieces:
        piece = pieces.pop()  # the list's reference goes: the piece is freed once copied
        out[position : position + len(piece)] = piece
        position += len(piece)
    return out


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Offsets ``[0, c0, c0 + c1, ...]`` (int64) of consecutive runs of the given lengths."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


class _SplitBuilder:
    """Collects a split's encoded chunks in document order; `finish` makes the `Split` and its stats."""

    def __init__(self) -> None:
        self.stats = SplitStats()
        self.tokens: list[np.ndarray] = []
        self.sentence_tokens: list[np.ndarray] = []
        self.document_sentences: list[np.ndarray] = []

    def add(self, chunk: _EncodedChunk) -> None:
        self.tokens.append(chunk.tokens)
        self.sentence_tokens.append(chunk.sentence_tokens)
        self.document_sentences.append(chunk.document_sentences)
        self.stats.sentences_resplit += chunk.sentences_resplit
        self.stats.fragments_merged += chunk.fragments_merged
        self.stats.documents_dropped += chunk.documents_dropped

    def finish(self) -> tuple[Split, SplitStats]:
        tokens = _concatenate_releasing(self.tokens, np.int32)
        sentence_offsets = _offsets(_concatenate_releasing(self.sentence_tokens, np.int64))
        document_offsets = _offsets(_concatenate_releasing(self.document_sentences, np.int64))
        split = Split(tokens, sentence_offsets, document_offsets)
        stats = self.stats
        stats.documents = len(split)
        stats.sentences = split.n_sentences
        stats.lexical_tokens = split.lexical_tokens
        stats.mean_sentence_tokens = split.lexical_tokens / max(split.n_sentences, 1)
        return split, stats


# Worker processes: each rebuilds the tokenizer once, in `_init_worker`, so a task carries only texts.
_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_spec: str, tokenizer_data: str, config: DataConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers itself
    # The workers are the parallelism: one thread each, or N workers x N library threads compete.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch  # already imported with tgbench.adapter; the "sat" splitter runs on it

    torch.set_num_threads(1)
    _WORKER["tokenizer"] = tokenizer_from_str(tokenizer_spec, tokenizer_data)
    _WORKER["config"] = config


def _encode_in_worker(texts: list[str]) -> _EncodedChunk:
    return _encode_chunk(texts, _WORKER["tokenizer"], _WORKER["config"])


def _start_method_context() -> Any:
    """The multiprocessing context the workers start from: never a fork of this process.

    The parent may hold torch's and the tokenizers library's thread pools, which a forked child
    inherits in an unusable state. Where it exists, the fork server is a fresh interpreter started
    once per process that imports this module (and so torch) once, then forks each worker from
    itself; elsewhere every worker is a fresh interpreter ("spawn").
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", __name__])  # "__main__" is the default preload
        return context
    return multiprocessing.get_context("spawn")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(requested: int, n_chunks: int) -> int:
    """Worker processes for `n_chunks` chunks: `requested` (0: one per available core), but at least
    `MIN_CHUNKS_PER_WORKER` chunks each; 1 means encoding in this process."""
    return max(1, min(requested or available_cpus(), n_chunks // MIN_CHUNKS_PER_WORKER))


class EncodingPool:
    """Worker processes that encode chunks of documents for one tokenizer and one config.

    A context manager: leaving it normally waits for the workers to exit; leaving it on an exception
    (Ctrl-C included) terminates them at once, so no worker outlives an interrupted encoding.

    Attributes:
        workers: Number of worker processes.
        max_in_flight: Chunks submitted but not yet collected, at most: enough that every worker has
            the next chunk queued while the parent collects one, few enough that memory stays bounded.
    """

    def __init__(self, tokenizer: Tokenizer, config: DataConfig, workers: int) -> None:
        self.workers = workers
        self.max_in_flight = 2 * workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_start_method_context(),
            initializer=_init_worker,
            initargs=(tokenizer.name, tokenizer.to_str(), config),
        )

    def submit(self, texts: list[str]) -> Future:
        """Encode one chunk's texts in a worker; the future's result is an `_EncodedChunk`."""
        return self._executor.submit(_encode_in_worker, texts)

    def terminate(self) -> None:
        """Stop the workers now; chunks queued or running are dropped."""
        # Python < 3.14 has no public call for this (3.14 adds terminate_workers): take the processes
        # from the executor before shutdown forgets them.
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def __enter__(self) -> EncodingPool:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self._executor.shutdown(wait=True)
            return
        self.terminate()
        if isinstance(exc, BrokenProcessPool):
            raise UserError(
                "a worker process encoding the corpus stopped unexpectedly (its error, if any, is printed above)",
                "workers import the main script: in a script, call load_corpus under "
                "`if __name__ == \"__main__\":`; otherwise set the data setting workers = 1 (encode in this "
                "process) or lower it if memory ran out",
            ) from exc


def _chunks(documents: Iterable[sources.RawDocument], size: int) -> Iterator[list[sources.RawDocument]]:
    iterator = iter(documents)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def encode_documents(
    documents: Iterable[sources.RawDocument],
    tokenizer: Tokenizer,
    config: DataConfig,
    advance: Callable[[int], None] = lambda n: None,
    pool: EncodingPool | None = None,
) -> tuple[Split, SplitStats]:
    """Sentence-split, tokenise, cap/merge and filter one split's documents.

    Args:
        documents: The split's raw documents, read once, chunk by chunk (any iterable).
        tokenizer: Content-id tokenizer.
        config: Splitter and caps.
        advance: Called with the number of documents done after every chunk (progress bar).
        pool: Worker processes made for this tokenizer and config; None encodes in this process.
            The result is the same either way.
    """
    builder = _SplitBuilder()
    in_flight: deque[tuple[Future, int]] = deque()  # oldest first: chunks are collected in document order

    def collect_oldest() -> None:
        future, n_documents = in_flight.popleft()
        builder.add(future.result())
        advance(n_documents)

    for chunk in _chunks(documents, ENCODE_CHUNK_DOCS):
        builder.stats.replaced_bytes += sum(doc.replaced_bytes for doc in chunk)
        texts = [doc.text for doc in chunk]
        if pool is None:
            builder.add(_encode_chunk(texts, tokenizer, config))
            advance(len(texts))
            continue
        in_flight.append((pool.submit(texts), len(texts)))
        if len(in_flight) >= pool.max_in_flight:
            collect_oldest()
    while in_flight:
        collect_oldest()
    return builder.finish()


def _consume(documents: list[Any]) -> Iterator[sources.RawDocument]:
    """The documents in order, each dropped from the list once taken, so raw text is freed as it is encoded."""
    for i in range(len(documents)):
        document, documents[i] = documents[i], None
        yield document


def _progress(enabled: bool):

    return progress_bar(enabled, "documents", transient=False)


def encode_corpus(config: DataConfig, progress: bool = True) -> EncodedCorpus:
    """Read and encode a corpus without touching the cache (see `load_corpus`)."""
    validate_config(config)
    check_splitter(config.splitter)  # "sat" fails here, before the (slow) reading
    raw, replaced = sources.read_source(config)
    if replaced:
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]warning:[/yellow] {replaced:,} bytes of '{config.corpus}' are not valid UTF-8 and were "
            "replaced by U+FFFD (per split: tgbench data stats)"
        )
    tokenizer = make_tokenizer(config.tokenizer, (doc.text for doc in raw["train"]))
    read = {name: len(raw[name]) for name in SPLITS}
    workers = resolve_workers(config.workers, sum(math.ceil(n / ENCODE_CHUNK_DOCS) for n in read.values()))
    splits, stats = {}, {}
    # One pool for the three splits: workers start (and load the tokenizer) once.
    workers_context = EncodingPool(tokenizer, config, workers) if workers > 1 else contextlib.nullcontext()
    with _progress(progress) as bar, workers_context as pool:
        task = bar.add_task(f"encoding {config.corpus}", total=sum(read.values()))
        for name in SPLITS:
            bar.update(task, description=f"encoding {name}")
            splits[name], stats[name] = encode_documents(
                _consume(raw[name]), tokenizer, config, advance=lambda n: bar.advance(task, n), pool=pool
            )
    for name in SPLITS:
        if len(splits[name]) == 0:
            dropped = stats[name].documents_dropped
            if read[name] == 0 or dropped < read[name]:
                raise UserError(f"split '{name}' has no documents: {read[name]} read",
                                "use a larger corpus, or larger valid_fraction/test_fraction "
                                f"(now {config.valid_fraction}/{config.test_fraction})")
            raise UserError(
                f"split '{name}' has no documents: all {read[name]} read were dropped by the rule that a document "
                f"needs at least {config.min_document_sentences} sentences (min_document_sentences; counted after "
                f"sentences over {DROP_RULE_CAP} tokens are cut)",
                "give documents of several sentences (sentence punctuation; a blank line between documents in "
                "plain text), or set data.min_document_sentences = 1",
            )
    return EncodedCorpus(config, corpus_key(config), tokenizer, tokenizer.vocab, splits, stats)


# -- cache -----------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """`write(file)` into a temp file that replaces `path` when it succeeds (`tgbench.core.files.atomic_path`)."""

    with atomic_path(path) as tmp, open(tmp, mode) as f:
        write(f)


def save_corpus(corpus: EncodedCorpus, directory: Path, seconds: float = 0.0) -> None:
    """Write the splits (.npz), the trained tokenizer and meta.json, each atomically; meta.json last,
    so its presence means the entry is complete."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, split in corpus.splits.items():
        _atomic_write(directory / f"{name}.npz", lambda f, s=split: np.savez(f, **s.arrays()))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tokenizer.") as tmp:
        corpus.tokenizer.save(Path(tmp))
        for file in Path(tmp).iterdir():
            os.replace(file, directory / file.name)
    meta = {
        "format": FORMAT_VERSION,
        "key": corpus.key,
        "config": {k: v for k, v in dataclasses.asdict(corpus.config).items() if k != "workers"},
        "source": source_identity(corpus.config.corpus),
        "tokenizer": corpus.tokenizer.name,
        "base_size": corpus.vocab.base_size,
        "stats": {name: dataclasses.asdict(s) for name, s in corpus.stats.items()},
        "encode_seconds": round(seconds, 3),
    }
    _atomic_write(directory / "meta.json", lambda f: f.write(json.dumps(meta, indent=2) + "\n"), mode="w")


def read_cached(config: DataConfig, directory: Path) -> EncodedCorpus | None:
    """The cached corpus in `directory`, or None if absent, incomplete, stale or unreadable."""
    meta_file = directory / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            return None
        splits = {}
        for name in SPLITS:
            with np.load(directory / f"{name}.npz") as arrays:
                splits[name] = Split(arrays["tokens"], arrays["sentence_offsets"], arrays["document_offsets"])
        stats = {name: SplitStats(**values) for name, values in meta["stats"].items()}
        tokenizer = load_tokenizer(config.tokenizer, directory)
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None  # a damaged entry is rebuilt, not trusted
    return EncodedCorpus(config, meta["key"], tokenizer, tokenizer.vocab, splits, stats, directory)


def load_corpus(config: DataConfig, progress: bool = True) -> EncodedCorpus:
    """Load the encoded corpus from the cache, encoding (and caching) it first if needed.

    Args:
        config: Source and encoding settings.
        progress: Show a rich progress bar while encoding.

    Returns:
        The encoded corpus with train/valid/test splits and their statistics.

    Raises:
        UserError: unknown splitter/tokenizer, missing path, empty corpus, or an empty split.
    """
    validate_config(config)
    key = corpus_key(config)
    directory = cache_root(config) / "corpus" / key
    cached = read_cached(config, directory)
    if cached is not None:
        return cached
    started = time.perf_counter()
    corpus = encode_corpus(config, progress=progress)
    save_corpus(corpus, directory, seconds=time.perf_counter() - started)
    corpus.path = directory
    return corpus


@dataclass
class DocumentShape:
    """How long a split's documents and sentences are (what decides whether a sentence memory fills).

    Attributes:
        documents: Documents in the split.
        sentences_mean, sentences_median, sentences_p90, sentences_max: Sentences per document.
        tokens_mean, tokens_median, tokens_p90: Lexical tokens per sentence.
    """

    documents: int = 0
    sentences_mean: float = 0.0
    sentences_median: float = 0.0
    sentences_p90: float = 0.0
    sentences_max: int = 0
    tokens_mean: float = 0.0
    tokens_median: float = 0.0
    tokens_p90: float = 0.0


def document_shape(split: Split) -> DocumentShape:
    """Sentences per document and tokens per sentence of one split (numpy's linear-interpolation quantiles)."""
    per_document = np.diff(split.document_offsets)
    per_sentence = np.diff(split.sentence_offsets)
    if len(per_document) == 0 or len(per_sentence) == 0:
        return DocumentShape(documents=len(per_document))
    return DocumentShape(
        documents=len(per_document),
        sentences_mean=float(per_document.mean()),
        sentences_median=float(np.median(per_document)),
        sentences_p90=float(np.quantile(per_document, 0.9)),
        sentences_max=int(per_document.max()),
        tokens_mean=float(per_sentence.mean()),
        tokens_median=float(np.median(per_sentence)),
        tokens_p90=float(np.quantile(per_sentence, 0.9)),
    )


def mean_sentence_tokens(corpus: EncodedCorpus, splits: Sequence[str] = SPLITS) -> float:
    """Lexical tokens per sentence over the given splits together."""
    tokens = sum(corpus.splits[name].lexical_tokens for name in splits)
    sentences = sum(corpus.splits[name].n_sentences for name in splits)
    return tokens / max(sentences, 1)


def cached_stats(config: DataConfig) -> dict[str, SplitStats] | None:
    """Per-split statistics of the corpus `config` encodes, from its cache entry's meta.json alone (no arrays
    read, nothing encoded); None when the corpus is not cached yet or its entry is unreadable."""
    try:
        meta = json.loads((cache_root(config) / "corpus" / corpus_key(config) / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            return None
        return {name: SplitStats(**values) for name, values in meta["stats"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None



def cached_corpus(config: DataConfig) -> EncodedCorpus | None:
    """The encoded corpus `config` names, from the cache alone (nothing is encoded); None when it is not cached.

    Raises:
        UserError: settings `load_corpus` would refuse too (an unknown tokenizer, a missing corpus path).
    """
    validate_config(config)
    return read_cached(config, cache_root(config) / "corpus" / corpus_key(config))

def corpus_stats(corpus: EncodedCorpus) -> dict[str, SplitStats]:
    """Per-split statistics of an encoded corpus (for ``tgbench data stats``)."""
    return {name: corpus.stats[name] for name in SPLITS if name in corpus.stats}
