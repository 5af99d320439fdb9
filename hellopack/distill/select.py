"""RDED initialisation, as RDED's synthesis code does it (LINs-lab/RDED, synthesize/main.py, utils.py).

Per class: ``n_real`` real images drawn at random (seeded; the caller orders the stream, and
the first ``n_real`` of a class in that order are taken, as RDED's shuffled ``ImageFolder``
does), ``m_crops`` square RandomResizedCrops of each (``MultiRandomCrop``: scale (0.08, 1),
aspect 1:1), each crop scored by CE(observer(view), class) where the view is the crop at
``size / factor`` zero-padded (in normalised space) to ``size`` (RDED's ``selector`` + ``pad``),
the crop first encoded and decoded with the archive's codec when that is lossy (what ships is scored);
every image keeps its best (lowest-CE) crop, and the class keeps its ``k = ipc * factor^2``
lowest-CE crops. Image j of a class takes sorted crops j, ipc + j, 2 ipc + j, ... for its
patches in row-major order (``mix_images``). Crops are kept at the full ``size`` too: the
image update compares each stored patch with that full-resolution source crop.

Two passes keep memory flat: pass 1 (``score_stream``) keeps a few numbers per image
(key, stream position, best crop index, CE), which merge across processes
(``merge_candidates``); pass 2 (``extract_crops``) regenerates the chosen crops, since a
crop is a pure function of (image, seed, key, crop index).

Samples enter as ``(position, label, key, image)``: ``position`` orders the stream (the
"first n_real" of a class), ``key`` (unique in the source) seeds the crops, so crops do not
depend on the rank, the world size or the batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from hellopack.archive.images import Codec, decode_image
from hellopack.data.types import ImageSource
from hellopack.errors import HellopackError
from hellopack.rng import cpu_seeded

Observer = Callable[[torch.Tensor], torch.Tensor]  # float [B,3,S,S] in [0,1] -> logits [B,C]
Item = tuple[int, int, str, Image.Image]  # (stream position, label, key, image)
RATIO = (1.0, 1.0)  # MultiRandomCrop: RandomResizedCrop(..., ratio=(1, 1))


@dataclass(frozen=True)
class CropSpec:
    size: int
    m_crops: int
    scale: tuple[float, float]
    seed: int
    factor: int = 1  # crops are scored at size / factor, padded back to size
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)  # padding in [0, 1] (the dataset mean: 0 once normalised)
    codec: Codec | None = None  # the archive's encoding: a lossy one is applied to each view before scoring


def encoded(small01: torch.Tensor, codec: Codec) -> torch.Tensor:
    """Patches in [0, 1] as the archive stores them: quantised to uint8, encoded with ``codec``, decoded.

    Each patch is encoded alone, at its stored size. The archive encodes it inside its stitched
    image (factor x factor patches): with size / factor a multiple of 16 (224 px, factor 2: 112 px)
    the patch edges fall on WebP macroblock and JPEG 4:2:0 MCU edges, so the same blocks are coded;
    what differs is what crosses them (WebP's intra prediction and loop filter, the image-wide
    segment statistics and filter strength, JPEG's chroma upsampling). Measured on 100 imagenet-sample
    patches (224 px, factor 2; benchmarks/results/select-codec.md): JPEG q85 alone vs in the stitched
    image differ by 0.09 of 255 on average (48.2 dB), so alone is nearly exact; WebP q85 by 2.4 (37.3 dB),
    closer to the stored pixels than the unencoded patch is (34.8 dB) but only an approximation.
    At factor 1 (every image up to 64 px by default) the crop is the stored image: exact.
    """
    from hellopack.distill.update import quantize

    u8 = quantize(small01.detach().cpu()).permute(0, 2, 3, 1).numpy()
    out = np.stack([decode_image("candidate crop", codec.ext, codec.encode(p), max_pixels=1 << 62) for p in u8])
    return (torch.from_numpy(out).permute(0, 3, 1, 2).to(small01.device, small01.dtype) / 255).contiguous()


def scoring_view(crops01: torch.Tensor, factor: int, fill: Sequence[float], codec: Codec | None = None) -> torch.Tensor:
    """What the observer scores: each crop at ``size / factor`` (as a lossy ``codec`` stores it: encoded and
    decoded; a lossless one stores the pixels unchanged, so it costs nothing), centred on a ``fill``-coloured
    canvas."""
    from hellopack.distill.update import downsample

    small = downsample(crops01, factor)
    if codec is not None and not codec.lossless:
        small = encoded(small, codec)
    if factor == 1:
        return small
    size = crops01.shape[-1]
    s = small.shape[-1]
    canvas = torch.tensor(list(fill), dtype=crops01.dtype, device=crops01.device).view(1, 3, 1, 1)
    out = canvas.expand(len(crops01), 3, size, size).clone()
    top = (size - s) // 2  # RDED's pad: vertical // 2 above, the rest below (same for the width)
    out[:, :, top:top + s, top:top + s] = small
    return out


@dataclass(frozen=True)
class Candidates:
    """Pass-1 result, one row per scored image (numpy so it gathers cheaply across processes)."""

    position: np.ndarray  # int64, position of the image in the source stream
    key: np.ndarray  # object (str), the source's unique sample key
    label: np.ndarray  # int64
    crop: np.ndarray  # int64, index of the best crop among m_crops
    ce: np.ndarray  # float64, its cross-entropy

    @staticmethod
    def concat(parts: Sequence["Candidates"]) -> "Candidates":
        if not parts:
            return Candidates(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int64),
                              np.zeros(0, np.int64), np.zeros(0, np.float64))
        return Candidates(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in ("position", "key", "label", "crop", "ce")))


@dataclass(frozen=True)
class Chosen:
    """Per class, the chosen crops, lowest CE first (ties: earlier image first)."""

    key: list[list[str]]
    crop: list[list[int]]
    ce: list[list[float]]

    def total(self) -> int:
        return sum(len(k) for k in self.key)

    def to_json(self) -> dict:
        return {"key": self.key, "crop": self.crop, "ce": self.ce}

    @staticmethod
    def from_json(obj: dict) -> "Chosen":
        return Chosen([list(k) for k in obj["key"]], [list(c) for c in obj["crop"]], [list(e) for e in obj["ce"]])


def image_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_crops(image: Image.Image | torch.Tensor, key: str, spec: CropSpec) -> torch.Tensor:
    """uint8 [m_crops, 3, size, size]: RandomResizedCrops of one image, reproducible from ``key``."""
    img = TF.pil_to_tensor(image.convert("RGB")) if isinstance(image, Image.Image) else image
    out = torch.empty((spec.m_crops, 3, spec.size, spec.size), dtype=torch.uint8)
    # torchvision's sampler draws from the global RNG: fork it so the caller's RNG is untouched.
    with cpu_seeded(image_seed(spec.seed, key)):
        for m in range(spec.m_crops):
            i, j, h, w = RandomResizedCrop.get_params(img, list(spec.scale), list(RATIO))
            out[m] = TF.resized_crop(img, i, j, h, w, [spec.size, spec.size], antialias=True)
    return out


def first_per_class(items: Iterable[Item], num_classes: int, n_real: int) -> Iterator[Item]:
    """Keep the first ``n_real`` items of each class; stop once every class is full."""
    seen = [0] * num_classes
    full = 0
    for item in items:
        label = item[1]
        if seen[label] >= n_real:
            continue
        seen[label] += 1
        full += seen[label] == n_real
        yield item
        if full == num_classes:
            return


@torch.no_grad()
def score_crops(observer: Observer, crops_u8: torch.Tensor, labels: torch.Tensor,
                device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
                factor: int = 1, fill: Sequence[float] = (0.0, 0.0, 0.0), codec: Codec | None = None) -> torch.Tensor:
    """CE of each crop's scoring view against its label, float64 on CPU."""
    x = scoring_view(crops_u8.to(device).float() / 255, factor, fill, codec).contiguous(memory_format=memory_format)
    logits = observer(x).float()
    return F.cross_entropy(logits, labels.to(device), reduction="none").double().cpu()


def score_stream(observer: Observer, items: Iterable[Item], spec: CropSpec, batch_size: int,
                 device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
                 on_images: Callable[[int], None] | None = None) -> Candidates:
    """Pass 1: score ``m_crops`` crops per item, keep each image's best crop."""
    rows: list[tuple[int, str, int, int, float]] = []
    pending: list[tuple[int, int, str, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        crops = torch.cat([c for *_, c in pending])
        lab = torch.cat([torch.full((spec.m_crops,), y, dtype=torch.long) for _, y, _, _ in pending])
        ce = score_crops(observer, crops, lab, device, memory_format, spec.factor,
                         spec.fill, spec.codec).view(len(pending), spec.m_crops)
        best = torch.argmin(ce, dim=1)  # the first minimum: ties go to the earlier crop
        for (pos, y, key, _), m, row in zip(pending, best.tolist(), ce):
            rows.append((pos, key, y, m, float(row[m])))
        if on_images is not None:
            on_images(len(pending))
        pending.clear()

    per_batch = max(1, batch_size // spec.m_crops)
    for pos, label, key, image in items:
        pending.append((pos, label, key, make_crops(image, key, spec)))
        if len(pending) >= per_batch:
            flush()
    flush()
    return Candidates(np.asarray([r[0] for r in rows], dtype=np.int64), np.asarray([r[1] for r in rows], dtype=object),
                      np.asarray([r[2] for r in rows], dtype=np.int64), np.asarray([r[3] for r in rows], dtype=np.int64),
                      np.asarray([r[4] for r in rows], dtype=np.float64))


def drawn(src: ImageSource, seed: int, rank: int = 0, world: int = 1) -> Iterator[Item]:
    """(draw position, label, key, image) for this process's share of the seeded random draw.

    RDED shuffles each class's file list and takes the first N; here the whole source is
    visited in one seeded random order (random-access sources) and ``first_per_class`` takes
    each class's first N in that order: the same uniform draw, without a list per class. A
    streaming source is read in a seeded shard order. Position j of the draw goes to process
    ``j % world``; bad images are skipped.
    """
    if src.random_access:
        total = int(src.num_samples)
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0x64726177]).generate_state(1)[0]))
        order = torch.randperm(total, generator=gen)
        for j in range(rank, total, world):
            sample = src.load_entry(src.entry_at(int(order[j])))
            if sample is not None:
                yield j, sample.label, sample.key, sample.image
        return
    for j, entry in src.iter_entries(int(np.random.SeedSequence([seed, 0x64726177]).generate_state(1)[0])):
        if j % world != rank:
            continue
        sample = src.load_entry(entry)
        if sample is not None:
            yield j, sample.label, sample.key, sample.image


