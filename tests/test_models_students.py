"""hellopack.models.students: every named architecture builds and trains one step at 32 px."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from hellopack.errors import HellopackError
from hellopack.models.students import STUDENTS, ConvNet, build_student

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
FAST = ["resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x1_0", "convnet", "resnet18_cifar"]
BIG = ["vgg11", "swin_v2_t", "vit_b_16"]


def _step(arch: str, size: int = 32) -> nn.Module:
    torch.manual_seed(0)
    model = build_student(arch, 10, size, MEAN, STD).train()
    x = torch.rand(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 9])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    return model


@pytest.mark.parametrize("arch", FAST)
def test_student_builds_and_steps_at_32px(arch):
    _step(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", BIG)
def test_big_student_builds_and_steps_at_32px(arch):
    _step(arch)


def test_registry_has_every_torchvision_classifier_and_ours():
    names = set(STUDENTS.names())
    assert set(torchvision.models.list_models(module=torchvision.models)) <= names
    assert {"convnet", "resnet18_cifar", "resnet34_cifar", "resnet50_cifar"} <= names


def test_unknown_arch_lists_close_matches():
    with pytest.raises(HellopackError, match=r"^unknown student architecture 'resnet19'; did you mean: resnet18"):
        build_student("resnet19", 10, 32, MEAN, STD)


def test_normalize_is_inside():
    model = build_student("convnet", 3, 32, MEAN, STD).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = model.net((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert all(k.startswith("net.") for k in model.state_dict())  # mean/std are not checkpointed


def test_convnet_shape_and_sizes():
    net = ConvNet(10, 32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 128, (3, 3))] + [(128, 128, (3, 3))] * 2
    assert all(n.num_groups == 128 and n.affine for n in norms)
    assert net.classifier.in_features == 128 * 4 * 4
    assert ConvNet(10, 64).classifier.in_features == 128 * 8 * 8
    assert build_student("convnet", 10, 64, MEAN, STD)(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_cifar_resnet_stem():
    model = build_student("resnet18_cifar", 10, 32, MEAN, STD)
    assert model.net.conv1.kernel_size == (3, 3) and model.net.conv1.stride == (1, 1)
    assert isinstance(model.net.maxpool, nn.Identity)
    assert model.net.fc.out_features == 10
    assert build_student("resnet50_cifar", 10, 32, MEAN, STD).net.fc.in_features == 2048


def test_small_inputs_are_upsampled_where_needed():
    inception = build_student("inception_v3", 10, 32, MEAN, STD)
    assert inception.input_size == 75 and inception.normalize.size == 75
    assert build_student("resnet18", 10, 32, MEAN, STD).input_size is None


@pytest.mark.slow
def test_big_models_get_their_minimum_size():
    assert build_student("alexnet", 10, 32, MEAN, STD).input_size == 64
    vit = build_student("vit_b_32", 10, 40, MEAN, STD)  # 40 px is not a multiple of the 32-px patch
    assert vit.input_size == 64 and vit.net.image_size == 64
    assert vit(torch.rand(1, 3, 40, 40)).shape == (1, 10)
