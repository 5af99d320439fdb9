"""LoRA on ViT image towers (issue 16): each block's attention in-projection (kind ``mha_in_proj``),
its ``out_proj`` and the MLP's ``c_fc``/``c_proj`` (kind ``linear``), besides the patch embedding.

Each kind follows peft's rules: B = 0 gives exactly the base, merging gives the unmerged output,
the update is (alpha / r) B A; the layout records every target; a tiny-ViT archive (format 1.2)
comes back from `train` with the build's logits; open_clip ViT-B-32's layout is counted by hand.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from hellopack.archive import ArchiveError, LoraLayout, LoraTarget, open_archive
from hellopack.distill import BuildConfig, build
from hellopack.errors import HellopackError
from hellopack.models.base import BaseModel, load_base
from hellopack.models.lora import LoRAConv2d, LoRALinear, LoRAMultiheadAttention, merge_lora
from hellopack.models.projector import Projector
from hellopack.train.labelers import projector_from_archive

from helpers_build import SYN, TINY_BUILD, tiny_teacher

CLASSES = ["cat", "dog", "airplane", "ship", "frog"]
TEMPLATES = ["a photo of a {}."]
E, HEADS, L = 16, 4, 7  # embedding width, heads, tokens of the stand-alone attention


def _mha(seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(E, HEADS, batch_first=True)
    with torch.no_grad():
        mha.in_proj_bias.uniform_(-0.5, 0.5)
        mha.out_proj.bias.uniform_(-0.5, 0.5)
    return mha.eval()


def _lora_attention(seed: int = 0) -> LoRAMultiheadAttention:
    """in_proj at rank 3, alpha 5; out_proj at rank 2, alpha 3 (wrapped inside, as inject_lora does)."""
    mha = _mha(seed)
    mha.out_proj = LoRALinear(mha.out_proj, rank=2, alpha=3.0)
    return LoRAMultiheadAttention(mha, rank=3, alpha=5.0).eval()


def _attention_call(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x, x, x, need_weights=False)[0]  # open_clip's ResidualAttentionBlock call


# kind -> (a fresh LoRA layer with B = 0, the plain base module, how to call either, an input)
KINDS = {
    "conv2d": lambda: (lambda lo: (lo, lo.base, lambda m, x: m(x), torch.randn(2, 3, 9, 9)))(
        LoRAConv2d(nn.Conv2d(3, 5, 3, stride=2, padding=1), rank=2, alpha=3.0)),
    "linear": lambda: (lambda lo: (lo, lo.base, lambda m, x: m(x), torch.randn(4, 6)))(
        LoRALinear(nn.Linear(6, 5), rank=2, alpha=3.0)),
    "mha_in_proj": lambda: (lambda lo: (lo, _mha(0), _attention_call, torch.randn(2, L, E)))(_lora_attention(0)),
}


def _randomise_b(module: nn.Module, seed: int = 1, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if hasattr(m, "lora_B") and isinstance(m.lora_B, nn.Parameter):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * std)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_identity_at_init_exactly(kind: str) -> None:
    """B = 0 and A random: the LoRA layer computes bit for bit what its base computes."""
    torch.manual_seed(0)
    lora, base, call, x = KINDS[kind]()
    assert lora.lora_A.abs().sum() > 0 and not lora.lora_B.any()
    with torch.no_grad():
        assert torch.equal(call(lora, x), call(base, x))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_merge_equals_the_unmerged_forward(kind: str) -> None:
    torch.manual_seed(0)
    lora, base, call, x = KINDS[kind]()
    _randomise_b(lora)
    merged = merge_lora(copy.deepcopy(lora), prefix="t")
    assert not any(hasattr(m, "lora_A") for m in merged.modules())
    with torch.no_grad():
        want, got = call(lora, x), call(merged, x)
        assert (got - want).abs().max().item() < 1e-5
        assert (want - call(base, x)).abs().max().item() > 1e-2  # the deltas do change the output


def _hand_attention(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor,
                    b_out: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, then the output projection; x is [N, L, E]."""
    n, length, e = x.shape
    d = e // HEADS
    q, k, v = (x @ w_in.T + b_in).split(e, dim=-1)
    heads = [t.reshape(n, length, HEADS, d).transpose(1, 2) for t in (q, k, v)]
    weights = torch.softmax(heads[0] @ heads[1].transpose(-1, -2) / d ** 0.5, dim=-1)
    o = (weights @ heads[2]).transpose(1, 2).reshape(n, length, e)
    return o @ w_out.T + b_out


