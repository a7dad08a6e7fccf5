"""tgbench: an evaluation and benchmarking harness for sentence-level language models."""

__version__ = "0.1.0"
