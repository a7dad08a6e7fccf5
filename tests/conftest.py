"""Shared fixtures: tiny synthetic corpora that need no tokenizer or download."""

from __future__ import annotations

import os
from types import SimpleNamespace

# tgbench leaves the Hugging Face hub to the user; the tests never touch the network (and subprocesses
# they start inherit this).
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tgbench.adapter import Vocab  # noqa: E402
from tgbench.data.corpus import Split  # noqa: E402


def synthetic_documents(rng: np.random.Generator, n_docs: int, vocab_size: int) -> list[list[np.ndarray]]:
    """Documents with learnable structure: each sentence counts upwards from a random start."""
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(2, 6))):
            start, length = int(rng.integers(0, vocab_size)), int(rng.integers(3, 12))
            sentences.append((start + np.arange(length)) % vocab_size)
        docs.append(sentences)
    return docs


@pytest.fixture
def tiny_corpus():
    """A corpus-like object with train/valid/test splits over a 40-token vocabulary."""
    rng = np.random.default_rng(0)
    vocab = Vocab(base_size=40)
    splits = {name: Split.from_documents(synthetic_documents(rng, n, 40))
              for name, n in (("train", 60), ("valid", 8), ("test", 8))}
    return SimpleNamespace(vocab=vocab, splits=splits, key="synthetic")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models run faster on one thread, and parallel test workers do not oversubscribe."""
    import torch

    torch.set_num_threads(1)
