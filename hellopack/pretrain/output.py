"""Write a pretrained base: the FULL open_clip state dict, so ``load_base(name, weights=FILE)`` loads it strictly.

The image tower comes from pretraining; everything else (text tower, logit scale) is the
seeded random init of ``load_base(name)``, so the file is a complete open_clip model.
Header metadata (strings) names the config, epochs and objective. Beside it,
``FILE.sha256`` holds the base's fingerprint (``hellopack.models.base.fingerprint`` of the
loaded weights, the ``sha256:...`` string that manifests record), not a hash of the bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import open_clip
import torch
from safetensors.torch import save as st_save

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.models.base import BaseModel, fingerprint, load_base

FORMAT = "hellopack-base/1"


def sha256_path(out: Path) -> Path:
    return out.with_name(out.name + ".sha256")


def write_base(out: Path, name: str, visual_state: Mapping[str, torch.Tensor],
               metadata: Mapping[str, Any]) -> BaseModel:
    """Write ``out`` and ``out.sha256`` atomically; return the base loaded back from ``out``."""
    model = load_base(name, pretrained=None).model
    model.visual.load_state_dict(dict(visual_state), strict=True)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    expected = fingerprint(model)
    # The config's JSON too: the file only loads into exactly this architecture.
    model_cfg = json.dumps(open_clip.get_model_config(name), sort_keys=True)
    meta = {"format": FORMAT, "open_clip_config": name, "open_clip_model_cfg": model_cfg, "fingerprint": expected}
    meta.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()})
    atomic_write_bytes(out, st_save(tensors, metadata=meta))
    loaded = load_base(name, weights=out)
    if loaded.fingerprint != expected:  # would mean a lossy write; never ship such a file
        out.unlink(missing_ok=True)
        raise HellopackError(f"'{out}' did not load back with the same weights; check the disk and retry")
    atomic_write_bytes(sha256_path(out), (loaded.fingerprint + "\n").encode("ascii"))
    return loaded
