"""Planning: settings and grid files in, the list of runs to train out (nothing is trained here).

    config.py      every setting as a dataclass (RunConfig = model + DataConfig + TrainConfig; TuneConfig),
                   the TOML round trip, the config hash, reading a grid directory's grid.toml
    options.py     a config dataclass's fields as options: type, default and help from the code
    grid.py        the grid file's schema: GridConfig, ModelEntry (a model, its options and training settings)
    comparison.py  who is compared with whom: the reference, its baselines, the pairs, label order
    expand.py      a grid -> RunSpecs: run ids, the replicate seeds of each (budget, replicate)
    tune.py        the learning-rate sweep: its runs, the rule that chooses, tune.json
    validate.py    load_grid (a file or a preset) and the checks that fail before any training
    compute.py     parameter counts, FLOPs and CPU time of a grid (train-grid --dry-run)
    presets/       the shipped grids (demo, cpu-study, ... paper-*)
"""
