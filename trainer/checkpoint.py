"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint directory `step-000123/` holds
  trainable.safetensors  the trainable weights (connector, compressor, Mixer experts, gates)
  optimizer.safetensors  AdamW moments and steps, keyed `<param name>/<state key>`
  rng.safetensors        torch CPU (and CUDA) generator states
  state.json             step, epoch, data position, scheduler, optimizer param groups, python
                         and numpy RNG, the recipe and model config it was trained with
and is written by rank 0 into a temporary directory that is renamed when complete, so an
interrupted save never leaves a checkpoint that `--resume` would pick up.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from schemas.files import replaced_atomically

TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "state.json"
PREFIX = "step-"


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / f"{PREFIX}{step:06d}"


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = sorted(p for p in Path(output_dir).glob(f"{PREFIX}*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def gather_trainable(model) -> dict[str, torch.Tensor]:
    """Full trainable weights on CPU from a plain, DDP or FSDP model (collective: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    state = get_model_state_dict(model, options=_options(ignore_frozen_params=True))
    return {k: v.detach().contiguous() for k, v in state.items()}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for flat, value in tensors.items():
        name, key = flat.rsplit("/", 1)
        state.setdefault(name, {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, train_state: dict,
                    is_main: bool = True, keep: int | None = None) -> Path:
    """Write a checkpoint (collective: every rank calls it, rank 0 writes)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    path = Path(path)
    weights = gather_trainable(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_options())
    if not is_main:  # with cpu_offload the full state dicts land on rank 0 only
        return path
    optim_tensors, groups = _flatten_optimizer(optim_state)
    with replaced_atomically(path) as tmp:  # a run killed while saving keeps its previous checkpoint whole
        save_file(weights, str(tmp / TRAINABLE_FILE))
        save_file(optim_tensors, str(tmp / OPTIMIZER_FILE))
        rng_tensors, rng_plain = rng_state()
        save_file(rng_tensors, str(tmp / RNG_FILE))
        state = {**train_state, "scheduler": scheduler.state_dict(), "param_groups": groups, "rng": rng_plain}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    if keep:
        for old in sorted(path.parent.glob(f"{PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_trainable(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Trainable weights from a checkpoint directory or a .safetensors file (never pickle)."""
    from safetensors.torch import load_file
    path = Path(path)
    file = path / TRAINABLE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no trainable weights at {file}: expected a checkpoint directory "
                                f"written by `trainer train` (with {TRAINABLE_FILE})")
    return load_file(str(file))


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place (every rank); returns state.json."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
    path = Path(path)
    state = json.loads((path / STATE_FILE).read_text())
    set_model_state_dict(model, load_trainable(path), options=_options(strict=False))
    optim = _unflatten_optimizer(load_file(str(path / OPTIMIZER_FILE)), state["param_groups"])
    # strict=False: a stage-1 expert never drawn yet has no AdamW state. The loader first gives every
    # parameter a zero state (a step() with lr 0) and that would shift its bias correction later, so
    # the parameters the checkpoint has no state for go back to having none, as in the original run.
    set_optimizer_state_dict(model, optimizer, optim, options=_options(strict=False))
    for name, param in getattr(model, "module", model).named_parameters():
        if param.requires_grad and name not in optim["state"]:
            optimizer.state.pop(param, None)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(load_file(str(path / RNG_FILE)), state["rng"])
    return state
