"""The encoded corpus: documents -> sentences -> token ids, stored flat and cached.

`load_corpus` reads a source (`tgbench.data.sources`), splits every document into sentences
(`tgbench.data.split`), tokenises them in batches, enforces the sentence-length window, drops
documents with too few sentences, and stores each split as three flat numpy arrays. The result is
cached under a key that hashes the source identity and every setting that changes the encoding,
so a grid of runs tokenises once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tgbench.adapter import Vocab
from tgbench.data import sources
from tgbench.data.split import SPLITTERS, cap_and_merge, check_splitter, split_sentences
from tgbench.data.tokenizer import Tokenizer, load_tokenizer, make_tokenizer, parse_tokenizer_spec
from tgbench.errors import UserError, unknown_name

FORMAT_VERSION = 2  # bump whenever the encoding or the cache layout changes
SPLITS = sources.SPLITS
ENCODE_CHUNK_DOCS = 256  # documents per tokenizer batch (and per progress-bar step)


@dataclass
class DataConfig:
    """Which corpus, and how it becomes token ids.

    Attributes:
        corpus: "embedded", a path (WikiText dir/file, .txt plain text, .jsonl), or
            "hf:NAME[:CONFIG]" for a `datasets` hub name.
        splitter: Sentence splitter: "syntok", "blingfire" or "sat".
        tokenizer: "gpt2" (GPT-2 BPE) or "bpe-<N>" (byte-level BPE trained on the train split).
        max_sentence_tokens: Longer sentences are re-split into near-equal fragments.
        min_fragment_tokens: Shorter pieces are merged into a neighbour when it has room.
        min_document_sentences: Documents with fewer sentences (as split, before the cap) are dropped.
        text_field: JSONL field / hub column holding the text.
        valid_fraction: Share of documents hashed into valid, for sources without their own splits.
        test_fraction: Same for test.
        cache_dir: "" -> $TGBENCH_CACHE_DIR or ~/.cache/tgbench.
    """

    corpus: str = "embedded"
    splitter: str = "syntok"
    tokenizer: str = "gpt2"
    max_sentence_tokens: int = 64
    min_fragment_tokens: int = 3
    min_document_sentences: int = 2
    text_field: str = "text"
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    cache_dir: str = ""


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
    if corpus != "embedded" and not Path(corpus).expanduser().exists():
        raise UserError(
            f"corpus path not found: {Path(corpus).expanduser()}",
            "pass an existing WikiText directory/file, .txt or .jsonl file, 'embedded' or 'hf:NAME'",
        )
    identity = []
    for file in sources.source_files(corpus):
        st = file.stat()
        identity.append({"path": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {"embedded" if corpus == "embedded" else "files": identity}


def corpus_key(config: DataConfig) -> str:
    """Hash of everything that determines the encoded corpus (not cache_dir)."""
    settings = dataclasses.asdict(config)
    settings.pop("cache_dir")
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


# -- encoding --------------------------------------------------------------------------------------
def encode_documents(
    documents: Sequence[sources.RawDocument],
    tokenizer: Tokenizer,
    config: DataConfig,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[Split, SplitStats]:
    """Sentence-split, tokenise, cap/merge and filter one split's documents.

    Args:
        documents: The split's raw documents.
        tokenizer: Content-id tokenizer.
        config: Splitter and caps.
        advance: Called with the number of documents done after every batch (progress bar).
    """
    stats = SplitStats(replaced_bytes=sum(doc.replaced_bytes for doc in documents))
    kept: list[list[list[int]]] = []
    for start in range(0, len(documents), ENCODE_CHUNK_DOCS):
        chunk = documents[start : start + ENCODE_CHUNK_DOCS]
        pieces = [split_sentences(doc.text, config.splitter) for doc in chunk]
        flat_ids = tokenizer.encode_batch([p for doc_pieces in pieces for p in doc_pieces])
        position = 0
        for doc_pieces in pieces:
            ids = flat_ids[position : position + len(doc_pieces)]
            position += len(doc_pieces)
            sentences, n_resplit, n_merged = cap_and_merge(
                ids, config.max_sentence_tokens, config.min_fragment_tokens
            )
            stats.sentences_resplit += n_resplit
            stats.fragments_merged += n_merged
            # Sentences as the splitter found them: the kept documents (and so every content token
            # of every split) do not depend on the cap, e.g. for the half-length ablation.
            if sum(1 for s in ids if s) < config.min_document_sentences:
                stats.documents_dropped += 1
            else:
                kept.append(sentences)
        advance(len(chunk))
    split = Split.from_documents(kept)
    stats.documents = len(split)
    stats.sentences = split.n_sentences
    stats.lexical_tokens = split.lexical_tokens
    stats.mean_sentence_tokens = split.lexical_tokens / max(split.n_sentences, 1)
    return split, stats


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("documents"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


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
    splits, stats = {}, {}
    with _progress(progress) as bar:
        task = bar.add_task(f"encoding {config.corpus}", total=sum(len(docs) for docs in raw.values()))
        for name in SPLITS:
            bar.update(task, description=f"encoding {name}")
            splits[name], stats[name] = encode_documents(
                raw[name], tokenizer, config, advance=lambda n: bar.advance(task, n)
            )
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise UserError(
                f"split '{name}' has no documents: {len(raw[name])} read, {stats[name].documents_dropped} "
                f"dropped with fewer than {config.min_document_sentences} sentences",
                "use a larger corpus, or larger valid_fraction/test_fraction "
                f"(now {config.valid_fraction}/{config.test_fraction})",
            )
    return EncodedCorpus(config, corpus_key(config), tokenizer, tokenizer.vocab, splits, stats)


# -- cache -----------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        "config": dataclasses.asdict(corpus.config),
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


def corpus_stats(corpus: EncodedCorpus) -> dict[str, SplitStats]:
    """Per-split statistics of an encoded corpus (for ``tgbench data stats``)."""
    return {name: corpus.stats[name] for name in SPLITS if name in corpus.stats}
