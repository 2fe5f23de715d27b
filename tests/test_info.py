"""`msurg info` and `convert.describe_file`: what a checkpoint holds, as text and as JSON.

Counts are checked against the networks themselves (parameters and floating-point buffers of the
model that `modelsurgery.load` or timm builds), keys against the layouts of
test_checkpoint_layouts.py. Bad input is in test_errors.py.
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import timm
import torch
from click.testing import CliRunner

import modelsurgery
from modelsurgery.cli import cli, format_info
from modelsurgery.describe import describe_file
from tests.test_checkpoint_layouts import EMA, LAYOUTS, MODEL, WEIGHTS


def _info(path, *flags):
    result = CliRunner().invoke(cli, ["info", str(path), *flags])
    assert result.exit_code == 0, result.output
    return result.stdout


def _floats(net: torch.nn.Module) -> int:
    """Elements of a network's parameters and floating-point buffers, counted from the module."""
    return sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers() if b.is_floating_point())


def test_pretrain_file(test_resnet_files):
    path = test_resnet_files / "small.safetensors"
    net, plan = modelsurgery.load(path)
    info = describe_file(path)
    assert (info.format, info.form, info.plan) == ("safetensors", "pretrain", plan)
    assert info.tensors == len(net.state_dict()) and info.parameters == _floats(net)
    changed = sum(c.changed for c in plan.convs)
    assert 0 < changed < len(plan.convs)
    text = _info(path)
    assert text == format_info(info) + "\n"
    assert text.splitlines() == [
        f"{path}: safetensors, pre-train",
        f"model: {MODEL} (num_classes=10)",
        f"sizes: input {plan.input_size}px, target {plan.target_size}px, 3 channel(s)",
        f"convs shrunk: {changed}/{len(plan.convs)}; FC interfaces: none",
        f"tensors: {info.tensors}, {_floats(net):,} parameters (floating-point tensors, buffers included)"]
    data = json.loads(_info(path, "--json"))
    assert data["form"] == "pretrain" and data["model"] == MODEL and data["model_kwargs"] == {"num_classes": 10}
    assert (data["input_size"], data["target_size"]) == (plan.input_size, plan.target_size)
    assert (data["convs_shrunk"], data["convs"], data["fc_interfaces"]) == (changed, len(plan.convs), [])
    assert (data["tensors"], data["parameters"]) == (len(net.state_dict()), _floats(net))
    assert modelsurgery.Plan.from_dict(data["plan"]) == plan
    assert data["key"] is None and data["ema_key"] is None and data["ignored"] == []


def test_grown_file(tmp_path, resnet18_ckpt):
    """conftest's resnet18 (1 channel, 64 px target), grown: a target-form file."""
    big = tmp_path / "big.safetensors"
    assert CliRunner().invoke(cli, ["grow", str(resnet18_ckpt), "--out", str(big)]).exit_code == 0
    info = describe_file(big)
    stock = timm.create_model("resnet18", num_classes=10, in_chans=1, pretrained=False)
    assert info.form == "target" and info.plan.target_size == 64 and info.plan.in_chans == 1
    assert info.tensors == len(stock.state_dict()) and info.parameters == _floats(stock)
    lines = _info(big).splitlines()
    assert lines[0] == f"{big}: safetensors, target"
    assert lines[1] == "model: resnet18 (in_chans=1, num_classes=10)"
    assert lines[2] == f"sizes: input {info.plan.input_size}px, target 64px, 1 channel(s)"


def test_fc_interfaces_are_listed(tmp_path):
    out = tmp_path / "alex.safetensors"
    args = ["shrink", "torchvision:alexnet", "--num-classes", "10", "--target-size", "96", "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    data = json.loads(_info(out, "--json"))
    assert data["model"] == "torchvision:alexnet" and data["fc_interfaces"] == ["classifier.1"]
    assert "FC interfaces: classifier.1" in _info(out)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_torch_layout(tmp_path, layout):
    torch.manual_seed(0)
    target = timm.create_model(MODEL, num_classes=10, pretrained=False)
    path, model_state, _ = LAYOUTS[layout](tmp_path, target, 64)
    with torch.serialization.safe_globals([argparse.Namespace]):   # torch's own reading, as the reference
        stored = torch.load(path, weights_only=True)
    info = describe_file(path)
    assert (info.format, info.form, info.plan) == ("torch", "plain state_dict", None)
    assert info.key == WEIGHTS[layout] and info.ema_key == EMA.get(layout)
    assert set(info.ignored) == set(stored) - {info.key, info.ema_key}
    assert info.prefix == ("model." if layout == "lightning" else "")
    assert info.tensors == len(stored[info.key])
    assert info.parameters == _floats(target) + (10 if layout == "lightning" else 0)  # + the loss's weight
    lines = _info(path).splitlines()
    assert lines[0] == f"{path}: PyTorch checkpoint, plain state_dict"
    ema = f"[{EMA[layout]!r}]" if layout in EMA else "none"
    prefix = "prefix 'model.'" if layout == "lightning" else "no prefix"
    assert lines[-2] == f"weights: [{WEIGHTS[layout]!r}], {prefix}; EMA weights: {ema}"
    assert lines[-1] == f"ignored: {', '.join(repr(k) for k in info.ignored)}"
    data = json.loads(_info(path, "--json"))
    assert data["form"] == "plain state_dict" and data["plan"] is None and "model" not in data
    assert (data["key"], data["ema_key"], data["prefix"]) == (info.key, info.ema_key, info.prefix)


@pytest.mark.parametrize("prefix", ["", "module.", "module._orig_mod."])
def test_bare_state_dict_with_wrapper_prefixes(tmp_path, test_resnet_files, prefix):
    state = torch.load(test_resnet_files / "target.pth", weights_only=True)
    torch.save({f"{prefix}{k}": v for k, v in state.items()}, tmp_path / "w.pt")
    info = describe_file(tmp_path / "w.pt")
    assert (info.key, info.prefix, info.ema_key, info.ignored) == (None, prefix, None, ())
    assert _info(tmp_path / "w.pt").splitlines()[-2].startswith("weights: a bare state_dict, ")
