"""Loss by sentence position: where in a document a model's lexical loss is made.

The k-th sentence of a document (1-based, the corpus's sentences) falls in a bucket of doubling width,
``1, 2, 3-4, 5-8, 9-16, 17-32, 33+``: bucket 1 is local modelling only (no earlier sentence to draw
on), later buckets show what a model gains from the sentences before. Every model is bucketed from the
per-token log-probs `Adapter.score` returns for the same documents, mapped back to the sentences the
documents are given as, so all models are compared on exactly the same tokens. Pure functions of
documents and scores: no model, no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BUCKETS = ("1", "2", "3-4", "5-8", "9-16", "17-32", "33+")


def bucket_index(position: int | np.ndarray) -> int | np.ndarray:
    """Bucket of a 1-based sentence position: 1 -> 0, 2 -> 1, 3-4 -> 2, ..., 33 and later -> 6.

    The bucket of position k is ceil(log2 k), i.e. the bit length of k - 1, capped at the last bucket.
    """
    k = np.asarray(position, dtype=np.int64)
    if np.any(k < 1):
        raise ValueError(f"sentence positions start at 1, got {k.min()}")
    # bit length of k - 1 without floating point: the number of halvings until it reaches 0
    rest, bits = k - 1, np.zeros_like(k)
    while np.any(rest > 0):
        bits += rest > 0
        rest >>= 1
    index = np.minimum(bits, len(BUCKETS) - 1)
    return int(index) if index.ndim == 0 else index


def token_positions(document: Sequence[Sequence[int]]) -> np.ndarray:
    """The 1-based position of the sentence each content token of `document` belongs to (int64)."""
    lengths = np.array([len(s) for s in document], dtype=np.int64)
    return np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int64), lengths)


def loss_by_position(documents: Sequence[Sequence[Sequence[int]]], logprobs: Sequence[Any]) -> list[dict[str, Any]]:
    """Lexical loss per sentence-position bucket from per-token log-probs.

    Args:
        documents: Documents as sentences of content ids (what the model was scored on).
        logprobs: One 1-D array (or tensor) per document: the log-prob of each of its content tokens,
            in order (`Adapter.score`'s output).

    Returns:
        One entry per bucket of `BUCKETS`, in order: ``{"bucket", "tokens", "loss"}`` with the mean NLL
        in nats per token (None for a bucket without tokens). The tokens add up to every scored token.

    Raises:
        ValueError: a document's scores do not match its token count.
    """
    nll = np.zeros(len(BUCKETS), dtype=np.float64)
    tokens = np.zeros(len(BUCKETS), dtype=np.int64)
    for index, (document, scores) in enumerate(zip(documents, logprobs, strict=True)):
        values = np.asarray(scores.double() if hasattr(scores, "double") else scores, dtype=np.float64).reshape(-1)
        buckets = bucket_index(token_positions(document)) if len(values) else np.zeros(0, dtype=np.int64)
        if len(buckets) != len(values):
            raise ValueError(f"document {index} has {len(buckets)} content tokens but {len(values)} scores")
        np.add.at(nll, buckets, -values)
        tokens += np.bincount(buckets, minlength=len(BUCKETS))
    return [{"bucket": name, "tokens": int(n), "loss": float(total / n) if n else None}
            for name, total, n in zip(BUCKETS, nll, tokens, strict=True)]


def position_metrics(entries: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    """The scalar metrics of a ``by_sentence_position`` list (results.csv's ``ppl.<metric>`` columns):
    ``loss_sentence_<bucket>`` and ``tokens_sentence_<bucket>`` for every bucket (None where it has none)."""
    found = {str(e.get("bucket")): e for e in entries or [] if isinstance(e, dict)}
    cells: dict[str, Any] = {}
    for name in BUCKETS:
        entry = found.get(name, {})
        cells[f"loss_sentence_{name}"] = entry.get("loss")
        cells[f"tokens_sentence_{name}"] = entry.get("tokens")
    return cells
