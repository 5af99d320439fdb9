"""Helpers for the train tests: a tiny demo-like archive (synthetic images + a fitted tiny projector).

The synthetic classes differ by colour and stripe orientation plus pixel noise, so a
student can learn them in a few CPU epochs. The projector is "hellopack-tiny-rn"
(random init, pretrained=None) with rank-2 encoder / rank-4 head LoRA whose values are
fitted for a few steps to the hard labels (a stand-in for build's teacher fitting):
its labels carry class information, as a real archive's do.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hellopack.archive import ArchiveWriter, canonical_json, encode_lora, open_archive

BASE = "hellopack-tiny-rn"
TEMPLATES = ["a photo of a {}."]
CLASS_IDS = ["red_h", "green_v", "blue_h", "yellow_v"]
PALETTE = [(200, 60, 60), (60, 190, 60), (60, 60, 200), (200, 190, 50)]


def synthetic(n_per_class: int, size: int, seed: int, classes: int = 4) -> list[tuple[np.ndarray, int]]:
    """Colour + horizontal/vertical stripes + noise; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        for _ in range(n_per_class):
            phase = rng.integers(0, 4)
            coord = yy if c % 2 == 0 else xx
            stripes = (((coord + phase) // 2) % 2)[..., None] * 50.0
            img = np.array(PALETTE[c], dtype=np.float64)[None, None, :] * rng.uniform(0.7, 1.1) + stripes
            img += rng.normal(0, 25, size=(size, size, 3))
            out.append((np.clip(img, 0, 255).astype(np.uint8), c))
    return out


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_imagefolder(root: Path, n_per_class: int, size: int, seed: int, classes: int = 4) -> Path:
    for i, (arr, c) in enumerate(synthetic(n_per_class, size, seed, classes)):
        d = root / CLASS_IDS[c]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"{i:05d}.png")
    return root


def class_entries(classes: int = 4) -> list[dict]:
    return [{"index": i, "name": CLASS_IDS[i].replace("_", " "), "source_id": CLASS_IDS[i]} for i in range(classes)]


def fitted_projector(images: list[tuple[np.ndarray, int]], names: list[str], steps: int, lora_zero: bool):
    """Encoder LoRA: small random values; head LoRA: fitted to the hard labels on cached features (fast)."""
    from hellopack.models.base import load_base
    from hellopack.models.projector import Projector

    base = load_base(BASE, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        proj = Projector(base, names, TEMPLATES, rank_encoder=2, rank_head=4)
        if not lora_zero:
            with torch.no_grad():
                for name, m in proj.lora_modules().items():
                    if name != "head":
                        m.lora_B.normal_(0, 0.02)
            x = torch.from_numpy(np.stack([a for a, _ in images])).permute(0, 3, 1, 2).float() / 255
            y = torch.tensor([c for _, c in images])
            with torch.no_grad():
                feats = proj.image_features(x)
            opt = torch.optim.Adam([proj.head.lora_A, proj.head.lora_B], lr=5e-2)
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(proj.logit_scale * proj.head(feats), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return base, proj.eval()


def make_archive(path: Path, *, ipc: int = 10, size: int = 16, classes: int = 4, seed: int = 1,
                 fit_steps: int = 200, lora_zero: bool = False, fingerprint: str | None = None,
                 recipe: dict | None = None, factor: int = 1) -> Path:
    images = synthetic(ipc, size, seed, classes)
    entries = class_entries(classes)
    names = [c["name"] for c in entries]
    base, proj = fitted_projector(images, names, fit_steps, lora_zero)
    manifest = {
        "dataset": {"name": "train-test-synthetic", "recipe": "synthetic", "source": "tests",
                    "train_images": len(images)},
        "classes": entries,
        "images": {"count": len(images), "ipc": ipc, "factor": factor, "size": size, "format": "png",
                   "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25]},
        "base": {"kind": "open_clip", "name": BASE, "pretrained": None, "custom": False,
                 "fingerprint": fingerprint or base.fingerprint, "bytes": None, "image_size": base.image_size},
        "lora": proj.lora_layout("fp16").to_manifest(),
        "head": {"init": "text", "logit_scale": base.logit_scale, "embed_dim": base.embed_dim},
        "recipe": {"epochs": 4, "optimizer": "adamw", "lr": 0.002, "weight_decay": 0.01, "schedule": "cosine",
                   "batch_size": 8, "loss": "mse", "beta": 0.1, "temperature": 20.0, "mix": "cutmix",
                   "patch_shuffle": True, **(recipe or {})},
        "seeds": {"build": seed},
    }
    w = ArchiveWriter(manifest, "0.0.test")
    lora = {k: v.numpy() for k, v in proj.lora_state_dict().items()}
    w.add_member("lora.safetensors", encode_lora(lora, "fp16"))
    w.add_member("prompts.json", canonical_json({"classnames": names, "templates": TEMPLATES}))
    for i, (arr, c) in enumerate(images):
        w.add_image(f"c{c:04d}_{i:05d}", c, png(arr))
    with w:
        return w.write(path)


_BUILT: dict[tuple, Path] = {}


def cached_archive(tmp_path_factory, **kw) -> Path:
    """make_archive once per process for each set of arguments (several test modules share them)."""
    key = tuple(sorted(kw.items(), key=lambda kv: kv[0]))
    key = tuple((k, json.dumps(v, sort_keys=True)) for k, v in key)
    if key not in _BUILT or not _BUILT[key].is_file():
        _BUILT[key] = make_archive(tmp_path_factory.mktemp("archive") / "demo.hellopack", **kw)
    return _BUILT[key]


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory) -> Path:
    """4 classes x 10 images of 16 px, fitted projector."""
    return cached_archive(tmp_path_factory)


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory) -> Path:
    """4 classes x 4 images of 16 px, batch 8: two steps per epoch (resume and smoke tests)."""
    return cached_archive(tmp_path_factory, ipc=4)


_VAL: dict[str, Path] = {}


@pytest.fixture(scope="session")
def demo_val(tmp_path_factory) -> Path:
    """A held-out ImageFolder from the same synthetic distribution (another seed), 15 images per class."""
    if "val" not in _VAL:
        _VAL["val"] = write_imagefolder(tmp_path_factory.mktemp("val") / "val", 15, 16, seed=99)
    return _VAL["val"]


def model_tensors(out: Path) -> dict[str, torch.Tensor]:
    from hellopack.train import checkpoint

    return checkpoint.load(out / "checkpoints").model


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- kit sanity ----------------------------------------------------------------------

def test_kit_archive_verifies_and_projector_round_trips(demo_archive: Path) -> None:
    """The rebuilt (merged) projector labels like the one that was stored, within fp16 LoRA rounding."""
    from hellopack.train.labelers import projector_from_archive

    a = open_archive(demo_archive)
    assert a.verify().images_checked == 40
    merged = projector_from_archive(a)
    images = synthetic(10, 16, 1)
    _, proj = fitted_projector(images, [c["name"] for c in class_entries()], 200, False)
    x = torch.from_numpy(np.stack([i for i, _ in images])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        want, got = proj(x), merged(x)
    assert torch.allclose(got, want, atol=0.05, rtol=0.01)
    # and it is a useful labeler: it agrees with the hard labels on the training images
    y = torch.tensor([c for _, c in images])
    assert (got.argmax(1) == y).float().mean().item() >= 0.9
