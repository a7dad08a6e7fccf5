"""Sentence splitting (lossless, whitespace leads) and the 64-token cap / 3-token merge window."""

from __future__ import annotations

import numpy as np
import pytest

from tgbench.core.errors import UserError
from tgbench.data import cap_and_merge, split_sentences
from tgbench.data import split as split_module

TEXT = (
    "Dr. Smith went to Washington. He arrived on Jan. 5, 2001!  Was it cold? Yes.\n"
    "A new paragraph starts here without a full stop\nAnd café naïveté 日本語 works too."
)


@pytest.mark.parametrize("splitter", ["syntok", "blingfire"])
def test_pieces_concatenate_back_and_whitespace_leads(splitter):
    pieces = split_sentences(TEXT, splitter)
    assert "".join(pieces) == TEXT
    assert len(pieces) >= 6
    assert all(p.strip() for p in pieces)
    assert not pieces[0][0].isspace()
    for piece in pieces[1:]:
        assert piece[0].isspace() and not piece[-1].isspace()  # space/newline at the start, never the end
    # A line break always ends a sentence.
    assert any(p.startswith("\nA new paragraph") for p in pieces)
    assert any(p.startswith("\nAnd café") for p in pieces)


def test_syntok_keeps_abbreviations_inside_sentences():
    pieces = split_sentences(TEXT, "syntok")
    assert pieces[0] == "Dr. Smith went to Washington."
    assert pieces[1] == " He arrived on Jan. 5, 2001!"
    assert pieces[2] == "  Was it cold?"


@pytest.mark.parametrize("text", ["", "One sentence only", "   ", "x.\n\n\ny."])
def test_edge_texts_round_trip(text):
    for splitter in ("syntok", "blingfire"):
        assert "".join(split_sentences(text, splitter)) == text


def test_unknown_splitter_suggests_a_name():
    with pytest.raises(UserError, match="unknown splitter 'syntk'") as info:
        split_sentences("A. B.", "syntk")
    assert "did you mean 'syntok'" in info.value.fix


def test_sat_without_wtpsplit_or_model_points_to_syntok(monkeypatch):
    split_module._sat_model.cache_clear()
    real = split_module.importlib.util.find_spec
    monkeypatch.setattr(
        split_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wtpsplit" else real(name, *a),
    )
    with pytest.raises(UserError, match="sat") as info:
        split_sentences("A. B.", "sat")
    assert "--splitter syntok" in info.value.fix
    split_module._sat_model.cache_clear()


def test_long_sentences_are_resplit_into_near_equal_fragments():
    out, n_resplit, n_merged = cap_and_merge([list(range(70)), list(range(130))], max_tokens=64, min_tokens=3)
    assert [len(s) for s in out] == [35, 35, 44, 43, 43]
    assert (n_resplit, n_merged) == (2, 0)
    assert sum(out, []) == list(range(70)) + list(range(130))


def test_short_fragments_merge_into_previous_or_next():
    # Into the previous sentence.
    out, r, m = cap_and_merge([[1, 2, 3, 4], [5], [6, 7, 8]], max_tokens=64, min_tokens=3)
    assert (out, r, m) == ([[1, 2, 3, 4, 5], [6, 7, 8]], 0, 1)
    # A short first piece goes into the next one.
    out, r, m = cap_and_merge([[1], [2, 3, 4]], max_tokens=64, min_tokens=3)
    assert (out, r, m) == ([[1, 2, 3, 4]], 0, 1)
    # Previous full: the next neighbour takes it.
    out, r, m = cap_and_merge([[1, 2, 3, 4], [5], [6, 7]], max_tokens=4, min_tokens=3)
    assert (out, r, m) == ([[1, 2, 3, 4], [5, 6, 7]], 0, 1)
    # No neighbour has room: kept as it is, not counted.
    out, r, m = cap_and_merge([[1, 2, 3, 4], [5], [6, 7, 8, 9]], max_tokens=4, min_tokens=3)
    assert (out, r, m) == ([[1, 2, 3, 4], [5], [6, 7, 8, 9]], 0, 0)
    # A lone short sentence stays.
    assert cap_and_merge([[1, 2]], 64, 3) == ([[1, 2]], 0, 0)


def test_resplit_and_merge_counts_together():
    # 10 tokens at cap 4 -> 4+3+3 (one re-split); then [9] merges into the last fragment (3+1 <= 4).
    out, r, m = cap_and_merge([list(range(10)), [9], [7, 7, 7]], max_tokens=4, min_tokens=3)
    assert out == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 9], [7, 7, 7]]
    assert (r, m) == (1, 1)


def test_cap_and_merge_never_drops_or_reorders_tokens():
    rng = np.random.default_rng(0)
    for _ in range(200):
        max_tokens = int(rng.integers(2, 20))
        sentences = [
            list(rng.integers(0, 100, size=int(rng.integers(0, 50)))) for _ in range(rng.integers(1, 8))
        ]
        out, _, _ = cap_and_merge(sentences, max_tokens=max_tokens, min_tokens=3)
        assert sum(out, []) == sum(sentences, [])
        assert all(0 < len(s) <= max_tokens for s in out)
