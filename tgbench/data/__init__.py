"""Corpora, sentence splitting, tokenizers and the cached encoded corpus."""

from tgbench.data.corpus import (
    DocumentShape,
    EncodedCorpus,
    Split,
    SplitStats,
    corpus_key,
    corpus_stats,
    document_shape,
    load_corpus,
    mean_sentence_tokens,
)
from tgbench.data.sources import RawDocument, read_source
from tgbench.data.split import cap_and_merge, split_sentences
from tgbench.data.tokenizer import Tokenizer, gpt2_tokenizer, load_tokenizer, train_bpe
from tgbench.plan.config import DataConfig

__all__ = [
    "DataConfig",
    "DocumentShape",
    "EncodedCorpus",
    "RawDocument",
    "Split",
    "SplitStats",
    "Tokenizer",
    "cap_and_merge",
    "corpus_key",
    "corpus_stats",
    "document_shape",
    "gpt2_tokenizer",
    "load_corpus",
    "load_tokenizer",
    "mean_sentence_tokens",
    "read_source",
    "split_sentences",
    "train_bpe",
]
