"""Property: arbitrary Unicode text goes through sentence splitting, tokenising and the sentence-length caps
without a crash, and the tokens decode back to the text (after `normalize_text`'s documented whitespace
normalisation: lines stripped, empty lines dropped, other line breaks turned into newlines)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgbench.data import DataConfig, gpt2_tokenizer, split_sentences, train_bpe
from tgbench.data.corpus import encode_documents
from tgbench.data.sources import RawDocument, normalize_text

# Any text a UTF-8 file can hold (lone surrogates cannot), plus text made of sentence-like pieces so the
# splitters see real boundaries, abbreviations, CJK full stops and odd line breaks.
PIECES = ["Hello", "world", "Dr.", "e.g.", "U.S.A.", ".", "!", "?", "...", ",", " ", "  ", "\t", "\n", "\n\n",
          "\r\n", "\u2028", "\x0c", "\u00a0", "ü", "ß", "日本語。", "😀", "\u200b", "\ufffd", "'s", "1.5",
          '"Quoted."']
TEXTS = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.lists(st.sampled_from(PIECES), max_size=60).map("".join),
)
MAX_TOKENS = 8  # small, so long sentences are re-split and short ones merged in most examples


@functools.cache
def tokenizer(name: str):
    if name == "gpt2":
        return gpt2_tokenizer()
    return train_bpe(["Hello world. Dr. Smith went to the U.S.A. 日本語。 Ünïcödé text, e.g. this."] * 4, 300)


@pytest.mark.parametrize("tokenizer_name", ["gpt2", "bpe-300"])
@pytest.mark.parametrize("splitter", ["syntok", "blingfire"])
@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_any_text_survives_splitting_tokenising_and_caps(splitter, tokenizer_name, text):
    normalized = normalize_text(text)
    assert "".join(split_sentences(normalized, splitter)) == normalized
    config = DataConfig(splitter=splitter, max_sentence_tokens=MAX_TOKENS, min_fragment_tokens=3,
                        min_document_sentences=1)
    tok = tokenizer(tokenizer_name)
    split, stats = encode_documents([RawDocument("t", normalized)], tok, config)
    if not normalized:
        assert stats.documents_dropped == 1 and len(split) == 0
        return
    assert len(split) == 1
    sentences = split.document(0)
    assert all(1 <= len(s) <= MAX_TOKENS for s in sentences)
    assert tok.decode(np.concatenate(sentences)) == normalized
