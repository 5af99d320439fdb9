"""NT-Xent: exact values, the cross-process gather, and that training lowers it."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from hellopack.pretrain.objective import ProjectionHead, nt_xent




def _reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """NT-Xent written out anchor by anchor (SimCLR, eq. 1)."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2, n = len(z), len(z1)
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sims = [math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / sum(sims))
    return total / n2


def test_orthogonal_pairs_give_the_closed_form() -> None:
    e = torch.eye(2)
    # each anchor: positive similarity 1, two negatives at 0 -> log(1 + 2 e^{-1/t})
    assert nt_xent(e, e, temperature=0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), abs=1e-6)


def test_matches_the_written_out_formula() -> None:
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for t in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, temperature=t).item() == pytest.approx(_reference(z1, z2, t), rel=1e-5)


def test_matched_views_score_lower_than_shuffled_ones() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 8, generator=g)
    z2 = z1 + 0.05 * torch.randn(16, 8, generator=g)
    assert nt_xent(z1, z2).item() < nt_xent(z1, z2[torch.randperm(16, generator=g)]).item() - 1.0


def test_loss_decreases_over_a_few_steps_on_synthetic_images() -> None:
    from hellopack.data import open_source
    from hellopack.models.base import load_base
    from hellopack.pretrain.augment import view_transform
    from hellopack.pretrain.images import UnlabeledImages, two_view_batches
    from hellopack.pretrain.loop import SimCLRNet

    src = open_source("synthetic", synthetic={"per_class": 4, "test_per_class": 1})
    tf = view_transform(32)
    _, x1, x2 = next(two_view_batches(UnlabeledImages(src), tf, 32, 1, seed=0, epoch=0))
    torch.manual_seed(0)
    net = SimCLRNet(load_base("hellopack-tiny-vit"), 64, 32, seed=0).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        z = net(torch.cat([x1, x2]))
        loss = nt_xent(z[:32], z[32:], 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_projection_head_shapes() -> None:
    assert ProjectionHead(64, 32, 16)(torch.randn(4, 64)).shape == (4, 16)


# ---- two processes (gloo): the gathered loss equals the one-process loss of the global batch ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, z1: torch.Tensor, z2: torch.Tensor, queue) -> None:
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        a = z1[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        b = z2[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        loss = nt_xent(a, b, 0.5)
        loss.backward()
        queue.put((rank, (loss.item(), a.grad.numpy().copy(), b.grad.numpy().copy())))
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_gather_across_two_processes_matches_the_global_batch() -> None:
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    full1, full2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full = nt_xent(full1, full2, 0.5, gather_ranks=False)
    full.backward()

    queue = mp.get_context("spawn").SimpleQueue()  # fork can deadlock once torch's thread pool has run
    mp.spawn(_worker, args=(_free_port(), z1, z2, queue), nprocs=2, join=True)
    results = dict(queue.get() for _ in range(2))
    # mean of the per-process losses == global loss; each process's gradient for its own rows,
    # averaged over processes as DDP does, == the global loss's gradient for those rows
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(full.item(), rel=1e-6)
    for rank in (0, 1):
        rows = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(torch.from_numpy(results[rank][1]) / 2, full1.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(torch.from_numpy(results[rank][2]) / 2, full2.grad[rows], rtol=1e-5, atol=1e-7)
