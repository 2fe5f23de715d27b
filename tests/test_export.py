"""ONNX export: onnx.checker, a dynamic batch axis, and onnxruntime parity with PyTorch.

Every export is checked twice: by the library (its one-line report), and here, independently,
by loading the written file with onnx/onnxruntime and comparing with the PyTorch model that
`modelsurgery.load` rebuilds from the checkpoint, at batch sizes the exporter never saw.
Random-init networks have tiny logits (efficientnet_b0's are ~1e-4), which would make
atol=1e-4 meaningless, so `_lively` calibrates BatchNorm and scales the classifier until the
largest logit is 10, as a trained classifier's are; the tests assert that scale. At that
scale float32 itself is off by ~1e-4, so the ONNX outputs are also held to a float64 PyTorch
reference: they must be as accurate as PyTorch's own float32 outputs (within 2x).
"""

import copy
import os
import re
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner
from timm.layers import Conv2dSame

from modelsurgery import export as export_mod
from modelsurgery.checkpoint import load, save
from modelsurgery.cli import cli
from modelsurgery.errors import (
    ExportError,
    OutputExistsError,
)
from modelsurgery.export import ATOL, RTOL, export_onnx
from modelsurgery.layers import PaddedConv
from modelsurgery.shrink import shrink
from modelsurgery.zoo import build

ort = pytest.importorskip("onnxruntime")


LOGIT_SCALE = 10.0  # largest |logit| after `_lively` on its own batch


def _lively(model: nn.Module, size: int, in_chans: int = 3) -> nn.Module:
    """Calibrate BN on random images and scale the last Linear so that max |logit| == 10."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, in_chans, size, size, generator=gen))
        model.eval()
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        peak = model(torch.randn(4, in_chans, size, size, generator=gen)).abs().max()
        head.weight.mul_(LOGIT_SCALE / peak)
        if head.bias is not None:
            head.bias.mul_(LOGIT_SCALE / peak)
    return model


def _check_onnx_file(path, model: nn.Module, size: int, in_chans: int = 3) -> float:
    """Independent check of a written .onnx: checker, symbolic batch, parity at batch 1 and 5."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value, "the batch axis must be symbolic"
    assert [d.dim_value for d in dims[1:]] == [in_chans, size, size]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model64 = copy.deepcopy(model).double().eval()
    worst = 0.0
    for batch in (1, 5):
        x = torch.randn(batch, in_chans, size, size, generator=torch.Generator().manual_seed(batch + 100))
        got = session.run(None, {inp.name: x.numpy()})[0]
        with torch.no_grad():
            ref = model.eval()(x).numpy()
            ref64 = model64(x.double()).numpy()
        assert got.shape == ref.shape == (batch, 10)
        scale = float(np.abs(ref).max())
        assert scale > 1.0, f"outputs up to {scale:.3g}: atol {ATOL} would not test anything"
        err, err64, torch_err64 = (float(np.abs(a - b).max()) for a, b in ((got, ref), (got, ref64), (ref, ref64)))
        assert err <= ATOL + RTOL * scale, (err, scale)
        assert err64 <= 2 * torch_err64 + 1e-5, f"ONNX off by {err64:.3g}, PyTorch float32 by {torch_err64:.3g}"
        worst = max(worst, err)
    return worst


def _export_cli(ckpt, out, *extra) -> str:
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--out", str(out), *map(str, extra)])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert "\n" not in line and "onnx.checker passed" in line and "dynamic batch" in line
    err, tol = map(float, re.search(r"max \|error\| (\S+) <= (\S+) \(atol", line).groups())
    assert 0 <= err <= tol <= ATOL + RTOL * 100
    return line


def _pretrain_ckpt(tmp_path, name, **kwargs):
    torch.manual_seed(0)  # the models' own init draws from the global RNG
    small, plan = shrink(name, num_classes=10, **kwargs)
    _lively(small, plan.input_size, plan.in_chans)
    return save(tmp_path / "pre.safetensors", small, plan), small, plan


