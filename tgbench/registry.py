"""Find adapters and tasks by name, lm-eval style.

Three ways in, for both:
  * built-ins, registered lazily as "module:Class" strings (nothing is imported until used);
  * third-party packages through the entry-point groups ``tgbench.adapters`` and ``tgbench.tasks``;
  * a direct reference ``package.module:Class`` or ``path/to/file.py:Class``.
A task name that is none of these is an lm-eval task name or YAML path (`tgbench.evaluation.lmeval.LMEvalTask`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tgbench.adapter import Adapter
from tgbench.core.errors import USER_CODE_FILES, UserError, unknown_name, user_code_frame
from tgbench.plan.config import LATER_MODEL_OPTIONS, RunConfig, from_dict
from tgbench.task import Task

if TYPE_CHECKING:
    from collections.abc import Sequence

ENTRY_POINT_GROUP = "tgbench.adapters"
TASK_ENTRY_POINT_GROUP = "tgbench.tasks"

BUILTIN_ADAPTERS: dict[str, str] = {
    "gpt2": "tgbench.models.gpt2:GPT2Adapter",
    "gpt2-boundary": "tgbench.models.gpt2_boundary:GPT2BoundaryAdapter",
    "gpt2-gist": "tgbench.models.gpt2_gist:GPT2GistAdapter",
    "tg": "tgbench.models.tg:TGAdapter",
    "tg-span": "tgbench.models.tg:TGSpanAdapter",
    "rmt": "tgbench.models.rmt:RMTAdapter",
    "txl": "tgbench.models.txl:TXLAdapter",
}
BUILTIN_TASKS: dict[str, str] = {
    "ppl": "tgbench.tasks.tg_ppl.task:PerplexityTask",
    "reversal": "tgbench.tasks.tg_reversal.task:ReversalTask",
}
# Every other task name is an lm-eval task (name or YAML path), wrapped by this class.
LM_EVAL_TASK = "tgbench.evaluation.lmeval:LMEvalTask"
# The names of the built-in tasks' lm-eval twins (tasks/tg_*/tg_*.yaml) mean the direct task.
TASK_ALIASES = {"tg_ppl": "ppl", "tg_reversal": "reversal"}


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    target: str
    origin: str  # "built-in", "entry point (<dist>)", or "reference"


def _entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, AdapterEntry]:
    found = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        found[ep.name] = AdapterEntry(ep.name, ep.value, f"entry point ({dist})")
    return found


def _available(builtins: dict[str, str], group: str) -> dict[str, AdapterEntry]:
    entries = {}
    for name, target in builtins.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            entries[name] = AdapterEntry(name, target, "built-in")
    entries.update(_entry_points(group))
    return entries


def available() -> dict[str, AdapterEntry]:
    """Every adapter known by name: built-ins that import, then entry points."""
    return _available(BUILTIN_ADAPTERS, ENTRY_POINT_GROUP)


def available_tasks() -> dict[str, AdapterEntry]:
    """Every tgbench task known by name: built-ins, then entry points (lm-eval's tasks are not listed)."""
    return _available(BUILTIN_TASKS, TASK_ENTRY_POINT_GROUP)


def _builtin(location: str) -> bool:
    return any(target.split(":")[0] == location for target in (*BUILTIN_ADAPTERS.values(), *BUILTIN_TASKS.values()))


def _import_failed(what: str, err: Exception) -> UserError:
    frame = user_code_frame(err)
    where = f" at {frame[0]}:{frame[1]}" if frame else ""
    return UserError(f"{what} failed to import: {type(err).__name__}: {err}{where}",
                     "fix the code at that line (rerun with --debug for the traceback)")


def _load_reference(reference: str, base: type = Adapter, kind: str = "adapter",
                    docs: str = "docs/adapters.md") -> type:
    location, _, attr = reference.rpartition(":")
    if location.endswith(".py") or "/" in location:
        path = Path(location)
        if not path.is_file():
            raise UserError(f"{kind} file '{path}' does not exist", "give an existing path/to/file.py:Class")
        module_name = f"tgbench_user_{path.stem}_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        USER_CODE_FILES.add(str(spec.origin))
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(module_name, None)
            raise _import_failed(f"{kind} file '{path}'", err) from err
    else:
        builtin = _builtin(location)
        if not builtin:
            found = _find_origin(location)
            if found:
                USER_CODE_FILES.add(found)
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as err:
            if builtin or (err.name and location.startswith(err.name)):
                raise UserError(f"cannot import {kind} module '{location}' ({err})",
                                "check the module is installed, or give path/to/file.py:Class") from err
            raise _import_failed(f"{kind} module '{location}'", err) from err
        except Exception as err:
            if builtin:
                raise
            raise _import_failed(f"{kind} module '{location}'", err) from err
        if not builtin and getattr(module, "__file__", None):
            USER_CODE_FILES.add(module.__file__)
    try:
        cls = getattr(module, attr)
    except AttributeError as err:
        raise UserError(f"'{location}' has no attribute '{attr}'", f"name the {kind} class after the colon") from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UserError(f"'{reference}' is not a tgbench {base.__name__} subclass",
                        f"subclass {base.__module__}.{base.__name__} (see {docs})")
    return cls


def _is_reference(name: str) -> bool:
    """`module:Class` or `path/file.py:Class` (a Windows drive letter alone is not one)."""
    location, colon, attr = name.rpartition(":")
    return bool(colon and location and attr.isidentifier() and len(location) > 1)


def get_task(name: str, include_paths: Sequence[Path] = ()) -> Task:
    """The task a name means: a tgbench task (built-in, entry point, `module:Class`, `path.py:Class`), else
    the lm-eval task of that name or YAML path, wrapped as a `Task`.

    Raises:
        UserError: for a name that is neither (lists tgbench's tasks and the local lm-eval ones).
    """
    name = TASK_ALIASES.get(name, name)
    if _is_reference(name):
        cls = _load_reference(name, Task, "task", "docs/tasks.md")
    else:
        entries = available_tasks()
        if name not in entries:
            wrapper = _load_reference(LM_EVAL_TASK, Task, "task", "docs/tasks.md")
            return wrapper(name, include_paths, also_known=sorted({*entries, *TASK_ALIASES}))
        cls = _load_reference(entries[name].target, Task, "task", "docs/tasks.md")
    if not cls.name:
        raise UserError(f"task class '{name}' sets no `name`", "give the class a name = \"...\" (docs/tasks.md)")
    task = cls()
    task.reference = name  # how it was found: the report finds its section again through it
    return task


def task_class(name: str, reference: str = "") -> type[Task] | None:
    """The class of a tgbench task: registered (built-in or entry point) under `name`, else the
    `module:Class` / `path.py:Class` it was evaluated through (`reference`, recorded in eval/<task>.json).
    None for lm-eval tasks, unknown names, and plug-ins that no longer import: the report asks this for a
    task's own section and draws the generic one without it."""
    entry = available_tasks().get(TASK_ALIASES.get(name, name))
    target = entry.target if entry is not None else reference if _is_reference(reference) else ""
    if not target:
        return None
    try:
        cls = _load_reference(target, Task, "task", "docs/tasks.md")
    except (UserError, ImportError, SyntaxError, OSError):
        return None
    return cls if cls.name == name else None
def _find_origin(location: str) -> str | None:
    """The file a module would be imported from, without importing it (None when it cannot be found)."""
    try:
        spec = importlib.util.find_spec(location)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def get_adapter_class(name: str) -> type[Adapter]:
    """Resolve an adapter name or reference to its class.

    Raises:
        UserError: for an unknown name (lists the known ones and suggests the closest).
    """
    if ":" in name:
        return _load_reference(name)
    entries = available()
    if name not in entries:
        raise unknown_name("adapter", name, entries)
    cls = _load_reference(entries[name].target)
    return cls


def adapter_code(name: str) -> dict[str, str]:
    """What identifies an adapter's code: the file defining its class and that file's sha256.

    `origin` is "built-in" (a model file of tgbench; a run records tgbench's git sha beside it) or "plug-in"
    (a path:Class or module:Class reference, or an entry point: code its author edits between runs).
    """
    import hashlib

    cls = get_adapter_class(name)
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None) or "unknown"
    try:
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        digest = "unknown"
    origin = "built-in" if _builtin(cls.__module__) else "plug-in"
    return {"origin": origin, "class": cls.__qualname__, "file": str(file), "sha256": digest}


