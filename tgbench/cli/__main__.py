"""`python -m tgbench.cli ...`: the tgbench command (e.g. under torchrun)."""

from tgbench.cli.app import main

main()
