"""Settings for every test, and the checkpoint files several test files read.

The checkpoint fixtures are session-scoped and written once under pytest's tmp_path_factory; a
test that changes a file copies it first (`test_errors.work` does so for every CLI case).
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run under pytest-xdist with one worker per core; more threads per worker only fight.
torch.set_num_threads(1)

SMALL_MODEL = "test_resnet"  # timm's smallest ResNet (0.5 M parameters): real layers, fast


@pytest.fixture(scope="session")
def test_resnet_files(tmp_path_factory):
    """A folder with SMALL_MODEL's pre-train checkpoint and its plan (small.safetensors, 10 classes,
    224 px target) and a plain target state_dict (target.pth), nothing else."""
    from modelsurgery.checkpoint import save
    from modelsurgery.shrink import shrink
    from modelsurgery.zoo import build

    root = tmp_path_factory.mktemp("test_resnet_files")
    torch.manual_seed(0)
    small, plan = shrink(SMALL_MODEL, num_classes=10)
    save(root / "small.safetensors", small, plan)
    target, _ = build(SMALL_MODEL, num_classes=10)
    torch.save(target.state_dict(), root / "target.pth")
    return root


@pytest.fixture(scope="session")
def resnet18_ckpt(tmp_path_factory):
    """`msurg shrink` of resnet18 (10 classes, 1 channel, 64 px target -> 46 px) in a folder of its own."""
    from click.testing import CliRunner

    from modelsurgery.cli import cli

    path = tmp_path_factory.mktemp("resnet18_ckpt") / "small.safetensors"
    result = CliRunner().invoke(cli, ["shrink", "resnet18", "--num-classes", "10", "--in-chans", "1",
                                      "--target-size", "64", "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path
