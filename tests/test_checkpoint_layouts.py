"""Checkpoints as the usual training scripts write them, read by `shrink --weights`, `grow`, `export`
and `modelsurgery.load`.

Each layout is built the way its script builds it: timm's through timm's own `CheckpointSaver`
(the code `train.py` calls) and `ModelEmaV3`; torchvision's classification reference with the keys
and classes of its `train.py` (`argparse.Namespace` args, an `AveragedModel` EMA, a real optimizer,
scheduler and GradScaler state); Lightning's with the shape of `_dump_checkpoint` (without
importing lightning). The weights read must equal the weights saved: every command's output is
compared, tensor for tensor, with the same command run on a bare state_dict of those weights.
Bad input for these files is in test_errors.py.
"""

import argparse
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import timm.utils
import torch
import torch.nn as nn
from click.testing import CliRunner
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import modelsurgery
from modelsurgery.checkpoint import read_state_dict
from modelsurgery.cli import cli

MODEL = "test_resnet"  # conftest.SMALL_MODEL; conftest's files are for 10 classes
SHRINK = ["shrink", MODEL, "--num-classes", "10"]


# --- the layouts, as each script writes them ---------------------------------------------------

def _train_step(model: nn.Module, size: int, seed: int = 0):
    """One real SGD step, so that the optimizer has state and an EMA differs from the model."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    model.train()
    nn.functional.cross_entropy(model(torch.randn(4, 3, size, size)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    return optimizer


def _namespace(**extra) -> argparse.Namespace:
    """`args` as argparse leaves them: strings, numbers, None, lists, booleans."""
    return argparse.Namespace(model=MODEL, num_classes=10, lr=0.5, opt="sgd", momentum=0.9, epochs=3, device="cpu",
                              input_size=None, mean=None, lr_noise=[0.4, 0.8], model_ema=True, amp=False,
                              output_dir="out", world_size=1, **extra)


def timm_train(folder, model: nn.Module, size: int, prefix: str = ""):
    """timm's train.py: `CheckpointSaver` with a `ModelEmaV3` and a `NativeScaler`, as train.py wires them.

    `prefix` mimics a saver whose unwrap function did not see through a wrapper.
    """
    ema = timm.utils.ModelEmaV3(model, decay=0.5)
    optimizer = _train_step(model, size)
    ema.update(model)
    saver = timm.utils.CheckpointSaver(model, optimizer, args=_namespace(), model_ema=ema,
                                       amp_scaler=timm.utils.NativeScaler(device="cpu"), checkpoint_dir=str(folder),
                                       recovery_dir=str(folder),
                                       unwrap_fn=lambda m: _Prefixed(timm.utils.unwrap_model(m), prefix))
    saver.save_checkpoint(epoch=2, metric=71.5)
    return folder / "last.pth.tar", model.state_dict(), ema.module.state_dict()


class _Prefixed(nn.Module):
    """`model`'s state_dict under `prefix` (as a DDP or torch.compile wrapper gives it)."""

    def __init__(self, model, prefix):
        super().__init__()
        self.model, self.prefix = model, prefix

    def state_dict(self, *args, **kwargs):
        return {f"{self.prefix}{k}": v for k, v in self.model.state_dict().items()}


def _averaged(model: nn.Module) -> AveragedModel:
    """An EMA as torchvision's reference keeps it, after its first update (which copies the model)."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ema.update_parameters(model)
    return ema


def torchvision_reference(folder, model: nn.Module, size: int, prefix: str = ""):
    """torchvision's references/classification/train.py: the checkpoint dict its loop saves."""
    ema = _averaged(model)  # utils.ExponentialMovingAverage: an AveragedModel
    optimizer = _train_step(model, size)
    ema.update_parameters(model)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=1)
    main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
    lr_scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[1])
    lr_scheduler.step()
    checkpoint = {
        "model": {f"{prefix}{k}": v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": 2,
        "args": _namespace(lr_scheduler="cosineannealinglr", model_ema_steps=32, model_ema_decay=0.99998),
        "model_ema": ema.state_dict(),
        "scaler": torch.amp.GradScaler("cpu").state_dict(),
    }
    path = folder / "checkpoint.pth"
    torch.save(checkpoint, path)
    return path, model.state_dict(), ema.module.state_dict()


def lightning(folder, model: nn.Module, size: int, attribute: str = "model", ema_copy: bool = False):
    """A Lightning `.ckpt` (the keys of `_dump_checkpoint`) of a LightningModule holding `model` as
    `self.<attribute>`, a weighted loss (a buffer outside it) and, with `ema_copy`, an
    `AveragedModel` EMA of it as `self.ema`."""
    module = nn.Module()
    setattr(module, attribute, model)
    module.loss = nn.CrossEntropyLoss(weight=torch.linspace(0.5, 1.5, 10))
    ema = _averaged(model)
    optimizer = _train_step(model, size)
    ema.update_parameters(model)
    if ema_copy:
        module.ema = ema
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    progress = {"ready": 2, "started": 2, "processed": 2, "completed": 2}
    checkpoint = {
        "epoch": 1, "global_step": 20, "pytorch-lightning_version": "2.4.0",
        "state_dict": module.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 20},
                               "epoch_progress": {"total": progress, "current": progress}},
                  "validate_loop": {"state_dict": {}}, "test_loop": {"state_dict": {}},
                  "predict_loop": {"state_dict": {}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
            "'train_time_interval': None}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(0.42), "best_model_path": "ckpts/e1.ckpt",
                "current_score": torch.tensor(0.42), "dirpath": "ckpts",
                "best_k_models": {"ckpts/e1.ckpt": torch.tensor(0.42)},
                "kth_best_model_path": "ckpts/e1.ckpt", "kth_value": torch.tensor(0.42), "last_model_path": ""},
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                "wait_count": 0, "stopped_epoch": 0, "best_score": torch.tensor(0.42), "patience": 3}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"model_name": MODEL, "num_classes": 10, "lr": 0.5},
    }
    path = folder / "epoch=1-step=20.ckpt"
    torch.save(checkpoint, path)
    return path, model.state_dict(), ema.module.state_dict()


