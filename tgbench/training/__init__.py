"""A run's life: one RunConfig trained into a run directory, and many of them at once for a grid.

    trainer.py      the one training loop (train), and one grid run honouring its directory's state (train_spec)
    optim.py        AdamW and the warmup-cosine schedule
    allocator.py    glibc malloc keeps freed buffers (every training process); CPU time and page faults per run
    advice.py       warnings about runs too large for a CPU, too few steps, an end near the unigram loss
    rundir.py       the run-directory format: config.toml, metrics.jsonl, marks, the writer's lock, provenance
    checkpoints.py  safetensors checkpoints with a checksummed sidecar; the latest good one
    current.py      is a run directory current with the settings asked for (skip, resume or start over)
    executor.py     run_grid (tuning sweep, then the grid, then results.csv), local or Slurm
    pool.py         several runs at once in worker processes (train-grid --jobs N), Ctrl-C forwarding
    workers.py      one worker process: its environment first, then its runs, each logged to a file
    board.py        the live table of a grid's runs
    tracking.py     timestamped log lines, TensorBoard and W&B beside metrics.jsonl
"""
