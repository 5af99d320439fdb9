"""Shared pieces for end-to-end build tests: the tiny synthetic set, tiny build settings, a tiny teacher.

test_build_pipeline.py builds through the library (BuildConfig); the fault-injection and
bad-input tests build through the command line. Both use the same tiny settings, so one
change here keeps them comparable.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hellopack.data import SyntheticConfig

# 4 classes x 12 training images of 32 px (plus 4 test images per class): a build takes ~1-3 s.
SYN = SyntheticConfig(num_classes=4, per_class=12, test_per_class=4, image_size=32)
# The smallest build that still runs every stage (factor 2, so the image update runs too).
TINY_BUILD: dict[str, Any] = dict(
    ipc=1, factor=2, n_real=6, m_crops=3, base="hellopack-tiny-rn", pretrained=None, templates="simple",
    rank_encoder=2, fit_epochs=2, fit_batch_size=8, update_steps=3, eval_batch_size=32, device="cpu")
# Child processes: one OpenMP thread (busy-waiting threads on a shared 2-core machine are 10-20x slower).
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# Settings that have no flag go into a build.toml (flags win over it).
_NO_FLAG = ("eval_batch_size", "fit_checkpoint_every", "synthetic")


def tiny_teacher(path: Path, num_classes: int = 4, image_size: int = 32,
                 mean: tuple[float, float, float] = (0.49, 0.49, 0.49),
                 std: tuple[float, float, float] = (0.21, 0.21, 0.21), seed: int = 0) -> Path:
    """An untrained ConvNet teacher saved as safetensors: instant, and deterministic for a seed."""
    import torch

    from hellopack.models.students import build_student
    from hellopack.models.teachers import save_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_student("convnet", num_classes, image_size, mean, std)
    return save_state_dict(model, path)


def write_build_toml(path: Path, synthetic: SyntheticConfig = SYN, **settings: Any) -> Path:
    """A build.toml with ``[synthetic]`` and any top-level settings (ints, floats, bools, strings)."""
    lines = [f"{k} = {_toml(v)}" for k, v in settings.items()]
    lines.append("[synthetic]")
    lines += [f"{k} = {_toml(v)}" for k, v in asdict(synthetic).items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_argv(out: Path, *, teacher: Path, config: Path | None = None, workdir: Path | None = None,
               recipe: str = "synthetic", quiet: bool = True, **overrides: Any) -> list[str]:
    """`hellopack build ...` arguments for TINY_BUILD (flags only; see write_build_toml for the rest)."""
    settings = {**TINY_BUILD, **overrides}
    argv = ["build", recipe, "--out", str(out), "--teacher", f"convnet:{teacher}"]
    if config is not None:
        argv += ["--config", str(config)]
    if workdir is not None:
        argv += ["--workdir", str(workdir)]
    for key, value in settings.items():
        if key in _NO_FLAG:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "pretrained" and value is None:
            value = "none"
        if key == "update":
            argv += [] if value else ["--no-update"]
        elif isinstance(value, bool):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    if quiet:
        argv.append("-q")
    return argv


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
