"""Shrink: policy, shapes, keys, plan, files and the CLI (its error cases are in test_errors.py)."""

import json
import math
import os

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import modelsurgery
from modelsurgery.checkpoint import META_FORM, META_PLAN, META_VERSION, read_state_dict
from modelsurgery.cli import cli
from modelsurgery.cost import cost_table
from modelsurgery.errors import InputSizeError, KernelMapError, UnknownModelError
from modelsurgery.plan import Plan
from modelsurgery.policy import parse_kernel_map
from modelsurgery.shrink import apply_plan, shrink
from modelsurgery.zoo import build

from .overfeat import OverFeatFast

TABLE1 = {1: 1, 3: 2, 5: 3, 7: 5, 11: 7}  # written out again: the test's own reference


def expected_kernel(conv: nn.Conv2d, fc_names=()) -> tuple[int, int]:
    """Independent statement of the policy: Table 1 per dim; patchify, dilated, FC convs kept."""
    k, s = tuple(conv.kernel_size), tuple(conv.stride)
    if k == s or tuple(conv.dilation) != (1, 1):
        return k
    return tuple(max(TABLE1.get(kd, round(2 * kd / 3)), sd if sd <= kd else kd) for kd, sd in zip(k, s, strict=False))


def check_shrunk(name, small, plan, target, num_classes=10):
    x = torch.randn(2, plan.in_chans, plan.input_size, plan.input_size)
    with torch.no_grad():
        y = small.eval()(x)
    assert tuple(y.shape) == (2, num_classes)
    assert bool(torch.isfinite(y).all())
    t_state, s_state = target.state_dict(), small.state_dict()
    assert list(t_state) == list(s_state), f"{name}: state_dict keys differ"
    fc_names = {f.name for f in plan.fcs}
    t_mods = dict(target.named_modules())
    for site in plan.convs:
        want = expected_kernel(t_mods[site.name])
        assert tuple(site.small_kernel) == want, (name, site.name)
        assert tuple(s_state[f"{site.name}.weight"].shape[-2:]) == want, (name, site.name)
        assert s_state[f"{site.name}.weight"].shape[:2] == t_state[f"{site.name}.weight"].shape[:2]
    for key in t_state:
        prefix = key.rpartition(".")[0]
        if prefix not in fc_names and not any(prefix == s.name for s in plan.convs if s.changed):
            assert t_state[key].shape == s_state[key].shape, (name, key)
    return y


FAST_MODELS = ["resnet18", "torchvision:alexnet", "efficientnet_b0", "mobilenetv3_large_100"]
SLOW_MODELS = ["resnet34", "resnet50", "convnext_tiny", "regnety_008", "densenet121", "inception_v3", "vgg11",
               "torchvision:vgg16", "torchvision:resnet34", "torchvision:googlenet"]


@pytest.mark.parametrize("name", FAST_MODELS + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW_MODELS])
def test_issue_models_shrink(name):
    small, plan = shrink(name, num_classes=10)
    target, _ = build(name, num_classes=10)
    check_shrunk(name, small, plan, target)
    assert plan.input_size < plan.target_size
    assert any(c.changed for c in plan.convs)


def test_default_sizes_follow_first_shrunk_kernel():
    _, plan = shrink("resnet34", num_classes=10)
    assert (plan.target_size, plan.input_size) == (224, 160)  # 7 -> 5, 224 / 1.4
    _, plan = shrink(OverFeatFast(10, width=0.125), target_size=231)
    assert (plan.target_size, plan.input_size) == (231, 147)  # 11 -> 7, 231 / (11/7)


def test_overfeat_fc_interface_and_speedup():
    model = OverFeatFast(10, width=0.125)
    small, plan = shrink(model, target_size=231)
    (fc,) = plan.fcs
    c5 = model.features[10].out_channels
    assert fc.name == "classifier.2" and fc.kind == "linear" and fc.channels == c5
    assert fc.hw == (6, 6) and fc.small_hw == (4, 4)  # 147: 36 -> 18 -> 16 -> 8 -> 8 -> 4
    assert small.classifier[2].in_features == c5 * 4 * 4
    assert small.classifier[5].weight.shape == model.classifier[5].weight.shape  # later FCs unchanged
    assert [tuple(c.small_kernel) for c in plan.convs] == [(7, 7), (3, 3), (2, 2), (2, 2), (2, 2)]
    check_shrunk("overfeat", small, plan, model)
    assert cost_table(plan).speedup > 2.0


