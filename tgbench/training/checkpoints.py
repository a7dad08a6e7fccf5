"""Checkpoints: safetensors weights (and optimizer state) with a JSON sidecar holding the step, the RNG state
and a checksum of the weights, written atomically; a damaged file is detected and the previous one used."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tgbench.core.errors import UserError
from tgbench.core.files import (  # noqa: F401 (the write helpers are imported from here across tgbench)
    UMASK,
    atomic_path,
    disk_full,
    json_safe,
    make_dir,
    read_json,
    sha256_file,
    unwritable,
    write_bytes,
    write_json,
    write_text,
)
from tgbench.training.rundir import FORMAT_VERSION


# -- checkpoints -----------------------------------------------------------------------------
def _unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop aliases of tied weights (safetensors stores each storage once)."""
    seen, out = set(), {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype) if tensor.device.type != "meta" else name
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().to("cpu").contiguous()
    return out


def save_checkpoint(
    directory: Path,
    name: str,
    model: torch.nn.Module,
    sidecar: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    keep_previous: bool = False,
) -> None:
    """Write `<name>.safetensors` and `<name>.json` (with the tensors' checksum) atomically.

    With `keep_previous`, the current checkpoint of that name becomes `previous` first, so a
    corrupted new file can fall back to it.
    """
    make_dir(directory)
    tensors = {f"model.{k}": v for k, v in _unique_tensors(model.state_dict()).items()}
    optim_meta = None
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous()
        optim_meta = {"param_groups": state["param_groups"]}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if keep_previous and (directory / f"{name}.json").exists():
        for suffix in (".safetensors", ".json"):
            os.replace(directory / f"{name}{suffix}", directory / f"previous{suffix}")
    weights = directory / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    full = {**sidecar, "optimizer": optim_meta, "sha256": sha256_file(weights), "format": FORMAT_VERSION}
    write_json(directory / f"{name}.json", full)


@dataclass
class Checkpoint:
    name: str
    tensors: dict[str, torch.Tensor]
    sidecar: dict[str, Any]

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def load_model(self, model: torch.nn.Module, path: Path) -> None:
        """Load weights, with a clear error when shapes do not match the model's config."""
        state = self.model_state()
        own = model.state_dict()
        for key, tensor in state.items():
            if key in own and own[key].shape != tensor.shape:
                raise UserError(
                    f"checkpoint '{path}' does not match its config: '{key}' has shape {tuple(tensor.shape)}, "
                    f"the model built from config.toml expects {tuple(own[key].shape)}",
                    "use the config.toml the checkpoint was written with",
                )
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {k for k in missing if any(own[k].data_ptr() == own[o].data_ptr() for o in state if o in own)}
        if set(missing) - tied or unexpected:
            raise UserError(
                f"checkpoint '{path}' does not match its model: missing {sorted(set(missing) - tied)}, "
                f"unexpected {sorted(unexpected)}",
                "use the config.toml the checkpoint was written with",
            )

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        state: dict[int, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": self.sidecar["optimizer"]["param_groups"]})

    def restore_rng(self) -> None:
        torch.set_rng_state(self.tensors["rng.torch"])
        if "rng.cuda" in self.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.tensors["rng.cuda"])


class CorruptCheckpoint(Exception):
    pass


def read_checkpoint(directory: Path, name: str) -> Checkpoint:
    """Read and verify one checkpoint. Raises CorruptCheckpoint naming the bad file."""
    sidecar_path = directory / f"{name}.json"
    weights = directory / f"{name}.safetensors"
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptCheckpoint(f"{sidecar_path}: unreadable sidecar ({err})") from err
    if not weights.exists() or sha256_file(weights) != sidecar.get("sha256"):
        raise CorruptCheckpoint(f"{weights}: checksum does not match its sidecar (truncated or corrupted)")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise CorruptCheckpoint(f"{weights}: unreadable ({err})") from err
    return Checkpoint(name, tensors, sidecar)


def latest_good_checkpoint(directory: Path, warn=print) -> Checkpoint | None:
    """The newest readable training checkpoint (`latest`, else `previous`), or None."""
    for name in ("latest", "previous"):
        if not (directory / f"{name}.json").exists() and not (directory / f"{name}.safetensors").exists():
            continue
        try:
            return read_checkpoint(directory, name)
        except CorruptCheckpoint as err:
            warn(f"corrupted checkpoint skipped: {err}")
    return None
