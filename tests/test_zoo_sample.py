"""A wide sample of timm and torchvision CNNs: each shrinks to a working pre-train model, or fails
with a clear SurgeryError, never with a crash or a silently wrong model.

The sample is the smallest model of one family each (picked from `timm.list_models()`), so it
covers odd kernels, conv subclasses, multi-branch nets, attention hybrids and adaptive-pool heads,
and torchvision's GoogLeNet and Inception-v3, whose auxiliary heads run only in train mode. Each
grown state_dict must have exactly the keys and shapes of the stock model as a user builds it
(`timm.create_model(name, pretrained=False, num_classes=...)`,
`torchvision.models.get_model(name, weights=None, num_classes=...)`, every other argument left at
its default) and load into it strictly.
"""

import pytest
import torch

from modelsurgery.errors import SurgeryError
from modelsurgery.grow import grow
from modelsurgery.shrink import shrink

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
    "torchvision:inception_v3", "torchvision:googlenet",
]

# Fixed-size attention or window partitioning: they cannot run smaller, and must say so.
REFUSED = {"halonet26t": "asserts a fixed feature-map size", "botnet26t_256": "asserts a fixed feature-map size",
           "torchvision:maxvit_t": "fails at input size"}


def stock(name: str, num_classes: int) -> torch.nn.Module:
    """The model as a user builds it, with the library's own defaults (not through modelsurgery.zoo)."""
    if name.startswith("torchvision:"):
        import torchvision

        return torchvision.models.get_model(name.partition(":")[2], weights=None, num_classes=num_classes)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", WORKS)
def test_sample_shrinks_runs_and_grows_to_the_stock_keys(name):
    small, plan = shrink(name, num_classes=7)
    target = stock(name, 7)
    assert list(small.state_dict()) == list(target.state_dict())
    with torch.no_grad():
        y = small.eval()(torch.randn(1, 3, plan.input_size, plan.input_size))
    assert tuple(y.shape) == (1, 7) and bool(torch.isfinite(y).all())
    shrunk = [c for c in plan.convs if c.changed]
    assert shrunk, f"{name}: no kernel was shrunk"
    for site in shrunk:
        assert tuple(small.get_submodule(site.name).weight.shape[-2:]) == tuple(site.small_kernel)
    state, _ = grow(small.state_dict(), plan)
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    target.load_state_dict(state, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchvision:googlenet", "torchvision:inception_v3"])
def test_auxiliary_heads_train_at_both_sizes(name):
    """The heads that only train mode runs fit the pre-train maps and are grown back with the rest."""
    small, plan = shrink(name, num_classes=7)
    out = small.train()(torch.randn(2, 3, plan.input_size, plan.input_size))
    assert len(out) > 1 and all(tuple(o.shape) == (2, 7) for o in out)  # logits and every aux head
    assert any(fc.name.startswith(("aux", "AuxLogits")) for fc in plan.fcs)
    target = stock(name, 7)
    target.load_state_dict(grow(small.state_dict(), plan)[0], strict=True)
    out = target.train()(torch.randn(2, 3, plan.target_size, plan.target_size))
    assert len(out) > 1 and all(tuple(o.shape) == (2, 7) for o in out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_sample_refusals_are_clear(name):
    with pytest.raises(SurgeryError, match=REFUSED[name]):
        shrink(name, num_classes=7)


class AuxNet(torch.nn.Module):
    """A tiny net whose 7x7 auxiliary head (valid padding) runs only in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.body = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.aux = torch.nn.Conv2d(4, 2, 7)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.body(self.stem(x).relu())
        out = self.head(x.mean((2, 3)))
        if self.training:
            return out, self.aux(x).mean((2, 3))
        return out


def test_train_only_head_is_shrunk_and_trains():
    small, plan = shrink(AuxNet(), target_size=16)  # 16 px: an 8 px map; 11 px: a 6 px map
    sites = {site.name: site for site in plan.convs}
    assert tuple(sites["aux"].small_kernel) == (5, 5) and tuple(sites["aux"].small_in_hw) == (6, 6)
    out, aux = small.train()(torch.randn(2, 3, plan.input_size, plan.input_size))
    assert tuple(aux.shape) == (2, 2) and tuple(small.aux.weight.shape) == (2, 4, 5, 5)
    grown = AuxNet()
    grown.load_state_dict(grow(small.state_dict(), plan)[0], strict=True)
    assert tuple(grown.aux.weight.shape) == (2, 4, 7, 7)


def test_train_only_head_that_cannot_run_small_is_a_clear_error():
    from modelsurgery.errors import InputSizeError

    with pytest.raises(InputSizeError, match="input size 8 is too small: a feature map vanishes at 'aux'"):
        shrink(AuxNet(), target_size=16, input_size=8)  # a 4 px map meets the 5x5 head


@pytest.mark.slow
def test_train_only_heads_and_resampled_merges_are_refused():
    from modelsurgery.errors import UnsupportedLayerError

    with pytest.raises(UnsupportedLayerError, match=r"train-only layers \(AuxLogits\)"):
        shrink("torchvision:inception_v3", num_classes=7, input_size=150)


@pytest.mark.slow
def test_module_versions_survive_the_files(tmp_path):
    """torchvision's MNASNet refuses a state_dict without module versions, which safetensors files lack."""
    from click.testing import CliRunner

    import modelsurgery
    from modelsurgery.cli import cli

    small = tmp_path / "m.safetensors"
    runner = CliRunner()
    assert runner.invoke(cli, ["shrink", "torchvision:mnasnet0_5", "--num-classes", "7", "--out", str(small)]
                         ).exit_code == 0
    grown = runner.invoke(cli, ["grow", str(small)])
    assert grown.exit_code == 0, grown.output
    for path, form in ((small, "pretrain"), (tmp_path / "m-target.safetensors", "target")):
        net, plan = modelsurgery.load(path)
        assert plan.form == form and type(net).__name__ == "MNASNet"
