"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

``checkpoints/last.safetensors`` holds the model (``model.*``), the optimizer's
tensors (``optimizer.state.<param id>.<key>``) and RNG states (``rng.*``, uint8);
its metadata entry ``state`` holds the JSON half (optimizer param groups and
scalars, scheduler, epoch, step, run identity). ``last.json`` is a readable copy
of that JSON, written after the tensors; the safetensors file is the truth, so
a crash between the two writes cannot pair tensors with the wrong counters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes

TENSORS = "last.safetensors"
META = "last.json"


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    meta: dict[str, Any]  # epoch, step, run identity, timing


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, rng: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (TENSORS, META):  # temporaries of a save cut short by a kill (".<name>.<random>.tmp")
        for tmp in folder.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = _cpu(v)
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{pid}.{key}"] = _cpu(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    for k, v in rng.items():
        tensors[f"rng.{k}"] = _cpu(v)
    state_json = {
        "meta": meta,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars,
                      "ids": [str(pid) for pid in opt["state"]]},
        "scheduler": scheduler.state_dict(),  # LambdaLR stores its lambdas as None: JSON-safe
    }
    text = json.dumps(state_json, sort_keys=True, default=_json_default)
    atomic_write_bytes(folder / TENSORS, st_save(tensors, metadata={"state": text}))
    atomic_write_bytes(folder / META, (json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n").encode())


def exists(folder: Path) -> bool:
    return (folder / TENSORS).is_file()


def load(folder: Path) -> Checkpoint:
    path = folder / TENSORS
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        from safetensors import safe_open  # metadata lives in the header

        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("state")
        state = json.loads(text)
    except (OSError, SafetensorError, ValueError, TypeError) as e:
        raise HellopackError(f"checkpoint '{path}' is unreadable ({e}); delete the checkpoints folder to start over") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    opt_state: dict[int, dict[str, Any]] = {}
    for pid in state["optimizer"]["ids"]:
        opt_state[int(pid)] = dict(state["optimizer"]["scalars"].get(pid, {}))
    for k, v in tensors.items():
        if k.startswith("optimizer.state."):
            pid, key = k[len("optimizer.state."):].split(".", 1)
            opt_state.setdefault(int(pid), {})[key] = v
    groups = state["optimizer"]["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return Checkpoint(model=model, optimizer={"state": opt_state, "param_groups": groups},
                      scheduler=state["scheduler"], rng=rng, meta=state["meta"])


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # a private contiguous copy: safetensors refuses shared or strided (channels_last) storage
    return t.detach().to("cpu", copy=True).contiguous()


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")