def check_class_size(name: str, index: int, count: int, k: int, allow_short: bool) -> None:
    """Fewer than ``k`` images in a class: an error, unless ``allow_short`` and there is at least one."""
    if count >= k or (allow_short and count > 0):
        return
    fix = "add images or lower --ipc/--factor" if count == 0 else \
        "add images, lower --ipc/--factor, or pass --allow-short to take what exists"
    raise HellopackError(f"class '{name}' (index {index}) has {count} images but --ipc x factor^2 needs {k}; {fix}")


def merge_candidates(cands: Candidates, class_names: Sequence[str], n_real: int, k: int, allow_short: bool,
                     info: Callable[[str], None] = lambda _m: None) -> Chosen:
    """Per class: the first ``n_real`` images by (drawn) stream position, then the ``k`` lowest-CE crops.

    A class with fewer than ``k`` scored images is an error unless ``allow_short``, which
    keeps what exists and says so through ``info``.
    """
    keys: list[list[str]] = []
    crops: list[list[int]] = []
    ces: list[list[float]] = []
    short: list[str] = []
    for c, name in enumerate(class_names):
        rows = np.flatnonzero(cands.label == c)
        rows = rows[np.argsort(cands.position[rows], kind="stable")][:n_real]
        if len(rows) < k:
            check_class_size(name, c, len(rows), k, allow_short)
            short.append(f"'{name}' {len(rows)}/{k}")
        # lexsort: the last key is primary -> CE ascending, then stream position.
        order = rows[np.lexsort((cands.position[rows], cands.ce[rows]))][:k]
        keys.append([str(v) for v in cands.key[order]])
        crops.append([int(v) for v in cands.crop[order]])
        ces.append([float(v) for v in cands.ce[order]])
    if short:
        info(f"allow-short: {len(short)} classes have fewer images than needed ({', '.join(short[:5])}"
             f"{', ...' if len(short) > 5 else ''}); they get fewer images, crops reused to fill them")
    return Chosen(keys, crops, ces)


