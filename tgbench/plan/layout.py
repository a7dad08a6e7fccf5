"""An epoch's layout, as the trainer takes it: the document order, the batch generator, the steps of its batches.

The trainer, the step counts before training (`tgbench.plan.steps`) and the FLOP counts of an isoFLOP grid
(`tgbench.plan.isoflop`) share these, so what is planned is what trains; they import nothing that expands grids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tgbench.adapter import Document

# Runs are counted on the corpus up to this many lexical tokens x epochs each (a few seconds for a CPU preset);
# larger runs (the paper presets: 50 epochs of 12M-50M tokens) are estimated.
COUNT_LIMIT = 5_000_000


def epoch_documents(train_docs: Sequence[Document], seed: int, epoch: int) -> list[Document]:
    """Epoch 0 keeps the subset's seeded order; later epochs reshuffle with (seed, epoch)."""
    if epoch == 0:
        return list(train_docs)
    order = np.random.default_rng([seed, epoch]).permutation(len(train_docs))
    return [train_docs[i] for i in order]


def batch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator an epoch's `Adapter.batches` (and `count_batches`) gets."""
    return np.random.default_rng([seed, epoch, 1])


def steps_in_epoch(n_batches: int, batches_per_step: int) -> int:
    """Steps an epoch of `n_batches` gives; a step that cannot be filled is dropped (when it takes > 1)."""
    return n_batches if batches_per_step == 1 else n_batches // batches_per_step
