"""tg_reversal helpers: the probe's items as an lm-eval dataset, and per-item metrics."""

from tgbench.tasks.tg_reversal.task import item_metrics, reversal_dataset


def dataset(**kwargs):
    """`custom_dataset`: lm-eval passes the task metadata, which includes the model's `run=DIR`."""
    return reversal_dataset(**kwargs)


def process_results(doc, results):
    """results: [(loglik, greedy) of the target, (loglik, greedy) of the distractor].

    Only the row's own condition is reported: lm-eval averages each metric over the rows that have it.
    """
    return item_metrics(doc["condition"], -results[0][0], -results[1][0])
