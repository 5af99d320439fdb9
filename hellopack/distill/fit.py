"""Fit the projector's LoRA factors to the weak teachers, resumable to the exact same bytes.

Loss: MSE(projector(x), mean teacher logits(x)) + lam * CE(projector(x), y) over the
original training set, AdamW on the LoRA factors only, cosine learning rate per step.
The training augmentation comes from ``make_loader(train=True)`` and the same augmented
batch goes to the teachers and the projector.

Resume: every ``checkpoint_every`` steps and at the end of every epoch, rank 0 writes one
safetensors file (LoRA, AdamW moments, RNG state; the step and config key in its metadata)
atomically. A restarted fit loads it, replays the data stream of the current epoch up to the
saved step (epoch order is a pure function of the seed and the epoch), and continues: the
final factors are bit-identical to an uninterrupted run on the same device.

Under torchrun each rank reads its shard (``make_loader(rank, world)``), gradients are
averaged with an all-reduce, and every rank does the same number of steps per epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hellopack import dist
from hellopack.device import autocast
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import Reporter
from hellopack.schedule import COSINE, lr_factor

CHECKPOINT = "fit-state.safetensors"

LoaderFactory = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> batches


@dataclass(frozen=True)
class FitParams:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    lam: float
    checkpoint_every: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def steps_per_epoch(num_samples: int, batch_size: int, world: int) -> int:
    """Planned batches per epoch: the smallest rank share (rank r holds len(range(r, N, world)))."""
    per_rank = num_samples // world
    if per_rank < 2:
        raise HellopackError(f"{num_samples} training images are too few to fit the projector on {world} "
                             f"process(es); use more data or fewer processes")
    return -(-per_rank // batch_size)


def cosine_lr(base: float, step: int, total: int) -> float:
    return base * lr_factor(COSINE, step, total)


def fit_loss(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    return F.mse_loss(logits, target) + lam * F.cross_entropy(logits, labels)


# ---- checkpoint -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Position:
    """Where the fit stands: ``step`` optimizer steps done, next batch ``batch`` of epoch ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"opt.{i}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return out


def save_checkpoint(path: Path, key: str, pos: Position, params: list[nn.Parameter], names: list[str],
                    opt: torch.optim.Optimizer) -> None:
    """One safetensors file, written atomically: factors, AdamW moments, RNG; position in the metadata."""
    tensors = {f"lora.{n}": p.detach().cpu().contiguous() for n, p in zip(names, params)}
    tensors.update(_optimizer_tensors(opt))
    tensors["rng.cpu"] = torch.get_rng_state()
    meta = {"key": key, "step": pos.step, "epoch": pos.epoch, "batch": pos.batch}
    atomic_write_bytes(path, st_save(tensors, metadata={"hellopack.fit": json.dumps(meta)}))


def read_checkpoint(path: Path, key: str) -> tuple[Position, dict[str, torch.Tensor]] | None:
    """(position, tensors) when ``path`` holds a checkpoint of this fit (same key), else None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["hellopack.fit"])
        tensors = st_load(data)
        pos = Position(int(meta["step"]), int(meta["epoch"]), int(meta["batch"]))
    except (ValueError, KeyError, TypeError, SafetensorError):  # damaged or foreign: start over
        return None
    return (pos, tensors) if meta.get("key") == key else None


def _restore(tensors: dict[str, torch.Tensor], params: list[nn.Parameter], names: list[str],
             opt: torch.optim.Optimizer) -> None:
    with torch.no_grad():
        for n, p in zip(names, params):
            p.copy_(tensors[f"lora.{n}"].to(p.device, p.dtype))
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    torch.set_rng_state(tensors["rng.cpu"])


def _broadcast_checkpoint(found: tuple[Position, dict[str, torch.Tensor]] | None,
                          ) -> tuple[Position, dict[str, torch.Tensor]] | None:
    """Rank 0 read the checkpoint; every rank needs it (the work directory need not be shared)."""
    if not dist.current().enabled:
        return found
    payload = None if found is None else (found[0], {k: v.numpy() for k, v in found[1].items()})
    payload = dist.broadcast_object(payload if dist.current().is_main else None)
    if payload is None:
        return None
    pos, arrays = payload  # type: ignore[misc]
    return pos, {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """One all-reduce over all LoRA gradients (what DDP does, without wrapping the frozen tower)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce_sum(flat).div_(world)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _all_have_batch(has: bool) -> bool:
    """Under torchrun every rank must take the same steps: stop when any rank's shard runs out."""
    info = dist.current()
    if not info.enabled:
        return has
    flag = torch.tensor([1.0 if has else 0.0])
    return int(dist.all_reduce_sum(flag).item()) == info.world_size


# ---- the fit --------------------------------------------------------------------------------

