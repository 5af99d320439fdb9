"""Weak teachers: a torchvision architecture plus a checkpoint file or a torchvision weights name.

A checkpoint file is a state dict (safetensors or torch) or a training checkpoint as torchvision's
``references/classification/train.py`` writes it (``model``, ``optimizer``, ``args`` as an
``argparse.Namespace``, ...): its ``model`` is read, or its ``model_ema`` with ``ARCH:FILE#ema``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision
from torch import nn

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.models.base import load_torch_state, strip_prefixes
from hellopack.models.students import STUDENTS, Student, build_student

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
EMA_SUFFIX = "#ema"  # resnet18:model_8.pth#ema: the EMA weights of a torchvision training checkpoint
EMA_KEY = "model_ema"
# The one class torchvision's train.py pickles besides tensors and containers (its ``args``).
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def parse_teacher_spec(spec: str) -> tuple[str, str]:
    """``"ARCH:CHECKPOINT"`` or ``"ARCH:WEIGHTS_NAME"`` -> ``(arch, rest)``; arch is checked."""
    arch, sep, rest = spec.partition(":")
    if not sep or not arch or not rest:
        raise HellopackError(f"teacher '{spec}' must be ARCH:CHECKPOINT (e.g. resnet18:teacher.safetensors) "
                             f"or ARCH:WEIGHTS_NAME (e.g. resnet18:IMAGENET1K_V1)")
    STUDENTS.get(arch)  # unknown architecture -> close matches
    return arch, rest


def load_teacher(spec: str, num_classes: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float]) -> Student:
    """Build the teacher, load its weights, check its class count; eval mode, frozen."""
    arch, rest = parse_teacher_spec(spec)
    rest, entry = split_source(rest)
    path = Path(rest).expanduser()
    if path.is_file():
        model = build_student(arch, num_classes, image_size, mean, std)
        _load_checkpoint(model, read_checkpoint(path, entry), spec, num_classes)
    elif entry is not None or path.suffix.lower() in CHECKPOINT_SUFFIXES or "/" in rest or "\\" in rest:
        raise HellopackError(f"teacher checkpoint '{rest}' not found (teacher {spec}); check the path")
    else:
        model = _torchvision_pretrained(arch, rest, spec, num_classes, image_size, mean, std)
    model.eval()
    model.requires_grad_(False)
    return model


def split_source(rest: str) -> tuple[str, str | None]:
    """``FILE#ema`` -> ``(FILE, "model_ema")``; anything else -> ``(rest, None)`` (the checkpoint's model)."""
    if rest.endswith(EMA_SUFFIX) and not Path(rest).expanduser().is_file():
        return rest[:-len(EMA_SUFFIX)], EMA_KEY
    return rest, None


def read_checkpoint(path: Path, entry: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (``weights_only=True``: code is never run).

    ``entry``: the key of a training checkpoint to read (``model_ema``); by default its model.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise HellopackError(f"cannot read teacher checkpoint '{path}': not a valid safetensors file ({e})") from None
    else:
        state = load_torch_state(path, what="teacher checkpoint", allowed=ALLOWED_GLOBALS)
    if entry is not None:
        if not (isinstance(state, dict) and isinstance(state.get(entry), dict)):
            raise HellopackError(f"teacher checkpoint '{path}' has no '{entry}' (torchvision's train.py writes it "
                                 f"with --model-ema); drop '{EMA_SUFFIX}' to use its model")
        state = state[entry]
    else:
        for key in _WRAPPER_KEYS:  # training scripts often save {"model": state_dict, "epoch": ...}
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if isinstance(state, dict) and "n_averaged" in state and all(k.startswith("module.") for k in state
                                                                   if k != "n_averaged"):
        # torch.optim.swa_utils.AveragedModel (torchvision's EMA): "module."-prefixed weights + a counter
        state = {k: v for k, v in state.items() if k != "n_averaged"}
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HellopackError(f"teacher checkpoint '{path}' is not a state dict of tensors; "
                             f"save model.state_dict() with torch.save or safetensors")
    return strip_prefixes(state, ("module.", "_orig_mod."))


def _classifier_key(net: nn.Module) -> str | None:
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and name.startswith("classifier")):
            last = name
    return f"{last}.weight" if last is not None else None


def _load_checkpoint(model: Student, state: dict[str, torch.Tensor], spec: str, num_classes: int) -> None:
    # Accept a raw torchvision state dict and one saved from the Normalize-wrapped Student.
    if state and all(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items()}
    expected = model.net.state_dict()
    cls_key = _classifier_key(model.net)
    if cls_key in state and cls_key in expected and state[cls_key].shape[0] != expected[cls_key].shape[0]:
        raise HellopackError(f"teacher {spec} has {state[cls_key].shape[0]} classes but the dataset has "
                             f"{num_classes}; use a teacher trained on these classes (hellopack teach)")
    # BatchNorm counters are not needed for inference; older checkpoints omit them.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        example = (mismatched or missing or unexpected)[0]
        hint = ""
        if example == "conv1.weight" and model.arch + "_cifar" in STUDENTS:
            hint = f"; did you mean {model.arch}_cifar:...?"
        elif example == "conv1.weight" and model.arch.endswith("_cifar"):
            hint = f"; did you mean {model.arch[:-len('_cifar')]}:...?"
        raise HellopackError(f"teacher checkpoint of {spec} does not match architecture {model.arch} "
                             f"({len(missing)} missing, {len(unexpected) + len(mismatched)} unexpected/mismatched "
                             f"keys, e.g. '{example}'){hint}")
    model.net.load_state_dict(state, strict=False)


def _torchvision_pretrained(arch: str, name: str, spec: str, num_classes: int, image_size: int,
                            mean: Sequence[float], std: Sequence[float]) -> Student:
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise HellopackError(f"teacher '{spec}': '{name}' is not a file and {arch} has no torchvision weights; "
                             f"pass a checkpoint file")
    enum = torchvision.models.get_model_weights(arch)
    try:
        weights = enum[name.split(".")[-1]] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ", ".join(w.name for w in enum)
        raise HellopackError(f"teacher '{spec}': no checkpoint file '{name}' and no {arch} weights of that name "
                             f"(torchvision has: {valid})") from None
    k = len(weights.meta["categories"])
    if k != num_classes:
        raise HellopackError(f"teacher {spec} has {k} classes but the dataset has {num_classes}; "
                             f"use a teacher trained on these classes (hellopack teach)")
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, timeouts, hash errors: all mean "could not fetch"
        raise HellopackError(f"could not download torchvision weights {arch}:{weights.name} ({type(e).__name__}); "
                             f"without internet pass a checkpoint file as {arch}:PATH") from None
    model = build_student(arch, num_classes, image_size, mean, std)
    model.net.load_state_dict(state)
    return model


def save_state_dict(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``module.state_dict()`` as safetensors, atomically (the format ``load_teacher`` reads)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))
