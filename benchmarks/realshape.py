"""Real shapes on the CPU (issue 16, part 1): full-size CLIP bases at 224 px on real ImageNet photographs.

    python benchmarks/realshape.py                      # writes benchmarks/results/realshape.{json,md}
    python benchmarks/realshape.py --classes 4 --bases RN50 --archs resnet18 --train-steps 2 \\
        --update-steps 1 --out-dir /tmp/rs              # the small version tests/test_realshape.py runs

For each base (open_clip RN50 and ViT-B-32, seeded random weights saved as a state-dict file and
passed as ``--clip-weights FILE --pretrained openai``; no download), ``hellopack build imagenet`` on
the photographs of $HELLOPACK_SHARED/data/imagenet-sample (one per class: IPC 1 needs
``--allow-short`` and ``--n-real`` >= ipc x factor^2 = 4), factor 2, image update on, with a
ResNet-18 teacher written the way torchvision's train.py writes checkpoints (random weights); then
``hellopack train`` for a few steps with each architecture of the paper's cross-architecture table
at 224 px (the RN50 archive; the ViT-B-32 archive trains resnet18).

Measured: the LoRA layout (RN50: 55 convolutions; the ImageNet-1K payload of 898,776 numbers, as
benchmarks/storage.py counts it), that the labels are finite and the student's loss falls, CPU
seconds per projector label at 224 px (process CPU time over every thread, batch 16), and per
stage its wall time and peak RSS (VmHWM, reset at each stage start through /proc/self/clear_refs).
The text head uses the "simple" template (80 OpenAI templates x 100 classes through the text tower
would take most of the run on a CPU and change no shape). A ViT-B-32 base gets LoRA on its only
Conv2d, the patch embedding (the ViT adapter is later work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hellopack.progress import Reporter, Stage  # noqa: E402

SHARED = Path(os.environ.get("HELLOPACK_SHARED", REPO.parent / "shared"))
SAMPLE = SHARED / "data" / "imagenet-sample"
ARCHS = ("resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x0_5", "vgg11", "swin_v2_t")
BASES = ("RN50", "ViT-B-32")
IN1K_PAYLOAD = 898_776  # benchmarks/storage.py: 639,704 on RN50's 55 convolutions + 259,072 on the head
RN50_CONVS = 55


# ---- per-stage time and peak memory ----------------------------------------------------------------

def rss_peak_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux)
        return True
    except OSError:
        return False


class _Timed(Stage):
    def __init__(self, owner: "StageRecorder", name: str, total: int | None) -> None:
        self.owner, self.name, self.total = owner, name, total
        self.losses: list[float] = []
        self.done = 0
        self.exact = reset_peak()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        if "loss" in metrics:
            self.losses.append(float(metrics["loss"]))

    def close(self) -> None:
        row = {"stage": f"{self.owner.prefix}{self.name}", "items": self.done,
               "wall_s": round(time.perf_counter() - self.t0, 2), "cpu_s": round(time.process_time() - self.c0, 2),
               "peak_rss_mib": round(rss_peak_kib() / 1024, 1), "peak_is_stage": self.exact}
        if self.losses:
            row["losses"] = [round(v, 4) for v in self.losses]
        self.owner.rows.append(row)
        print(f"[realshape] {row['stage']}: {row['wall_s']} s, peak RSS {row['peak_rss_mib']} MiB", flush=True)


class StageRecorder(Reporter):
    """Records each library stage's wall and CPU time, peak RSS and (train) per-step losses."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.messages: list[str] = []
        self.prefix = ""

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        return _Timed(self, name, total)

    def info(self, message: str) -> None:
        self.messages.append(message)


# ---- inputs ------------------------------------------------------------------------------------------

def sample_folder(dest: Path, classes: int) -> Path:
    """The first ``classes`` WordNet-id folders of the sample, linked (an ImageNet user's train/ layout)."""
    wnids = sorted(p.name for p in (SAMPLE / "train").iterdir() if p.is_dir())[:classes]
    (dest / "train").mkdir(parents=True)
    for w in wnids:
        (dest / "train" / w).symlink_to(SAMPLE / "train" / w)
    return dest


