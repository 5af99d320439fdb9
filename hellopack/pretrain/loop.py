"""`hellopack pretrain-base`: SimCLR on unlabeled images, writing a base for `--clip-weights`.

Read top to bottom: check the output paths, open the images (labels dropped by
:class:`UnlabeledImages`), build image tower + projection head, resume from the work
folder if asked, then per epoch: two augmented views of every image -> tower -> head ->
NT-Xent -> AdamW step (warmup + cosine per step); checkpoint after every epoch. Finally
write the full open_clip state dict with the pretrained tower (the head is dropped),
its fingerprint beside it, and optionally a linear probe of the result.

The tower trains in train mode, so its BatchNorm running statistics are learned too
(the projector later uses them frozen). Under DDP (torchrun; gloo on CPU) each process
takes every world-th image, the contrastive batch is the global one (embeddings
gathered), and BatchNorm statistics are per process (buffers broadcast from rank 0,
DDP's default); SyncBatchNorm would need CUDA.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from hellopack import device as devices
from hellopack import dist
from hellopack.data import Shard
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.models.base import BaseModel, load_base
from hellopack.models.common import ResizeNormalize
from hellopack.pretrain import checkpoint as ckpt
from hellopack.pretrain.augment import view_transform
from hellopack.pretrain.config import OBJECTIVE, PretrainConfig
from hellopack.pretrain.images import UnlabeledImages, mix, two_view_batches
from hellopack.pretrain.objective import ProjectionHead, nt_xent
from hellopack.pretrain.output import sha256_path, write_base
from hellopack.progress import NULL, Reporter
from hellopack.schedule import WARMUP_COSINE, lambda_lr
from hellopack.train.core import TrainStep, run_steps
from hellopack.train.run import Placement

RESULT = "result.json"


class SimCLRNet(nn.Module):
    """Resize + normalise (as the projector does), the open_clip image tower, the projection head."""

    def __init__(self, base: BaseModel, hidden: int, out_dim: int, seed: int) -> None:
        super().__init__()
        self.prep = ResizeNormalize(base.image_size, base.mean, base.std)
        self.visual = base.model.visual.requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix(seed, 0x68656164))
            self.head = ProjectionHead(base.embed_dim, hidden, out_dim)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(self.prep(x01)))


def pretrain(cfg: PretrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Pretrain, write ``cfg.out`` and ``cfg.out + '.sha256'``; return the result (also WORK/result.json)."""
    with dist.session(cfg.device) as (device, info):
        result = _pretrain(cfg, reporter if info.is_main else NULL, device, info)
        return dist.broadcast_object(result)  # type: ignore[return-value]


