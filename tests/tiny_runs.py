"""A tiny grid on disk (TG and GPT-2, one width, two budgets) shared by the tests of the user-facing tools."""

from __future__ import annotations

from pathlib import Path

from corpora import word_documents, write_plain

from tgbench.plan.grid import GridConfig
from tgbench.training.executor import run_grid

TINY_TRAIN = {"epochs": 1, "batch_tokens": 128, "lr": 3e-3, "eval_tokens": 300, "log_every": 2,
              "checkpoint_every": 4}


def tiny_grid_dict(root: Path, name: str = "tiny", tokenizer: str = "bpe-300", budgets=(400, 800),
                   models=("tg", "gpt2")) -> dict:
    corpus = root / "corpus.txt"
    if not corpus.exists():
        write_plain(corpus, word_documents(80))
    options = {"tg": {"stream_start": 4, "memory_slots": 4, "dropout": 0.0, "attention_dropout": 0.0},
               "gpt2": {"context": 64, "dropout": 0.0, "attention_dropout": 0.0}}
    return {
        "name": name, "design": "cross", "widths": [16], "layers": 1, "head_dim": 8, "budgets": list(budgets),
        "seeds": [0],
        "data": {"corpus": str(corpus), "tokenizer": tokenizer, "splitter": "blingfire",
                 "cache_dir": str(root / "cache"), "valid_fraction": 0.1, "test_fraction": 0.1},
        "train": dict(TINY_TRAIN),
        "models": [{"adapter": m, "options": options.get(m, {})} for m in models],
    }


def train_tiny_grid(root: Path, out: Path, **kwargs) -> Path:
    """Train the tiny grid into `out` (a few seconds on one thread) and return `out`."""
    run_grid(GridConfig.from_dict(tiny_grid_dict(root, **kwargs)), out, progress=False)
    return out


def run_main(args, monkeypatch, capsys) -> tuple[int, str]:
    """`tgbench ARGS` through `tgbench.cli.app.main` in this process: (exit code, stdout + stderr)."""
    import sys

    from tgbench.cli.app import main

    monkeypatch.setattr(sys, "argv", ["tgbench", *map(str, args)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err