LAYOUTS = {"timm": timm_train, "torchvision": torchvision_reference, "lightning": lightning}
WEIGHTS = {"timm": "state_dict", "torchvision": "model", "lightning": "state_dict"}
EMA = {"timm": "state_dict_ema", "torchvision": "model_ema"}
PREFIX = {"timm": "", "torchvision": "", "lightning": "model."}
EMA_PREFIX = {"timm": "", "torchvision": "module."}


# --- helpers -----------------------------------------------------------------------------------

def _run(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _same(a, b) -> bool:
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _read_line(stdout: str) -> str:
    assert stdout.startswith("read "), stdout
    return stdout.splitlines()[0]


@pytest.fixture
def target(test_resnet_files):
    """A fresh target MODEL (10 classes), seeded."""
    torch.manual_seed(1)
    return timm.create_model(MODEL, num_classes=10, pretrained=False)


@pytest.fixture
def pretrain(test_resnet_files):
    """conftest's pre-train network and its plan."""
    return modelsurgery.load(test_resnet_files / "small.safetensors")


# --- shrink --weights ------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ema", [False, True])
def test_shrink_weights_reads_each_layout(tmp_path, target, layout, ema):
    if ema and layout == "lightning":
        pytest.skip("a Lightning checkpoint keeps an EMA only as a module attribute (tested below)")
    path, model_state, ema_state = LAYOUTS[layout](tmp_path, target, 64)
    torch.save(ema_state if ema else model_state, tmp_path / "plain.pth")
    out = _run([*SHRINK, "--weights", path, "--out", tmp_path / "a.safetensors", *(["--ema"] if ema else [])])
    _run([*SHRINK, "--weights", tmp_path / "plain.pth", "--out", tmp_path / "b.safetensors"])
    assert _same(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    key = EMA[layout] if ema else WEIGHTS[layout]
    prefix = (EMA_PREFIX if ema else PREFIX)[layout]
    line = _read_line(out)
    assert line.startswith(f"read {path}[{key!r}]" + (" (EMA weights)" if ema else ""))
    assert (f"prefix {prefix!r} removed" if prefix else "no prefix") in line
    if layout == "lightning":
        assert "1 key(s) outside it left out ('loss.weight')" in line


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_ema_picks_the_other_weights(tmp_path, target, layout):
    path, model_state, ema_state = LAYOUTS[layout](tmp_path, target, 64)
    differ = [k for k, v in model_state.items() if v.is_floating_point() and not torch.equal(v, ema_state[k])]
    assert "conv1.0.weight" in differ and "fc.weight" in differ  # the two really are different tensors
    _run([*SHRINK, "--weights", path, "--out", tmp_path / "model.safetensors"])
    _run([*SHRINK, "--weights", path, "--ema", "--out", tmp_path / "ema.safetensors"])
    a, b = load_file(str(tmp_path / "model.safetensors")), load_file(str(tmp_path / "ema.safetensors"))
    assert not torch.equal(a["conv1.0.weight"], b["conv1.0.weight"]) and not torch.equal(a["fc.weight"], b["fc.weight"])
    assert torch.equal(b["fc.weight"], ema_state["fc.weight"]) and torch.equal(a["fc.weight"], model_state["fc.weight"])


def test_lightning_ema_copy_is_read_with_ema(tmp_path, target):
    path, model_state, ema_state = lightning(tmp_path, target, 64, attribute="net", ema_copy=True)
    out = _run([*SHRINK, "--weights", path, "--out", tmp_path / "m.safetensors"])
    assert "prefix 'net.' removed" in _read_line(out)
    out = _run([*SHRINK, "--weights", path, "--ema", "--out", tmp_path / "e.safetensors"])
    assert re.search(r"\['state_dict'\] \(EMA weights\), prefix 'ema\.module\.' removed", _read_line(out))
    assert torch.equal(load_file(str(tmp_path / "e.safetensors"))["fc.weight"], ema_state["fc.weight"])
    assert torch.equal(load_file(str(tmp_path / "m.safetensors"))["fc.weight"], model_state["fc.weight"])


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_ddp_and_compile_prefixes_are_removed(tmp_path, test_resnet_files, prefix):
    state = torch.load(test_resnet_files / "target.pth", weights_only=True)
    torch.save({f"{prefix}{k}": v for k, v in state.items()}, tmp_path / "wrapped.pt")
    out = _run([*SHRINK, "--weights", tmp_path / "wrapped.pt", "--out", tmp_path / "a.safetensors"])
    _run([*SHRINK, "--weights", test_resnet_files / "target.pth", "--out", tmp_path / "b.safetensors"])
    assert _same(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert _read_line(out) == f"read {tmp_path / 'wrapped.pt'} (a bare state_dict), prefix {prefix!r} removed"
    assert read_state_dict(tmp_path / "wrapped.pt")[0].keys() == state.keys()  # wrappers, without a model


def test_timm_saver_with_a_compiled_ddp_model(tmp_path, target):
    path, model_state, _ = timm_train(tmp_path, target, 64, prefix="module._orig_mod.")
    torch.save(model_state, tmp_path / "plain.pth")
    out = _run([*SHRINK, "--weights", path, "--out", tmp_path / "a.safetensors"])
    _run([*SHRINK, "--weights", tmp_path / "plain.pth", "--out", tmp_path / "b.safetensors"])
    assert _same(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert "['state_dict'], prefix 'module._orig_mod.' removed" in _read_line(out)


# --- grow, export and load ------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ema", [False, True])
def test_grow_reads_each_layout(tmp_path, test_resnet_files, pretrain, layout, ema):
    if ema and layout == "lightning":
        pytest.skip("see test_lightning_ema_copy_is_read_with_ema")
    small, plan = pretrain
    path, model_state, ema_state = LAYOUTS[layout](tmp_path, small, plan.input_size)
    torch.save(ema_state if ema else model_state, tmp_path / "plain.pth")
    plan_file = test_resnet_files / "small.safetensors"
    out = _run(["grow", path, "--plan", plan_file, "--out", tmp_path / "a.safetensors", *(["--ema"] if ema else [])])
    _run(["grow", tmp_path / "plain.pth", "--plan", plan_file, "--out", tmp_path / "b.safetensors"])
    assert _same(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert _read_line(out).startswith(f"read {path}[{(EMA if ema else WEIGHTS)[layout]!r}]")
    assert out.splitlines()[1].startswith(f"wrote {tmp_path / 'a.safetensors'}: {MODEL} at {plan.target_size}px")
    big = timm.create_model(MODEL, num_classes=10, pretrained=False)
    big.load_state_dict(load_file(str(tmp_path / "a.safetensors")), strict=True)


@pytest.mark.parametrize("layout", ["torchvision", "lightning"])
def test_load_reads_a_layout_with_a_plan(tmp_path, pretrain, layout):
    small, plan = pretrain
    path, model_state, ema_state = LAYOUTS[layout](tmp_path, small, plan.input_size)
    net, got = modelsurgery.load(path, plan=plan)
    assert got == plan
    assert all(torch.equal(v, model_state[k]) for k, v in net.state_dict().items())
    if layout == "torchvision":
        net, _ = modelsurgery.load(path, plan=plan, ema=True)
        assert all(torch.equal(v, ema_state[k]) for k, v in net.state_dict().items())
        assert not torch.equal(net.state_dict()["fc.weight"], model_state["fc.weight"])


def test_export_reads_a_layout_with_a_plan(tmp_path, test_resnet_files, pretrain):
    pytest.importorskip("onnx")
    small, plan = pretrain
    path, _, _ = torchvision_reference(tmp_path, small, plan.input_size)
    out = _run(["export", path, "--plan", test_resnet_files / "small.safetensors", "--ema",
                "--out", tmp_path / "m.onnx"])
    assert _read_line(out) == f"read {path}['model_ema'] (EMA weights), prefix 'module.' removed"
    assert f"{MODEL} pre-train at {plan.input_size}px" in out.splitlines()[1] and (tmp_path / "m.onnx").is_file()