def test_torchvision_vgg16_pool_scales_with_fc():
    small, plan = shrink("torchvision:vgg16", input_size=160, num_classes=10)
    (fc,) = plan.fcs
    assert fc.pool == "avgpool" and fc.hw == (7, 7) and fc.small_hw == (5, 5)
    assert small.avgpool.output_size == (5, 5)
    assert small.classifier[0].in_features == 512 * 5 * 5
    assert small.classifier[3].in_features == 4096


def test_timm_vgg_convmlp_is_fc_interface_not_kernel():
    small, plan = shrink("vgg11", input_size=160, num_classes=10)
    (fc,) = plan.fcs
    assert fc.name == "pre_logits.fc1" and fc.kind == "conv" and fc.owner == "pre_logits"
    assert fc.hw == (7, 7) and fc.small_hw == (5, 5)  # the map size, not the 7 -> 5 kernel rule
    assert "pre_logits.fc1" not in {c.name for c in plan.convs}
    assert small.pre_logits.fc1.weight.shape[-2:] == (5, 5)
    assert small.pre_logits.input_kernel_size == 5


def test_non_square_kernels_map_per_dimension():
    small, plan = shrink("inception_v3", num_classes=10)
    sites = {c.name: c for c in plan.convs}
    site = sites["Mixed_6b.branch7x7_2.conv"]
    assert tuple(site.kernel) == (1, 7) and tuple(site.small_kernel) == (1, 5)
    assert site.small_padding == (2, 2, 0, 0)  # (left, right, top, bottom): same padding kept
    assert small.get_submodule(site.name).weight.shape[-2:] == (1, 5)