def _pretrain(cfg: PretrainConfig, reporter: Reporter, device: torch.device, info: dist.DistInfo) -> dict[str, Any]:
    from hellopack.data import open_source

    started = time.perf_counter()
    out, work = Path(cfg.out), cfg.resolved_work_dir()
    _check_paths(cfg, out, work)
    src = open_source(cfg.recipe, cfg.data_dir, split="train", classes_file=cfg.classes_file,
                      download=cfg.download, max_bad_fraction=cfg.max_bad_fraction, synthetic=cfg.synthetic)
    images = UnlabeledImages(src, cfg.max_images)
    n = images.num_images
    if n is None:
        raise HellopackError(f"cannot count the images of '{src.where}' without reading them; pass --max-images N")
    steps = (n // info.world_size) // cfg.batch_size
    if steps == 0:
        raise HellopackError(f"{n} images are fewer than one batch of {cfg.batch_size} per process "
                             f"({info.world_size} processes); lower --batch-size")
    probe_sources = _probe_sources(cfg) if cfg.probe_train > 0 and info.is_main else None  # fail fast
    view_size = cfg.image_size or src.image_size
    tf = view_transform(view_size, cfg.crop_scale, cfg.jitter, cfg.blur)

    net = SimCLRNet(load_base(cfg.config, pretrained=None), cfg.proj_hidden, cfg.proj_dim, cfg.seed)
    net.to(device=device, memory_format=devices.memory_format(device))
    optimizer = _optimizer(net, cfg.resolved_lr(info.world_size), cfg.weight_decay)
    total = steps * cfg.epochs
    scheduler = lambda_lr(optimizer, WARMUP_COSINE, total, warmup=round(cfg.warmup * total))
    identity = {**cfg.identity(), "world_size": info.world_size}  # batches and lr depend on it
    start, history, elapsed = 0, [], 0.0
    if cfg.resume and ckpt.exists(work):
        start, history, elapsed = _restore(ckpt.load(work), net, optimizer, scheduler, identity, work, device)
        reporter.info(f"resuming from epoch {start} of {cfg.epochs} ({work})")
    reporter.info(f"pretraining {cfg.config} on {n:,} images of {src.description}: SimCLR, {cfg.epochs} "
                  f"epoch{'s' if cfg.epochs != 1 else ''} x {steps} step{'s' if steps != 1 else ''} "
                  f"of {cfg.batch_size * info.world_size} images ({view_size} px views)")

    model: nn.Module = net
    if info.enabled:
        ids = [device.index or 0] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        loss_mean = _epoch(cfg, model, optimizer, scheduler, _Views(images, tf, steps), epoch,
                           Placement(device, info, reporter))
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": loss_mean, "lr": scheduler.get_last_lr()[0]})
        if info.is_main:
            ckpt.save(work, net, optimizer, scheduler, {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                                                          "identity": identity, "history": history,
                                                          "seconds": elapsed})
        dist.barrier()
        reporter.info(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_mean:.4f}; checkpoint in {work}")

    result: dict[str, Any] = {}
    if info.is_main:
        meta = {"epochs": str(cfg.epochs), "objective": OBJECTIVE, "temperature": str(cfg.temperature),
                "dataset": f"{src.recipe}:{src.name}", "images": str(n), "seed": str(cfg.seed),
                "final_loss": f"{history[-1]['loss']:.6f}" if history else "", "tool": "hellopack pretrain-base"}
        base = write_base(out, cfg.config, net.visual.state_dict(), meta)
        result = {"out": str(out), "sha256_file": str(sha256_path(out)), "fingerprint": base.fingerprint,
                  "bytes": base.bytes, "config": cfg.config, "epochs": cfg.epochs, "objective": OBJECTIVE,
                  "images": n, "steps": total, "global_batch": cfg.batch_size * info.world_size,
                  "world_size": info.world_size, "seconds": round(elapsed, 3),  # training epochs, all runs
                  "history": history,
                  "work_dir": str(work), "probe": None, "settings": cfg.to_json()}
        if probe_sources is not None:
            result["probe"] = _probe(cfg, base, probe_sources, device, reporter)
        result["wall_seconds"] = round(time.perf_counter() - started, 3)  # this invocation, probe included
        atomic_write_bytes(work / RESULT, (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    dist.barrier()
    return result


@dataclass(frozen=True)
class _Views:
    """What an epoch reads: the images, the two-view transform, and how many steps it takes."""

    images: UnlabeledImages
    tf: Any
    steps: int


def _epoch(cfg: PretrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, views: _Views,
           epoch: int, where: Placement) -> float:
    images, tf, steps = views.images, views.tf, views.steps
    device, info, reporter = where.device, where.info, where.reporter
    model.train()
    batches = two_view_batches(images, tf, cfg.batch_size, steps, cfg.seed, epoch, Shard(info.rank, info.world_size),
                               cfg.workers)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    fmt = devices.memory_format(device)

    def available() -> Iterator[tuple[int, Any]]:
        for index in range(steps):
            batch = next(batches, None)
            if info.enabled:  # a process short of images (bad files) ends the epoch for everyone
                more = torch.tensor([0 if batch is None else 1], device=device)
                torch.distributed.all_reduce(more, op=torch.distributed.ReduceOp.MIN)
                if int(more.item()) == 0:
                    return
            elif batch is None:
                return
            yield index, batch

    def loss_fn(batch: Any) -> torch.Tensor:
        _, x1, x2 = batch
        x = torch.cat([x1, x2]).to(device, non_blocking=True).contiguous(memory_format=fmt)
        with devices.autocast(device):
            z = model(x)
        return nt_xent(z[: len(x1)], z[len(x1):], cfg.temperature)

    def diverged(index: int, value: float) -> None:
        raise HellopackError(f"the loss became {value} at epoch {epoch + 1}; lower --lr or raise --temperature")

    train_step = TrainStep(optimizer, loss_fn, scheduler=scheduler, diverged=diverged)
    with reporter.stage(f"epoch {epoch + 1}/{cfg.epochs}", total=steps, unit="step") as stage:
        def on_step(index: int, value: float) -> None:
            nonlocal loss_sum
            loss_sum += value
            stage.advance(1, loss=value, lr=scheduler.get_last_lr()[0])

        done = run_steps(train_step, available(), on_step)
    batches.close()
    stats = torch.tensor([float(loss_sum), float(done)], dtype=torch.float64, device=device)
    dist.all_reduce_sum(stats)
    return float(stats[0] / max(stats[1].item(), 1.0))


def _optimizer(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation parameters (SimCLR's convention).
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


def _check_paths(cfg: PretrainConfig, out: Path, work: Path) -> None:
    """Fail before any training on paths that would fail after it."""
    if not out.parent.is_dir():
        raise HellopackError(f"output folder '{out.parent}' does not exist; create it or choose another --out")
    if out.exists() and not (cfg.force or cfg.resume):
        raise HellopackError(f"'{out}' already exists; pass --force to replace it or choose another --out")
    if ckpt.exists(work) and not cfg.resume:
        raise HellopackError(f"work folder '{work}' holds a checkpoint; pass --resume to continue it "
                             f"or delete the folder to start over")


def _restore(state: ckpt.State, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             identity: dict[str, Any], work: Path, device: torch.device) -> tuple[int, list, float]:
    saved = state.meta.get("identity", {})
    diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if diff:
        k = diff[0]
        raise HellopackError(f"cannot resume from '{work}': it was made with {k}={saved.get(k)!r}, this run has "
                             f"{k}={identity.get(k)!r}; use the same settings or delete the folder to start over")
    net.load_state_dict({k: v.to(device) for k, v in state.model.items()}, strict=True)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    return int(state.meta["epoch"]), list(state.meta.get("history", [])), float(state.meta.get("seconds", 0.0))


def _probe_sources(cfg: PretrainConfig) -> tuple[Any, Any]:
    """The labelled train and test sources of the linear probe, opened apart from the pretraining's."""
    from hellopack.data import open_source

    kw: dict[str, Any] = dict(classes_file=cfg.classes_file, download=cfg.download,
                              max_bad_fraction=cfg.max_bad_fraction, synthetic=cfg.synthetic)
    return (open_source(cfg.recipe, cfg.data_dir, split="train", **kw),
            open_source(cfg.recipe, cfg.data_dir, split="test", **kw))


def _probe(cfg: PretrainConfig, base: BaseModel, sources: tuple[Any, Any], device: torch.device,
           reporter: Reporter) -> dict[str, Any]:
    """Linear probe (reads labels), run after the base is written."""
    from hellopack.pretrain.probe import linear_probe

    train_src, test_src = sources
    result = linear_probe(base, train_src, test_src, cfg.probe_train, cfg.probe_test, device=device,
                          reporter=reporter)
    reporter.info(f"linear probe: top-1 {result['top1']:.2%} ({result['train_images']} train, "
                  f"{result['test_images']} test images)")
    return result