def code_change(recorded: dict[str, str] | None, current: dict[str, str]) -> str | None:
    """How an adapter's code differs from what a run recorded (None when equal, or the run recorded nothing)."""
    if not isinstance(recorded, dict) or not recorded.get("sha256") or recorded.get("sha256") == "unknown":
        return None
    if recorded.get("sha256") == current.get("sha256"):
        return None
    return (f"{current.get('file')} has sha256 {str(current.get('sha256'))[:12]}, the run was trained with "
            f"{str(recorded.get('sha256'))[:12]}")


def build_adapter(config: RunConfig) -> Adapter:
    """The adapter a run config names, holding the run's model settings.

    Every option is checked against the adapter's config dataclass: unknown names (with a
    did-you-mean) and wrong types (`--set detach_memory=maybe`) are errors, before any work.

    Raises:
        UserError: for an unknown adapter, an unknown model option or an invalid value.
    """
    cls = get_adapter_class(config.model)
    if not isinstance(config.model_options, dict):
        raise UserError(f"model_options = {config.model_options!r} is not a table",
                        "write model options as a TOML table: [model_options] width = 128")
    if dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        return cls(from_dict(cls.config_class, config.model_options, "model option"))
    try:
        return cls(**config.model_options)
    except TypeError as err:
        raise UserError(f"bad model option for '{config.model}': {err}",
                        f"valid options are the fields of {cls.config_class.__name__}") from err
    except ValueError as err:
        raise UserError(f"invalid model settings for '{config.model}': {err}", "fix the model options") from err