def _target_ckpt(tmp_path, name, target_size=None):
    torch.manual_seed(0)
    _, plan = shrink(name, num_classes=10, **({"target_size": target_size} if target_size else {}))
    model, _ = build(name, num_classes=10)
    _lively(model, plan.target_size, plan.in_chans)
    return save(tmp_path / "target.safetensors", model, plan.replace(form="target")), model, plan


def _export_and_check(tmp_path, ckpt, size):
    line = _export_cli(ckpt, tmp_path / "model.onnx")
    assert f"at {size}px" in line
    model, _ = load(ckpt)  # rebuilt from the file alone: independent of the exported instance
    _check_onnx_file(tmp_path / "model.onnx", model, size)
    return line


def test_pretrain_resnet18_even_kernels(tmp_path):
    ckpt, small, plan = _pretrain_ckpt(tmp_path, "resnet18", target_size=128)
    padded = [n for n, m in small.named_modules() if isinstance(m, PaddedConv)]
    assert len(padded) >= 8 and any(c.small_kernel == (2, 2) for c in plan.convs)
    line = _export_and_check(tmp_path, ckpt, plan.input_size)
    assert "resnet18 pre-train" in line and "dynamo exporter" in line


def test_target_resnet18(tmp_path):
    ckpt, _, plan = _target_ckpt(tmp_path, "resnet18", target_size=128)
    line = _export_and_check(tmp_path, ckpt, plan.target_size)
    assert "resnet18 target at 128px" in line


@pytest.mark.slow  # 20-50 s on 2 busy cores; the tiny net below covers the same layers fast
def test_efficientnet_b0_pretrain(tmp_path):
    ckpt, small, plan = _pretrain_ckpt(tmp_path, "efficientnet_b0", target_size=96)
    assert any(isinstance(m, PaddedConv) and m.groups > 1 for m in small.modules())  # depthwise 3->2
    _export_and_check(tmp_path, ckpt, plan.input_size)


@pytest.mark.slow
def test_efficientnet_b0_target(tmp_path):
    ckpt, _, plan = _target_ckpt(tmp_path, "efficientnet_b0", target_size=96)
    _export_and_check(tmp_path, ckpt, plan.target_size)


@pytest.mark.slow  # 20-50 s on 2 busy cores; the tiny net below covers the same layers fast
def test_torchvision_alexnet_target(tmp_path):
    ckpt, _, plan = _target_ckpt(tmp_path, "torchvision:alexnet", target_size=96)
    _export_and_check(tmp_path, ckpt, plan.target_size)


@pytest.mark.slow
def test_torchvision_alexnet_pretrain(tmp_path):
    # The TorchScript exporter loses the spatial size after the padded 11->7 conv and cannot
    # export the resized AdaptiveAvgPool2d((3, 3)); this is why dynamo is the default.
    ckpt, small, plan = _pretrain_ckpt(tmp_path, "torchvision:alexnet")
    assert small.avgpool.output_size != (6, 6)
    line = _export_and_check(tmp_path, ckpt, plan.input_size)
    assert "dynamo exporter" in line


