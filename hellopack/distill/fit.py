"""Fit the projector's LoRA factors to the weak teachers, resumable to the exact same bytes.

Loss: MSE(projector(x), mean teacher logits(x)) + lam * CE(projector(x), y) over the
original training set, AdamW on the LoRA factors only, cosine learning rate per step.
The training augmentation comes from ``make_loader(train=True)`` and the same augmented
batch goes to the teachers and the projector.

Resume: every ``checkpoint_every`` steps and at the end of every epoch, rank 0 writes a
hellopack.statefile checkpoint (LoRA, AdamW state, RNG state; the step and config key in its
meta) atomically. A restarted fit loads it, replays the data stream of the current epoch up to the
saved step (epoch order is a pure function of the seed and the epoch), and continues: the
final factors are bit-identical to an uninterrupted run on the same device.

Under torchrun each rank reads its shard (``make_loader(rank, world)``), gradients are
averaged with an all-reduce, and every rank does the same number of steps per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hellopack import dist, statefile
from hellopack.device import autocast
from hellopack.errors import HellopackError
from hellopack.progress import Reporter
from hellopack.schedule import COSINE, lr_factor
from hellopack.train.core import TrainStep

CHECKPOINT = "fit-state.safetensors"

LoaderFactory = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> batches


@dataclass(frozen=True)
class Numerics:
    """How batches meet the device: memory layout (channels_last on CUDA) and bf16 autocast (None: on CUDA)."""

    memory_format: torch.memory_format = torch.contiguous_format
    bf16: bool | None = None


@dataclass(frozen=True)
class FitParams:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    lam: float
    checkpoint_every: int
    steps_per_epoch: int
    numerics: Numerics = Numerics()

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


def save_checkpoint(path: Path, key: str, pos: Position, lora: dict[str, nn.Parameter],
                    opt: torch.optim.Optimizer) -> None:
    """Through hellopack.statefile (atomic): the factors, AdamW's state, the CPU RNG; key and position in meta."""
    meta = {"key": key, "step": pos.step, "epoch": pos.epoch, "batch": pos.batch}
    statefile.save(path.parent, _state_name(path), dict(lora), opt, None, meta,
                   extra={"rng.cpu": torch.get_rng_state()})


def read_checkpoint(path: Path, key: str) -> tuple[Position, statefile.TrainingState] | None:
    """(position, state) when ``path`` holds a checkpoint of this fit (same key), else None."""
    if not path.is_file():
        return None
    try:
        state = statefile.load(path.parent, _state_name(path))
        meta = state.meta
        pos = Position(int(meta["step"]), int(meta["epoch"]), int(meta["batch"]))
    except (HellopackError, ValueError, KeyError, TypeError):  # damaged or foreign: start over
        return None
    return (pos, state) if meta.get("key") == key else None


def _state_name(path: Path) -> str:
    return path.name.removesuffix(".safetensors")


def _restore(state: statefile.TrainingState, lora: dict[str, nn.Parameter], opt: torch.optim.Optimizer) -> None:
    with torch.no_grad():
        for n, p in lora.items():
            p.copy_(state.model[n].to(p.device, p.dtype))
    opt.load_state_dict(state.optimizer)
    torch.set_rng_state(state.extra["rng.cpu"])


def _broadcast_checkpoint(found: tuple[Position, statefile.TrainingState] | None,
                          ) -> tuple[Position, statefile.TrainingState] | None:
    """Rank 0 read the checkpoint; every rank needs it (the work directory need not be shared)."""
    if not dist.current().enabled:
        return found
    return dist.broadcast_object(found if dist.current().is_main else None)  # type: ignore[return-value]


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
                  ckpt_dir: Path, key: str, device: torch.device, reporter: Reporter) -> dict[str, Any]:
    """Train the LoRA factors of ``projector`` in place; returns {"steps", "final_loss", "resumed_from"}.

    ``projector`` must offer ``trainable_parameters()`` and ``lora_modules()`` (hellopack Projector);
    ``params.steps_per_epoch`` plans the cosine schedule (an epoch ends early if the data does).
    """
    info = dist.current()
    memory_format, bf16 = params.numerics.memory_format, params.numerics.bf16
    train_params: list[nn.Parameter] = list(projector.trainable_parameters())
    names = [f"{n}.{k}" for n, m in projector.lora_modules().items() for k in ("lora_A", "lora_B")]
    lora = dict(zip(names, train_params))
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
        _restore(tensors, lora, opt)
        reporter.info(f"fit: resuming at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch})")

    projector.train()  # the Projector keeps its frozen image tower in eval mode itself

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = batch[0].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = batch[1].to(device, non_blocking=True)
        with autocast(device, bf16):
            target = teachers(x).float()
            logits = projector(x).float()
        return fit_loss(logits, target, y, params.lam)

    train_step = TrainStep(opt, loss_fn, lr=lambda step: cosine_lr(params.lr, step, params.total_steps),
                           sync_grads=(lambda: _average_gradients(train_params, info.world_size))
                           if info.enabled else None)
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
                last_loss = train_step(batch, step)
                step += 1
                bar.advance(1, loss=round(last_loss, 4), epoch=epoch + 1)
                if info.is_main and step % params.checkpoint_every == 0:
                    save_checkpoint(ckpt, key, Position(step, epoch, i), lora, opt)
            if info.is_main:
                save_checkpoint(ckpt, key, Position(step, epoch + 1, 0), lora, opt)
    projector.eval()
    for p in train_params:
        p.requires_grad_(False)
    return {"steps": step, "final_loss": last_loss, "resumed_from": pos.step}


@torch.no_grad()
def fidelity(projector: nn.Module, teachers: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, reporter: Reporter, total: int | None = None,
             numerics: Numerics = Numerics(), reduce: bool = True) -> dict[str, Any]:
    """Agreement of projector and teacher-mean top-1, mean KL(teacher || projector), both top-1s.

    Sums are all-reduced, so under torchrun every rank passes its own shard of held-out images;
    ``reduce=False`` when one process alone measures all of them (the others would never join).
    """
    memory_format, bf16 = numerics.memory_format, numerics.bf16
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


__all__ = ["FitParams", "Numerics", "fit_projector", "fidelity", "steps_per_epoch", "cosine_lr", "fit_loss", "CHECKPOINT"]
