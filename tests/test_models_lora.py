"""hellopack.models.lora: peft's rules (identity at start, alpha/r, base untouched, merge checks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hellopack.errors import HellopackError
from hellopack.models.lora import LoRAConv2d, LoRALinear, inject_lora, merge_lora


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=True)),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: skipped
        nn.Conv2d(8, 4, 1),
    )


def test_conv_starts_at_identity_and_has_peft_shapes():
    torch.manual_seed(0)
    base = nn.Conv2d(6, 5, (3, 1), stride=2, padding=(1, 0), dilation=1)
    lora = LoRAConv2d(base, rank=4, alpha=2.0)
    assert lora.lora_A.shape == (4, 6, 3, 1) and lora.lora_B.shape == (5, 4, 1, 1)
    assert lora.scaling == 0.5
    assert lora.lora_A.abs().sum() > 0 and torch.count_nonzero(lora.lora_B) == 0
    x = torch.randn(2, 6, 9, 7)
    assert torch.equal(lora(x), base(x))
    assert [n for n, p in lora.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    assert LoRAConv2d(nn.Conv2d(2, 2, 1), rank=3).scaling == 1.0  # alpha defaults to the rank


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)])
def test_conv_merge_equals_unmerged(stride, padding, dilation):
    torch.manual_seed(1)
    base = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation)
    before = base.weight.detach().clone()
    lora = LoRAConv2d(base, rank=2, alpha=3.0)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(2, 4, 11, 11)
    merged = merge_lora(lora)
    assert type(merged) is nn.Conv2d
    assert (merged(x) - lora(x)).abs().max().item() < 1e-5
    assert torch.equal(base.weight, before)  # the base is never modified


def test_linear_merge_and_identity():
    torch.manual_seed(2)
    base = nn.Linear(7, 3)
    lora = LoRALinear(base, rank=2)
    x = torch.randn(5, 7)
    assert torch.equal(lora(x), base(x))
    assert lora.lora_A.shape == (2, 7) and lora.lora_B.shape == (3, 2)
    with torch.no_grad():
        lora.lora_B.normal_()
    assert (merge_lora(lora)(x) - lora(x)).abs().max().item() < 1e-5


def test_training_changes_only_the_factors():
    net = _net()
    frozen = {k: v.clone() for k, v in net.state_dict().items()}
    names = inject_lora(net, rank=2, prefix="visual")
    assert names == ["visual.0", "visual.2.0", "visual.4"]  # depthwise conv 3 skipped
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable == [f"{i}.lora_{ab}" for i in ("0", "2.0", "4") for ab in "AB"]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(2, 3, 16, 16)).square().mean().backward()
        opt.step()
    base_state = {k.replace(".base.", "."): v for k, v in net.state_dict().items() if "lora_" not in k}
    assert base_state.keys() == frozen.keys()
    assert all(torch.equal(base_state[k], frozen[k]) for k in frozen)
    assert net[4].lora_B.abs().sum() > 0  # B moved off zero


def test_merge_module_replaces_wrappers_in_place():
    net = _net()
    inject_lora(net, rank=2)
    for m in net.modules():
        if isinstance(m, LoRAConv2d):
            with torch.no_grad():
                m.lora_B.normal_()
    x = torch.randn(2, 3, 16, 16)
    y = net(x)
    merged = merge_lora(net)
    assert not any(isinstance(m, (LoRAConv2d, LoRALinear)) for m in merged.modules())
    assert (merged(x) - y).abs().max().item() < 1e-5


def test_merge_refuses_non_finite_and_names_layer():
    net = _net()
    inject_lora(net, rank=2, prefix="visual")
    with torch.no_grad():
        net[2][0].lora_B[0, 0, 0, 0] = float("inf")
    with pytest.raises(HellopackError, match=r"non-finite weights in layer 'visual\.2\.0'"):
        merge_lora(net, prefix="visual")


def test_inject_errors():
    with pytest.raises(HellopackError, match="no groups=1 Conv2d"):
        inject_lora(nn.Linear(2, 2), rank=2)
    net = _net()
    inject_lora(net, rank=2)
    with pytest.raises(HellopackError, match="already has LoRA"):
        inject_lora(net, rank=2)
    with pytest.raises(HellopackError, match="rank must be >= 1"):
        LoRAConv2d(nn.Conv2d(2, 2, 1), rank=0)
