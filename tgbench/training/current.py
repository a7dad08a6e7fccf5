"""Is a run directory current with the settings it is asked to train? (`trainer.train_spec` acts on the answer.)

The one place that decides what happens to an existing run directory (`run_state`):

- DONE with the same settings and adapter code: current (a grid skips it, `tgbench train` says so);
- FAILED, or trained with other settings, or with a plug-in adapter whose code has changed since: a grid
  retrains it from scratch (`tgbench train` refuses other settings and changed plug-in code unless
  `--resume never`);
- interrupted with the same settings: resumed from its latest checkpoint.

A change in tgbench's own model code is not a reason to retrain (the run records tgbench's git sha): the
trainer warns about it instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tgbench.core.errors import UserError
from tgbench.plan.config import RunConfig
from tgbench.plan.expand import RunSpec
from tgbench.registry import adapter_code, code_change, resolved
from tgbench.training.rundir import RunDir


@dataclass(frozen=True)
class RunState:
    """What a run directory holds, compared with the settings it is asked to train.

    Attributes:
        exists: It holds a config.toml (a run was started there).
        done: It is marked DONE.
        failed: It is marked FAILED.
        same_settings: Its resolved settings hash like the asked ones.
        code_change: How the adapter's code differs from the code the run recorded (None: the same, or the run
            recorded none).
        plugin: The adapter is a plug-in (code its author edits between runs), not one of tgbench's models.
    """

    exists: bool
    done: bool = False
    failed: bool = False
    same_settings: bool = True
    code_change: str | None = None
    plugin: bool = False

    @property
    def plugin_changed(self) -> bool:
        """A plug-in adapter whose code changed: the run's numbers are not those of the code now."""
        return self.plugin and self.code_change is not None

    @property
    def current(self) -> bool:
        """DONE with these settings and this adapter code: nothing to train."""
        return self.exists and self.done and self.same_settings and not self.plugin_changed

    @property
    def start_over(self) -> bool:
        """Failed, or trained with other settings or other plug-in code: train from scratch."""
        return self.exists and (self.failed or not self.same_settings or self.plugin_changed)


def run_state(run_dir: RunDir, config: RunConfig) -> RunState:
    """The state of `run_dir` for training `config` (resolved here, as the trainer records it)."""
    if not run_dir.config_path.exists():
        return RunState(exists=False)
    code = adapter_code(config.model)
    return RunState(exists=True, done=run_dir.done, failed=run_dir.failed,
                    same_settings=resolved(run_dir.read_config()).hash() == resolved(config).hash(),
                    code_change=code_change(run_dir.read_meta().get("adapter_code"), code),
                    plugin=code["origin"] == "plug-in")


def needs_training(spec: RunSpec, out: Path) -> bool:
    """False for a run that is current (a grid skips it without starting a worker)."""
    try:
        return not run_state(RunDir(out / spec.run_id), spec.config).current
    except (UserError, OSError, ValueError):
        return True  # let the run report what is wrong with its directory
