"""An evaluation tgbench does not ship, written against the Task contract (docs/tasks.md).

The repeat probe: every item is one test sentence read twice in a row, ``[s, s]``. A model that carries
the earlier sentence forward (in its context window, or in a sentence memory) predicts the second copy
far better than the first. The probe reports the NLL per token of each copy and their difference.

    tgbench eval --task examples/repeat_task.py:RepeatTask --runs runs/demo
"""

from __future__ import annotations

import numpy as np

from tgbench.scoring import score_documents
from tgbench.task import DEFAULT_BATCH_SIZE, Metric, Task, TaskResult


class RepeatTask(Task):
    """NLL of a test sentence the first time and the second time it is read."""

    name = "repeat"
    version = 1  # bump when the items or the metrics change: results of older versions are recomputed
    description = "each test document's first sentence read twice: NLL per token of the first and the second copy"
    metrics = (
        Metric("first_nll", False, ".3f", "mean", "first copy NLL", "nats/token"),
        Metric("repeat_nll", False, ".3f", "mean", "second copy NLL", "nats/token"),
        Metric("copy_gain", True, ".3f", "mean", "copy gain", "nats/token"),
        Metric("items", None, "d", "sum", "items"),
    )

    def evaluate(self, run, *, limit: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool = True) -> TaskResult:
        test = run.corpus.splits["test"]
        n = len(test) if limit is None else min(limit, len(test))
        # a sentence is a 1-D array of content token ids; a document is a list of sentences
        sentences = [doc[0] for doc in test.documents(range(n)) if doc and len(doc[0]) > 1]
        scores = score_documents(run, [[s, s] for s in sentences], batch_size=batch_size,
                                 description=self.name, progress=progress)
        first = np.array([-float(sc[: len(s)].double().sum()) for s, sc in zip(sentences, scores, strict=True)])
        second = np.array([-float(sc[len(s):].double().sum()) for s, sc in zip(sentences, scores, strict=True)])
        tokens = float(sum(len(s) for s in sentences))
        first_nll, repeat_nll = first.sum() / max(tokens, 1.0), second.sum() / max(tokens, 1.0)
        return TaskResult(
            metrics={"first_nll": first_nll, "repeat_nll": repeat_nll, "copy_gain": first_nll - repeat_nll,
                     "items": len(sentences)},
            n_samples={"original": len(test), "effective": len(sentences)},
            config={"items": "first sentence of each test document, read twice"},
        )
