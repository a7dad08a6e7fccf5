"""tg_reversal helpers: the probe's items as an lm-eval dataset, and per-item metrics."""

from tgbench.evaluate import reversal_dataset


def dataset(**kwargs):
    """`custom_dataset`: lm-eval passes the task metadata, which includes the model's `run=DIR`."""
    return reversal_dataset(**kwargs)


def process_results(doc, results):
    """results: [(loglik, greedy) of the target, (loglik, greedy) of the distractor].

    Only the row's own condition is reported: lm-eval averages each metric over the rows that have it.
    """
    target_nll, distractor_nll = -results[0][0], -results[1][0]
    margin = distractor_nll - target_nll  # negative: the distractor was more likely (an error)
    cond = doc["condition"]
    return {f"{cond}_target_nll": target_nll, f"{cond}_distractor_nll": distractor_nll,
            f"{cond}_margin": margin, f"{cond}_error_rate": float(margin < 0)}
