"""Bad input and faults: one-line errors, the right exit code, and a file system left untouched.

Every CLI error case of every command lives here (the other test files test what works).

Every CLI case goes through `_fails`, which asserts the exit code, that click exited on
purpose (CliRunner also reports exit code 1 for an uncaught exception, so the code alone
proves nothing), a single `error: ...` line matching the expected message, no traceback, and
a byte-identical snapshot of the test folder (no new, partial or changed file).
"""

import argparse
import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

import modelsurgery.checkpoint as checkpoint
from modelsurgery.checkpoint import META_PLAN, atomic_write, read_state_dict
from modelsurgery.cli import cli
from modelsurgery.errors import CheckpointError, OutputExistsError
from modelsurgery.plan import PLAN_VERSION
from modelsurgery.shrink import shrink

MODEL = "test_resnet"  # conftest.SMALL_MODEL: timm's smallest ResNet (0.5 M parameters), real layers, fast
MSURG = Path(sys.executable).with_name("msurg")


def _has_grow() -> bool:
    try:
        import modelsurgery.grow  # noqa: F401
        from modelsurgery.files import grow_file  # noqa: F401
    except ImportError:
        return False
    return True


needs_grow = pytest.mark.skipif(not _has_grow(), reason="msurg grow (modelsurgery.grow) is not installed yet")