def with_earlier_options(config: RunConfig) -> RunConfig:
    """A run directory's settings as trained: a model option its config.toml predates (config.toml records every
    option, so a missing one was added later) takes the value that reproduces runs from before it
    (`plan.config.LATER_MODEL_OPTIONS`), not today's default. Those are options of tgbench's own models: a
    `path.py:Class` or `module:Class` adapter (not imported here) and one that cannot be found are unchanged."""
    if ":" in config.model:
        return config
    try:
        fields = {f.name for f in dataclasses.fields(get_adapter_class(config.model).config_class)}
    except (UserError, TypeError, AttributeError, ImportError, OSError):
        return config
    missing = {k: v for k, v in LATER_MODEL_OPTIONS.items() if k in fields and k not in config.model_options}
    return dataclasses.replace(config, model_options={**config.model_options, **missing}) if missing else config


def resolved(config: RunConfig) -> RunConfig:
    """`config` with every model setting written out, defaults included (what config.toml records),
    and the data settings the model asks for (`Adapter.data_config`).

    A derived head count (heads = 0 means ceil(width / 64)) is written as the number used. Resolving
    twice gives the same config, so hashes of resolved configs compare settings, not spellings.
    """
    adapter = build_adapter(config)
    config = dataclasses.replace(config, data=adapter.data_config(config.data))
    settings = adapter.config
    if not dataclasses.is_dataclass(settings):
        return config
    options = {k: v for k, v in dataclasses.asdict(settings).items() if v is not None}
    if "heads" in options and hasattr(settings, "n_heads"):
        options["heads"] = settings.n_heads
    return dataclasses.replace(config, model_options=options)
