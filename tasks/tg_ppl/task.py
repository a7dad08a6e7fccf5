"""ppl: the lexical perplexity of a run's test split, and the metrics both evaluation paths report.

`PerplexityTask` (registered as ``ppl``) scores the encoded test documents directly through
`Adapter.score` (exact token ids) with `evaluate_ppl`; `ppl_dataset` hands lm-eval the same documents as
text for the YAML task in this folder (``tg_ppl``, which gives the same numbers through
`loglikelihood_rolling` on each test document's decoded text). Its lexical loss is the primary number of
a grid (results.csv's ``test_loss``, the fits and the verdict); the other metrics are secondary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tgbench.adapter import Document
from tgbench.evaluation.scoring import run_corpus, run_from, score_documents
from tgbench.task import DEFAULT_BATCH_SIZE, Metric, Task, TaskResult
from tgbench.tasks.tg_ppl.positions import BUCKETS, loss_by_position, position_metrics
from tgbench.tasks.tg_ppl.report import ppl_section


# -- metrics ------------------------------------------------------------------------------
def count_words(text: str) -> int:
    """Words as lm-eval counts them for `word_perplexity` (its wikitext task's rule)."""
    return len(re.split(r"\s+", text))


def ppl_metrics(logliks: Sequence[float], tokens: Sequence[int], words: Sequence[int],
                n_bytes: Sequence[int]) -> dict[str, float]:
    """Corpus-level metrics from per-document log-likelihood sums and sizes.

    Uses lm-eval's own aggregations, so the numbers equal what its rolling tasks report.
    """
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity

    n_tokens = int(sum(tokens))
    loss = -float(sum(logliks)) / max(n_tokens, 1)
    return {
        "lexical_loss": loss,
        "lexical_ppl": math.exp(min(loss, 700.0)),
        "word_perplexity": float(weighted_perplexity(list(zip(logliks, words, strict=True)))),
        "bits_per_byte": float(bits_per_byte(list(zip(logliks, n_bytes, strict=True)))),
        "tokens": n_tokens,
    }


def first_test_documents(corpus, limit: int | None = None) -> list[Document]:
    split = corpus.splits["test"]
    n = len(split) if limit is None else min(limit, len(split))
    return split.documents(range(n))


def document_text(doc: Document, tokenizer) -> str:
    """A corpus document's text: the decoded tokens of its sentences (lossless for byte-level BPE)."""
    return tokenizer.decode(np.concatenate(doc).tolist() if doc else [])


def evaluate_ppl(run, limit: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool = True) -> tuple[dict[str, float], int, int]:
    """Lexical perplexity of the run's test split, on its exact token ids (one stream per document).

    Returns:
        (metrics, documents evaluated, documents in the split).
    """
    documents = first_test_documents(run.corpus, limit)
    scores = score_documents(run, documents, batch_size=batch_size, description="ppl", progress=progress)
    texts = [document_text(doc, run.corpus.tokenizer) for doc in documents]
    metrics = ppl_metrics(
        [float(s.double().sum()) for s in scores], [len(s) for s in scores],
        [count_words(t) for t in texts], [len(t.encode("utf-8")) for t in texts],
    )
    metrics.update(context_metrics(run, documents))
    metrics["by_sentence_position"] = loss_by_position(documents, scores)  # a list: moved to the JSON's top level
    metrics["by_document"] = by_document(documents, scores)  # likewise
    metrics.update(position_metrics(metrics["by_sentence_position"]))
    return metrics, len(documents), len(run.corpus.splits["test"])


def by_document(documents: Sequence[Document], scores) -> list[dict[str, Any]]:
    """Each test document's lexical NLL sum, token count and sentence count, in split order (as lm-eval's
    per-sample logs give one record per document): where a model wins, and paired per-document tests."""
    return [{"doc_id": index, "lexical_nll": -float(s.double().sum()), "tokens": len(s), "sentences": len(doc)}
            for index, (doc, s) in enumerate(zip(documents, scores, strict=True))]


def context_metrics(run, documents: Sequence[Document]) -> dict[str, float]:
    """What the model could see while scoring: its effective context in tokens (at the test split's mean
    sentence length) and, for models with a sentence memory, the memory slots read per sentence."""
    out: dict[str, float] = {}
    test = run.corpus.splits["test"]
    context = run.adapter.effective_context(test.lexical_tokens / max(test.n_sentences, 1))
    if context is not None:
        out["effective_context_tokens"] = context.tokens
    reads = run.adapter.memory_reads(documents, run.vocab)
    if reads is not None:
        out["memory_slots_per_sentence"] = reads.per_sentence
        out["memory_full_fraction"] = reads.full_fraction
    return out


def ppl_dataset(**kwargs: Any):
    """`custom_dataset` of tg_ppl: the run's test documents as text (plus their exact token counts)."""
    import datasets

    corpus = run_corpus(run_from(kwargs))
    rows = []
    for index, doc in enumerate(first_test_documents(corpus)):
        rows.append({"doc": index, "text": document_text(doc, corpus.tokenizer),
                     "tokens": int(sum(len(s) for s in doc))})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


class PerplexityTask(Task):
    """Lexical perplexity of the run's own test split (every document, one stream each)."""

    name = "ppl"
    version = 2  # must equal `metadata.version` in tg_ppl.yaml (2: sentence positions, context, memory reads)
    description = "lexical perplexity of the run's test split (word tokens only, boundary tokens excluded)"
    metrics = (
        Metric("lexical_loss", False, ".4f", "weighted_nll", "test loss", "nats/token"),
        Metric("lexical_ppl", False, ".2f", "weighted_perplexity", "test PPL", "lexical"),
        Metric("word_perplexity", False, ".2f", "weighted_perplexity", "word PPL"),
        Metric("bits_per_byte", False, ".4f", "bits_per_byte", "bits/byte"),
        Metric("tokens", None, "d", "sum", "tokens", "scored"),
        Metric("effective_context_tokens", None, ",.0f", "mean", "effective context", "tokens"),
        Metric("memory_slots_per_sentence", None, ".2f", "mean", "memory read", "slots/sentence"),
        Metric("memory_full_fraction", None, ".0%", "mean", "memory full", "of sentences"),
        *(Metric(f"loss_sentence_{b}", False, ".4f", "weighted_nll", f"loss, sentence {b}", "nats/token")
          for b in BUCKETS),
        *(Metric(f"tokens_sentence_{b}", None, "d", "sum", f"tokens, sentence {b}") for b in BUCKETS),
    )

    def evaluate(self, run, *, limit: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool = True) -> TaskResult:
        metrics, n, original = evaluate_ppl(run, limit, batch_size, progress)
        by_position = metrics.pop("by_sentence_position")
        documents = metrics.pop("by_document")
        return TaskResult(metrics, {"original": original, "effective": n},
                          {"output_type": "loglikelihood_rolling", "test_split": "test"},
                          extra={"by_sentence_position": by_position, "by_document": documents})

    def report_section(self, view):

        return ppl_section(view)
