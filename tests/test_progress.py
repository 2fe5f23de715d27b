"""Progress bars: on stderr when it is a terminal (`grow --calibrate`'s least squares and BatchNorm
batches, `export`'s stages), nothing at all on a pipe or under click's CliRunner."""

import io
import sys

import pytest
from click.testing import CliRunner

from modelsurgery.cli import cli
from modelsurgery.files import export_file, grow_file
from modelsurgery.progress import bar, on_terminal, stages


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """timm's test_resnet at a 32 px target with one channel: calibration takes seconds, not a minute."""
    from modelsurgery.checkpoint import save
    from modelsurgery.shrink import shrink

    path = tmp_path_factory.mktemp("progress") / "tiny.safetensors"
    small, plan = shrink("test_resnet", num_classes=10, in_chans=1, target_size=32)
    save(path, small, plan)
    return path


@pytest.fixture
def stderr(monkeypatch):
    """Replace sys.stderr with a stream that says whether it is a terminal."""
    def make(tty: bool) -> _Stream:
        stream = _Stream(tty)
        monkeypatch.setattr(sys, "stderr", stream)
        return stream
    return make


@pytest.mark.parametrize("tty", [True, False])
def test_bar_and_stages_follow_the_terminal(stderr, tty):
    err = stderr(tty)
    assert on_terminal() is tty and on_terminal(True) and not on_terminal(False)
    assert list(bar(range(3), "counting", total=3)) == [0, 1, 2]  # the items pass through unchanged
    with stages(["one", "two"], "staged") as step:
        step("one")
        step("two")
    text = err.getvalue()
    if tty:
        # tqdm redraws at most every 0.1 s and clears the bar at the end, so the counts drawn vary
        assert "counting:" in text and "/3 [" in text and "staged:" in text and "/2 [" in text
    else:
        assert text == ""


# The quiet side of these two is test_cli_is_quiet_on_a_pipe (CliRunner's stderr is no terminal).
def test_grow_calibrate_bars_on_a_terminal(stderr, tmp_path, tiny_ckpt):
    err = stderr(True)
    report = grow_file(tiny_ckpt, tmp_path / "big.safetensors", calibrate="fixture")
    assert report.fitted and report.bn_images == 1000
    text = err.getvalue()  # a bar over the layers fitted, then over ten batches of 100 images for BatchNorm
    assert "least squares:" in text and "layer" in text
    assert "BatchNorm:" in text and "/10 [" in text


def test_export_stage_bar_on_a_terminal(stderr, tmp_path, tiny_ckpt):
    err = stderr(True)
    export_file(tiny_ckpt, tmp_path / "small.onnx")
    text = err.getvalue()
    assert "ONNX export:" in text and "onnx.checker" in text and "write" in text


def test_cli_is_quiet_on_a_pipe(tmp_path, tiny_ckpt):
    runner = CliRunner()
    grown = runner.invoke(cli, ["grow", str(tiny_ckpt), "--out", str(tmp_path / "big.safetensors"),
                                "--calibrate", "fixture"])
    assert grown.exit_code == 0, grown.output
    assert "least squares" in grown.stdout and grown.stderr == ""
    exported = runner.invoke(cli, ["export", str(tiny_ckpt), "--out", str(tmp_path / "small.onnx")])
    assert exported.exit_code == 0, exported.output
    assert "onnx.checker passed" in exported.stdout and exported.stderr == ""
