"""`tgbench adapters --options NAME`: every option of an adapter with its type, default and help."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from tiny_runs import run_main

from tgbench.models.gpt2 import GPT2Config
from tgbench.models.tg import TGConfig, TGSpanConfig
from tgbench.plan.options import config_options
from tgbench.registry import BUILTIN_ADAPTERS, get_adapter_class


@dataclass
class Documented:
    """A config whose fields document themselves three ways."""

    alpha: int = 3  # the trailing comment
    # Section.
    # the lines above,
    # joined
    beta: float = 0.5
    gamma: str = field(default="x", metadata={"help": "from metadata"})  # not this
    delta: list[int] = field(default_factory=lambda: [1, 2])
    epsilon: bool = True


def test_help_comes_from_metadata_the_trailing_comment_or_the_lines_above():
    options = {o.name: o for o in config_options(Documented)}
    assert list(options) == ["alpha", "beta", "gamma", "delta", "epsilon"]
    assert options["alpha"].help == "the trailing comment" and options["alpha"].type == "int"
    assert options["beta"].help == "the lines above, joined"  # the one-line section title is not help
    assert options["gamma"].help == "from metadata" and options["gamma"].default == "x"
    assert options["delta"].default == [1, 2] and options["delta"].type == "list[int]"
    assert options["epsilon"].help == ""


def test_tg_options_are_every_field_with_its_default_and_comment():
    options = {o.name: o for o in config_options(TGConfig)}
    assert list(options) == [f.name for f in dataclasses.fields(TGConfig)]
    defaults = TGConfig()
    assert all(options[name].default == getattr(defaults, name) for name in options)
    assert options["memory_slots"].help == "M, FIFO capacity"
    assert options["sentence_layer"].type == "int | str" and "1-indexed block" in options["sentence_layer"].help
    assert options["eos_weight_first_epoch"].help.startswith("loss weight")
    assert options["width"].help.startswith("model width")
    span = {o.name: o for o in config_options(TGSpanConfig)}
    assert span["context_seeding"].default is False and "span ends mid-sentence" in span["context_seeding"].help
    assert span["memory_slots"].help == "M, FIFO capacity"  # inherited fields keep their base's help
    assert {o.name for o in config_options(GPT2Config)} >= {"context", "score_stride"}


@pytest.mark.parametrize("name", list(BUILTIN_ADAPTERS))
def test_every_builtin_adapter_lists_options_that_build_it(name):
    cls = get_adapter_class(name)
    options = config_options(cls.config_class)
    assert options and {"width", "layers", "heads"} <= {o.name for o in options}
    cls(cls.config_class(**{o.name: o.default for o in options}))  # the listed defaults are valid settings


def test_cli_prints_the_options_and_rejects_an_unknown_adapter(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, output = run_main(["adapters", "--options", "tg"], monkeypatch, capsys)
    assert code == 0, output
    # not a terminal here: one option per line, whole
    row = next(line for line in output.splitlines() if line.strip().startswith("memory_slots "))
    assert row.strip().startswith("memory_slots (int, default 40): ") and "M, FIFO capacity" in row
    assert "options of tg (TGConfig)" in output
    code, output = run_main(["adapters", "--options", "tgg"], monkeypatch, capsys)
    assert code == 2 and "unknown adapter 'tgg'" in output and "did you mean 'tg'" in output


def test_piped_options_are_one_line_each_and_never_wrapped_into_a_narrow_column():
    """A pipe gives rich 80 columns; the table used to squeeze the help into 20 of them."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "tgbench.cli", "adapters", "--options", "tg"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for option in config_options(get_adapter_class("tg").config_class):
        (line,) = [x for x in lines if x.startswith(f"  {option.name} (")]
        assert line.endswith(option.help), line  # the whole help, on the option's own line


def test_train_flags_come_from_the_config_fields_and_help_prints_brackets_literally():
    import dataclasses
    import inspect

    from typer.testing import CliRunner

    from tgbench.cli.app import app
    from tgbench.cli.train import train_command
    from tgbench.plan.config import TrainConfig

    parameters = inspect.signature(train_command).parameters
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in ("tokens", "epochs", "batch_tokens", "lr", "seed", "device", "dtype", "grad_accumulation"):
        info = parameters[name].annotation.__metadata__[0]
        shown = info.show_default
        assert shown == (str(defaults[name]) if name != "lr" else "2.5e-4"), (name, shown)
        assert info.help, name  # from the field's comment
    result = CliRunner().invoke(app, ["tune", "--help"])
    flat = " ".join(result.output.replace("│", " ").split())
    assert "a grid without [tune] gets its LR" in flat, result.output  # Rich would eat an unescaped [tune]
