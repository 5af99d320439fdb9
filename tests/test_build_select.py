"""RDED selection and the image update, on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hellopack.distill.select import (Candidates, Chosen, CropSpec, extract_crops, first_per_class, make_crops,
                                    merge_candidates, patch_layout, score_stream, stitch)
from hellopack.distill.update import initial_patches, update_patches
from hellopack.errors import HellopackError

CPU = torch.device("cpu")




def brightness_observer(x: torch.Tensor) -> torch.Tensor:
    """Two classes; the logit of class 0 is 20 x mean brightness, so brighter = lower CE for class 0."""
    b = x.mean(dim=(1, 2, 3))
    return torch.stack([20 * b, torch.zeros_like(b)], dim=1)


def flat(value: int, size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), (value, value, value))


def test_lowest_ce_images_are_chosen_from_the_first_n_real():
    # Constant images: every crop of an image has the image's brightness, so CE ranks images by brightness.
    values = [10, 200, 50, 250, 255]  # the 5th is brightest but lies beyond n_real = 4
    items = [(i, 0, f"k{i}", flat(v)) for i, v in enumerate(values)]
    spec = CropSpec(size=8, m_crops=3, scale=(0.3, 1.0), seed=0)
    cands = score_stream(brightness_observer, items, spec, batch_size=4, device=CPU)
    chosen = merge_candidates(cands, ["a"], n_real=4, k=2, allow_short=False)
    assert chosen.key == [["k3", "k1"]]  # 250 then 200; 255 (k4) is not among the first four
    expected_ce = torch.nn.functional.cross_entropy(torch.tensor([[20 * 250 / 255, 0.0]]), torch.tensor([0]))
    assert chosen.ce[0][0] == pytest.approx(float(expected_ce), rel=1e-5)


def test_each_image_keeps_its_lowest_ce_crop():
    # Left half black, right half white: crops differ in brightness; the brightest crop must win.
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, 16:] = 255
    img = Image.fromarray(arr)
    spec = CropSpec(size=8, m_crops=6, scale=(0.1, 0.5), seed=3)
    cands = score_stream(brightness_observer, [(0, 0, "img", img)], spec, batch_size=64, device=CPU)
    crops = make_crops(img, "img", spec).float()
    means = crops.mean(dim=(1, 2, 3))
    assert len(set(means.tolist())) > 1  # the constructed crops really differ
    assert int(cands.crop[0]) == int(torch.argmax(means))


def test_crops_are_reproducible_and_batching_does_not_change_scores():
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)) for _ in range(5)]
    items = [(i, i % 2, f"s{i}", im) for i, im in enumerate(imgs)]
    spec = CropSpec(size=12, m_crops=4, scale=(0.08, 1.0), seed=7)
    assert torch.equal(make_crops(imgs[0], "s0", spec), make_crops(imgs[0], "s0", spec))
    assert not torch.equal(make_crops(imgs[0], "s0", spec), make_crops(imgs[0], "s1", spec))
    a = score_stream(brightness_observer, items, spec, batch_size=4, device=CPU)
    b = score_stream(brightness_observer, items, spec, batch_size=400, device=CPU)
    assert a.crop.tolist() == b.crop.tolist()
    np.testing.assert_allclose(a.ce, b.ce, rtol=1e-6)


def test_merge_uses_stream_position_across_shards_and_second_pass_finds_the_crops():
    imgs = {f"k{i}": flat(v) for i, v in enumerate([30, 90, 60, 240, 120, 180])}
    spec = CropSpec(size=8, m_crops=2, scale=(0.5, 1.0), seed=1)
    # Two "ranks": even and odd stream positions, scored separately, merged.
    parts = [score_stream(brightness_observer, [(p, 0, f"k{p}", imgs[f"k{p}"]) for p in range(r, 6, 2)], spec, 8, CPU)
             for r in (0, 1)]
    chosen = merge_candidates(Candidates.concat(parts), ["a"], n_real=5, k=3, allow_short=False)
    assert chosen.key == [["k3", "k4", "k1"]]  # 240, 120, 90 among the first five (k5 = 180 is excluded)
    got: dict[int, torch.Tensor] = {}
    extract_crops(((k, im) for k, im in imgs.items()), chosen, spec, got.__setitem__)
    assert sorted(got) == [0, 1, 2]
    assert torch.equal(got[0], make_crops(imgs["k3"], "k3", spec)[chosen.crop[0][0]])


def test_short_class_is_an_error_naming_the_class_unless_allowed():
    cands = Candidates(np.arange(3), np.array(["a", "b", "c"], dtype=object), np.array([0, 0, 1]),
                       np.zeros(3, np.int64), np.array([0.3, 0.1, 0.2]))
    with pytest.raises(HellopackError) as e:
        merge_candidates(cands, ["cat", "dog"], n_real=10, k=2, allow_short=False)
    assert str(e.value) == ("class 'dog' (index 1) has 1 images but --ipc x factor^2 needs 2; add images, "
                            "lower --ipc/--factor, or pass --allow-short to take what exists")
    notes: list[str] = []
    chosen = merge_candidates(cands, ["cat", "dog"], n_real=10, k=2, allow_short=True, info=notes.append)
    assert chosen.key == [["b", "a"], ["c"]]
    assert "'dog' 1/2" in notes[0]


def test_first_per_class_stops_when_every_class_is_full():
    def stream():
        for i in range(100):
            if i == 6:
                raise AssertionError("read past the point where every class was full")
            yield (i, i % 2, str(i), None)

    assert [it[0] for it in first_per_class(stream(), num_classes=2, n_real=3)] == [0, 1, 2, 3, 4, 5]


def test_layout_and_stitch_place_patches_row_major():
    chosen = Chosen([["a", "b", "c", "d", "e"], ["f", "g", "h"]], [[0] * 5, [0] * 3], [[0.0] * 5, [0.0] * 3])
    labels, slots = patch_layout(chosen, ipc=2, factor=2)
    assert labels == [0, 0, 1]
    # RDED's mix_images stride: patch q of image j is sorted crop q * m + j (m images in the class),
    # reusing crops cyclically in a short class
    assert slots == [[0, 2, 4, 1], [1, 3, 0, 2], [5, 6, 7, 5]]
    full = Chosen([list("abcdefgh")], [[0] * 8], [[0.0] * 8])
    assert patch_layout(full, ipc=2, factor=2) == ([0, 0], [[0, 2, 4, 6], [1, 3, 5, 7]])
    nine = Chosen([[str(i) for i in range(12)]], [[0] * 12], [[0.0] * 12])
    assert patch_layout(nine, ipc=3, factor=2)[1] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    patches = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    img = stitch(patches, 2)
    assert img.shape == (3, 4, 4)
    assert img[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_image_update_lowers_its_objective():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()).requires_grad_(False)

    def features(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(net(x), dim=1)

    crops = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    seen: list[tuple[int, float]] = []
    out = update_patches(features, crops, factor=2, steps=30, lr=0.02, on_step=lambda i, v: seen.append((i, v)))
    assert out.dtype == torch.uint8 and out.shape == (6, 3, 8, 8)
    assert seen[0][0] == 0 and seen[-1][0] == 30
    assert seen[-1][1] < 0.5 * seen[0][1]
    assert not torch.equal(out, initial_patches(crops, 2))
    # factor 1 stores the crop itself: nothing to update
    assert torch.equal(update_patches(features, crops, factor=1, steps=5, lr=0.1), crops)