def _outer_sum(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """sum_k B[:, k] A[k, :], one rank-1 term at a time."""
    return sum(torch.outer(b[:, k], a[k]) for k in range(a.shape[0]))


def test_mha_in_proj_delta_is_alpha_over_r_b_a_by_hand() -> None:
    lora = _lora_attention(3)
    _randomise_b(lora, seed=4)
    mha, out = lora.base, lora.base.out_proj
    assert (lora.lora_A.shape, lora.lora_B.shape) == ((3, E), (3 * E, 3))
    delta_in = (5.0 / 3) * _outer_sum(lora.lora_B.detach(), lora.lora_A.detach())
    delta_out = (3.0 / 2) * _outer_sum(out.lora_B.detach(), out.lora_A.detach())
    assert torch.allclose(lora.delta_weight().detach(), delta_in, atol=1e-6)
    merged = merge_lora(copy.deepcopy(lora), prefix="blk.attn")
    assert isinstance(merged, nn.MultiheadAttention)
    assert torch.allclose(merged.in_proj_weight, mha.in_proj_weight + delta_in, atol=1e-6)
    assert torch.allclose(merged.out_proj.weight, out.base.weight + delta_out, atol=1e-6)
    # and attention runs with the adapted q/k/v and output weights
    x = torch.randn(2, L, E, generator=torch.Generator().manual_seed(5))
    want = _hand_attention(x, mha.in_proj_weight + delta_in, mha.in_proj_bias, out.base.weight + delta_out,
                           out.base.bias)
    with torch.no_grad():
        assert (_attention_call(lora, x) - want).abs().max().item() < 1e-5
        assert (_attention_call(_mha(3), x) - want).abs().max().item() > 1e-2


def test_mha_merge_refuses_non_finite_weights() -> None:
    lora = _lora_attention(0)
    with torch.no_grad():
        lora.lora_B[0, 0] = float("inf")
    with pytest.raises(HellopackError, match="non-finite weights in layer 'visual.blk.attn'"):
        merge_lora(lora, prefix="visual.blk.attn")


# ---- the tiny ViT's layout ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vit():
    return load_base("hellopack-tiny-vit")


def test_tiny_vit_layout_lists_every_block_target_with_its_rank(tiny_vit) -> None:
    """hellopack-tiny-vit: width 64, 2 blocks, MLP 4 x 64, patch 8, embed 64."""
    layout = Projector(tiny_vit, CLASSES, TEMPLATES, rank_encoder=2, rank_head=3).lora_layout("fp16")
    want = [("visual.conv1", "conv2d", 2, 3, 64, (8, 8))]
    for i in range(2):
        blk = f"visual.transformer.resblocks.{i}."
        want += [(blk + "attn", "mha_in_proj", 2, 64, 192, (1, 1)),
                 (blk + "attn.out_proj", "linear", 2, 64, 64, (1, 1)),
                 (blk + "mlp.c_fc", "linear", 2, 64, 256, (1, 1)),
                 (blk + "mlp.c_proj", "linear", 2, 256, 64, (1, 1))]
    want.append(("head", "linear", 3, 64, 5, (1, 1)))
    assert [(t.name, t.kind, t.rank, t.in_features, t.out_features, t.kernel_size) for t in layout.targets] == want
    per_block = 2 * (64 + 192) + 2 * (64 + 64) + 2 * (64 + 256) + 2 * (256 + 64)
    assert layout.parameters == 2 * (3 * 8 * 8 + 64) + 2 * per_block + 3 * (64 + 5)  # 512 + 2 x 2,048 + 207 = 4,815
    m = layout.to_manifest()
    assert (m["rank_encoder"], m["rank_head"], m["parameters"]) == (2, 3, 4815)
    assert layout.format_minor == 2 and LoraLayout.from_manifest(m) == layout


def test_tiny_vit_projector_is_exactly_the_base_at_init(tiny_vit) -> None:
    p = Projector(tiny_vit, CLASSES, TEMPLATES, rank_encoder=2, rank_head=3)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(p.visual(x), tiny_vit.model.visual(x))


def test_layout_checks_cover_the_new_kind() -> None:
    head = LoraTarget("head", "linear", 2, 2.0, 4, 2, None)
    attn = LoraTarget("visual.b.attn", "mha_in_proj", 2, 2.0, 4, 12, None)
    layout = LoraLayout((attn, head), "fp16")
    assert attn.shapes() == ((2, 4), (12, 2)) and attn.parameters == 2 * (4 + 12)
    good = {"visual.b.attn.lora_A": np.zeros((2, 4)), "visual.b.attn.lora_B": np.zeros((12, 2)),
            "head.lora_A": np.zeros((2, 4)), "head.lora_B": np.zeros((2, 2))}
    layout.check_tensors(good)
    with pytest.raises(ArchiveError) as e:
        layout.check_tensors({**good, "visual.b.attn.lora_B": np.zeros((4, 2))})
    assert str(e.value) == ("lora.safetensors: target 'visual.b.attn': shapes [2, 4]/[4, 2], the manifest's "
                            "layout needs [2, 4]/[12, 2]")
    bad = LoraLayout((LoraTarget("visual.b.attn", "mha_in_proj", 2, 2.0, 4, 8, None), head), "fp16").to_manifest()
    with pytest.raises(ArchiveError) as e:
        LoraLayout.from_manifest(bad)
    assert str(e.value) == ("manifest: lora target 'visual.b.attn' of kind mha_in_proj has out_features 8, not "
                            "3 x in_features 4; the archive is inconsistent, rebuild it")
    assert LoraLayout((LoraTarget("visual.c", "conv2d", 2, 2.0, 3, 4, (3, 3)), head)).format_minor == 1


# ---- a tiny-ViT archive through `train` ----------------------------------------------------------

@pytest.fixture(scope="module")
def vit_archive(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vit-build")
    teacher = tiny_teacher(root / "teacher.safetensors")
    cfg = BuildConfig(recipe="synthetic", out=str(root / "vit.hellopack"), workdir=str(root / "work"),
                      synthetic=SYN, teachers=(f"convnet:{teacher}",),
                      **{**TINY_BUILD, "base": "hellopack-tiny-vit", "fit_lr": 0.01})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(cfg), root / "work"


def test_tiny_vit_archive_round_trips_through_train(vit_archive) -> None:
    path, work = vit_archive
    raw = path.read_bytes()
    archive = open_archive(path)
    assert struct.unpack_from("<HH", raw, 8) == (1, 2) and archive.manifest["format_version"] == [1, 2]
    archive.verify()
    kinds = [t["kind"] for t in archive.manifest["lora"]["targets"]]
    assert kinds == ["conv2d"] + ["mha_in_proj", "linear", "linear", "linear"] * 2 + ["linear"]

    # the build's projector: its own float32 factors from the work folder, unmerged
    stages = [work / s / "lora.safetensors" for s in ("refine", "fit")]
    factors = load_file(str(next(p for p in stages if p.is_file())))
    prompts = json.loads(archive.read_member("prompts.json"))
    base = load_base("hellopack-tiny-vit")
    layout = LoraLayout.from_manifest(archive.manifest["lora"])
    built = Projector.from_layout(base, layout, prompts["classnames"], prompts["templates"])
    built.load_lora_state_dict(factors)
    assert all(m.lora_B.abs().sum() > 0 for m in built.lora_modules().values())  # every target was fitted
    stored = Projector.from_layout(base, layout, prompts["classnames"], prompts["templates"])
    stored.load_lora_state_dict(archive.read_lora())  # the archive's fp16 factors
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        rebuilt = projector_from_archive(archive)(x)  # what `train` labels with (merged)
        assert (rebuilt - stored(x)).abs().max().item() < 1e-4
        assert torch.allclose(rebuilt, built(x), atol=2e-2, rtol=1e-2)  # fp16 storage of the factors


# ---- open_clip ViT-B-32 at rank 8 -----------------------------------------------------------------

def test_vit_b_32_layout_counted_by_hand() -> None:
    """ViT-B-32: patch 32 conv 3 -> 768 (no bias), 12 blocks of width 768 and MLP 3072, embed 512."""
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    fake = BaseModel(model=SimpleNamespace(visual=model.visual), tokenizer=None, name="ViT-B-32", pretrained=None,
                     custom=False, fingerprint="", bytes=None, image_size=224, mean=(0.5,) * 3,
                     std=(0.5,) * 3, embed_dim=512, logit_scale=100.0)
    p = Projector(fake, [f"c{i}" for i in range(1000)], ["{}"], rank_encoder=8, rank_head=128,
                  head=torch.zeros(1000, 512))
    layout = p.lora_layout("fp16")
    r, w, mlp = 8, 768, 3072
    conv1 = r * 3 * 32 * 32 + w * r                      # 30,720
    block = (r * (w + 3 * w)                             # in_proj: A [8, 768], B [2304, 8]
             + r * (w + w) + r * (w + mlp) + r * (mlp + w))  # out_proj, c_fc, c_proj: 98,304 per block
    head = 128 * (512 + 1000)                            # 193,536
    assert len(layout.encoder_targets) == 1 + 12 * 4 == 49
    assert [t.kind for t in layout.encoder_targets].count("mha_in_proj") == 12
    assert sum(t.parameters for t in layout.encoder_targets) == conv1 + 12 * block == 1_210_368
    assert layout.parameters == p.num_lora_parameters() == 1_210_368 + head == 1_403_904
    assert layout.rank_encoder == 8 and layout.rank_head == 128
