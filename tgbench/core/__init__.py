"""What every stage uses: the errors tgbench raises on purpose, atomic files, terminal output, devices.

    errors.py   UserError (message + fix), TrainingFailed, Interrupted, where plug-in code raised
    files.py    atomic writes (temp file + fsync + rename), JSON sanitising, checksums
    console.py  one-line errors and warnings, tables at their natural width, the progress bar
    devices.py  device and dtype settings, autocast, torchrun, peak memory
"""
