"""How much the image update's objective rises when its optimised pixels are stored lossy (issue 15).

The update (hellopack/distill/update.py, paper Eq. 7) minimises, per stored patch p of a 2x2 image,
``||E_I(c) - E_I(up(p))||^2`` (E_I: the projector's L2-normalised image features, c: the source crop).
This takes real photographs (../shared/data/imagenet-sample), centre crops of 224 px, runs the update
as build does (factor 2: 112 px patches, the default steps and lr) on the tiny random-init base,
stitches the patches 2x2 into 224 px images, encodes them each way, decodes, cuts the patches out again
and evaluates the same objective. Prints a markdown table; no files written.

    python benchmarks/codec_update.py [--images 8] [--steps 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent.parent / "shared" / "data" / "imagenet-sample" / "train"
SIZE, FACTOR = 224, 2


def crops(folder: Path, n: int) -> torch.Tensor:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[:n]
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            side = min(im.size)
            box = ((im.width - side) // 2, (im.height - side) // 2)
            out.append(np.asarray(im.crop((*box, box[0] + side, box[1] + side)).resize((SIZE, SIZE),
                                                                                     Image.Resampling.BICUBIC)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def main(argv: list[str] | None = None) -> int:
    from hellopack.archive.images import Codec, decode_image
    from hellopack.distill.select import stitch
    from hellopack.distill.update import feature_loss, initial_patches, update_patches
    from hellopack.models.base import load_base
    from hellopack.models.projector import Projector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8, help="photographs (patches); a multiple of 4")
    ap.add_argument("--steps", type=int, default=100, help="update steps [BuildConfig.update_steps]")
    ap.add_argument("--lr", type=float, default=0.01, help="update lr [BuildConfig.update_lr]")
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    base = load_base("hellopack-tiny-rn", None)
    proj = Projector(base, ["a", "b"], ["{}"], rank_encoder=2, rank_head=2).eval()
    features = proj.image_features
    c = crops(args.sample, args.images)
    with torch.no_grad():
        targets = features(c.float() / 255).float()
    updated = update_patches(features, c, FACTOR, args.steps, args.lr)
    n = len(updated) // 4 * 4
    images = [stitch(updated[i:i + 4], FACTOR) for i in range(0, n, 4)]  # uint8 [3,224,224]

    def objective(patches_u8: torch.Tensor) -> float:
        with torch.no_grad():
            return float(feature_loss(features, targets[:len(patches_u8)], patches_u8.float() / 255, SIZE)) / len(patches_u8)

    def patches_of(imgs: list[torch.Tensor]) -> torch.Tensor:
        h = SIZE // FACTOR
        return torch.stack([im[:, r * h:(r + 1) * h, q * h:(q + 1) * h] for im in imgs
                            for r in range(FACTOR) for q in range(FACTOR)])

    assert torch.equal(patches_of(images), updated[:n]), "stitch order"
    stored = objective(updated[:n])
    rows = [("no update (downsampled crops)", objective(initial_patches(c[:n], FACTOR)), None),
            ("updated, lossless (png)", stored, None)]
    for enc, q in (("webp", 85), ("webp", 90), ("jpeg", 90), ("jpeg", 85)):
        codec = Codec(enc, q)
        dec = [torch.from_numpy(decode_image("x", codec.ext, codec.encode(im.permute(1, 2, 0).numpy()),
                                             size=SIZE).copy()).permute(2, 0, 1) for im in images]
        rows.append((f"updated, then {enc} q{q}", objective(patches_of(dec)), None))
    print(f"Objective per patch (feature MSE, mean over {n} patches of {SIZE // FACTOR} px from {n // 4} images of "
          f"{SIZE} px; hellopack-tiny-rn, random init; {args.steps} steps at lr {args.lr}):\n")
    none = rows[0][1]
    print("| stored patches | objective | vs lossless | share of the update's reduction kept |\n| --- | --- | --- | --- |")
    for name, v, _ in rows:
        print(f"| {name} | {v:.3e} | {v / stored:.2f}x | {(none - v) / (none - stored):.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