def fit_projector(projector: nn.Module, teachers: nn.Module, batches_for_epoch: LoaderFactory, params: FitParams,
                  ckpt_dir: Path, key: str, device: torch.device, reporter: Reporter,
                  memory_format: torch.memory_format = torch.contiguous_format,
                  bf16: bool | None = None) -> dict[str, Any]:
    """Train the LoRA factors of ``projector`` in place; returns {"steps", "final_loss", "resumed_from"}.

    ``projector`` must offer ``trainable_parameters()`` and ``lora_modules()`` (hellopack Projector);
    ``params.steps_per_epoch`` plans the cosine schedule (an epoch ends early if the data does).
    """
    info = dist.current()
    train_params: list[nn.Parameter] = list(projector.trainable_parameters())
    names = [f"{n}.{k}" for n, m in projector.lora_modules().items() for k in ("lora_A", "lora_B")]
    for p in train_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(train_params, lr=params.lr, weight_decay=params.weight_decay)
    ckpt = ckpt_dir / CHECKPOINT
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    found = _broadcast_checkpoint(read_checkpoint(ckpt, key) if info.is_main else None)
    pos = Position()
    if found is not None:
        pos, tensors = found
        _restore(tensors, train_params, names, opt)
        reporter.info(f"fit: resuming at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch})")

    projector.train()  # the Projector keeps its frozen image tower in eval mode itself
    last_loss = float("nan")
    step = pos.step
    with reporter.stage("fit projector", total=params.total_steps, unit="step") as bar:
        if step:
            bar.advance(step)
        for epoch in range(pos.epoch, params.epochs):
            skip = pos.batch if epoch == pos.epoch else 0
            it = iter(batches_for_epoch(epoch))
            i = 0
            while True:
                batch = next(it, None)
                if not _all_have_batch(batch is not None):
                    break
                assert batch is not None
                i += 1
                if i <= skip:  # replayed: already trained before the restart
                    continue
                x = batch[0].to(device, non_blocking=True).contiguous(memory_format=memory_format)
                y = batch[1].to(device, non_blocking=True)
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(params.lr, step, params.total_steps)
                with autocast(device, bf16):
                    target = teachers(x).float()
                    logits = projector(x).float()
                loss = fit_loss(logits, target, y, params.lam)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if info.enabled:
                    _average_gradients(train_params, info.world_size)
                opt.step()
                step += 1
                last_loss = float(loss.detach())
                bar.advance(1, loss=round(last_loss, 4), epoch=epoch + 1)
                if info.is_main and step % params.checkpoint_every == 0:
                    save_checkpoint(ckpt, key, Position(step, epoch, i), train_params, names, opt)
            if info.is_main:
                save_checkpoint(ckpt, key, Position(step, epoch + 1, 0), train_params, names, opt)
    projector.eval()
    for p in train_params:
        p.requires_grad_(False)
    return {"steps": step, "final_loss": last_loss, "resumed_from": pos.step}


@torch.no_grad()
def fidelity(projector: nn.Module, teachers: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, reporter: Reporter, total: int | None = None,
             memory_format: torch.memory_format = torch.contiguous_format, bf16: bool | None = None,
             reduce: bool = True) -> dict[str, Any]:
    """Agreement of projector and teacher-mean top-1, mean KL(teacher || projector), both top-1s.

    Sums are all-reduced, so under torchrun every rank passes its own shard of held-out images;
    ``reduce=False`` when one process alone measures all of them (the others would never join).
    """
    projector.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # images, agree, kl, projector correct, teacher correct
    with reporter.stage("fidelity", total=total, unit="img") as bar:
        for x, y in batches:
            x = x.to(device).contiguous(memory_format=memory_format)
            y = y.to(device)
            with autocast(device, bf16):
                t = teachers(x).float()
                p = projector(x).float()
            logp_t, logp_p = F.log_softmax(t, 1), F.log_softmax(p, 1)
            kl = (logp_t.exp() * (logp_t - logp_p)).sum(1)
            pt, pp = t.argmax(1), p.argmax(1)
            sums += torch.tensor([len(y), (pt == pp).sum().item(), kl.double().sum().item(),
                                  (pp == y).sum().item(), (pt == y).sum().item()], dtype=torch.float64)
            bar.advance(len(y))
    if reduce:
        dist.all_reduce_sum(sums)
    n = int(sums[0])
    if n == 0:
        return {"agreement": 0.0, "kl": 0.0, "projector_top1": 0.0, "teacher_top1": 0.0, "images": 0}
    return {"agreement": round(float(sums[1]) / n, 6), "kl": round(float(sums[2]) / n, 6),
            "projector_top1": round(float(sums[3]) / n, 6), "teacher_top1": round(float(sums[4]) / n, 6),
            "images": n}


__all__ = ["FitParams", "fit_projector", "fidelity", "steps_per_epoch", "cosine_lr", "fit_loss", "CHECKPOINT"]