def test_padding_modes_are_kept():
    small, plan = shrink(OverFeatFast(10, width=0.125), target_size=231)
    for site in plan.convs:
        (kh, kw), (sh, sw) = site.small_kernel, site.stride
        left, right, top, bottom = site.small_padding
        h, w = site.small_in_hw
        assert site.small_out_hw == ((h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1)
        if site.padding == (0, 0, 0, 0):  # valid stays valid
            assert site.small_padding == (0, 0, 0, 0)
        else:  # same stays same
            assert site.small_out_hw == (math.ceil(h / sh), math.ceil(w / sw))


def test_even_kernels_alternate_padding_side_and_run_at_any_size():
    small, plan = shrink("resnet18", num_classes=10)
    even = [c for c in plan.convs if c.small_kernel == (2, 2)]
    sides = [c.small_padding for c in even]
    assert (0, 1, 0, 1) in sides and (1, 0, 1, 0) in sides
    assert sides[0] != sides[1]
    _, plan_br = shrink("resnet18", num_classes=10, even_padding="bottom-right")
    assert {c.small_padding for c in plan_br.convs if c.small_kernel == (2, 2)} == {(0, 1, 0, 1)}
    small.eval()
    for size in (64, 97, 160, 224):  # padding is applied to the actual input
        with torch.no_grad():
            assert small(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_patchify_dilated_groups_and_subclasses_are_respected():
    _, plan = shrink("convnext_tiny", num_classes=10)
    stem = plan.conv("stem.0")
    assert stem.kernel == stem.small_kernel == (4, 4) and stem.reason == "patchify"
    dw = plan.conv("stages.0.blocks.0.conv_dw")
    assert dw.small_kernel == (5, 5) and dw.groups == dw.in_channels

    from timm.layers import StdConv2d

    small, plan = shrink("resnetv2_50x1_bit", num_classes=10)
    conv = small.get_submodule("stem.conv")
    assert isinstance(conv, StdConv2d) and conv.weight.shape[-2:] == (5, 5)

    class Dilated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.b(self.a(x)).mean((2, 3)))

    small, plan = shrink(Dilated(), target_size=32)
    assert plan.conv("b").reason == "dilated" and small.b.weight.shape[-2:] == (3, 3)


def test_dynamic_same_padding_convs():
    small, plan = shrink("tf_efficientnet_b0", num_classes=10)
    site = plan.conv("conv_stem")
    assert site.padding == "dynamic" and site.small_kernel == (2, 2)
    check_shrunk("tf_efficientnet_b0", small, plan, build("tf_efficientnet_b0", num_classes=10)[0])


class Branchy(nn.Module):
    """Inception-style: a valid 3x3/2 conv beside a 3x3/2 max-pool, concatenated."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.cat([self.branch(x), self.pool(x)], 1).mean((2, 3)))


def test_mismatched_merge_is_fitted_and_recorded():
    model = Branchy()
    small, plan = shrink(model, target_size=48, input_size=32)
    (r,) = plan.resamples
    # the 2x2/2 valid conv gives 16x16 at 32 px, the 3x3/2 pool 15x15; the conv branch is cropped
    assert (r.from_hw, r.to_hw) == ((16, 16), (15, 15))
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert list(small.state_dict()) == list(model.state_dict())
    again = apply_plan(model, Plan.from_json(plan.to_json()))
    again.load_state_dict(small.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(again(x), small(x))


def test_plan_contents_and_json_round_trip():
    _, plan = shrink("resnet18", num_classes=10, in_chans=1)
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.form == "pretrain" and plan.in_chans == 1
    assert plan.source.kind == "timm" and plan.source.kwargs_dict() == {"in_chans": 1, "num_classes": 10}
    assert dict(plan.versions)["torch"] == torch.__version__
    site = plan.conv("layer1.0.conv1")
    assert (site.kernel, site.small_kernel, site.stride) == ((3, 3), (2, 2), (1, 1))
    assert site.padding == (1, 1, 1, 1) and sum(site.small_padding) == 2
    assert (site.in_hw, site.small_in_hw) == ((56, 56), (40, 40))


def _flops_by_module(model, size, in_chans=3):
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, in_chans, size, size))
    return counter.get_flop_counts()


@pytest.mark.parametrize("name", ["resnet18", "torchvision:alexnet", "vgg11", "overfeat"])
def test_cost_table_matches_flop_counter(name):
    if name == "overfeat":
        target = OverFeatFast(10, width=0.125)
        small, plan = shrink(target, target_size=231)
    else:
        small, plan = shrink(name, num_classes=10)
        target = build(name, num_classes=10)[0]
    table = cost_table(plan)
    conv = torch.ops.aten.convolution
    for model, size, total in ((target, plan.target_size, table.total), (small, plan.input_size, table.small_total)):
        counts = _flops_by_module(model, size)
        measured = counts["Global"].get(conv, 0)
        for fc in plan.fcs:  # Linear FC interfaces count as mm/addmm in their module
            if fc.kind == "linear":
                measured += sum(counts[f"{type(model).__name__}.{fc.name}"].values())
        assert measured / 2 == pytest.approx(total, rel=0.01)  # FLOPs = 2 x multiplications


def test_kernel_map_override_and_validation():
    _, plan = shrink("resnet18", num_classes=10, kernel_map="3:3,7:3")
    assert plan.conv("conv1").small_kernel == (3, 3) and plan.conv("layer1.0.conv1").small_kernel == (3, 3)
    assert plan.input_size == round(224 / (7 / 3))
    assert parse_kernel_map("9:5") == {9: 5}
    for bad in ("3:x", "3-2", "3:4", "3:0", "3:2,,5:3"):
        with pytest.raises(KernelMapError, match="kernel map"):
            parse_kernel_map(bad)


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError, match="resnet34"):
        build("resnet3")
    with pytest.raises(UnknownModelError, match="torchvision:alexnet"):
        build("torchvision:alexnt")


def test_too_small_input_is_a_clear_error():
    with pytest.raises(InputSizeError, match="too small.*--input-size"):
        shrink("resnet18", input_size=8)
    with pytest.raises(InputSizeError, match="too small"):
        shrink(OverFeatFast(10, width=0.125), target_size=231, input_size=20)


def test_save_load_round_trip(tmp_path):
    small, plan = shrink("resnet18", num_classes=10)
    path = modelsurgery.save(tmp_path / "s.safetensors", small, plan)
    state, meta = read_state_dict(path)
    assert meta[META_FORM] == "pretrain" and meta[META_VERSION] == modelsurgery.__version__
    assert Plan.from_json(meta[META_PLAN]) == plan
    loaded, plan2 = modelsurgery.load(path)
    assert plan2 == plan
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(loaded(x), small.eval()(x))


def test_load_custom_model_needs_instance(tmp_path):
    model = OverFeatFast(10, width=0.125)
    small, plan = shrink(model, target_size=231)
    path = modelsurgery.save(tmp_path / "o.safetensors", small, plan)
    with pytest.raises(UnknownModelError, match="model=MyNet"):
        modelsurgery.load(path)
    loaded, _ = modelsurgery.load(path, model=OverFeatFast(10, width=0.125))
    x = torch.randn(1, 3, 147, 147)
    with torch.no_grad():
        assert torch.equal(loaded(x), small.eval()(x))


def test_shrink_weights_downscales_target(tmp_path):
    from modelsurgery.resize.fc import resize_fc
    from modelsurgery.resize.kernels import downscale

    target, _ = build("torchvision:alexnet", num_classes=10)
    torch.save(target.state_dict(), tmp_path / "t.pth")
    out = tmp_path / "s.safetensors"
    result = CliRunner().invoke(cli, ["shrink", "torchvision:alexnet", "--num-classes", "10",
                                      "--weights", str(tmp_path / "t.pth"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    small, plan = modelsurgery.load(out)
    w = target.features[0].weight.detach()
    torch.testing.assert_close(small.features[0].weight, downscale(w, 7, "pinv"), rtol=0, atol=0)
    fc = plan.fcs[0]
    torch.testing.assert_close(small.classifier[1].weight,
                               resize_fc(target.classifier[1].weight.detach(), (256, 6, 6), fc.small_hw, "pinv"))
    torch.testing.assert_close(small.features[0].bias, target.features[0].bias, rtol=0, atol=0)


def test_cli_plan_table_and_json():
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", "resnet18", "--num-classes", "10"])
    assert result.exit_code == 0, result.output
    assert "layer1.0.conv1" in result.output and "3x3>2x2" in result.output
    assert "predicted speed-up" in result.output and "Eq. 4" in result.output
    result = runner.invoke(cli, ["plan", "resnet18", "--num-classes", "10", "--json"])
    data = json.loads(result.output)
    assert Plan.from_dict(data["plan"]).input_size == 160
    assert data["cost"]["speedup"] == pytest.approx(data["cost"]["total"] / data["cost"]["small_total"])


def test_cli_shrink_writes_pretrain_file(tmp_path):
    out = tmp_path / "small.safetensors"
    result = CliRunner().invoke(cli, ["shrink", "resnet18", "--num-classes", "10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    state, meta = read_state_dict(out)
    assert meta[META_FORM] == "pretrain"
    assert state["conv1.weight"].shape == (64, 3, 5, 5)


def test_shrink_to_file_returns_the_report_the_cli_prints(tmp_path):
    from modelsurgery.cli import format_report
    from modelsurgery.files import FileReport, shrink_to_file

    out = tmp_path / "a.safetensors"
    report = shrink_to_file("test_resnet", out, num_classes=10)
    assert isinstance(report, FileReport) and (report.verb, report.method) == ("shrink", None)
    assert report.path == out and report.plan == modelsurgery.load(out)[1]
    result = CliRunner().invoke(cli, ["shrink", "test_resnet", "--num-classes", "10", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert result.stdout == format_report(report) + "\n"


def test_eq4_bounds_bracket_the_predicted_speedup():
    _, plan = shrink("resnet34", num_classes=10)
    table = cost_table(plan)
    lo, hi = table.bounds
    assert 1 < lo <= table.speedup < hi
    assert table.speedup == pytest.approx(table.total / table.small_total)
    # Eq. 3 for a valid stride-1 conv, written out as in the paper: C_in (k/s)^2 (h/s - k/s + 1)^2 C_out
    _, plan = shrink(OverFeatFast(10, width=0.125), target_size=231)
    site = plan.convs[1]  # 5x5 valid, stride 1, on the 28x28 (pre-train 18x18) map
    h, k = site.small_in_hw[0], site.small_kernel[0]
    row = next(r for r in table_rows(plan) if r.name == site.name)
    assert row.small_mults == site.in_channels * k * k * (h - k + 1) ** 2 * site.out_channels


def table_rows(plan):
    return cost_table(plan).rows


def test_package_verbs_stay_functions_after_submodule_imports():
    import importlib

    importlib.import_module("modelsurgery.shrink")
    importlib.import_module("modelsurgery.grow")
    assert callable(modelsurgery.shrink) and modelsurgery.shrink.__name__ == "shrink"
    assert callable(modelsurgery.grow) and modelsurgery.grow.__name__ == "grow"
    assert callable(modelsurgery.export_onnx) and callable(modelsurgery.low_mode)
