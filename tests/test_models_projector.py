"""hellopack.models.projector: zero-shot start, LoRA bookkeeping, merge, templates, RN50 sizes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from hellopack.errors import HellopackError
from hellopack.models.base import BaseModel, fingerprint, load_base
from hellopack.models.lora import LoRAConv2d, LoRALinear
from hellopack.models.projector import TEMPLATES, Projector, load_templates, text_head

CLASSES = ["cat", "dog", "airplane", "ship", "frog"]


@pytest.fixture(scope="module")
def tiny():
    return load_base("hellopack-tiny-rn")


@pytest.fixture()
def proj(tiny):
    torch.manual_seed(0)
    return Projector(tiny, CLASSES, TEMPLATES["simple"], rank_encoder=4, rank_head=5)


def _randomise_b(p: Projector) -> None:
    with torch.no_grad():
        for m in p.lora_modules().values():
            m.lora_B.normal_(std=0.05)


def test_templates():
    assert len(TEMPLATES["openai"]) == 80 and len(TEMPLATES["simple"]) == 7
    assert TEMPLATES["openai"][0] == "a bad photo of a {}."
    assert load_templates("simple") == list(TEMPLATES["simple"])


def test_templates_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a photo of a {}.\n\n  art of the {}.  \n", encoding="utf-8")
    assert load_templates(f) == ["a photo of a {}.", "art of the {}."]
    f.write_text("a photo of a {}.\na photo\n", encoding="utf-8")
    with pytest.raises(HellopackError, match=r"line 2 'a photo' needs exactly the placeholder \{\}"):
        load_templates(f)
    with pytest.raises(HellopackError, match="use simple, openai or a file"):
        load_templates("fancy")


def test_text_head_is_open_clips_zero_shot_classifier(tiny):
    w = text_head(tiny, CLASSES, TEMPLATES["simple"])
    assert w.shape == (5, 64)
    assert torch.allclose(w.norm(dim=1), torch.ones(5), atol=1e-6)
    # Independent construction: mean of normalised embeddings, renormalised.
    tok = tiny.tokenizer([t.format(c) for c in CLASSES for t in TEMPLATES["simple"]])
    with torch.no_grad():
        e = F.normalize(tiny.model.encode_text(tok), dim=-1).reshape(5, 7, -1).mean(1)
    assert torch.allclose(w, F.normalize(e, dim=-1), atol=1e-6)


def test_projector_starts_at_zero_shot_clip(tiny, proj):
    """Proposition 1: with B = 0 the projector's logits are zero-shot CLIP's."""
    x = torch.rand(3, 3, 40, 40)
    with torch.no_grad():
        img = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        img = (img - torch.tensor(tiny.mean).view(1, 3, 1, 1)) / torch.tensor(tiny.std).view(1, 3, 1, 1)
        feats = tiny.model.encode_image(img, normalize=True)
        classifier = open_clip.build_zero_shot_classifier(tiny.model, tiny.tokenizer, CLASSES,
                                                          list(TEMPLATES["simple"]))
        expected = tiny.model.logit_scale.exp() * feats @ classifier
        got = proj(x)
    assert got.shape == (3, 5)
    assert (got - expected).abs().max().item() < 1e-5


def test_ranks_and_layout(tiny, proj):
    # the default head rank and its cap at min(C, d) are the build's rule: tests/test_build_config.py
    assert proj.rank_head == 5
    assert Projector(tiny, [f"c{i}" for i in range(200)], ["{}"], rank_encoder=4, rank_head=64).rank_head == 64
    layout = proj.lora_layout("fp16").to_manifest()["targets"]
    assert [t["name"] for t in layout][:4] == ["visual.conv1", "visual.conv2", "visual.conv3", "visual.layer1.0.conv1"]
    assert layout[0] == {"name": "visual.conv1", "kind": "conv2d", "rank": 4, "alpha": 4.0,
                         "in_features": 3, "out_features": 8, "kernel_size": [3, 3]}
    assert layout[-1] == {"name": "head", "kind": "linear", "rank": 5, "alpha": 5.0,
                          "in_features": 64, "out_features": 5, "kernel_size": [1, 1]}
    assert len(layout) == 20  # 3 stem + 4 blocks x 3 + 4 downsample convs, and the head
    sd = proj.lora_state_dict()
    assert sd["visual.conv1.lora_A"].shape == (4, 3, 3, 3) and sd["head.lora_B"].shape == (5, 5)
    assert proj.num_lora_parameters() == sum(t.numel() for t in sd.values())
    assert sum(p.numel() for p in proj.trainable_parameters()) == proj.num_lora_parameters()
    assert sum(p.numel() for p in proj.parameters() if p.requires_grad) == proj.num_lora_parameters()


def test_merged_equals_unmerged(proj):
    _randomise_b(proj)
    x = torch.rand(4, 3, 64, 64)
    merged = proj.merged()
    assert not merged.training
    assert not any(isinstance(m, (LoRAConv2d, LoRALinear)) for m in merged.modules())
    assert not any(p.requires_grad for p in merged.parameters())
    with torch.no_grad():
        diff = (merged(x) - proj(x)).abs().max().item()
        assert diff < 1e-5
        assert (merged.image_features(x) - proj.image_features(x)).abs().max().item() < 1e-5


def test_merge_refuses_non_finite(proj):
    with torch.no_grad():
        proj.head.lora_B.fill_(float("nan"))
    with pytest.raises(HellopackError, match="non-finite weights in layer 'head'"):
        proj.merged()


def test_lora_state_dict_roundtrip_and_strictness(tiny, proj):
    _randomise_b(proj)
    other = Projector(tiny, CLASSES, TEMPLATES["simple"], rank_encoder=4, rank_head=5)
    sd = {k: v.numpy().astype(np.float32) for k, v in proj.lora_state_dict().items()}  # as decode_lora gives
    other.load_lora_state_dict(sd)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(other(x), proj(x))
    bad = dict(sd)
    bad["head.lora_A"] = np.zeros((3, 64), np.float32)
    with pytest.raises(HellopackError, match=r"'head\.lora_A' has shape \[3, 64\] but this projector expects \[5, 64\]"):
        other.load_lora_state_dict(bad)
    del bad["head.lora_A"]
    with pytest.raises(HellopackError, match=r"1 missing, 0 unexpected tensors, e\.g\. 'head\.lora_A'"):
        other.load_lora_state_dict(bad)


def test_training_leaves_base_untouched(tiny, proj):
    before = fingerprint(tiny.model)
    visual_before = {k: v.clone() for k, v in proj.visual.state_dict().items() if "lora_" not in k}
    proj.train()
    assert not proj.visual.training  # BatchNorm statistics stay frozen
    opt = torch.optim.SGD(proj.trainable_parameters(), lr=0.5)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(proj(x), y).backward()
        opt.step()
    assert proj.head.lora_B.abs().sum() > 0
    assert fingerprint(tiny.model) == before
    after = {k: v for k, v in proj.visual.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(after[k], v) for k, v in visual_before.items())


def test_image_features_differentiable_wrt_pixels(proj):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    f = proj.image_features(x)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tiny_vit_projector():
    base = load_base("hellopack-tiny-vit")
    p = Projector(base, CLASSES, ["a photo of a {}."], rank_encoder=2, rank_head=5)
    # issue 16: each block's attention and MLP are adapted too, not only the patch embedding
    blocks = [f"visual.transformer.resblocks.{i}.{m}" for i in range(2)
              for m in ("attn", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")]
    assert [t.name for t in p.lora_layout("fp16").targets] == ["visual.conv1", *blocks, "head"]
    _randomise_b(p)
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert (p.merged()(x) - p(x)).abs().max().item() < 1e-5


def test_rn50_parameter_count_matches_design():
    """DESIGN: rank 8 on RN50's 55 convs = 639,704; rank 128 on a 1000 x 1024 head = 259,072."""
    from open_clip.modified_resnet import ModifiedResNet

    visual = ModifiedResNet(layers=[3, 4, 6, 3], output_dim=1024, heads=32, image_size=224, width=64)
    fake = BaseModel(model=SimpleNamespace(visual=visual), tokenizer=None, name="RN50", pretrained=None,
                     custom=False, fingerprint="", bytes=None, image_size=224, mean=(0.5,) * 3,
                     std=(0.5,) * 3, embed_dim=1024, logit_scale=100.0)
    p = Projector(fake, [f"c{i}" for i in range(1000)], ["{}"], rank_encoder=8, rank_head=128, head=torch.zeros(1000, 1024))
    encoder = sum(m.lora_A.numel() + m.lora_B.numel() for n, m in p.lora_modules().items() if n != "head")
    assert len(p.encoder_targets) == 55
    assert encoder == 639_704
    assert p.head.lora_A.numel() + p.head.lora_B.numel() == 259_072
    assert p.num_lora_parameters() == 898_776