def extract_crops(samples: Iterable[tuple[str, Image.Image]], chosen: Chosen, spec: CropSpec,
                  write: Callable[[int, torch.Tensor], None], on_image: Callable[[int], None] | None = None) -> None:
    """Pass 2: regenerate each chosen crop and hand it to ``write(slot, crop_u8)``.

    ``samples`` yields ``(key, image)``. Slots number the chosen crops class by class in
    ``chosen`` order. Reading stops after the last chosen image.
    """
    wanted: dict[str, list[tuple[int, int]]] = {}
    slot = 0
    for keys, crops in zip(chosen.key, chosen.crop):
        for key, m in zip(keys, crops):
            wanted.setdefault(key, []).append((m, slot))
            slot += 1
    remaining = len(wanted)
    if not remaining:
        return
    for key, image in samples:
        hits = wanted.get(key)
        if hits is None:
            continue
        crops_u8 = make_crops(image, key, spec)
        for m, s in hits:
            write(s, crops_u8[m])
        if on_image is not None:
            on_image(1)
        remaining -= 1
        if remaining == 0:
            return
    raise HellopackError(f"the data source changed between the two selection passes ({remaining} chosen images "
                         f"not found again); rerun the build with an unchanged --data-dir")


def patch_layout(chosen: Chosen, ipc: int, factor: int) -> tuple[list[int], list[list[int]]]:
    """Per distilled image: its class and the slots of its factor^2 patches (row-major grid).

    RDED's stride (``mix_images``): with ``m`` images in a class, patch q of image j is the
    class's sorted crop ``q * m + j``, so the lowest-CE crops fill every image's first patch.
    A class with fewer than ``ipc * factor^2`` crops (``--allow-short``) gets
    ``m = ceil(n / factor^2)`` images and reuses its crops cyclically.
    """
    per = factor * factor
    labels: list[int] = []
    slots: list[list[int]] = []
    start = 0
    for c, keys in enumerate(chosen.key):
        n = len(keys)
        m = min(ipc, -(-n // per))
        for j in range(m):
            labels.append(c)
            slots.append([start + (q * m + j) % n for q in range(per)])
        start += n
    return labels, slots


def stitch(patches_u8: torch.Tensor, factor: int) -> torch.Tensor:
    """[f*f, 3, s, s] patches (row-major) -> one [3, f*s, f*s] image."""
    per, c, s, _ = patches_u8.shape
    if per != factor * factor:
        raise ValueError(f"stitch needs {factor * factor} patches, got {per}")
    grid = patches_u8.reshape(factor, factor, c, s, s).permute(2, 0, 3, 1, 4)
    return grid.reshape(c, factor * s, factor * s).contiguous()
