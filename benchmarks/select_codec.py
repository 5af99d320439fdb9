"""What scoring the stored (encoded) crops costs the select stage, and how far a crop encoded alone is
from the same crop encoded inside its stitched image (issue 15, item 2).

    python benchmarks/select_codec.py       # writes benchmarks/results/select-codec.{json,md}

On the 100 real photographs of $HELLOPACK_SHARED/data/imagenet-sample at 224 px, factor 2 (what
``build imagenet`` does at 224 px), 5 crops per photograph (BuildConfig's m_crops):

1. Select pass 1 (``score_stream``, the part the codec changes) with a ResNet-18 observer (the
   teacher architecture of an ImageNet build; random weights, as benchmarks/realshape.py uses):
   scoring the unencoded crops (png builds, before this change) against scoring them through WebP q85
   (auto's 224 px encoding) and JPEG q85, one torch thread, wall and process CPU seconds, best of
   ``--reps``. Pass 2 (extracting the chosen crops) does not change and is timed once.
2. Alone vs stitched: each photograph's best-first crop downsampled to its 112 px patch, four
   patches stitched 2 x 2 into a 224 px image as ``build`` stores them; each patch encoded alone
   (what the observer now scores) against the same patch cut from the decoded stitched image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("HELLOPACK_SHARED", REPO.parent / "shared"))
SAMPLE = SHARED / "data" / "imagenet-sample"
RESULTS = REPO / "benchmarks" / "results"


def observer_model(num_classes: int):
    import torchvision

    from hellopack.models.common import Normalize

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=num_classes)
    return torch.nn.Sequential(Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), net).eval()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def alone_vs_stitched(items: list, codec, size: int = 224, factor: int = 2) -> dict:
    from hellopack.archive.images import decode_image
    from hellopack.distill.select import CropSpec, encoded, make_crops, stitch
    from hellopack.distill.update import initial_patches

    spec = CropSpec(size=size, m_crops=1, scale=(0.08, 1.0), seed=0, factor=factor)
    patches = torch.cat([initial_patches(make_crops(img, key, spec), factor) for _, _, key, img in items])
    n = len(patches) // (factor * factor) * factor * factor
    patches = patches[:n]
    alone = (encoded(patches.float() / 255, codec) * 255).round().to(torch.uint8)
    s = size // factor
    in_image = []
    for g in range(0, n, factor * factor):
        img = stitch(patches[g:g + factor * factor], factor).permute(1, 2, 0).numpy()
        dec = decode_image("stitched", codec.ext, codec.encode(img))
        for q in range(factor * factor):
            r, c = divmod(q, factor)
            in_image.append(dec[r * s:(r + 1) * s, c * s:(c + 1) * s])
    stitched = torch.from_numpy(np.stack(in_image)).permute(0, 3, 1, 2)
    a, st, raw = alone.numpy(), stitched.numpy(), patches.numpy()
    diff = np.abs(a.astype(np.int16) - st.astype(np.int16))
    return {"codec": f"{codec.encoding} q{codec.quality}", "patches": n, "patch_px": s,
            "mean_abs_alone_vs_stitched": round(float(diff.mean()), 3), "max_abs_alone_vs_stitched": int(diff.max()),
            "psnr_alone_vs_stitched_db": round(psnr(a, st), 2), "psnr_alone_vs_unencoded_db": round(psnr(a, raw), 2),
            "psnr_stitched_vs_unencoded_db": round(psnr(st, raw), 2)}


def time_select(items: list, codec, model, num_classes: int, reps: int) -> dict:
    from hellopack.distill.select import CropSpec, score_stream

    spec = CropSpec(size=224, m_crops=5, scale=(0.08, 1.0), seed=0, factor=2, fill=(0.485, 0.456, 0.406),
                    codec=codec)
    best = None
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        cands = score_stream(model, items, spec, 128, torch.device("cpu"))
        run = (time.perf_counter() - w0, time.process_time() - c0)
        best = run if best is None or run[0] < best[0] else best
    return {"codec": "unencoded" if codec is None else f"{codec.encoding} q{codec.quality}",
            "wall_s": round(best[0], 2), "cpu_s": round(best[1], 2), "ce": cands.ce.tolist(), "crop": cands.crop.tolist()}


def main(argv: list[str] | None = None) -> int:
    from hellopack.archive.images import Codec
    from hellopack.data import open_source
    from hellopack.distill.select import Chosen, CropSpec, drawn, extract_crops

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="rewrite the .md from the .json, run nothing")
    args = ap.parse_args(argv)
    if args.render:
        (args.out_dir / "select-codec.md").write_text(markdown(json.loads((args.out_dir / "select-codec.json").read_text())))
        return 0
    torch.set_num_threads(1)
    src = open_source("imagenet", SAMPLE)
    items = [(j, y, k, img.convert("RGB")) for j, y, k, img in drawn(src, 0)]  # decoded once, outside the timing
    classes = len(src.classes)
    model = observer_model(classes)
    load0 = os.getloadavg()[0]
    codecs = [None, Codec("webp", 85), Codec("jpeg", 85)]
    timing = [time_select(items, c, model, classes, args.reps) for c in codecs]
    spec = CropSpec(size=224, m_crops=5, scale=(0.08, 1.0), seed=0, factor=2)
    chosen = Chosen([[k] for _, _, k, _ in items], [[0] for _ in items], [[0.0] for _ in items])
    t0 = time.perf_counter()
    extract_crops(((k, img) for _, _, k, img in items), chosen, spec, lambda s, c: None)
    extract_s = time.perf_counter() - t0
    base = timing[0]
    for t in timing:
        t["same_best_crop_as_unencoded"] = sum(a == b for a, b in zip(t["crop"], base["crop"]))
        t["max_abs_ce_change"] = round(max(abs(a - b) for a, b in zip(t["ce"], base["ce"])), 4)
    for t in timing[::-1]:  # the reference's lists last
        del t["ce"], t["crop"]
    res = {"command": "python benchmarks/select_codec.py" + (f" --reps {args.reps}" if args.reps != 2 else ""),
           "started": time.strftime("%Y-%m-%d %H:%M"), "load_start": load0, "load_end": os.getloadavg()[0],
           "images": len(items), "m_crops": 5, "size": 224, "factor": 2, "threads": 1, "pass2_extract_s": round(extract_s, 2),
           "select_pass1": timing, "alone_vs_stitched": [alone_vs_stitched(items, c) for c in codecs[1:]]}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "select-codec.json").write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    (args.out_dir / "select-codec.md").write_text(text)
    print(text)
    return 0


def markdown(res: dict) -> str:
    base = res["select_pass1"][0]
    out = ["# Select stage: scoring the crops as the archive stores them (224 px, factor 2)", "",
           f"Command: `{res['command']}` (started {res['started']}, load average {res['load_start']:.1f} at the start "
           f"and {res['load_end']:.1f} at the end: a 2-core machine shared with other jobs; one torch thread).", "",
           f"{res['images']} real photographs (imagenet-sample), {res['m_crops']} crops each, a ResNet-18 observer "
           "(random weights). Pass 1 scores every crop (best of the runs); pass 2 extracts the chosen crops and does "
           f"not change ({res['pass2_extract_s']:.2f} s).", "",
           "The wall times depend mostly on how much of the shared machine the run got; the process CPU time "
           "(every thread, the encoding included) is the cost.", "",
           "| crops scored as | pass 1 wall | pass 1 CPU | vs unencoded (CPU) | same best crop as unencoded | "
           "largest CE change |", "| --- | --- | --- | --- | --- | --- |"]
    for t in res["select_pass1"]:
        out.append(f"| {t['codec']} | {t['wall_s']:.2f} s | {t['cpu_s']:.2f} s | "
                   f"{t['cpu_s'] / base['cpu_s'] - 1:+.1%} | {t['same_best_crop_as_unencoded']}/{res['images']} | "
                   f"{t['max_abs_ce_change']:.4f} |")
    out += ["", "Each candidate is encoded alone at its stored 112 px; the archive encodes it inside a stitched "
            "224 px image (2 x 2 patches; 112 = 7 x 16, so macroblock and MCU edges line up). The two against each "
            "other and against the unencoded patch:", "",
            "| codec | patches | mean abs alone vs stitched | max abs | PSNR alone vs stitched | "
            "PSNR alone vs unencoded | PSNR stitched vs unencoded |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["alone_vs_stitched"]:
        out.append(f"| {r['codec']} | {r['patches']} | {r['mean_abs_alone_vs_stitched']:.3f} | "
                   f"{r['max_abs_alone_vs_stitched']} | {r['psnr_alone_vs_stitched_db']:.2f} dB | "
                   f"{r['psnr_alone_vs_unencoded_db']:.2f} dB | {r['psnr_stitched_vs_unencoded_db']:.2f} dB |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
