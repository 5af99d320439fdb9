"""The LoRA, projector and fit equations checked against hand computations.

Every reference here is built from first principles (einsum deltas, F.conv2d / F.linear,
the text head from the text tower), never through hellopack's own merge or forward, so a
LoRA that forgets ``alpha / r`` or a fit that forgets ``lam`` cannot agree with it.
Scalings are chosen with alpha != r, so a dropped scaling changes every number.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from hellopack.distill.fit import FitParams, fit_loss, fit_projector
from hellopack.models.base import load_base
from hellopack.models.lora import LoRAConv2d, LoRALinear, inject_lora, merge_lora
from hellopack.models.projector import Projector
from hellopack.progress import Reporter

CPU = torch.device("cpu")
TIGHT = dict(rtol=1e-5, atol=1e-5)


# ---- hand computations (shared with test_equations_pipeline.py) ---------------------------------

def hand_conv_weight(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """W + (alpha / r) * B @ A for a conv: A [r, in, kh, kw], B [out, r, 1, 1] -> [out, in, kh, kw]."""
    r = a.shape[0]
    return w + (alpha / r) * torch.einsum("ok,kihw->oihw", b[:, :, 0, 0], a)


def hand_linear_weight(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """W + (alpha / r) * B @ A for a linear: A [r, in], B [out, r] -> [out, in]."""
    r = a.shape[0]
    return w + (alpha / r) * torch.einsum("ok,ki->oi", b, a)


def hand_text_head(base, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """[C, d]: per class, normalise(mean over templates of normalised text embeddings)."""
    tok = base.tokenizer([t.format(c) for c in classnames for t in templates])
    with torch.no_grad():
        e = F.normalize(base.model.encode_text(tok).float(), dim=-1)
    return F.normalize(e.reshape(len(classnames), len(templates), -1).mean(1), dim=-1)


def hand_projector_logits(base, head: torch.Tensor, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]],
                          logit_scale: float, x01: torch.Tensor) -> torch.Tensor:
    """The projector by hand: every listed conv of a copy of the base tower gets W + (alpha/r) B A,
    the text head gets the same, then resize -> normalise -> tower -> L2 -> scaled head.

    ``factors``: target name ("visual.<path>" or "head") -> (A, B, alpha). Every Conv2d of the
    tower must be listed (the tiny RN has only groups=1 convolutions).
    """
    visual = copy.deepcopy(base.model.visual).eval()
    convs = {f"visual.{p}": m for p, m in visual.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(convs) == set(factors) - {"head"}, "every conv of the tower carries LoRA"
    with torch.no_grad():
        for name, conv in convs.items():
            a, b, alpha = factors[name]
            conv.weight.copy_(hand_conv_weight(conv.weight, a, b, alpha))
        a, b, alpha = factors["head"]
        w_head = hand_linear_weight(head, a, b, alpha)
        size = base.image_size
        img = F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False)
        img = (img - torch.tensor(base.mean).view(1, 3, 1, 1)) / torch.tensor(base.std).view(1, 3, 1, 1)
        feats = F.normalize(visual(img.float()), dim=-1)
        return logit_scale * feats @ w_head.T


# ---- LoRA layers ---------------------------------------------------------------------------------

def _randomised(lora: nn.Module, seed: int, scale: float = 1.0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lora.lora_A.copy_(torch.randn(lora.lora_A.shape, generator=g))
        lora.lora_B.copy_(torch.randn(lora.lora_B.shape, generator=g) * scale)
    return lora


CONVS = [  # (in, out, kernel, stride, padding, dilation, bias)
    (4, 6, (3, 3), 1, 1, 1, True),
    (3, 5, (3, 1), 2, (1, 0), 1, False),
    (5, 4, (3, 3), 1, 2, 2, True),
    (6, 7, (1, 1), 1, 0, 1, True),
]


@pytest.mark.parametrize("rank,alpha", [(2, 3.0), (4, 1.0), (3, None)])
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: f"k{s[2][0]}x{s[2][1]}-s{s[3]}-d{s[5]}")
def test_conv_delta_is_alpha_over_r_b_a(spec, rank, alpha):
    cin, cout, k, stride, padding, dilation, bias = spec
    torch.manual_seed(0)
    base = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=bias)
    lora = _randomised(LoRAConv2d(base, rank=rank, alpha=alpha), seed=1)
    a, b = lora.lora_A.detach().clone(), lora.lora_B.detach().clone()
    eff_alpha = float(rank if alpha is None else alpha)
    want_w = hand_conv_weight(base.weight.detach(), a, b, eff_alpha)
    # the scaling really is alpha / r (not 1): the hand weight differs from the unscaled one
    if eff_alpha != rank:
        assert (want_w - hand_conv_weight(base.weight.detach(), a, b, rank)).abs().max() > 0.1

    assert_close(lora.delta_weight().detach(), want_w - base.weight.detach(), **TIGHT)
    merged = merge_lora(copy.deepcopy(lora))
    assert type(merged) is nn.Conv2d
    assert_close(merged.weight.detach(), want_w, **TIGHT)
    if bias:
        assert torch.equal(merged.bias.detach(), base.bias.detach())

    x = torch.randn(2, cin, 9, 11, generator=torch.Generator().manual_seed(2))
    want = F.conv2d(x, want_w, base.bias, stride, padding, dilation)
    with torch.no_grad():
        assert_close(lora(x), want, **TIGHT)  # unmerged: base(x) + s * B(A(x))
        assert_close(merged(x), want, **TIGHT)


@pytest.mark.parametrize("rank,alpha", [(2, 3.0), (4, 1.0), (3, None)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_delta_is_alpha_over_r_b_a(rank, alpha, bias):
    torch.manual_seed(0)
    base = nn.Linear(7, 5, bias=bias)
    lora = _randomised(LoRALinear(base, rank=rank, alpha=alpha), seed=3)
    a, b = lora.lora_A.detach().clone(), lora.lora_B.detach().clone()
    eff_alpha = float(rank if alpha is None else alpha)
    want_w = hand_linear_weight(base.weight.detach(), a, b, eff_alpha)
    if eff_alpha != rank:
        assert (want_w - hand_linear_weight(base.weight.detach(), a, b, rank)).abs().max() > 0.1

    assert_close(lora.delta_weight().detach(), want_w - base.weight.detach(), **TIGHT)
    merged = merge_lora(copy.deepcopy(lora))
    assert type(merged) is nn.Linear
    assert_close(merged.weight.detach(), want_w, **TIGHT)
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(4))
    want = F.linear(x, want_w, base.bias)
    with torch.no_grad():
        assert_close(lora(x), want, **TIGHT)
        assert_close(merged(x), want, **TIGHT)


def test_injected_network_equals_hand_built_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 1))
    ref = copy.deepcopy(net)
    names = inject_lora(net, rank=2, alpha=3.0, prefix="visual")
    assert names == ["visual.0", "visual.2", "visual.4"]
    for i, name in enumerate(names):
        _randomised(net[int(name.split(".")[1])], seed=10 + i, scale=0.2)
    with torch.no_grad():
        for i in (0, 2, 4):
            m = net[i]
            assert m.scaling == 1.5
            ref[i].weight.copy_(hand_conv_weight(ref[i].weight, m.lora_A, m.lora_B, 3.0))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = ref(x)
        assert_close(net(x), want, **TIGHT)
        merged = merge_lora(net, prefix="visual")
        assert_close(merged(x), want, **TIGHT)
        for i in (0, 2, 4):
            assert_close(merged[i].weight, ref[i].weight, **TIGHT)


# ---- the projector --------------------------------------------------------------------------------

CLASSES = ["cat", "dog", "airplane", "ship", "frog"]
TEMPLATES = ["a photo of a {}.", "art of the {}."]


@pytest.fixture(scope="module")
def tiny():
    return load_base("hellopack-tiny-rn")


def test_projector_with_alpha_and_small_head_rank_equals_hand_computation(tiny):
    """alpha 3 on rank 2 (scaling 1.5); head rank 2 below the 5 classes is kept, not raised."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        proj = Projector(tiny, CLASSES, TEMPLATES, rank_encoder=2, rank_head=2, alpha=3.0)
    assert proj.rank_head == 2 and proj.head.lora_A.shape == (2, 64) and proj.head.lora_B.shape == (5, 2)
    layout = proj.lora_layout("fp16").targets
    assert {(t.rank, t.alpha) for t in layout[:-1]} == {(2, 3.0)}
    assert (layout[-1].name, layout[-1].rank, layout[-1].alpha) == ("head", 2, 3.0)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in proj.lora_modules().values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)
    factors = {n: (m.lora_A.detach(), m.lora_B.detach(), 3.0) for n, m in proj.lora_modules().items()}
    head = hand_text_head(tiny, CLASSES, TEMPLATES)
    x = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(8))
    want = hand_projector_logits(tiny, head, factors, tiny.logit_scale, x)
    unscaled = hand_projector_logits(tiny, head, {n: (a, b, 2.0) for n, (a, b, _) in factors.items()},
                                     tiny.logit_scale, x)
    assert (want - unscaled).abs().max() > 1e-2  # the scaling matters at these values
    with torch.no_grad():
        assert_close(proj(x), want, **TIGHT)
        assert_close(proj.merged()(x), want, **TIGHT)


