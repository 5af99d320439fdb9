"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

One ``NAME.safetensors`` holds the model (``model.*``), the optimizer's tensors
(``optimizer.<param id>.<key>``) and any extra tensors such as RNG states
(``extra.*``); its header metadata ``state`` holds the JSON half (optimizer param
groups and scalars, scheduler, caller's meta). ``NAME.json`` is a readable copy
written afterwards; the safetensors file is the truth, so a crash between the two
writes cannot pair tensors with the wrong counters. Both writes are atomic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes


@dataclass
class TrainingState:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    scheduler: dict[str, Any]
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def paths(folder: Path, name: str) -> tuple[Path, Path]:
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def exists(folder: Path, name: str) -> bool:
    return paths(folder, name)[0].is_file()


def save(folder: Path, name: str, model: torch.nn.Module | dict[str, torch.Tensor],
         optimizer: torch.optim.Optimizer, scheduler: Any, meta: dict[str, Any],
         extra: dict[str, torch.Tensor] | None = None) -> None:
    """``model`` is a module or the tensors to keep (e.g. LoRA factors only); ``scheduler`` may be None."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors_path, json_path = paths(folder, name)
    for p in (tensors_path, json_path):  # temporaries of a save cut short by a kill (".<name>.<random>.tmp")
        for tmp in folder.glob(f".{p.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    weights = model if isinstance(model, dict) else model.state_dict()
    tensors = {f"model.{k}": _cpu(v) for k, v in weights.items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = _cpu(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = _cpu(v)
    text = json.dumps({"meta": meta, "scheduler": {} if scheduler is None else scheduler.state_dict(),
                       # (LambdaLR keeps lambdas as None)
                       "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars,
                                     "ids": [str(pid) for pid in opt["state"]]}},
                      sort_keys=True, default=_json_default)
    atomic_write_bytes(tensors_path, st_save(tensors, metadata={"state": text}))
    atomic_write_bytes(json_path, (json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n").encode())


def load(folder: Path, name: str) -> TrainingState:
    path = paths(folder, name)[0]
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
    return TrainingState(model=_strip(tensors, "model."), optimizer={"state": opt_state, "param_groups": groups},
                         scheduler=sched, meta=meta, extra=_strip(tensors, "extra."))


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # a private contiguous copy: safetensors refuses shared or strided (channels_last) storage
    return t.detach().to("cpu", copy=True).contiguous()


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")
