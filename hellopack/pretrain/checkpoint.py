"""The pretraining work folder's checkpoint: safetensors for tensors, JSON for the rest, no pickle.

``WORK/checkpoint.safetensors`` holds the network being trained (``model.*``: image tower
and projection head) and the optimizer's tensors (``optimizer.<param index>.<key>``);
its header metadata ``state`` is JSON (epoch, step, optimizer groups and scalars,
scheduler, run identity, loss history). ``WORK/checkpoint.json`` is a readable copy
written afterwards; the safetensors file is the truth. Both are written atomically, so
a killed run leaves the previous epoch's checkpoint intact.

Batches and augmentations are pure functions of (seed, epoch, position) and nothing else
draws from a global RNG, so (weights, optimizer, scheduler, epoch) is the whole state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes

TENSORS = "checkpoint.safetensors"
META = "checkpoint.json"


@dataclass
class State:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    scheduler: dict[str, Any]
    meta: dict[str, Any]  # epoch, step, identity, history


def exists(folder: Path) -> bool:
    return (folder / TENSORS).is_file()


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": _cpu(v) for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = _cpu(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    text = json.dumps({"meta": meta, "scheduler": scheduler.state_dict(),
                       "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars,
                                     "ids": [str(pid) for pid in opt["state"]]}},
                      sort_keys=True, default=_json_default)
    atomic_write_bytes(folder / TENSORS, st_save(tensors, metadata={"state": text}))
    atomic_write_bytes(folder / META, (json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n").encode())


def load(folder: Path) -> State:
    path = folder / TENSORS
    try:
        tensors = st_load(path.read_bytes())
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
        groups = state["optimizer"]["param_groups"]
        ids = state["optimizer"]["ids"]
        scalars = state["optimizer"]["scalars"]
        meta, sched = state["meta"], state["scheduler"]
    except (OSError, SafetensorError, ValueError, TypeError, KeyError) as e:
        raise HellopackError(f"checkpoint '{path}' is unreadable ({e}); delete '{folder}' to start over") from None
    opt_state: dict[int, dict[str, Any]] = {int(pid): dict(scalars.get(pid, {})) for pid in ids}
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            pid, key = k[len("optimizer."):].split(".", 1)
            opt_state.setdefault(int(pid), {})[key] = v
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return State(model=model, optimizer={"state": opt_state, "param_groups": groups}, scheduler=sched, meta=meta)


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # a private contiguous copy: safetensors refuses shared or strided (channels_last) storage
    return t.detach().to("cpu", copy=True).contiguous()


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")
