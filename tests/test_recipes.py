"""The recipes (recipes/*.py), their shared plumbing (modelsurgery.recipes_kit) and the benchmark.

Every recipe runs for a few iterations on the committed fixture data with tiny networks; the
tests check what it writes (results JSON, per-epoch logs, plot, checkpoint) and what it did
(forms, sizes, modes, learning rates), and that a run stopped mid-way and resumed ends with
the same weights as an uninterrupted one, for each of the four methods (across the grows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import recipes.coarse_to_fine as c2f
import recipes.kernel_rescaling as kr
import recipes.low_mode as lm
import recipes.progressive_resizing as pr
from modelsurgery.errors import DatasetError, OutputExistsError
from modelsurgery.images import load_dataset
from modelsurgery.methods.progressive_resizing import ramp_size
from modelsurgery.nets import C2FNet, FashionResNet
from modelsurgery.recipes_kit.accuracy import compare, format_comparison, time_to_accuracy
from modelsurgery.recipes_kit.config import parse_config
from modelsurgery.recipes_kit.results import frontier_reading
from modelsurgery.recipes_kit.runs import prepare_out

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data="fixture", width=4, batch_size=32, max_batches=2, lr=0.05)
RESULT_KEYS = {"method", "config", "plan", "git_revision", "machine", "runs", "comparison", "final_acc",
               "time_to_target", "target_acc", "table"}


def log_of(out: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in (out / run / "log.jsonl").read_text().splitlines()]


def check_outputs(out: Path, result: dict, runs: list[str], epochs: int) -> dict:
    """The files every run writes, and that they agree with what main() returned."""
    on_disk = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(on_disk)
    assert on_disk["final_acc"] == result["final_acc"] and on_disk["runs"].keys() == set(runs)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert on_disk["git_revision"] != "" and on_disk["config"]["data"] == "fixture"
    for name in runs:
        log, run = log_of(out, name), on_disk["runs"][name]
        assert [r["epoch"] for r in log] == list(range(1, epochs + 1)) and run["history"] == log
        assert all(0.0 <= r["val_acc"] <= 1.0 and r["wall"] > 0 for r in log)
        assert [r["wall"] for r in log] == sorted(r["wall"] for r in log)
        assert run["final_acc"] == log[-1]["val_acc"] and run["wall"] == log[-1]["wall"]
        assert (out / name / "last.safetensors").is_file()
    return on_disk


# ---- kernel rescaling ---------------------------------------------------------------------------

def test_kernel_rescaling_pretrains_small_then_grows(tmp_path):
    cfg = kr.Config(**TINY, out=str(tmp_path), epochs=3, milestones=(2,), switch=1, baseline=True)
    result = kr.main(cfg)
    on_disk = check_outputs(tmp_path, result, ["baseline", "kernel_rescaling"], 3)
    log = log_of(tmp_path, "kernel_rescaling")
    assert [r["form"] for r in log] == ["pretrain", "target", "target"]
    assert [r["size"] for r in log] == [19, 28, 28] and [r["eval_size"] for r in log] == [19, 28, 28]
    assert [r["form"] for r in log_of(tmp_path, "baseline")] == ["target"] * 3
    lrs = [r["lr"] for r in log]
    assert lrs == [r["lr"] for r in log_of(tmp_path, "baseline")] == pytest.approx([0.05, 0.05, 0.005])
    plan = on_disk["plan"]
    assert plan["input_size"] == 19 and plan["target_size"] == 28
    assert {tuple(c["small_kernel"]) for c in plan["convs"] if tuple(c["kernel"]) == (3, 3)} == {(2, 2)}
    # the comparison is against the baseline's final accuracy, 0.3 points of tolerance
    base = on_disk["runs"]["baseline"]
    assert on_disk["target_acc"] == base["final_acc"] and base["time_to_target"] <= base["wall"]
    # the last checkpoint is the grown target: it loads strictly into a fresh target network
    state = {k: v for k, v in load_file(tmp_path / "kernel_rescaling" / "last.safetensors").items()
             if not k.startswith("train_state/")}
    FashionResNet(width=4).load_state_dict(state, strict=True)


def test_kernel_rescaling_extra_epochs_hold_the_rate(tmp_path):
    cfg = kr.Config(**TINY, out=str(tmp_path), epochs=3, milestones=(2,), switch=1, extra_epochs=1)
    kr.main(cfg)
    log = log_of(tmp_path, "kernel_rescaling")
    assert [r["lr"] for r in log] == pytest.approx([0.05, 0.05, 0.05, 0.005])
    assert [r["form"] for r in log] == ["pretrain", "target", "target", "target"]


def test_kernel_rescaling_with_low_mode_after_the_grow(tmp_path):
    """The stretch: Algorithm 1 on the grown target only; the pre-train epochs stay full."""
    cfg = kr.Config(**TINY, out=str(tmp_path), epochs=4, milestones=(3,), switch=1, low_p=1.0, low_full_epochs=1)
    result = kr.main(cfg)
    log = log_of(tmp_path, "kernel_rescaling+low_mode")
    assert [(r["form"], r["mode"]) for r in log] == [("pretrain", "full"), ("target", "low"), ("target", "low"),
                                                     ("target", "full")]
    assert result["method"] == "kernel_rescaling+low_mode" and 0 <= result["final_acc"] <= 1


def test_kernel_rescaling_defaults_grow_two_epochs_before_the_drop():
    cfg = kr.resolve(kr.Config(epochs=12, out="x"))
    assert cfg.milestones == (9,) and cfg.switch == 7
    assert kr.resolve(kr.Config(milestones=(30, 60), out="x")).switch == 28
    demo = kr.resolve(kr.Config(demo=True, epochs=2, out="x"))
    assert demo.data == "fixture" and demo.baseline and demo.epochs == 2   # a changed default wins


def test_a_finished_run_folder_is_not_reused_without_resume_or_force(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--resume"):
        prepare_out(tmp_path)
    assert prepare_out(tmp_path, force=True) == tmp_path


# ---- low mode -----------------------------------------------------------------------------------

def test_low_mode_follows_algorithm_1(tmp_path):
    """p_low = 1 until the LR drops, then full-mode epochs only; evaluation always at full size."""
    cfg = lm.Config(**TINY, out=str(tmp_path), epochs=3, milestones=(2,), p_low=1.0, full_epochs=1, baseline=True)
    result = lm.main(cfg)
    check_outputs(tmp_path, result, ["baseline", "low_mode"], 3)
    log = log_of(tmp_path, "low_mode")
    assert [r["mode"] for r in log] == ["low", "low", "full"]
    assert [r["low_fraction"] for r in log] == [1.0, 1.0, 0.0]
    assert {r["eval_size"] for r in log} == {28} and {r["size"] for r in log} == {28}
    assert result["runs"]["low_mode"]["p_low"] == [1.0, 1.0, 0.0]
    assert {r["mode"] for r in log_of(tmp_path, "baseline")} == {"full"}


def test_low_mode_deterministic_alternation(tmp_path):
    lm.main(lm.Config(**{**TINY, "max_batches": 4}, out=str(tmp_path), epochs=1, milestones=(), every=2))
    assert [(r["mode"], r["low_fraction"]) for r in log_of(tmp_path, "low_mode")] == [("mixed", 0.5)]


# ---- progressive resizing -----------------------------------------------------------------------

@pytest.mark.parametrize("regime, sizes", [
    ("gradual", [ramp_size(e, 8, 28, 1, 4, 4) for e in range(5)]),
    ("step", [8, 8, 28, 28, 28]),
    ("fixed", [8] * 5),
])
def test_progressive_resizing_regimes(tmp_path, regime, sizes):
    cfg = pr.Config(**{**TINY, "max_batches": 1}, out=str(tmp_path), regime=regime, epochs=5, milestones=(4,),
                    start_size=8, ramp_start=1, ramp_end=4, step_epoch=2)
    result = pr.main(cfg)
    log = log_of(tmp_path, f"progressive_resizing_{regime}")
    assert [r["size"] for r in log] == sizes and {r["eval_size"] for r in log} == {28}
    assert result["method"] == f"progressive_resizing_{regime}"
    if regime == "gradual":
        assert sizes == [8, 8, 16, 20, 28] and all(s % 4 == 0 for s in sizes)


# ---- coarse to fine -----------------------------------------------------------------------------

def test_coarse_to_fine_grows_8_16_32(tmp_path):
    cfg = c2f.Config(**{k: v for k, v in TINY.items() if k != "width"}, out=str(tmp_path), epochs=4,
                     milestones=(3,), stage_epochs=(0, 1, 2), widths=(8, 16, 32), baseline=True)
    result = c2f.main(cfg)
    check_outputs(tmp_path, result, ["baseline", "coarse_to_fine"], 4)
    log = log_of(tmp_path, "coarse_to_fine")
    assert [r["size"] for r in log] == [8, 16, 32, 32] == [r["eval_size"] for r in log]
    assert [r["form"] for r in log] == ["pretrain", "pretrain", "target", "target"]
    assert result["runs"]["coarse_to_fine"]["stage_widths"] == [[2, 4, 8], [4, 8, 16], [8, 16, 32]]
    assert {r["size"] for r in log_of(tmp_path, "baseline")} == {32}
    state = {k: v for k, v in load_file(tmp_path / "coarse_to_fine" / "last.safetensors").items()
             if not k.startswith("train_state/")}
    C2FNet(32, (8, 16, 32)).load_state_dict(state, strict=True)


# ---- resume, for each method -------------------------------------------------------------------

C2F_TINY = dict(data="fixture", batch_size=32, max_batches=2, widths=(8, 16, 32))
RESUME = {   # recipe, settings, epochs of each interrupted part, run name, what its log shows
    "kernel_rescaling": (kr, dict(TINY, epochs=4, milestones=(3,), switch=2), (2, 3), "kernel_rescaling",
                         ("form", ["pretrain", "pretrain", "target", "target"])),
    "kernel_rescaling_carried_momentum": (kr, dict(TINY, epochs=4, milestones=(3,), switch=2, carry_momentum=True,
                                                   lstsq=64, rewarm=0.5), (2, 3), "kernel_rescaling",
                                          ("form", ["pretrain", "pretrain", "target", "target"])),
    "low_mode": (lm, dict(TINY, epochs=3, milestones=(2,), p_low=0.5, full_epochs=1), (1,), "low_mode",
                 ("mode", ["mixed", "low", "full"])),
    "progressive_resizing": (pr, dict(TINY, epochs=4, milestones=(3,), start_size=8, ramp_start=0, ramp_end=3),
                             (2,), "progressive_resizing_gradual", ("size", [8, 16, 20, 28])),
    "coarse_to_fine": (c2f, dict(C2F_TINY, epochs=4, milestones=(3,), stage_epochs=(0, 1, 2)), (1, 2),
                       "coarse_to_fine", ("size", [8, 16, 32, 32])),
}


@pytest.mark.parametrize("method", RESUME)
def test_resume_gives_the_same_weights(tmp_path, method):
    """Stopped after some epochs (before and after a grow), resumed: the weights and optimizer state of one
    uninterrupted run (the momentum buffers too, carried across the grow or not)."""
    recipe, settings, stops, run, (field, expected) = RESUME[method]
    recipe.main(recipe.Config(**settings, out=str(tmp_path / "straight")))
    for i, epochs in enumerate((*stops, settings["epochs"])):
        recipe.main(recipe.Config(**{**settings, "epochs": epochs}, out=str(tmp_path / "interrupted"), resume=i > 0))
    a, b = (load_file(tmp_path / name / run / "last.safetensors") for name in ("straight", "interrupted"))
    model_keys = [k for k in a if not k.startswith("train_state/")]
    optim_keys = [k for k in a if k.startswith("train_state/optim/")]
    assert a.keys() == b.keys() and model_keys and optim_keys
    assert all(torch.equal(a[k], b[k]) for k in model_keys + optim_keys)
    logs = [log_of(tmp_path / name, run) for name in ("straight", "interrupted")]
    assert [r[field] for r in logs[1]] == expected
    assert [r["val_acc"] for r in logs[0]] == [r["val_acc"] for r in logs[1]]


# ---- the command line and the plumbing ----------------------------------------------------------

@pytest.mark.parametrize("module", [kr, lm, pr, c2f], ids=lambda m: m.__name__)
def test_help_lists_the_common_options_with_units(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(module.Config, ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--out", "--epochs", "--seed", "--max-batches", "--baseline", "--resume", "--lr"):
        assert flag in text
    assert "px" in text and "default: 0.1" in text


def test_config_parsing_types():
    cfg = parse_config(kr.Config, ["--milestones", "6,8", "--max-batches", "3", "--no-baseline", "--switch", "none",
                                   "--lr", "0.2", "--demo"])
    assert cfg.milestones == (6, 8) and cfg.max_batches == 3 and cfg.switch is None and cfg.lr == 0.2 and cfg.demo
    with pytest.raises(SystemExit):
        parse_config(kr.Config, ["--epochs", "many"])


def test_recipe_runs_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "kernel_rescaling.py"), "--demo", "--epochs", "2",
                           "--milestones", "1", "--switch", "1", "--max-batches", "2", "--width", "4",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "baseline" in proc.stdout and "kernel_rescaling" in proc.stdout and "final acc" in proc.stdout
    assert "That was a smoke run" in proc.stdout and frontier_reading("kernel_rescaling") in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["demo"] and result["config"]["batch_size"] == 64 and set(result["runs"]) == {
        "baseline", "kernel_rescaling"}


def test_time_to_accuracy_and_comparison():
    base = {"final_acc": 0.90, "wall": 40.0, "history": [
        {"epoch": e, "wall": 10.0 * e, "val_acc": a} for e, a in [(1, 0.80), (2, 0.85), (3, 0.898), (4, 0.90)]]}
    fast = {"final_acc": 0.899, "wall": 25.0, "history": [
        {"epoch": e, "wall": 6.0 * e, "val_acc": a} for e, a in [(1, 0.80), (2, 0.896), (3, 0.897), (4, 0.899)]]}
    slow = {"final_acc": 0.88, "wall": 20.0, "history": [{"epoch": 1, "wall": 20.0, "val_acc": 0.88}]}
    assert time_to_accuracy(base["history"], 0.90) == (30.0, 3)     # 0.898 is within 0.3 points
    assert time_to_accuracy(fast["history"], 0.90) == (18.0, 3)     # 0.896 is not: 0.4 points below
    assert time_to_accuracy(base["history"], 0.90, tolerance=0.0) == (40.0, 4)
    rows = compare({"baseline": base, "fast": fast, "slow": slow}, "baseline")
    assert rows[0]["saved"] == 0.0 and rows[1]["saved"] == pytest.approx(0.4)
    assert rows[2]["time_to_target"] is None and rows[2]["saved"] is None
    assert fast["target_acc"] == 0.90 and fast["epoch_to_target"] == 3
    table = format_comparison(rows)
    assert "not reached" in table and "+40.0%" in table and "90.00%" in table


def test_load_dataset_sources(tmp_path):
    data = load_dataset("fixture")
    assert data.train_images.shape == (3000, 1, 28, 28) and data.in_chans == 1 and data.num_classes == 10
    with pytest.raises(DatasetError, match="neither IDX files"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "missing")
    from PIL import Image
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (20, 24), (i * 90, 30, 200)).save(tmp_path / split / cls / f"{i}.png")
    folder = load_dataset(tmp_path, size=16)
    assert folder.train_images.shape == (4, 3, 16, 16) and folder.num_classes == 2 and folder.in_chans == 3


def test_coarse_to_fine_on_any_model_grows_width_depth_and_size(tmp_path):
    from modelsurgery.nets import FashionResNet

    cfg = c2f.Config(**TINY, out=str(tmp_path), epochs=4, milestones=(3,), stage_epochs=(0, 1, 2),
                     sizes=(14, 20, 28), model="fashion-resnet18", baseline=True, recalibrate=32)
    result = c2f.main(cfg)
    check_outputs(tmp_path, result, ["baseline", "coarse_to_fine"], 4)
    log = log_of(tmp_path, "coarse_to_fine")
    assert [r["size"] for r in log] == [14, 20, 28, 28]
    assert [r["form"] for r in log] == ["pretrain", "pretrain", "target", "target"]
    run = result["runs"]["coarse_to_fine"]
    assert run["stage_widths"] == [0.25, 0.5, 1.0] and run["stage_depths"] == [0.5, 1.0, 1.0]
    state = {k: v for k, v in load_file(tmp_path / "coarse_to_fine" / "last.safetensors").items()
             if not k.startswith("train_state/")}
    from modelsurgery.nets import MODELS

    FashionResNet(MODELS["fashion-resnet18"], 4, 1, 10).load_state_dict(state, strict=True)
