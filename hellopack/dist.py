"""Process-group helpers for DDP under ``torchrun`` (NCCL on GPUs, gloo on CPU).

Outside ``torchrun`` everything degrades to a single process: rank 0 of 1.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a single process."""
    if not launched_by_torchrun():
        return DistInfo()
    if not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend)
    info = DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


@contextmanager
def session(device_spec: str) -> Iterator[tuple[torch.device, DistInfo]]:
    """Resolve ``--device`` and, when launched by torchrun, join the process group for the run.

    The group is left again at the end only when this call joined it (a caller that set it up
    keeps it). On CUDA each process takes ``cuda:LOCAL_RANK`` (one GPU per process under torchrun,
    ``cuda:0`` alone); an explicit ``cuda:N`` outside torchrun is kept.
    """
    from hellopack.device import resolve_device

    device = resolve_device(device_spec)
    joined = launched_by_torchrun() and not (tdist.is_available() and tdist.is_initialized())
    info = init(device)
    if device.type == "cuda" and (device.index is None or info.enabled):
        device = torch.device("cuda", info.local_rank)
    try:
        yield device, info
    finally:
        if joined:
            cleanup()


def current() -> DistInfo:
    if tdist.is_available() and tdist.is_initialized():
        return DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes in place (no-op for one process)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: object) -> list:
    """Gather one picklable object per process (process-local data only, never archive content)."""
    if tdist.is_available() and tdist.is_initialized():
        out: list = [None] * tdist.get_world_size()
        tdist.all_gather_object(out, obj)
        return out
    return [obj]


def broadcast_object(obj: object, src: int = 0) -> object:
    if tdist.is_available() and tdist.is_initialized():
        box = [obj]
        tdist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def cleanup() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