class _Tiny(nn.Module):
    """An even-kernel-to-be 3x3, timm's dynamic-same Conv2dSame (5x5/2) and a depthwise conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.same = Conv2dSame(8, 8, 5, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.same(F.relu(self.stem(x)))
        return self.head(F.relu(self.bn(self.dw(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    """Pre-train `_Tiny` at an odd size (21 px), where dynamic "same" padding is asymmetric."""
    torch.manual_seed(0)
    small, plan = shrink(_Tiny(), target_size=32)
    assert isinstance(small.stem, PaddedConv) and small.stem.pad in ((0, 1, 0, 1), (1, 0, 1, 0))
    assert isinstance(small.same, Conv2dSame) and small.same.weight.shape[-2:] == (3, 3)
    return _lively(small, plan.input_size), plan.input_size


def test_padded_and_dynamic_same_convs_export(tmp_path, tiny):
    model, size = tiny
    assert size % 2 == 1
    report = export_onnx(model, tmp_path / "tiny.onnx", input_size=size)
    assert report["exporter"] == "dynamo" and report["fallback"] is None and report["onnxruntime"]
    assert report["output_max_abs"] == pytest.approx(LOGIT_SCALE, rel=0.5)
    assert report["max_abs_error"] <= report["tolerance"] == pytest.approx(ATOL + RTOL * report["output_max_abs"])
    assert report["max_abs_error"] == pytest.approx(_check_onnx_file(tmp_path / "tiny.onnx", model, size), abs=ATOL)
    assert os.listdir(tmp_path) == ["tiny.onnx"]  # the temporary file was renamed, not copied


def test_low_opset_uses_torchscript_exporter(tmp_path, tiny):
    model, size = tiny
    report = export_onnx(model, tmp_path / "tiny13.onnx", input_size=size, opset=13)
    assert report["exporter"] == "torchscript" and "opset 13 < 18" in report["fallback"]
    proto = onnx.load(str(tmp_path / "tiny13.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    _check_onnx_file(tmp_path / "tiny13.onnx", model, size)


def test_export_restores_training_mode(tmp_path, tiny):
    model, size = tiny
    model.train()
    try:
        export_onnx(model, tmp_path / "t.onnx", input_size=size, check=False)
        assert model.training
    finally:
        model.eval()


def test_parity_failure_writes_nothing(tmp_path, tiny, monkeypatch):
    model, size = tiny
    real = export_mod._forward
    monkeypatch.setattr(export_mod, "_forward", lambda *a: real(*a) + 0.01)  # a wrong reference
    with pytest.raises(ExportError, match=r"ONNX outputs differ from PyTorch's: max \|error\| 0\.01 > 0\.00"):
        export_onnx(model, tmp_path / "bad.onnx", input_size=size)
    assert os.listdir(tmp_path) == []


def test_without_onnxruntime_says_so(tmp_path, tiny, monkeypatch):
    model, size = tiny
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    report = export_onnx(model, tmp_path / "t.onnx", input_size=size)
    assert report["onnxruntime"] is False and report["max_abs_error"] is None
    onnx.checker.check_model(onnx.load(str(tmp_path / "t.onnx")), full_check=True)


def test_cli_without_onnxruntime_says_so(tmp_path, monkeypatch, test_resnet_files):
    ckpt = test_resnet_files / "small.safetensors"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--out", str(tmp_path / "s.onnx")])
    assert result.exit_code == 0, result.output
    assert "onnxruntime is not installed, outputs not compared" in result.stdout
    assert (tmp_path / "s.onnx").stat().st_size > 0


def test_existing_output_needs_force(tmp_path, tiny):
    model, size = tiny
    out = tmp_path / "t.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="exists. Hint: pass --force"):
        export_onnx(model, out, input_size=size)
    assert out.read_bytes() == b"keep me"
    export_onnx(model, out, input_size=size, force=True, check=False)
    onnx.checker.check_model(onnx.load(str(out)))


def test_export_file_reports_what_the_cli_prints(tmp_path, test_resnet_files):
    from modelsurgery.cli import format_report
    from modelsurgery.files import FileReport, export_file

    ckpt = test_resnet_files / "small.safetensors"
    report = export_file(ckpt, tmp_path / "r.onnx")
    assert isinstance(report, FileReport) and report.verb == "export" and report.path == tmp_path / "r.onnx"
    assert report.plan == load(ckpt)[1] and report.onnx["input_size"] == report.plan.input_size
    assert report.onnx["exporter"] == "dynamo" and report.onnx["max_abs_error"] <= report.onnx["tolerance"]
    line = _export_cli(ckpt, tmp_path / "r.onnx", "--force")
    assert format_report(report) == line  # the same numbers: a fixed batch, a deterministic export
    with pytest.warns(DeprecationWarning, match="import export_file from modelsurgery.files"):
        assert export_mod.export_file is export_file  # the old import path still works, with a warning
