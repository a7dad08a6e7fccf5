"""tgbench: an evaluation and benchmarking harness for sentence-level language models."""

import os

__version__ = "0.1.0"

# `datasets`, `evaluate` and `lm_eval` try the network on import and on every task load unless told
# otherwise; tgbench never downloads at run time. Users who want the hub can set these to 0.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")
