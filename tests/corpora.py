"""Tiny text corpora the tests write into tmp_path (no download, a few KB each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = "alpha beta gamma delta river stone garden city music light".split()
FAMILY = " The son of {f} is {s}. The father of {s} is {f}. {f} went to the market with {s}."


def word_documents(n_docs: int = 80, seed: int = 0) -> list[str]:
    """Plain-text documents of 3-6 sentences of random words."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        sentences = [f"Document {i} begins here."]
        for _ in range(int(rng.integers(2, 6))):
            sentences.append(" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def write_plain(path: Path, docs: list[str]) -> Path:
    """Documents separated by blank lines."""
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def write_family_corpus(path: Path, names: list[str], *, seed: int = 0, n_docs: int = 40,
                        per_doc: int | tuple[int, int] = 4, template: str = FAMILY) -> Path:
    """A WikiText-format corpus of father/son sentences about a few people (a small BPE learns the names).

    Args:
        per_doc: Lines per article, or a (low, high) range drawn per article.
    """
    rng = np.random.default_rng(seed)
    lines = []
    for d in range(n_docs):
        lines += [f" = Article {d} = ", ""]
        count = per_doc if isinstance(per_doc, int) else int(rng.integers(*per_doc))
        for _ in range(count):
            f, s = rng.choice(names, 2, replace=False)
            lines.append(template.format(f=f, s=s))
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path
