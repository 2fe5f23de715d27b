"""The networks the recipes and the benchmark train (Fashion-MNIST sized), and `build_model`.

- `FashionResNet`: ResNets for 28 px, 1-channel images, CIFAR-style: a 3×3, stride-1 stem and
  no max-pool, so the stages see 28, 14, 7 (and 4) px maps; an ImageNet stem would leave a 1×1
  map in layer4 at 28 px. `fashion-resnet18` is the ResNet-18 layout (2-2-2-2 blocks),
  `fashion-resnet14` has three stages (last map 7 px; 5 px in the pre-train network, so a
  grow loses less: 91 % of the pre-train's accuracy kept right after it with pinv + BN
  recalibration, against 65 % with the 4 vs 3 px last maps of the 4-stage net) and
  `fashion-resnet10` one block per stage. Built from timm's `BasicBlock`, so
  `modelsurgery.lowmode` pools both 3×3 convs of every block, the paper's choice for ResNet-18.
  The width (channels of the first stage, doubling per stage) is a parameter: at width 8 a
  training step on 2 CPU cores is cheap enough for the benchmark's six trainings on the full
  data set to fit in 30 minutes.
- `C2FNet`: the coarse-to-fine family (Liu et al. 2016, §III). A plain CNN whose
  classifier is a flatten→Linear that sees the last feature map, so growing the input grows the
  FC layer. One network per stage size S (8, 16, 32 px):

      conv1  k1 = 3·S/8 (3, 6, 12), padding "same"  → BN → ReLU → max-pool 2     S/2
      conv2  3×3                                      → BN → ReLU → max-pool 2     S/4
      fc1    c2·(S/4)² → hidden → ReLU
      fc2    hidden → classes

  conv1 is the layer that sees pixels; its kernel grows with the image by pixel replication
  (×1/4 per doubling), which is exact at every other output position on a 2× nearest-upsampled
  input. conv2 keeps its 3×3 kernel and sees a map twice as large (its receptive field in image
  units halves, which is how the finer stage learns finer detail). fc1's input grows from
  c2·(S/4)² to c2·(S/2)²: old weights stay on the [::2] grid, new ones are N(0, 0.01²).
  The widths (c1, c2, hidden) double at each grow; new filters start at N(0, 0.01²) and their
  consumers' new inputs at zero (`resize.widen`), so they change nothing until trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock
from torch import nn

__all__ = ["FashionResNet", "C2FNet", "build_model", "MODELS"]

class FashionResNet(nn.Module):
    """ResNet for small images: 3×3 stride-1 stem, no max-pool, BasicBlock stages, GAP, FC.

    Args:
        layers: BasicBlocks per stage; (2, 2, 2, 2) is the ResNet-18 layout.
        width: channels of the first stage; the stages have width × (1, 2, 4, 8).
        in_chans, num_classes: input channels and classes.

    Example:
        >>> FashionResNet(width=8)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, layers=(2, 2, 2, 2), width: int = 8, in_chans: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        inplanes, self.stages = width, len(layers)
        for i, n in enumerate(layers):
            planes, stride, blocks = width * 2 ** i, (1 if i == 0 else 2), []
            for b in range(n):
                down = None
                if b == 0 and (stride != 1 or inplanes != planes):
                    down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                blocks.append(BasicBlock(inplanes, planes, stride if b == 0 else 1, down))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.global_pool(x), 1))


class C2FNet(nn.Module):
    """One stage of the coarse-to-fine family (see the module docstring).

    Args:
        size: input size S in pixels, a multiple of 4.
        widths: (conv1 channels, conv2 channels, fc1 outputs).
        in_chans, num_classes: input channels and classes.
        base, base_kernel: conv1 has kernel round(base_kernel · S / base).

    Example:
        >>> C2FNet(16, (8, 16, 64))(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, size: int, widths=(16, 32, 128), in_chans: int = 1, num_classes: int = 10,
                 base: int = 8, base_kernel: int = 3):
        super().__init__()
        if size % 4:
            raise ValueError(f"C2FNet needs an input size divisible by 4, got {size}")
        c1, c2, hidden = widths
        self.size, self.widths = size, tuple(widths)
        self.kernel = max(1, round(base_kernel * size / base))
        # "same" padding, the extra pixel of an even kernel after (as padding="same" does it)
        before = (self.kernel - 1) // 2
        self.pad = (before, self.kernel - 1 - before) * 2
        self.conv1 = nn.Conv2d(in_chans, c1, self.kernel, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * (size // 4) ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    @property
    def fc_map(self) -> tuple[int, int, int]:
        """(C, H, W) of the map that fc1 flattens."""
        return (self.widths[1], self.size // 4, self.size // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(F.pad(x, self.pad)))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


MODELS = {"fashion-resnet18": (2, 2, 2, 2), "fashion-resnet14": (2, 2, 2), "fashion-resnet10": (1, 1, 1, 1)}


def build_model(name: str, *, width: int = 8, in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    """A fresh, randomly initialised target network.

    `fashion-resnet18` / `fashion-resnet10` are `FashionResNet`s of the given width; any other
    name is a timm model name or `torchvision:NAME` (never pretrained).

    Example:
        >>> build_model("fashion-resnet18", width=8)
    """
    if name in MODELS:
        return FashionResNet(MODELS[name], width, in_chans, num_classes)
    from .zoo import build

    kwargs = {"num_classes": num_classes}
    if in_chans != 3 or not name.startswith("torchvision:"):
        kwargs["in_chans"] = in_chans
    return build(name, **kwargs)[0].train()
