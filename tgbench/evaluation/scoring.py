"""Scoring documents through `Adapter.score`, and turning text into documents the way the run's corpus was.

Every task scores through here, so every architecture is measured on exactly the same content tokens.

How text becomes a document (lm-eval requests): the text is split into sentences with the
splitter of the run's training data, each sentence is encoded with the run's tokenizer, and the
run's sentence-length caps are applied (`cap_and_merge`, which never drops or reorders a token).
That is the pipeline that encoded the training corpus, so decoded corpus text re-encodes to the
same ids. For ``loglikelihood(context, continuation)`` the continuation is appended to the last
context sentence; its tokens are ``encode(last + continuation)`` minus ``encode(last)`` when the
latter is a prefix of the former (true at word boundaries for byte-level BPE, so a merge across
the boundary is never split), otherwise ``encode(continuation)`` is appended as is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgbench.adapter import Document
from tgbench.core.console import progress_bar
from tgbench.core.devices import autocast_context
from tgbench.core.errors import UserError
from tgbench.data import load_corpus
from tgbench.data.split import cap_and_merge, split_sentences
from tgbench.task import DEFAULT_BATCH_SIZE
from tgbench.training.rundir import RunDir


# -- text -> documents ---------------------------------------------------------------------------
def text_sentences(text: str, tokenizer, data_config) -> list[list[int]]:
    """Token ids per sentence of `text`, through the run's splitter, tokenizer and length caps."""

    pieces = split_sentences(text, data_config.splitter)
    ids = tokenizer.encode_batch(pieces) if pieces else []
    sentences, _, _ = cap_and_merge(ids, data_config.max_sentence_tokens, data_config.min_fragment_tokens)
    return sentences


def continuation_document(context: str, continuation: str, tokenizer, data_config) -> tuple[Document, int]:
    """The document scored for a loglikelihood request, and how many of its last tokens are the
    continuation (see the module docstring for the tokenisation rule)."""

    pieces = split_sentences(context, data_config.splitter) or [""]
    ids = tokenizer.encode_batch(pieces)
    last = ids[-1]
    joined = tokenizer.encode(pieces[-1] + continuation)
    if joined[: len(last)] == last:
        tail = joined[len(last) :]
    else:
        tail = tokenizer.encode(continuation)
    ids[-1] = last + tail
    sentences, _, _ = cap_and_merge(ids, data_config.max_sentence_tokens, data_config.min_fragment_tokens)
    return as_document(sentences), len(tail)


def as_document(sentences: Sequence[Sequence[int]]) -> Document:
    return [np.asarray(s, dtype=np.int64) for s in sentences if len(s)]


# -- scoring -------------------------------------------------------------------------------------
def score_documents(run, documents: Sequence[Document], *, batch_size: int = DEFAULT_BATCH_SIZE,
                    description: str = "scoring", progress: bool = True) -> list[torch.Tensor]:
    """`adapter.score` over many documents, longest first in batches (less padding), in input order.

    Args:
        run: A `tgbench.training.rundir.LoadedRun`.
        documents: Documents of content ids; empty documents get an empty tensor without a call.
        batch_size: Documents per `score` call.

    Returns:
        One float32 CPU tensor of per-token log-probs per document.
    """

    device = next(run.model.parameters()).device
    lengths = [sum(len(s) for s in doc) for doc in documents]
    order = [i for i in sorted(range(len(documents)), key=lambda i: -lengths[i]) if lengths[i] > 0]
    out: list[torch.Tensor] = [torch.zeros(0) for _ in documents]
    run.model.eval()
    with progress_bar(progress) as bar, torch.no_grad(), autocast_context(device, run.config.train.dtype):
        task = bar.add_task(description, total=len(documents))
        bar.advance(task, len(documents) - len(order))
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start : start + batch_size]
            scores = run.adapter.score(run.model, [documents[i] for i in chunk], run.vocab)
            for index, score in zip(chunk, scores, strict=True):
                if len(score) != lengths[index]:
                    raise UserError(
                        f"adapter '{run.adapter.name}' ({type(run.adapter).__module__}) scored {len(score)} tokens "
                        f"of a {lengths[index]}-token document",
                        "make the adapter's score() return one log-prob per content token, in order "
                        "(the contract in docs/adapters.md)")
                out[index] = score.float().cpu()
            bar.advance(task, len(chunk))
    return out


# -- the run behind an lm-eval task's dataset (called from tasks/*/utils.py) ----------------------------
def run_from(kwargs: dict[str, Any]) -> Path:
    """The run directory lm-eval hands a task's `custom_dataset` (model_args metadata, or TGBENCH_RUN)."""
    run = kwargs.get("run") or os.environ.get("TGBENCH_RUN")
    if not run:
        raise UserError("the tg_* lm-eval tasks need the run whose corpus/tokenizer they use",
                        "pass --model_args run=DIR (lm-eval hands model_args to the task) or set TGBENCH_RUN")
    return Path(run)


def run_corpus(run_dir: Path):

    return load_corpus(RunDir(run_dir).read_config().data, progress=False)
