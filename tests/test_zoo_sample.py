"""A wide sample of timm and torchvision CNNs: each shrinks to a working pre-train model, or fails
with a clear SurgeryError, never with a crash or a silently wrong model.

The sample is the smallest model of one family each (picked from `timm.list_models()`), so it
covers odd kernels, conv subclasses, multi-branch nets, attention hybrids and adaptive-pool heads.
"""

import pytest
import torch

from modelsurgery.errors import SurgeryError
from modelsurgery.shrink import shrink
from modelsurgery.zoo import build

WORKS = [
    # timm: depthwise/grouped, SE/ECA, multi-branch, reparameterisable, NF and std convs, hybrids
    "mobilenetv2_035", "mobilenetv3_rw", "convnext_atto", "dla34", "res2net50d", "resnest14d",
    "rexnet_100", "ghostnet_050", "mixnet_s", "mnasnet_050", "darknet17", "lcnet_035", "fastvit_t8",
    "ghostnetv2_100", "nf_resnet26", "lambda_resnet26t", "mobilevit_s", "efficientvit_b0",
    "repghostnet_050", "inception_next_atto", "hrnet_w18_small", "selecsls42", "repvgg_a0",
    "skresnet18", "resnetv2_18", "edgenext_xx_small", "dpn68", "cs3darknet_s", "dm_nfnet_f0",
    # torchvision
    "torchvision:squeezenet1_1", "torchvision:shufflenet_v2_x0_5", "torchvision:mobilenet_v3_small",
    "torchvision:mnasnet0_5", "torchvision:regnet_y_400mf", "torchvision:efficientnet_b0",
    "torchvision:inception_v3",
]

# Fixed-size attention or window partitioning: they cannot run smaller, and must say so.
REFUSED = {"halonet26t": "asserts a fixed feature-map size", "botnet26t_256": "asserts a fixed feature-map size",
           "torchvision:maxvit_t": "fails at input size"}


@pytest.mark.slow
@pytest.mark.parametrize("name", WORKS)
def test_sample_shrinks_and_runs(name):
    small, plan = shrink(name, num_classes=7)
    target, _ = build(name, num_classes=7)
    assert list(small.state_dict()) == list(target.state_dict())
    with torch.no_grad():
        y = small.eval()(torch.randn(1, 3, plan.input_size, plan.input_size))
    assert tuple(y.shape) == (1, 7) and bool(torch.isfinite(y).all())
    shrunk = [c for c in plan.convs if c.changed]
    assert shrunk, f"{name}: no kernel was shrunk"
    for site in shrunk:
        assert tuple(small.get_submodule(site.name).weight.shape[-2:]) == tuple(site.small_kernel)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_sample_refusals_are_clear(name):
    with pytest.raises(SurgeryError, match=REFUSED[name]):
        shrink(name, num_classes=7)