# ---- the fit's loss -------------------------------------------------------------------------------

def _hand_fit_loss(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    mse = ((logits - target) ** 2).mean()
    log_z = logits.exp().sum(1).log()
    ce = (log_z - logits[torch.arange(len(labels)), labels]).mean()
    return mse + lam * ce


def test_fit_loss_is_mse_plus_lam_times_ce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64) * 2
    target = torch.randn(5, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    # fixed numbers, so the reference itself cannot drift
    mse = float(((logits - target) ** 2).mean())
    for lam in (0.0, 0.1, 0.7, 3.0):
        want = _hand_fit_loss(logits, target, labels, lam)
        assert_close(fit_loss(logits, target, labels, lam), want, rtol=1e-12, atol=1e-12)
    assert float(fit_loss(logits, target, labels, 0.0)) == pytest.approx(mse, rel=1e-12)
    ce = float(_hand_fit_loss(logits, target, labels, 1.0)) - mse
    assert ce > 0.5  # so lam visibly changes the value
    assert float(fit_loss(logits, target, labels, 0.7)) == pytest.approx(mse + 0.7 * ce, rel=1e-12)


class _LinearTeacher(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(3 * 16 * 16, 3, generator=g) * 0.05, requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_fit_projector_minimises_mse_plus_lam_ce(tiny, tmp_path, lam):
    """One fit step: the loss it reports is the hand loss at the starting factors, and the step
    it takes is AdamW's first step on the hand loss's gradient."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        proj = Projector(tiny, CLASSES[:3], TEMPLATES, rank_encoder=2, rank_head=2, alpha=3.0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in proj.lora_modules().values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)
    x = torch.rand(6, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    teacher = _LinearTeacher(3)
    ref = copy.deepcopy(proj)
    params = FitParams(epochs=1, lr=1e-3, weight_decay=0.01, batch_size=6, lam=lam, checkpoint_every=100,
                       steps_per_epoch=1)
    out = fit_projector(proj, teacher, lambda epoch: [(x, y)], params, tmp_path, "k", CPU, Reporter())

    # hand loss and gradient at the starting factors
    ref.train()
    factors = ref.trainable_parameters()
    for p in factors:
        p.requires_grad_(True)
    loss = _hand_fit_loss(ref(x), teacher(x).detach(), y, lam)
    grads = torch.autograd.grad(loss, factors)
    with torch.no_grad():
        mse = float(((ref(x) - teacher(x)) ** 2).mean())
    assert out["steps"] == 1
    assert out["final_loss"] == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-7)
    if lam:
        assert float(loss.detach()) - mse > 1e-2  # the CE term is really in there
    # AdamW, first step (bias-corrected moments = g, g^2): p <- p (1 - lr wd) - lr g / (|g| + eps)
    fitted = dict(zip([f"{n}.{k}" for n, m in proj.lora_modules().items() for k in ("lora_A", "lora_B")],
                      proj.trainable_parameters()))
    names = [f"{n}.{k}" for n, m in ref.lora_modules().items() for k in ("lora_A", "lora_B")]
    head_b = names.index("head.lora_B")
    for name, p0, gr in zip(names, factors, grads):
        want = p0.detach() * (1 - 1e-3 * 0.01) - 1e-3 * gr / (gr.abs() + 1e-8)
        assert_close(fitted[name].detach(), want, rtol=1e-4, atol=1e-7, msg=name)
    assert grads[head_b].abs().min() > 1e-6  # the head's step follows the sign of the hand gradient
