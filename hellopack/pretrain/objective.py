"""SimCLR's objective: a projection MLP and the NT-Xent (normalised temperature-scaled
cross-entropy, InfoNCE) loss over two views of every image.

For N images the 2N views form N positive pairs; each view's negatives are the other
2N - 2 views. Under DDP the embeddings of every process are gathered (the negatives are
the whole global batch, as in SimCLR) and each process computes the loss of its own
anchors against all of them. The gather keeps gradients for the local slice: its
backward sums every process's gradient with respect to that slice (all-reduce, which
every backend has), so with DDP's gradient averaging the update equals that of the
mean loss over the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR's g(.): Linear -> BatchNorm -> ReLU -> Linear, used only while pretraining."""

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = tdist.get_world_size()
        parts = [torch.empty_like(local) for _ in range(world)]
        tdist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.rows = tdist.get_rank(), local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(all processes' rows concatenated in rank order, offset of this process's rows)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return z, 0
    return _GatherWithGrad.apply(z), tdist.get_rank() * z.shape[0]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather_ranks: bool = True) -> torch.Tensor:
    """Mean NT-Xent loss of the 2N anchors of this process (rows i of z1 and z2 are one image).

    Every process must pass the same N when gathering across ranks.
    """
    n = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # [2N, D]: views 1 then views 2
    if gather_ranks:
        # Gather each view set separately so the global layout is [all views 1, all views 2].
        g1, offset = gather(local[:n])
        g2, _ = gather(local[n:])
    else:
        g1, g2, offset = local[:n], local[n:], 0
    everything = torch.cat([g1, g2])  # [2M, D]
    m = g1.shape[0]
    logits = local @ everything.t() / temperature  # [2N, 2M]
    rows = torch.arange(2 * n, device=z1.device)
    own = torch.cat([offset + rows[:n], m + offset + rows[:n]])  # each anchor's own column
    positive = torch.cat([m + offset + rows[:n], offset + rows[:n]])  # the other view of the same image
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, own] = True
    logits = logits.masked_fill(self_mask, float("-inf"))  # a view is never its own negative
    return F.cross_entropy(logits, positive)
