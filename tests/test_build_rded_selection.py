"""Selection as RDED's synthesis code does it: a seeded random draw of the real images, square
crops, padded low-resolution scoring views, and the observer the paper names (the teachers).

RDED: LINs-lab/RDED synthesize/main.py (init_images), synthesize/utils.py (MultiRandomCrop,
selector, pad, mix_images), validation/utils.py (ImageFolder with shuffle=True).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hellopack.archive.images import Codec, decode_image
from hellopack.distill import BuildConfig, build
from hellopack.distill.inputs import SelectInputs
from hellopack.distill.select import CropSpec, drawn, first_per_class, make_crops, score_crops, scoring_view
from hellopack.distill.teach import TeachConfig, teach
from hellopack.distill.teachers import load_ensemble, resolve_specs
from hellopack.distill.update import downsample, quantize
from hellopack.data import SyntheticConfig, open_source
from hellopack.progress import NULL

from helpers_build import SYN, TINY_BUILD

SRC = SyntheticConfig(num_classes=3, per_class=20, test_per_class=2, image_size=16)


def _source():
    return open_source("synthetic", synthetic=SRC)


def test_the_real_images_are_a_seeded_random_draw_not_the_first_of_the_stream() -> None:
    src = _source()
    keys = lambda seed: [k for _, _, k, _ in first_per_class(drawn(src, seed), 3, 5)]  # noqa: E731
    stream_first = {k for _, _, k, _ in first_per_class(((i, s.label, s.key, None) for i, s in enumerate(src)), 3, 5)}
    a, b = keys(0), keys(1)
    assert len(a) == 15 and a == keys(0)  # 5 per class, the same draw for the same seed
    assert a != b and set(a) != set(b)  # another seed, other images
    per_class = {c: [k for k in a if k in {s.key for s in src if s.label == c}] for c in range(3)}
    assert all(len(v) == 5 for v in per_class.values())
    assert set(a) != stream_first  # not each class's first 5 in the source's order


def test_processes_split_the_same_draw() -> None:
    src = _source()
    one = {(j, k) for j, _, k, _ in drawn(src, 3)}
    two = {(j, k) for r in range(2) for j, _, k, _ in drawn(src, 3, rank=r, world=2)}
    assert one == two and len(one) == 60


def test_crops_are_square_boxes_of_the_image() -> None:
    # pixels encode their coordinates in a 48 x 64 image: a crop's spans in x and y give its box
    h, w = 48, 64
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([xs * 4, ys * 4, torch.zeros_like(xs)]).to(torch.uint8)
    crops = make_crops(img, "k", CropSpec(size=16, m_crops=40, scale=(0.08, 1.0), seed=0))
    spans = [((c[0].float().amax() - c[0].float().amin()) / 4, (c[1].float().amax() - c[1].float().amin()) / 4)
             for c in crops]
    assert all(abs(sx - sy) <= 2.0 for sx, sy in spans), spans  # ratio (1, 1): as wide as high
    assert max(sx for sx, _ in spans) > 30  # and some are large (scale up to 1 of the area)


def test_the_observer_sees_each_crop_at_size_over_factor_padded_with_the_dataset_mean() -> None:
    crops = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    fill = (0.25, 0.5, 0.75)
    seen: list[torch.Tensor] = []

    def observer(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.zeros(len(x), 4)

    score_crops(observer, crops, torch.zeros(3, dtype=torch.long), torch.device("cpu"), factor=2, fill=fill)
    x = seen[0]
    assert x.shape == (3, 3, 16, 16)
    torch.testing.assert_close(x[:, :, 4:12, 4:12], downsample(crops.float() / 255, 2))  # centred 8 x 8
    border = torch.ones(16, 16, dtype=torch.bool)
    border[4:12, 4:12] = False
    for ch, v in enumerate(fill):
        assert torch.all(x[:, ch][:, border] == v)  # RDED pads with 0 after normalising: the mean colour
    assert torch.equal(scoring_view(crops.float(), 1, fill), crops.float())  # factor 1: the crop itself


@pytest.fixture(scope="module")
def teachers_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teach")
    teach(TeachConfig(recipe="synthetic", out=str(out), arch="convnet", epochs=2, keep_every=1, batch_size=16,
                      synthetic=SYN, device="cpu"), NULL)
    return out


def _build(tmp: Path, tdir: Path, observer: str, **kw) -> tuple[dict, np.ndarray]:
    name = "-".join([observer, *map(str, kw.values())])
    cfg = BuildConfig(recipe="synthetic", out=str(tmp / f"{name}.hellopack"), workdir=str(tmp / name),
                      synthetic=SYN, teachers_dir=str(tdir), observer=observer, **TINY_BUILD, **kw)
    build(cfg, NULL)
    marker = json.loads((tmp / name / "select.done.json").read_text())["result"]["chosen"]
    return marker, np.load(tmp / name / "select" / "crops.npy")


def _as_stored(crops_u8: np.ndarray, codec: Codec, fill: float) -> torch.Tensor:
    """By hand: each crop downsampled to its 16 px patch, quantised, encoded and decoded, centred on the fill."""
    small = quantize(downsample(torch.from_numpy(crops_u8).float() / 255, 2))
    out = torch.full((len(crops_u8), 3, 32, 32), fill)
    for i, p in enumerate(small):
        data = codec.encode(p.permute(1, 2, 0).numpy())
        out[i, :, 8:24, 8:24] = torch.from_numpy(decode_image("t", codec.ext, data).copy()).permute(2, 0, 1).float() / 255
    return out


def test_the_default_observer_is_the_mean_of_the_teachers(tmp_path: Path, teachers_dir: Path) -> None:
    chosen, crops = _build(tmp_path, teachers_dir, "teacher", image_format="webp", image_quality=90)
    assert BuildConfig(recipe="synthetic", out="x").observer == "teacher"
    teachers = load_ensemble(resolve_specs((), str(teachers_dir)), 4, 32, (0.49,) * 3, (0.21,) * 3,
                             torch.device("cpu"))
    labels = torch.tensor([c for c, ks in enumerate(chosen["key"]) for _ in ks])
    with torch.no_grad():  # a lossy encoding: the teachers score the crops as stored, encoded and decoded
        view = _as_stored(crops, Codec("webp", 90), 0.49)
        ce = F.cross_entropy(teachers(view), labels, reduction="none").double()
    recorded = torch.tensor([v for vs in chosen["ce"] for v in vs], dtype=torch.float64)
    torch.testing.assert_close(recorded, ce, rtol=1e-5, atol=1e-5)  # the stored CE is the teachers'

    proj_chosen, _ = _build(tmp_path, teachers_dir, "projector", image_format="webp", image_quality=90)
    assert proj_chosen["ce"] != chosen["ce"]  # --observer projector scores with another model


def test_a_png_build_scores_the_unencoded_crops_as_before(tmp_path: Path, teachers_dir: Path) -> None:
    chosen, crops = _build(tmp_path, teachers_dir, "teacher", image_format="png")
    teachers = load_ensemble(resolve_specs((), str(teachers_dir)), 4, 32, (0.49,) * 3, (0.21,) * 3,
                             torch.device("cpu"))
    labels = torch.tensor([c for c, ks in enumerate(chosen["key"]) for _ in ks])
    with torch.no_grad():
        view = scoring_view(torch.from_numpy(crops).float() / 255, 2, (0.49,) * 3)
        ce = F.cross_entropy(teachers(view), labels, reduction="none").double()
        encoded = F.cross_entropy(teachers(_as_stored(crops, Codec("jpeg", 50), 0.49)), labels, reduction="none")
    recorded = torch.tensor([v for vs in chosen["ce"] for v in vs], dtype=torch.float64)
    torch.testing.assert_close(recorded, ce, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(encoded.double(), ce, rtol=1e-5, atol=1e-5)  # a lossy round trip would show


def test_a_lossy_codec_joins_the_select_key_and_a_lossless_one_keeps_the_old_key() -> None:
    def key(scored_as):
        return SelectInputs(ipc=10, factor=2, size=224, n_real=300, m_crops=5, crop_scale=[0.08, 1.0], seed=0,
                            allow_short=False, observer="teacher", scored_as=scored_as).key("up")

    assert key(None) == "8afeb40c24c04ea728e1cf864342943e10265de71c371c71e7297edae3d00c5c"  # before codecs existed
    webp = key({"encoding": "webp", "quality": 90})
    assert len({key(None), webp, key({"encoding": "webp", "quality": 85}), key({"encoding": "jpeg", "quality": 90})}) == 4
