"""Sentence splitting and the sentence-length caps.

`split_sentences` cuts a document's text into pieces that concatenate back to the text exactly.
Whitespace between two sentences goes at the START of the next piece, so every sentence after the
first carries its leading space (or newline), which is how GPT-2 BPE tokenises words mid-text.
Every line break is a sentence boundary: after normalisation a line is a paragraph.

`cap_and_merge` then works on token ids: sentences over the cap are re-split into near-equal
fragments (no token is ever dropped) and very short pieces are merged into a neighbour.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Callable

from tgbench.core.errors import UserError, unknown_name

SPLITTERS = ("syntok", "blingfire", "sat")
SAT_MODEL = "sat-3l-sm"
SAT_THRESHOLD = 0.15


# -- splitters: each returns the character offsets where sentences start inside one line ----------
def _syntok_starts(line: str) -> list[int]:
    from syntok import segmenter

    starts = []
    for paragraph in segmenter.analyze(line):
        for sentence in paragraph:
            if sentence:
                starts.append(sentence[0].offset)
    return starts


def _blingfire_starts(line: str) -> list[int]:
    import blingfire

    _, offsets = blingfire.text_to_sentences_and_offsets(line)
    return [start for start, _ in offsets]


@functools.lru_cache(maxsize=1)
def _sat_model():
    if importlib.util.find_spec("wtpsplit") is None:
        raise UserError(
            "the 'sat' splitter needs wtpsplit, which is not installed",
            "pip install tgbench[sat] and put the sat-3l-sm model in the Hugging Face cache, "
            "or use --splitter syntok",
        )
    local = os.environ.get("TGBENCH_SAT_MODEL", "")
    if not local:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(f"segment-any-text/{SAT_MODEL}", "config.json")
        if not isinstance(cached, str):
            raise UserError(
                f"the 'sat' splitter's model {SAT_MODEL} is not available locally (and is never downloaded)",
                "set TGBENCH_SAT_MODEL to a local copy of the model, or use --splitter syntok",
            )
        local = os.path.dirname(cached)
    from wtpsplit import SaT

    return SaT(local)


def _sat_starts(line: str) -> list[int]:
    pieces = _sat_model().split(line, threshold=SAT_THRESHOLD)
    starts, position = [], 0
    for piece in pieces:  # SaT pieces concatenate back to the line; recover offsets from their lengths
        starts.append(position)
        position += len(piece)
    return starts


def _starts_function(splitter: str) -> Callable[[str], list[int]]:
    if splitter == "syntok":
        return _syntok_starts
    if splitter == "blingfire":
        return _blingfire_starts
    if splitter == "sat":
        _sat_model()  # fail early with a clear message
        return _sat_starts
    raise unknown_name("splitter", splitter, SPLITTERS)


def check_splitter(splitter: str) -> None:
    """Raise `UserError` now if `splitter` is unknown or unavailable."""
    _starts_function(splitter)


def split_sentences(text: str, splitter: str = "syntok") -> list[str]:
    """Split `text` into sentences that concatenate back to `text` exactly.

    Args:
        text: Any text; line breaks are treated as paragraph (hence sentence) boundaries.
        splitter: "syntok" (default, accurate), "blingfire" (fast) or "sat" (wtpsplit SaT
            ``sat-3l-sm``, threshold 0.15, only if installed with its model available locally).

    Returns:
        Non-empty pieces; each piece after the first starts with the whitespace that preceded it.

    Raises:
        UserError: unknown splitter, or "sat" without wtpsplit or its local model.
    """
    starts_of = _starts_function(splitter)
    if not text:
        return []
    cuts = set()
    line_start = 0
    for line in text.split("\n"):
        if line_start > 0:
            cuts.add(line_start - 1)  # the newline opens the next piece
        if line.strip():
            cuts.update(line_start + start for start in starts_of(line))
        line_start += len(line) + 1
    # Move every cut back over the whitespace before it, so whitespace leads the next piece.
    moved = set()
    for cut in cuts:
        while cut > 0 and text[cut - 1].isspace():
            cut -= 1
        if 0 < cut < len(text):
            moved.add(cut)
    bounds = [0, *sorted(moved), len(text)]
    return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def cap_and_merge(
    sentences_ids: list[list[int]], max_tokens: int = 64, min_tokens: int = 3
) -> tuple[list[list[int]], int, int]:
    """Enforce the sentence-length window on one document's tokenised sentences.

    Sentences longer than `max_tokens` are re-split into the fewest near-equal fragments of at most
    `max_tokens` (no token is dropped). Then every piece shorter than `min_tokens` is merged into the
    previous sentence, or into the next one when it is first or the previous one has no room, as long
    as the result stays within `max_tokens`; otherwise it is kept as it is.

    Args:
        sentences_ids: Token ids per sentence, in document order.
        max_tokens: Longest sentence allowed.
        min_tokens: Shortest piece left standing when a neighbour has room.

    Returns:
        (sentences, n_resplit, n_merged): the new sentences (same tokens, same order), the number
        of sentences that were re-split and the number of short pieces merged into a neighbour.
    """
    if max_tokens < 1:
        raise UserError(f"max_sentence_tokens must be at least 1, got {max_tokens}")
    pieces: list[list[int]] = []
    n_resplit = 0
    for ids in sentences_ids:
        ids = list(ids)
        if not ids:
            continue
        if len(ids) <= max_tokens:
            pieces.append(ids)
            continue
        n_resplit += 1
        k = math.ceil(len(ids) / max_tokens)
        size, extra = divmod(len(ids), k)  # the first `extra` fragments get one more token
        start = 0
        for j in range(k):
            end = start + size + (1 if j < extra else 0)
            pieces.append(ids[start:end])
            start = end

    out: list[list[int]] = []
    n_merged = 0
    carry: list[int] = []  # a short first piece waiting to be prepended to the next one
    for i, piece in enumerate(pieces):
        if carry:
            if len(carry) + len(piece) <= max_tokens:
                piece = carry + piece
                n_merged += 1
            else:
                out.append(carry)
            carry = []
        if len(piece) >= min_tokens:
            out.append(piece)
        elif out and len(out[-1]) + len(piece) <= max_tokens:
            out[-1].extend(piece)
            n_merged += 1
        elif i + 1 < len(pieces):
            carry = piece  # try the next neighbour
        else:
            out.append(piece)
    if carry:
        out.append(carry)
    return [p for p in out if p], n_resplit, n_merged