# --- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture
def work(tmp_path, test_resnet_files, monkeypatch):
    """A fresh folder holding copies of conftest's MODEL files (small.safetensors with its plan,
    and a plain target state_dict, target.pth); the CLI runs inside it."""
    for f in test_resnet_files.iterdir():
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`, hidden ones included, with file contents (None for folders)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _fails(args, match: str, root: Path, code: int = 1):
    """Run the CLI, expect failure with `code`, one error line matching `match`, nothing written."""
    before = _snapshot(root)
    result = _invoke(args)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}"
    assert "Traceback" not in result.output
    if code == 1:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), result.stderr
        assert all(line.startswith("warning: ") for line in lines[:-1]), result.stderr
        assert re.search(match, lines[-1]), lines[-1]
        assert result.stdout == ""
    else:
        assert re.search(match, result.stderr), result.stderr
    assert _snapshot(root) == before, "the file system changed"
    return result


def _state_and_meta(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _rewrite(src, dst, *, state=None, meta=None):
    """Write `dst` like `src`, with its tensors and/or metadata edited by the given functions."""
    tensors, metadata = _state_and_meta(src)
    tensors = state(tensors) if state else tensors
    metadata = meta(metadata) if meta else metadata
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def _edit_plan(edit):
    def meta(m):
        data = json.loads(m[META_PLAN])
        edit(data)
        return {**m, META_PLAN: json.dumps(data)}
    return meta


# Each command that reads a checkpoint, as (args before the input, args after it).
READERS = {
    "export": (["export"], ["--out", "out.onnx"]),
    "grow": (["grow"], ["--out", "out.safetensors"]),
    "shrink --weights": (["shrink", MODEL, "--num-classes", "10", "--out", "out.safetensors", "--weights"], []),
    "info": (["info"], []),
}
READERS_OF_PLANS = {k: v for k, v in READERS.items() if k not in ("shrink --weights", "info")}


def _reader(name):
    if name == "grow" and not _has_grow():
        pytest.skip("msurg grow is not installed yet")
    return READERS[name]


def _read(name, path):
    before, after = _reader(name)
    return [*before, path, *after]


# --- paths -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", READERS)
def test_missing_input(work, cmd):
    _fails(_read(cmd, "nope.safetensors"), r"'nope\.safetensors' does not exist\. Hint: check the path", work)


@pytest.mark.parametrize("cmd", READERS)
def test_directory_as_input(work, cmd):
    (work / "folder").mkdir()
    _fails(_read(cmd, "folder"), r"'folder' is a directory, not a file\. Hint", work)


@needs_grow
def test_missing_plan_file_for_grow(work):
    _fails(["grow", "target.pth", "--plan", "nope.json", "--out", "big.safetensors"],
           r"--plan 'nope\.json' is not a file\. Hint", work)


WRITERS = {
    "export": ["export", "small.safetensors"],
    "shrink": ["shrink", MODEL, "--num-classes", "10"],
    "grow": ["grow", "small.safetensors"],
}


def _writer(name, out):
    if name == "grow" and not _has_grow():
        pytest.skip("msurg grow is not installed yet")
    return [*WRITERS[name], "--out", out]


@pytest.mark.parametrize("cmd", WRITERS)
def test_directory_as_output(work, cmd):
    (work / "folder").mkdir()
    _fails(_writer(cmd, "folder"), r"output 'folder' is a directory\. Hint: give a file name", work)


@pytest.mark.parametrize("cmd", WRITERS)
def test_output_folder_is_a_file(work, cmd):
    (work / "plain").write_text("a regular file")
    _fails(_writer(cmd, "plain/out.bin"), r"output folder 'plain' is a file, not a folder\. Hint", work)


@pytest.mark.parametrize("cmd", WRITERS)
def test_output_folder_missing(work, cmd):
    _fails(_writer(cmd, "no/such/out.bin"), r"output folder 'no/such' does not exist\. Hint: create it first", work)


@pytest.fixture
def unwritable(work):
    """A folder no one may write in, not even root: chmod doesn't stop root, the immutable flag does."""
    folder = work / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder], capture_output=True).returncode:
        pytest.skip("running as root and `chattr +i` is unavailable here: no honest way to make a folder unwritable")
    try:
        assert not os.access(folder, os.W_OK)
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", folder], check=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("cmd", WRITERS)
def test_unwritable_output_folder(work, unwritable, cmd):
    _fails(_writer(cmd, "locked/out.bin"), r"output folder 'locked' is not writable\. Hint: choose another --out", work)
    assert list(unwritable.iterdir()) == []


def test_write_refused_by_the_file_system_is_one_error(work, unwritable, monkeypatch):
    # When access() says yes but the file system says no (NFS root squash, ACLs), the temporary
    # file's creation fails: that too must be a CheckpointError, not an OSError traceback.
    monkeypatch.setattr(checkpoint.os, "access", lambda *a, **k: True)
    denied = r"cannot write in '.*locked' \((Operation not permitted|Permission denied)\)"
    with pytest.raises(CheckpointError, match=denied):
        atomic_write(unwritable / "out.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert list(unwritable.iterdir()) == []


@pytest.mark.parametrize("cmd", WRITERS)
def test_existing_output_without_force(work, cmd):
    (work / "out.bin").write_bytes(b"precious")
    _fails(_writer(cmd, "out.bin"), r"output 'out\.bin' exists\. Hint: pass --force to overwrite it", work)
    assert (work / "out.bin").read_bytes() == b"precious"


@needs_grow
def test_existing_default_grow_output_without_force(work):
    (work / "small-target.safetensors").write_bytes(b"precious")
    _fails(["grow", "small.safetensors"], r"'small-target\.safetensors' exists\. Hint: pass --force", work)


def test_force_overwrites(work):
    (work / "out.safetensors").write_bytes(b"old")
    result = _invoke(["shrink", MODEL, "--num-classes", "10", "--out", "out.safetensors", "--force"])
    assert result.exit_code == 0, result.output
    assert read_state_dict(work / "out.safetensors")[1][META_PLAN]
    assert sorted(os.listdir(work)) == ["out.safetensors", "small.safetensors", "target.pth"]


# --- checkpoint contents ---------------------------------------------------------------------

@pytest.mark.parametrize("cut", [0.5, 20 / 2_000_000, 0])
@pytest.mark.parametrize("cmd", READERS)
def test_truncated_safetensors(work, cmd, cut):
    data = (work / "small.safetensors").read_bytes()
    (work / "cut.safetensors").write_bytes(data[: int(len(data) * cut)])
    _fails(_read(cmd, "cut.safetensors"),
           r"'cut\.safetensors' is not a readable safetensors file .*it may be truncated or corrupt\. Hint", work)


@pytest.mark.parametrize("cmd", READERS)
def test_corrupt_safetensors(work, cmd):
    data = bytearray((work / "small.safetensors").read_bytes())
    data[8:40] = b"\x00\xff" * 16  # garble the JSON header
    (work / "bad.safetensors").write_bytes(bytes(data))
    (work / "noise.safetensors").write_bytes(random.Random(0).randbytes(4096))
    for name in ("bad.safetensors", "noise.safetensors"):
        _fails(_read(cmd, name), rf"'{name}' is not a readable safetensors file .*truncated or corrupt", work)


@pytest.mark.parametrize("cut", [0.5, 0])
def test_truncated_torch_checkpoint(work, cut):
    data = (work / "target.pth").read_bytes()
    (work / "cut.pth").write_bytes(data[: int(len(data) * cut)])
    _fails(_read("shrink --weights", "cut.pth"),
           r"'cut\.pth' is not a readable PyTorch checkpoint \(.+\)\. Hint: check that the file is complete", work)


@pytest.mark.parametrize("cmd", READERS_OF_PLANS)
def test_safetensors_without_plan(work, cmd):
    _rewrite("small.safetensors", "bare.safetensors", meta=lambda m: {})
    _fails(_read(cmd, "bare.safetensors"), r"'bare\.safetensors' carries no modelsurgery plan\. Hint: ", work)


@pytest.mark.parametrize("cmd", READERS_OF_PLANS)
def test_plan_json_invalid(work, cmd):
    _rewrite("small.safetensors", "p.safetensors", meta=lambda m: {**m, META_PLAN: m[META_PLAN][:-7]})
    _fails(_read(cmd, "p.safetensors"), r"plan is not valid JSON \(.* at char \d+\)\. Hint: re-create it", work)


@pytest.mark.parametrize("cmd", READERS_OF_PLANS)
def test_plan_json_malformed(work, cmd):
    _rewrite("small.safetensors", "p.safetensors", meta=_edit_plan(lambda d: d.pop("source")))
    _fails(_read(cmd, "p.safetensors"), r"malformed plan JSON \(KeyError\('source'\)\)\. Hint", work)


@pytest.mark.parametrize("cmd", READERS_OF_PLANS)
def test_plan_version_newer_than_supported(work, cmd):
    _rewrite("small.safetensors", "p.safetensors", meta=_edit_plan(lambda d: d.update(version=99)))
    _fails(_read(cmd, "p.safetensors"),
           rf"plan version 99 is newer than this modelsurgery supports \({PLAN_VERSION}\)\. Hint: upgrade modelsurgery",
           work)


def _mismatch(state):
    state = dict(state)
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(32, 32, 5, 5)
    state["fc.weight"] = torch.zeros(10, 7)
    return state


MISMATCH = (r"does not match its plan: missing \['fc\.bias'\], unexpected \['extra\.weight'\], wrong shapes "
            r"\[layer1\.0\.conv1\.weight \(32, 32, 5, 5\) != \(32, 32, 2, 2\); fc\.weight \(10, 7\) != \(10, 96\)\]")


@pytest.mark.parametrize("cmd", READERS_OF_PLANS)
def test_keys_and_shapes_that_do_not_match_the_plan_are_all_listed(work, cmd):
    _rewrite("small.safetensors", "m.safetensors", state=_mismatch)
    _fails(_read(cmd, "m.safetensors"), rf"'m\.safetensors' {MISMATCH}\. Hint", work)


def test_weights_that_do_not_match_the_model_are_all_listed(work):
    state = torch.load("target.pth", weights_only=True)
    torch.save(_mismatch(state), "m.pth")
    expected = MISMATCH.replace(r"\(32, 32, 2, 2\)", r"\(32, 32, 3, 3\)")
    _fails(_read("shrink --weights", "m.pth"), rf"--weights 'm\.pth' {expected}\. Hint", work)


def test_python_load_lists_every_mismatch(work):
    _rewrite("small.safetensors", "m.safetensors", state=_mismatch)
    with pytest.raises(CheckpointError, match=MISMATCH):
        checkpoint.load("m.safetensors")


# --- pickles that hold code ------------------------------------------------------------------

class _RunsCode:
    """Unpickling this runs a shell command: what a malicious .pt can do to torch.load(weights_only=False)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CustomClass:
    """A harmless custom object: still code to import, so weights_only=True must refuse it."""

    def __init__(self):
        self.weight = torch.ones(2)


def _evil_files(work):
    marker = work / "PWNED"
    torch.save({"conv.weight": torch.ones(1), "payload": _RunsCode(marker)}, work / "evil.pt")
    with open(work / "evil.pth", "wb") as f:  # a bare pickle, not torch's zip format
        pickle.dump({"payload": _RunsCode(marker)}, f)
    torch.save({"state_dict": _CustomClass()}, work / "custom.pt")
    return marker


def test_the_code_pickle_is_live(tmp_path):
    """The payload really runs when unpickled without weights_only, so the tests below can fail."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "custom.pt"])
def test_pickle_with_code_is_refused_by_shrink_weights(work, name):
    marker = _evil_files(work)
    _fails(_read("shrink --weights", name),
           rf"refusing '{re.escape(name)}': it needs code to unpickle .*weights_only=True\. Hint: re-save it", work)
    assert not marker.exists()


@needs_grow
@pytest.mark.parametrize("name", ["evil.pt", "custom.pt"])
def test_pickle_with_code_is_refused_by_grow(work, name):
    marker = _evil_files(work)
    _fails(["grow", name, "--plan", "small.safetensors", "--out", "big.safetensors"],
           rf"refusing '{re.escape(name)}': it needs code to unpickle", work)
    assert not marker.exists()


def test_pickle_with_code_is_refused_by_the_python_api(work):
    marker = _evil_files(work)
    for name in ("evil.pt", "evil.pth", "custom.pt"):
        with pytest.raises(CheckpointError, match="needs code to unpickle"):
            read_state_dict(name)
    assert not marker.exists()


# --- training scripts' checkpoints: wrappers, prefixes, EMA ----------------------------------

def test_namespace_beside_code_is_refused_and_the_code_never_runs(work):
    """argparse.Namespace is allowed (timm's and torchvision's `args`); what stands beside it is not."""
    marker = work / "PWNED"
    state = torch.load("target.pth", weights_only=True)
    torch.save({"state_dict": state, "args": argparse.Namespace(model=MODEL, lr=0.1), "epoch": 3,
                "hook": _RunsCode(marker)}, work / "train.pth.tar")
    torch.save({"model": state, "args": argparse.Namespace(payload=_RunsCode(marker))}, work / "nested.pth")
    for args in (_read("shrink --weights", "train.pth.tar"), _read("shrink --weights", "nested.pth"),
                 ["grow", "train.pth.tar", "--plan", "small.safetensors", "--out", "big.safetensors"],
                 ["info", "nested.pth"]):
        _fails(args, r"refusing '(train\.pth\.tar|nested\.pth)': it needs code to unpickle \((posix|os)\.system\); "
                     r"modelsurgery only loads with weights_only=True\. Hint: re-save it", work)
    with pytest.raises(CheckpointError, match=r"needs code to unpickle"):
        checkpoint.load("train.pth.tar", plan=checkpoint.read_plan(read_state_dict("small.safetensors")[1]))
    assert not marker.exists()
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # allowed per load, never globally


def _renamed(prefix):
    state = torch.load("target.pth", weights_only=True)
    return {f"{prefix}{k}": v for k, v in state.items()}


def test_keys_under_no_prefix_list_what_was_found_and_expected(work):
    torch.save({"state_dict": _renamed("backbone_"), "epoch": 1}, work / "other.pt")
    match = (r"--weights 'other\.pt' \['state_dict'\] matches the model under no prefix: it holds "
             r"'backbone_conv1\.0\.weight', 'backbone_conv1\.1\.weight', 'backbone_conv1\.1\.bias', \.\.\. "
             r"\(\d+ in all\); the model expects 'conv1\.0\.weight', 'conv1\.1\.weight', 'conv1\.1\.bias', \.\.\. "
             r"\(\d+ in all\)\. Hint")
    _fails(_read("shrink --weights", "other.pt"), match, work)
    _fails(["grow", "other.pt", "--plan", "small.safetensors", "--out", "big.safetensors"],
           r"'other\.pt' \['state_dict'\] matches the model under no prefix: it holds 'backbone_conv1", work)


def test_ema_without_ema_weights_is_one_error(work):
    torch.save({"state_dict": _renamed("module."), "optimizer": {}, "epoch": 1}, work / "no_ema.pth")
    _fails([*_read("shrink --weights", "target.pth"), "--ema"],
           r"--ema: --weights 'target\.pth' holds no EMA weights \(a bare state_dict\)\. Hint: drop --ema", work)
    _fails([*_read("shrink --weights", "no_ema.pth"), "--ema"],
           r"holds no EMA weights \(top-level keys: 'state_dict', 'optimizer', 'epoch'\)\. Hint: drop --ema to read "
           r"its 'state_dict'", work)
    _fails(["grow", "small.safetensors", "--ema", "--out", "big.safetensors"],
           r"--ema: 'small\.safetensors' holds no EMA weights \(a safetensors file\)\. Hint: drop --ema", work)
    _fails(["export", "small.safetensors", "--ema", "--out", "m.onnx"], r"holds no EMA weights", work)
    _fails(["shrink", MODEL, "--ema", "--out", "out.safetensors"],
           r"--ema reads the EMA weights of --weights\. Hint: add --weights FILE", work)
    with pytest.raises(CheckpointError, match=r"--ema: 'target\.pth' holds no EMA weights"):
        read_state_dict("target.pth", ema=True)


def test_only_ema_weights_need_ema(work):
    torch.save({"model_ema": {"n_averaged": torch.tensor(3), **_renamed("module.")}, "epoch": 1}, work / "ema.pth")
    _fails(_read("shrink --weights", "ema.pth"),
           r"--weights 'ema\.pth' holds only EMA weights \('model_ema'\)\. Hint: pass --ema to read them", work)
    assert _invoke([*_read("shrink --weights", "ema.pth"), "--ema"]).exit_code == 0


def test_two_copies_of_the_model_are_ambiguous(work):
    torch.save({"state_dict": {**_renamed("student."), **_renamed("teacher.")}}, work / "distill.ckpt")
    _fails(_read("shrink --weights", "distill.ckpt"), r"--weights 'distill\.ckpt' holds the model's keys under "
           r"several prefixes \('student\.', 'teacher\.'\)\. Hint: save the one you want as a plain state_dict", work)


def test_checkpoint_without_a_state_dict_lists_its_keys(work):
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=0.1), "optimizer": {"state": {}}}, work / "empty.pth")
    for args in (_read("shrink --weights", "empty.pth"), ["info", "empty.pth"]):
        _fails(args, r"'empty\.pth' holds no state_dict of tensors \(top-level keys: 'epoch', 'args', 'optimizer'\)\. "
                     r"Hint: save `model\.state_dict\(\)`", work)


# --- models and layers -----------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["plan", "shrink"])
@pytest.mark.parametrize("name, match", [
    ("resnet1800", r"unknown model 'resnet1800' in timm \(or `torchvision:NAME` for torchvision\): did you mean "),
    ("torchvision:resnet1800", r"unknown model 'torchvision:resnet1800' in torchvision: did you mean "),
    ("zzqqxx", r"unknown model 'zzqqxx' in timm .*: no close match"),
])
def test_unknown_model_name(work, cmd, name, match):
    args = [cmd, name] + (["--out", "out.safetensors"] if cmd == "shrink" else [])
    _fails(args, match, work)


class _Unconvertible(nn.Module):
    """Layers shrink must not rewrite: a transposed conv, a 3-D conv and a dilated conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.volume = nn.Conv3d(1, 1, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.down(self.up(self.dilated(self.conv(x))))
        x = self.volume(x.unsqueeze(1)).squeeze(1)
        return self.head(x.mean((2, 3)))


def test_unconvertible_layers_are_kept_with_a_warning():
    torch.manual_seed(0)
    target = _Unconvertible()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, plan = shrink(target, target_size=32)
    messages = [str(w.message) for w in caught]
    assert "not converted (kept as they are): up, volume" in messages
    assert "not converted (dilated convs keep their kernels): dilated" in messages
    for name in ("up", "volume", "dilated"):
        old, new = target.get_submodule(name), small.get_submodule(name)
        assert type(new) is type(old) and new.padding == old.padding and new.dilation == old.dilation
        assert torch.equal(new.weight, old.weight) and torch.equal(new.bias, old.bias)
    assert {c.name for c in plan.convs} == {"conv", "dilated", "down"}
    assert not plan.conv("dilated").changed and plan.conv("conv").changed  # the others do shrink
    x = torch.randn(1, 3, plan.input_size, plan.input_size)
    assert small(x).shape == (1, 10)


# --- NaN and Inf -----------------------------------------------------------------------------

def _poison(state):
    state = dict(state)
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].clone()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"] = state["fc.bias"].clone()
    state["fc.bias"][3] = float("inf")
    return state


def _names_nonfinite(text: str, source: str) -> None:
    """`text` has one warning, naming `source` and exactly the two poisoned tensors (any order)."""
    found = re.findall(rf"warning: '?{re.escape(source)}'? has NaN or Inf in: (.*)", text)
    assert len(found) == 1, text
    assert sorted(found[0].split(", ")) == ["fc.bias", "layer1.0.conv1.weight"]


def test_nonfinite_weights_warn_on_shrink_weights(work):
    torch.save(_poison(torch.load("target.pth", weights_only=True)), "nan.pth")
    result = _invoke(["shrink", MODEL, "--num-classes", "10", "--weights", "nan.pth", "--out", "s.safetensors"])
    assert result.exit_code == 0, result.output
    _names_nonfinite(result.stderr, "nan.pth")


def test_nonfinite_weights_warn_on_load(work):
    _rewrite("small.safetensors", "nan.safetensors", state=_poison)
    with pytest.warns(UserWarning, match=r"nan\.safetensors has NaN or Inf in: ") as caught:
        checkpoint.load("nan.safetensors")
    _names_nonfinite(f"warning: {caught[0].message}", "nan.safetensors")


def test_nonfinite_weights_warn_on_export(work):
    _rewrite("small.safetensors", "nan.safetensors", state=_poison)
    result = _invoke(["export", "nan.safetensors", "--out", "nan.onnx"])
    assert result.exit_code == 0, result.output
    _names_nonfinite(result.stderr, "nan.safetensors")  # once, by the loader


@needs_grow
def test_nonfinite_weights_warn_on_grow(work):
    _rewrite("small.safetensors", "nan.safetensors", state=_poison)
    result = _invoke(["grow", "nan.safetensors", "--out", "big.safetensors"])
    assert result.exit_code == 0, result.output
    _names_nonfinite(result.stderr, "nan.safetensors")


# --- faults while writing --------------------------------------------------------------------

_SLOW_SAVE = textwrap.dedent("""
    import sys, time
    import safetensors.torch
    import torch
    from modelsurgery import checkpoint
    from modelsurgery.plan import ModelSource, Plan

    real = safetensors.torch.save_file

    def half_then_hang(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = open(filename, "rb").read()
        with open(filename, "wb") as f:  # half the bytes on disk, then a long stall
            f.write(data[: len(data) // 2])
            f.flush()
        print("WRITING", flush=True)
        time.sleep(120)

    safetensors.torch.save_file = half_then_hang
    checkpoint.save(sys.argv[1], {"w": torch.arange(1e6)}, Plan(ModelSource("timm", "x"), 1, 1), force=True)
""")


def _kill_mid_write(folder: Path, out: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, out], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", proc.stderr.read()
        tmp = [p for p in folder.iterdir() if p.name.startswith(f".{out}.")]
        assert len(tmp) == 1 and tmp[0].stat().st_size > 0  # really mid-write, into the temporary file
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _visible(root: Path) -> dict[str, bytes | None]:
    return {k: v for k, v in _snapshot(root).items() if not k.startswith(".")}


def test_killed_while_overwriting_keeps_the_old_file(tmp_path):
    shutil.copy(Path(__file__), tmp_path / "out.safetensors")  # any old content will do
    before = _visible(tmp_path)
    _kill_mid_write(tmp_path, "out.safetensors")
    assert _visible(tmp_path) == before  # the old file is byte-identical; no partial file appeared
    # SIGKILL can't be caught, so the hidden temporary file stays: documented, never under --out.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in before]
    assert len(leftovers) == 1 and re.fullmatch(r"\.out\.safetensors\.\w+\.tmp", leftovers[0])


def test_killed_while_writing_a_new_file_leaves_no_file(tmp_path):
    _kill_mid_write(tmp_path, "new.safetensors")
    assert _visible(tmp_path) == {}


def test_interrupted_write_leaves_nothing(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")

    def interrupted(tmp):
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.bin", interrupted, force=True)
    assert _snapshot(tmp_path) == {"out.bin": b"old"}


def test_disk_full_is_one_error_and_keeps_the_old_file(work, monkeypatch):
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (work / "out.safetensors").write_bytes(b"old")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    _fails(["shrink", MODEL, "--num-classes", "10", "--out", "out.safetensors", "--force"],
           r"writing 'out\.safetensors' failed \(No space left on device\); the old file, if any, is unchanged", work)


def test_output_appearing_mid_write_is_not_clobbered(tmp_path):
    def racing(tmp):
        Path(tmp).write_bytes(b"ours")
        (tmp_path / "out.bin").write_bytes(b"theirs")  # someone else creates the output meanwhile

    with pytest.raises(OutputExistsError, match=r"'.*out\.bin' appeared while writing\. Hint: pass --force"):
        atomic_write(tmp_path / "out.bin", racing)
    assert _snapshot(tmp_path) == {"out.bin": b"theirs"}


def test_new_outputs_get_ordinary_permissions(tmp_path):
    path = atomic_write(tmp_path / "new.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600


# --- exit codes, for every command -----------------------------------------------------------

def test_group_help_documents_exit_codes():
    result = _invoke(["--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Exit codes (every command): 0 success 1 user or library error" in text
    assert "2 usage error (unknown option, missing argument)" in text


LIBRARY_ERRORS = {  # a command line per command that fails inside the library
    "plan": ["plan", "resnet1800"],
    "shrink": ["shrink", "resnet1800", "--out", "x.safetensors"],
    "grow": ["grow", "nope.safetensors"],
    "export": ["export", "nope.safetensors", "--out", "x.onnx"],
    "info": ["info", "nope.safetensors"],
}


@pytest.mark.parametrize("cmd", LIBRARY_ERRORS)
def test_exit_codes(work, cmd):
    assert _invoke([cmd, "--help"]).exit_code == 0
    _fails([cmd, "--no-such-option"], r"No such option:? '?--no-such-option", work, code=2)
    _fails([cmd], r"Missing (argument|option)", work, code=2)
    if cmd == "grow" and not _has_grow():
        pytest.skip("msurg grow is not installed yet")
    _fails(LIBRARY_ERRORS[cmd], r"unknown model|does not exist", work, code=1)


@pytest.mark.parametrize("args, match", [
    (["export", "small.safetensors", "--out", "x.onnx", "--opset", "6"], r"'--opset'.*6 is not in the range x>=7"),
    (["shrink", MODEL, "--out", "x.safetensors", "--input-size", "0"], r"'--input-size'.*0 is not in the range"),
    (["shrink", MODEL, "--out", "x.safetensors", "--method", "magic"], r"'--method'.*'magic' is not one of"),
])
def test_bad_option_values_are_usage_errors(work, args, match):
    _fails(args, match, work, code=2)


def test_real_process_prints_one_line_and_exits_1(tmp_path):
    """The installed `msurg`, not CliRunner: stderr is exactly one line, and nothing is written."""
    result = subprocess.run([str(MSURG), "export", "nope.safetensors", "--out", "x.onnx"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr == "error: checkpoint 'nope.safetensors' does not exist. Hint: check the path\n"
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


# --- per command: shrink ---------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["shrink", "resnet3", "--out", "{out}"], "unknown model 'resnet3'.*did you mean resnet34"),
    (["shrink", "resnet18", "--kernel-map", "3:two", "--out", "{out}"], "malformed kernel map"),
    (["shrink", "resnet18", "--input-size", "8", "--out", "{out}"], "too small"),
])
def test_cli_bad_input_one_line_exit_1_no_file(tmp_path, args, message):
    out = tmp_path / "small.safetensors"
    result = CliRunner().invoke(cli, [a.format(out=out) for a in args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(message, lines[0])
    assert "Traceback" not in result.output
    assert os.listdir(tmp_path) == []


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "small.safetensors"
    out.write_bytes(b"precious")
    runner = CliRunner()
    result = runner.invoke(cli, ["shrink", "resnet18", "--out", str(out)])
    assert result.exit_code == 1 and "--force" in result.output
    assert out.read_bytes() == b"precious" and os.listdir(tmp_path) == ["small.safetensors"]
    result = runner.invoke(cli, ["shrink", "resnet18", "--out", str(out), "--force"])
    assert result.exit_code == 0 and out.read_bytes() != b"precious"


# --- per command: grow (resnet18, 1 channel, 64 px target: conftest.resnet18_ckpt) ----------

def run_grow(*args):
    return CliRunner().invoke(cli, ["grow", *map(str, args)])


@needs_grow
def test_cli_grow_refuses_its_own_output_without_force(resnet18_ckpt, tmp_path):
    ckpt = tmp_path / resnet18_ckpt.name
    ckpt.write_bytes(resnet18_ckpt.read_bytes())
    assert run_grow(ckpt).exit_code == 0
    again = run_grow(ckpt)
    assert again.exit_code == 1 and "exists" in again.stderr
    assert run_grow(ckpt, "--force", "--method", "bilinear").exit_code == 0


@needs_grow
def test_cli_grow_upscale_and_its_old_name_method_write_the_same_weights(resnet18_ckpt, tmp_path):
    new, old = tmp_path / "upscale.safetensors", tmp_path / "method.safetensors"
    assert run_grow(resnet18_ckpt, "--out", new, "--upscale", "bilinear").exit_code == 0
    assert run_grow(resnet18_ckpt, "--out", old, "--method", "bilinear").exit_code == 0
    a, b = read_state_dict(new)[0], read_state_dict(old)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run_grow(resnet18_ckpt, "--out", tmp_path / "pinv.safetensors").exit_code == 0
    pinv = read_state_dict(tmp_path / "pinv.safetensors")[0]
    assert not torch.equal(pinv["conv1.weight"], a["conv1.weight"])   # the flag chose the upscaling


@needs_grow
def test_cli_grow_pt_file_without_a_plan(resnet18_ckpt, tmp_path):
    state, _ = read_state_dict(resnet18_ckpt)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "small.pt")
    plain = run_grow(tmp_path / "small.pt", "--out", tmp_path / "x.safetensors")
    assert plain.exit_code == 1 and "carries no modelsurgery plan" in plain.stderr


def _no_plan(path, state, meta):
    save_file(state, str(path))


def _future(path, state, meta):
    plan = json.loads(meta[META_PLAN])
    plan["version"] = 99
    save_file(state, str(path), metadata={**meta, META_PLAN: json.dumps(plan)})


def _mismatched(path, state, meta):
    state = dict(state)
    del state["fc.weight"], state["layer2.0.bn1.running_mean"]
    state["extra.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    save_file(state, str(path), metadata=meta)


def _truncated(path, state, meta):
    save_file(state, str(path), metadata=meta)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_INPUT = [
    (_no_plan, [], "carries no modelsurgery plan"),
    (_future, [], "plan version 99 is newer than this modelsurgery supports"),
    (_mismatched, [], r"missing \['layer2.0.bn1.running_mean', 'fc.weight'\], unexpected \['extra.weight'\], "
                      r"wrong shapes \[layer1.0.conv1.weight \(64, 64, 3, 3\) != \(64, 64, 2, 2\)\]"),
    (_truncated, [], "truncated or corrupt"),
    (None, ["--method", "replicate"], r"replicate: size \(7, 7\) is not an integer multiple of \(5, 5\)"),
    (None, ["--to", "40"], "--to 40 is smaller than the pre-train input size 46"),
    (None, ["--method", "lsq"], "--method lsq fits kernels to calibration images"),
]


@needs_grow
@pytest.mark.parametrize("make,args,message", BAD_INPUT, ids=[
    "no-plan", "future-version", "mismatch", "truncated", "replicate", "to-too-small", "lsq-no-data"])
def test_cli_grow_bad_input_one_line_exit_1_no_output(resnet18_ckpt, tmp_path, make, args, message):
    state, meta = read_state_dict(resnet18_ckpt)
    ckpt = tmp_path / "in.safetensors"
    if make is None:
        ckpt.write_bytes(resnet18_ckpt.read_bytes())
    else:
        make(ckpt, state, meta)
    listing = sorted(os.listdir(tmp_path))
    result = run_grow(ckpt, *args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert sorted(os.listdir(tmp_path)) == listing
