"""Student (and teacher) classifiers: every torchvision classification model, ConvNet-3, CIFAR ResNets.

Every model takes images in [0, 1] and normalises inside (``Student.normalize``).
Architectures that cannot run at the archive's image size get an input size they
accept and the wrapper upsamples (bilinear) to it before normalising:
``alexnet`` >= 64 px, ``inception_v3`` >= 75 px, ``maxvit_t`` a multiple of 224 px,
and ``vit_*`` is built for the image size rounded up to a multiple of its patch size.
Swin, ConvNeXt, ResNets, EfficientNets etc. run at 32 px as they are.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import torch
import torchvision
from torch import nn

from hellopack.errors import HellopackError
from hellopack.models.common import Normalize
from hellopack.registry import Registry

# (num_classes, image_size) -> (network, input size the network needs or None)
Builder = Callable[[int, int], "tuple[nn.Module, int | None]"]

STUDENTS: Registry[Builder] = Registry("student architecture")

# Smallest input each torchvision model accepts, where that is more than 32 px (measured).
_MIN_SIZE = {"alexnet": 64, "inception_v3": 75}


class Student(nn.Module):
    """``net(normalize(x))``; ``normalize`` resizes to ``input_size`` first when that is set."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_size: int | None = None, arch: str = "") -> None:
        super().__init__()
        self.arch = arch
        self.input_size = input_size
        self.normalize = Normalize(mean, std, size=input_size)
        self.net = net

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x01))


def build_student(arch: str, num_classes: int, image_size: int,
                  mean: Sequence[float], std: Sequence[float]) -> Student:
    """Build ``arch`` with random weights for ``num_classes`` classes and ``image_size`` inputs."""
    if num_classes < 1:
        raise HellopackError(f"number of classes must be >= 1 (got {num_classes})")
    if image_size < 8:
        raise HellopackError(f"image size {image_size} is too small for a student; use at least 8 px")
    builder = STUDENTS.get(arch)
    net, input_size = builder(num_classes, image_size)
    return Student(net, mean, std, input_size=input_size, arch=arch)


# ---- torchvision ---------------------------------------------------------------------

def _torchvision_builder(name: str) -> Builder:
    def build(num_classes: int, image_size: int) -> tuple[nn.Module, int | None]:
        kwargs: dict = {}
        size = image_size
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=True)  # one output tensor, no init warning
        if name.startswith("vit_"):
            patch = int(re.search(r"_(\d+)$", name).group(1))
            size = max(patch, math.ceil(image_size / patch) * patch)
            kwargs["image_size"] = size
        elif name == "maxvit_t":
            size = 224 * math.ceil(image_size / 224)  # every stage's grid must divide by 7
            kwargs["input_size"] = (size, size)
        else:
            size = max(image_size, _MIN_SIZE.get(name, 0))
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return net, (size if size != image_size else None)

    return build


for _name in torchvision.models.list_models(module=torchvision.models):
    STUDENTS.add(_name, _torchvision_builder(_name))


# ---- ConvNet-3 -----------------------------------------------------------------------

class ConvNet(nn.Module):
    """The dataset-distillation ConvNet: depth x [conv3x3, instance norm, ReLU, avgpool 2], then linear.

    Instance norm is GroupNorm with one group per channel (affine), as in the DC/DM/MTT code.
    """

    def __init__(self, num_classes: int, image_size: int, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 3, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            channels, size = width, size // 2
        if size < 1:
            raise HellopackError(f"convnet needs images of at least {2 ** depth} px (got {image_size})")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _convnet(width: int) -> Builder:
    def build(num_classes: int, image_size: int) -> tuple[nn.Module, int | None]:
        return ConvNet(num_classes, image_size, width=width), None

    return build


STUDENTS.add("convnet", _convnet(128))
# Narrower ConvNets (the DC benchmark's ConvNetW32/W64): cheap teachers for CPU runs and the demo.
STUDENTS.add("convnet_w32", _convnet(32))
STUDENTS.add("convnet_w64", _convnet(64))


# ---- CIFAR-stem ResNets ----------------------------------------------------------------

def _cifar_resnet(name: str) -> Builder:
    def build(num_classes: int, image_size: int) -> tuple[nn.Module, int | None]:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        # 3x3 stride-1 stem and no max-pool: 32-px inputs keep their resolution (He et al. CIFAR stem).
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
        return net, None

    return build


for _name in ("resnet18", "resnet34", "resnet50"):
    STUDENTS.add(f"{_name}_cifar", _cifar_resnet(_name))