def save_random_base(name: str, path: Path) -> Path:
    import open_clip
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None)
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    return path


def reference_teacher(path: Path, num_classes: int) -> Path:
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 8,
                "args": argparse.Namespace(model="resnet18", epochs=90, lr=0.1)}, path)
    return path


# ---- checks ------------------------------------------------------------------------------------------

def in1k_payload(base: Any) -> dict:
    """LoRA numbers of an ImageNet-1K archive on this base (head from a random matrix: shapes only)."""
    import torch.nn.functional as F

    from hellopack.distill.config import BuildConfig
    from hellopack.models.projector import Projector

    head = F.normalize(torch.randn(1000, base.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    rank_head = BuildConfig(recipe="imagenet", out="x").resolved_rank_head(1000, base.embed_dim)  # build's rule
    proj = Projector(base, [f"c{i}" for i in range(1000)], ["a photo of a {}."], rank_encoder=8,
                     rank_head=rank_head, head=head)
    layout = proj.lora_layout("fp16")
    return {"encoder_targets": len(layout.encoder_targets), "in1k_numbers": layout.parameters}


def label_cost(archive_path: Path, weights: Path) -> dict:
    """CPU seconds per projector label at 224 px (merged projector, batch 16 of the archive's images)."""
    from hellopack.archive import open_archive
    from hellopack.train.labelers import ProjectorLabeler, projector_from_archive
    from hellopack.train.loop import load_archive_images

    archive = open_archive(archive_path)
    m = archive.manifest
    images, _ = load_archive_images(archive, int(m["images"]["size"]), len(m["classes"]))
    x = (images[:16].float() / 255).repeat(max(1, 16 // len(images[:16])), 1, 1, 1)[:16]
    labeler = ProjectorLabeler(projector_from_archive(archive, weights), torch.device("cpu"))
    labeler(x[:2])  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    logits = labeler(x)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"labels": len(x), "cpu_s_per_label": round(cpu / len(x), 4), "wall_s_per_label": round(wall / len(x), 4),
            "threads": torch.get_num_threads(), "labels_finite": bool(torch.isfinite(logits).all()),
            "label_shape": list(logits.shape), "image_size": int(m["images"]["size"])}


def fixed_batch_losses(archive_path: Path, weights: Path, arch: str, lr: float, steps: int) -> list[float]:
    """The student's loss on one fixed batch of up to 8 archive images against the projector's labels
    (MSE + 0.1 CE, AdamW at the recipe's lr, no augmentation): with random base weights the
    augmented steps of ``train`` are too noisy to show a fall in a few steps; this one must fall."""
    import torch.nn.functional as F

    from hellopack.archive import open_archive
    from hellopack.models.students import build_student
    from hellopack.train.labelers import ProjectorLabeler, projector_from_archive
    from hellopack.train.losses import student_loss
    from hellopack.train.loop import load_archive_images

    archive = open_archive(archive_path)
    m = archive.manifest
    images, labels = load_archive_images(archive, int(m["images"]["size"]), len(m["classes"]))
    x, y = images[:8].float() / 255, labels[:8]
    soft = ProjectorLabeler(projector_from_archive(archive, weights), torch.device("cpu"))(x)
    hard = F.one_hot(y, len(m["classes"])).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        student = build_student(arch, len(m["classes"]), x.shape[-1], m["images"]["mean"], m["images"]["std"])
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    student.train()
    for mod in student.modules():  # dropout off: the check needs one objective to watch, not a random one
        if isinstance(mod, torch.nn.Dropout):
            mod.eval()
    losses = []
    for _ in range(steps):
        loss = student_loss(student(x), soft, hard, loss="mse", beta=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(round(float(loss.detach()), 5))
    return losses


# ---- the run -----------------------------------------------------------------------------------------

def run_base(name: str, args: argparse.Namespace, data: Path, tmp: Path, rec: StageRecorder) -> dict:
    from hellopack.archive import open_archive
    from hellopack.distill import BuildConfig, build
    from hellopack.models.base import load_base
    from hellopack.train import TrainConfig, train

    key = name.lower()
    rec.prefix = f"{name}: "
    t0 = time.perf_counter()
    weights = save_random_base(name, tmp / f"{key}.safetensors")
    base = load_base(name, "openai", weights)
    out: dict[str, Any] = {"base": name, "weights_mib": round(weights.stat().st_size / 2**20, 1),
                           "base_image_size": base.image_size, **in1k_payload(base)}
    del base
    teacher = reference_teacher(tmp / "model_8.pth", args.classes)
    archive = tmp / f"{key}.hellopack"
    cfg = BuildConfig(recipe="imagenet", data_dir=str(data), out=str(archive), teachers=(f"resnet18:{teacher}",),
                      base=name, pretrained="openai", clip_weights=str(weights), templates="simple",
                      ipc=1, factor=2, n_real=4, allow_short=True, fit_epochs=1, fit_batch_size=args.batch,
                      update_steps=args.update_steps, eval_batch_size=args.batch, device="cpu")
    build(cfg, rec)
    m = open_archive(archive).manifest
    lora = m["lora"]
    out.update({"archive_bytes": archive.stat().st_size, "images": m["images"]["count"],
                "image_size": m["images"]["size"], "factor": m["images"]["factor"],
                "archive_lora_numbers": lora["parameters"],
                "archive_encoder_targets": sum(1 for t in lora["targets"] if t["kind"] == "conv2d"),
                "fidelity": {k: m.get("fidelity", {}).get(k) for k in ("agreement", "kl", "images")},
                "build_messages": [s for s in rec.messages if "allow-short" in s or "warning" in s][:3]})
    rec.messages.clear()
    out["label_cost"] = label_cost(archive, weights)
    out["train"] = {}
    for arch in (args.archs if name == "RN50" else args.archs[:1]):
        rec.prefix = f"{name} {arch}: "
        n = len(rec.rows)
        res = train(TrainConfig(archive=str(archive), arch=arch, out=str(tmp / f"run-{key}-{arch}"), device="cpu",
                                epochs=100, max_steps=args.train_steps, eval_every=10**6, clip_weights=str(weights)),
                    rec)
        losses = [v for r in rec.rows[n:] if r["stage"].endswith("train") for v in r.get("losses", [])]
        t1 = time.perf_counter()
        fixed = fixed_batch_losses(archive, weights, arch, float(res["recipe"]["lr"]), args.fixed_steps)
        out["train"][arch] = {"steps": res["timing"]["steps"], "batch_size": res["recipe"]["batch_size"],
                              "lr": res["recipe"]["lr"], "image_size": res["recipe"]["image_size"],
                              "losses": losses, "fixed_batch_losses": fixed,
                              "fixed_batch_seconds": round(time.perf_counter() - t1, 1),
                              "loss_falls": len(fixed) >= 4 and sum(fixed[-3:]) / 3 < fixed[0],
                              "finite": all(v == v and abs(v) != float("inf") for v in losses + fixed)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def markdown(res: dict) -> str:
    meta = res["meta"]
    lines = ["# Real shapes on the CPU: full-size bases at 224 px on real photographs", "",
             f"`{meta['command']}`, {meta['date']}, torch {meta['torch']}, {meta['threads']} threads, "
             f"{meta['classes']} ImageNet classes (one photograph each), IPC 1, factor 2, image update "
             f"{meta['update_steps']} steps, {meta['train_steps']} training steps per architecture. Random seeded "
             f"base weights (`--clip-weights FILE --pretrained openai`), a random ResNet-18 teacher in "
             f"torchvision's train.py checkpoint format. Total {meta['seconds']} s.", "",
             "| base | LoRA targets in the image tower | ImageNet-1K LoRA numbers | this archive's numbers | "
             "archive bytes | CPU s per label at 224 px | labels finite |", "|---|---|---|---|---|---|---|"]
    for b in res["bases"]:
        if "error" in b:
            lines.append(f"| {b['base']} | error: `{b['error']}` | | | | | |")
            continue
        lc = b["label_cost"]
        lines.append(f"| {b['base']} | {b['encoder_targets']} | {b['in1k_numbers']:,} | {b['archive_lora_numbers']:,} "
                     f"| {b['archive_bytes']:,} | {lc['cpu_s_per_label']} ({lc['threads']} threads) | "
                     f"{lc['labels_finite']} |")
    lines += ["", "`train` runs the student for a few augmented steps (CutMix, patch shuffle): with random base "
              "weights its loss is noise. The falling-loss check is a fixed batch of up to 8 archive images without "
              f"augmentation and with dropout off, {meta.get('fixed_steps', 10)} AdamW steps at the recipe's lr "
              "(the first steps overshoot), the first loss against the mean of the last three.", "",
              "| base | student | train steps | batch | lr | train loss per step | fixed-batch loss first -> last | "
              "falls |", "|---|---|---|---|---|---|---|---|"]
    for b in res["bases"]:
        for arch, t in b.get("train", {}).items():
            fx = t["fixed_batch_losses"]
            first_last = f"{fx[0]:.4f} -> {fx[-1]:.4f}" if fx else "-"
            steps = ", ".join(f"{v:.4f}" for v in t["losses"])
            lines.append(f"| {b['base']} | {arch} | {t['steps']} | {t['batch_size']} | {t['lr']} | {steps} | "
                         f"{first_last} | {t['loss_falls']} |")
    lines += ["", "| stage | items | wall s | CPU s | peak RSS MiB |", "|---|---|---|---|---|"]
    for r in res["stages"]:
        lines.append(f"| {r['stage']} | {r['items']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mib']} |")
    lines += ["", "Checks: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in res["checks"].items()) + ".",
              "", "Peak RSS is the process's high-water mark since the stage started (VmHWM reset at its start): "
              "it includes what earlier stages left allocated."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--bases", default=",".join(BASES))
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--fixed-steps", type=int, default=30,
                   help="steps on one fixed batch for the falling-loss check (AdamW's first steps overshoot)")
    p.add_argument("--update-steps", type=int, default=1)
    p.add_argument("--batch", type=int, default=16, help="fit and scoring batch")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--render", action="store_true", help="rewrite OUT_DIR/realshape.md from its .json; run nothing")
    args = p.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    if args.render:
        res = json.loads((Path(args.out_dir) / "realshape.json").read_text())
        (Path(args.out_dir) / "realshape.md").write_text(markdown(res))
        return 0
    if not (SAMPLE / "train").is_dir():
        print(f"realshape: {SAMPLE} not found; set HELLOPACK_SHARED", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rec = StageRecorder()
    bases = []
    with tempfile.TemporaryDirectory(prefix="realshape-") as d:
        data = sample_folder(Path(d) / "imagenet", args.classes)
        for name in [b for b in args.bases.split(",") if b]:
            tmp = Path(d) / name
            tmp.mkdir()
            try:
                bases.append(run_base(name, args, data, tmp, rec))
            except Exception as e:  # noqa: BLE001 - one base failing still reports the other
                bases.append({"base": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            for f in tmp.glob("*.safetensors"):
                f.unlink()  # hundreds of MB each
    checks: dict[str, bool] = {}
    for b in bases:
        if "error" in b:
            checks[f"{b['base']} ran"] = False
            continue
        if b["base"] == "RN50":
            checks["RN50 55 conv targets"] = b["encoder_targets"] == RN50_CONVS == b["archive_encoder_targets"]
            checks["RN50 ImageNet-1K payload 898,776"] = b["in1k_numbers"] == IN1K_PAYLOAD
        checks[f"{b['base']} labels finite"] = b["label_cost"]["labels_finite"]
        for arch, t in b["train"].items():
            checks[f"{b['base']} {arch} loss finite and falls"] = t["finite"] and t["loss_falls"]
    res = {"meta": {"command": "python benchmarks/realshape.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "classes": args.classes, "update_steps": args.update_steps,
                    "train_steps": args.train_steps, "fixed_steps": args.fixed_steps, "seconds": round(time.perf_counter() - t0, 1)},
           "bases": bases, "stages": rec.rows, "checks": checks}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "realshape.json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    (out / "realshape.md").write_text(md)
    print(md)
    return 0 if checks and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
