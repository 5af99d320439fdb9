"""torch's global CPU generator, seeded for one block and restored after it.

Per-sample augmentations (the data loader's training views, SimCLR's two views, the crops the
select stage scores, train's views and batch mix) draw from torch's global generator, so each one
runs inside ``fork_rng`` with its own seed. ``torch.manual_seed`` would also seed every accelerator
backend (CUDA, XPU, MTIA): before CUDA is initialised each of those calls is queued together with a
formatted stack trace, about 1 ms per sample on this CPU (1.1 ms of the 9 ms one SimCLR image cost
in issue 18's profile) and a queue that grows by one trace per sample. Once CUDA is up it would
reseed the GPU generators on every sample. The transforms run on the CPU, so the CPU generator alone
is seeded: the same draws, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Inside the block torch's global CPU generator starts from ``seed``; after it, its state is as before."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield
