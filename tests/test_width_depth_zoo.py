"""Width and depth across the zoo: shrink, grow with Net2Net, load strictly, compute the same logits.

Every model is shrunk to half its width and half its blocks with its kernels kept
(`kernel_map="keep"`), its norms and layer scales are given trained-like values, and it is grown
back with `widen_init="net2net"` (exact at width 1/2, LayerNorm included). The grown stock model
must load with `strict=True` and give the pre-train model's logits within 1e-4 of the largest.
Models whose blocks have no residual path lose no depth; they must say so in one line and still
round-trip in width. Models that Torch-Pruning cannot narrow correctly must be refused in one line
that names a layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from modelsurgery.errors import UnsupportedLayerError
from modelsurgery.grow import grow
from modelsurgery.shrink import shrink
from modelsurgery.zoo import build

pytestmark = pytest.mark.slow

BOTH = ["resnet18", "resnet50", "resnext50_32x4d", "seresnet50", "resnet26d", "resnetv2_50", "mobilenetv3_small_050",
        "mobilenetv3_large_100", "mobilenetv2_100", "efficientnet_b0", "efficientnet_lite0", "tf_efficientnet_b0",
        "mnasnet_100", "ghostnet_100", "convnext_atto", "regnetx_002", "regnety_002", "hrnet_w18_small",
        "torchvision:resnet18", "torchvision:resnext50_32x4d", "torchvision:mobilenet_v2",
        "torchvision:mobilenet_v3_small", "torchvision:efficientnet_b0"]
WIDTH_ONLY = ["densenet121", "dla34", "selecsls42b", "lcnet_050", "repvgg_a0", "torchvision:densenet121",
              "torchvision:vgg11", "inception_v3"]
REFUSED = {"mixnet_s": r"blocks\.1\.1\.conv_pw \(MixedConv2d\) cannot be narrowed", "skresnet18": "cannot be narrowed",
           "cspresnet50": "cannot be narrowed"}
SIZE = {"inception_v3": 96}


def _trained_like(model: nn.Module) -> nn.Module:
    """Every 1-D parameter (norm scales and shifts, layer scales) and every running statistic at O(1)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.ndim == 1 and t.is_floating_point():
                low = 0.5 if name.endswith(("running_var", "weight", "gamma")) else -0.2
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + low)
    return model.eval()


def _round_trip(name: str, width: float, depth: float) -> tuple[float, int, int]:
    size = SIZE.get(name, 64)
    torch.manual_seed(0)
    small, plan = shrink(name, num_classes=10, kernel_map="keep", width=width, depth=depth, target_size=size)
    small = _trained_like(small)
    state, _ = grow(small.state_dict(), plan, widen_init="net2net")
    big, _ = build(name, num_classes=10)
    big.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = small(x), big.eval()(x)
    return float((a - b).abs().max() / a.abs().max()), len(plan.blocks), len(plan.channels)


@pytest.mark.parametrize("name", BOTH)
def test_width_and_depth_round_trip(name):
    err, blocks, dims = _round_trip(name, 0.5, 0.5)
    assert blocks > 0 and dims > 0
    assert err <= 1e-4, f"{name}: logits differ by {err:.2e} of the largest"


@pytest.mark.parametrize("name", WIDTH_ONLY)
def test_depth_refused_in_one_line_width_round_trips(name):
    with pytest.raises(UnsupportedLayerError, match=r"(no stage of repeated blocks|no block of \w+ can be dropped)"
                                                    r".*Hint: pass --depth 1") as err:
        shrink(name, num_classes=10, kernel_map="keep", depth=0.5, target_size=SIZE.get(name, 64))
    assert "\n" not in str(err.value)
    err, blocks, dims = _round_trip(name, 0.5, 1.0)
    assert blocks == 0 and dims > 0
    assert err <= 1e-4, f"{name}: logits differ by {err:.2e} of the largest"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_width_refused_naming_the_layer(name):
    with pytest.raises(UnsupportedLayerError, match=REFUSED[name] + r".*Hint: pass --width 1") as err:
        shrink(name, num_classes=10, kernel_map="keep", width=0.5, target_size=64)
    assert "\n" not in str(err.value)
