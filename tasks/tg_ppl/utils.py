"""tg_ppl helpers: the run's test documents as an lm-eval dataset, and the per-document metrics."""

from tgbench.tasks.tg_ppl.task import count_words, ppl_dataset


def dataset(**kwargs):
    """`custom_dataset`: lm-eval passes the task metadata, which includes the model's `run=DIR`."""
    return ppl_dataset(**kwargs)


def process_results(doc, results):
    (loglikelihood,) = results
    n_bytes = len(doc["text"].encode("utf-8"))
    return {
        "lexical_loss": (loglikelihood, doc["tokens"]),
        "lexical_ppl": (loglikelihood, doc["tokens"]),
        "word_perplexity": (loglikelihood, count_words(doc["text"])),
        "bits_per_byte": (loglikelihood, n_bytes),
        "tokens": doc["tokens"],
    }


def weighted_nll(items):
    """Mean NLL per token: -sum(loglikelihood) / sum(tokens)."""
    logliks, weights = zip(*items, strict=True)
    return -sum(logliks) / sum(weights)


def total(items):
    return sum(items)
