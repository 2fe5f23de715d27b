"""Time to accuracy on the full Fashion-MNIST, as a frontier: every method against the baseline's.

FFCV's recipes train one recipe for several epoch budgets, the schedule stretched to each, and
report accuracy against time; a method's saving is then read off that frontier at its own
accuracy, 1 − t_method / t_baseline(acc) (`bench.frontier`). This benchmark does the same:

- network: FashionResNet-18 at `--width` 16 (`modelsurgery.nets`: 2-2-2-2 basic blocks, 3×3
  stride-1 stem, no max-pool; 28/14/7/4 px maps), the cheapest width whose pre-train step (2×2
  kernels, 19 px) costs clearly less than the same network at 19 px: the premise of kernel
  rescaling. `--step-ratios 8,16,32,64` measures that table (`bench/results/step_ratios.json`);
  at width 8 the two cost the same, an overhead-bound network on which the kernels buy nothing.
- one schedule for every run: batch 256, SGD (momentum 0.9, weight decay 5e-4 on weights), no
  augmentation, warmup-stable-decay (LR 0.1 constant, then linear to 0 over the last half of the
  budget, `train.WarmupStableDecay(decay=0.5)`), so that the baseline's budgets whose cool-down
  starts at a whole epoch branch off one trunk run per seed.
- budgets: the baseline at `--baseline` 2, 4, 6, 8, 12 epochs; the methods at `--budgets` 4 and 8,
  the largest the headline; `--seeds` 2 a point, `--headline-seeds` 3 at the headline.
- methods: `kernel_rescaling` grows at the start of the cool-down (`--switch-fraction` 0.5, the
  schedule's analogue of de Gusmão et al.'s "before the LR drops") with the recipe's grow defaults
  (`recipes/kernel_rescaling.py`); `kernel_rescaling+progressive_resizing` the same with the
  pre-train phase ramped 12 → 19 px; `progressive_resizing` ramps 16 → 28 px, full size in the last
  quarter; `low_mode` runs p = 0.5 (Nouri et al. 2019) and full mode in the last quarter;
  `coarse_to_fine` (Liu et al. 2016) runs its own `C2FNet` family (8 → 16 → 32 px) against that
  network's own baseline. Then `ABLATIONS`, each method's variants at `--ablation-epochs` 4.
- cost, the x-axis: each run's steps per kind × the kind's cost relative to a full step (measured
  interleaved at the start of each sitting), plus its one-off work (the Trainer's `epoch_start_s`:
  grows, fits, recalibration, resizes) converted at the run's own seconds per full step, in seconds
  of the sitting's full step (`bench.frontier.full_step_equivalents`). Training wall time (the
  Trainer's `wall`) is reported beside it; the final evaluation is timed apart.

Every run's result is cached in `bench/results/time_to_accuracy_runs/<key>.json`, the key a hash
of its full config (family, method, variant, budget, seed, every hyperparameter, the data files,
the torch version and device); a run already there is not trained again, and the summary is
rewritten after every run, so a stop loses at most the run in progress (which resumes from its last
epoch's checkpoint in `runs/time_to_accuracy/`). `--estimate` prints the run list and its time.

Usage (from the repository root):
    python -m bench.time_to_accuracy --estimate          # the run list and the estimated time
    nohup python -m bench.time_to_accuracy > runs/time_to_accuracy.log 2>&1 &     # the frontier
    python -m bench.time_to_accuracy --report            # the summary of the cached runs; trains nothing
    python -m bench.time_to_accuracy --quick             # smoke run on the fixture data (< 1 min)

Writes bench/results/time_to_accuracy.json and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

# OpenMP threads that sleep at barriers instead of spinning: on a machine shared with other jobs a
# spinning thread steals its partner's core (set before torch loads; an explicit setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.common import RESULTS, ROOT, Run, goal, load_average, write_results  # noqa: E402
from bench.frontier import full_step_equivalents, method_point, point_summary, run_key  # noqa: E402
from modelsurgery.errors import SurgeryError  # noqa: E402

CACHE_VERSION = 1
METHODS = ("kernel_rescaling", "low_mode", "progressive_resizing", "kernel_rescaling+progressive_resizing",
           "coarse_to_fine")
GOALS = {"kernel_rescaling": 0.20, "low_mode": 0.15}   # saving at equal accuracy, headline budget
# Each method's best shot: variants at the ablation budget (`Settings.ablation_epochs`), each a function of
# the budget b that overrides the method's default parameters. The defaults' own runs are the reference.
ABLATIONS: dict[str, dict[str, Callable[[int], dict]]] = {
    "kernel_rescaling": {
        "switch at 1/3": lambda b: {"switch": max(1, round(b / 3))},
        "switch at 2/3": lambda b: {"switch": min(b - 1, round(2 * b / 3))},
        "pinv + BatchNorm only": lambda b: {"lstsq": 0},
        "no re-warm-up": lambda b: {"rewarm": 0.0},
        "re-warm-up 0.5 epoch": lambda b: {"rewarm": 0.5},
    },
    "kernel_rescaling+progressive_resizing": {
        "start 8 px": lambda b: {"start": 8},
        "start 16 px": lambda b: {"start": 16},
    },
    "progressive_resizing": {
        "start 12 px": lambda b: {"start": 12},
        "start 20 px": lambda b: {"start": 20},
        "late ramp (from half the budget)": lambda b: {"ramp_start": b // 2},
    },
    "low_mode": {
        "p_low 0.3": lambda b: {"p_low": [0.3 if e < b - full_tail(b) else 0.0 for e in range(b)]},
        "p_low 0.7": lambda b: {"p_low": [0.7 if e < b - full_tail(b) else 0.0 for e in range(b)]},
        "second convs only": lambda b: {"convs": "layer*.conv2"},
    },
}
LOW_CONVS = {"low": None, "low-conv2": "layer*.conv2"}   # step kinds of low mode: which convs are pooled
NETWORKS = {8: "overhead-bound network: at width 8 norms, activations and memory traffic set the step's floor, "
               "so smaller kernels save little beyond smaller images",
            16: "conv-bound network: the cheapest width at which smaller kernels save beyond smaller images"}
# Step cost relative to a full 28 px step of FashionResNet-18 at width 16, 2-core AMD EPYC (measured
# interleaved): what --estimate assumes; a run measures its own table. Sizes not listed scale with the pixels.
RATIOS = {"target 28px": 1.0, "target 24px": 0.75, "target 20px": 0.52, "target 16px": 0.36,
          "pretrain 19px": 0.38, "low 28px": 0.17, "c2f 32px": 0.28, "c2f 16px": 0.04, "c2f 8px": 0.01}


class FrontierError(SurgeryError, ValueError):
    """Settings that make no frontier (budgets, seeds, methods)."""


@dataclass
class Settings:
    data: str = "/usr/share/datasets/fashion-mnist"
    width: int = 16
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay: float = 0.5
    baseline: tuple[int, ...] = (2, 4, 6, 8, 12)
    budgets: tuple[int, ...] = (4, 8)
    c2f_budgets: tuple[int, ...] = (2, 4)
    methods: tuple[str, ...] = METHODS
    seeds: int = 2
    headline_seeds: int = 3
    ablations: bool = True
    ablation_epochs: int = 4
    switch_fraction: float = 0.5
    pr_start: int = 16
    krpr_start: int = 12
    p_low: float = 0.5
    c2f_widths: tuple[int, ...] = (16, 32, 128)
    max_batches: int | None = None
    device: str | None = None
    threads: int | None = None
    speed_steps: int = 6
    epoch_s: float = 90.0   # s per full epoch, width 16, 2-core AMD EPYC (353 ms a step, 235 steps, the loader)
    quick: bool = False
    out: str = str(RESULTS / "time_to_accuracy.json")
    cache: str = str(RESULTS / "time_to_accuracy_runs")
    work: str = str(ROOT / "runs" / "time_to_accuracy")

    @property
    def headline(self) -> int:
        return max(self.budgets)


QUICK = dict(data="fixture", width=4, batch_size=64, max_batches=3, baseline=(1, 2, 4), budgets=(2, 3), ablation_epochs=2,
             c2f_budgets=(2, 4), seeds=1, headline_seeds=1, c2f_widths=(4, 8, 16), speed_steps=1, threads=1,
             out=str(ROOT / "runs" / "time_to_accuracy-quick" / "time_to_accuracy.json"),
             cache=str(ROOT / "runs" / "time_to_accuracy-quick" / "cache"),
             work=str(ROOT / "runs" / "time_to_accuracy-quick" / "work"))


@dataclass(frozen=True)
class Spec:
    """One run: a network family ("resnet", "c2f"), a method ("baseline" or a name), a budget, a seed."""

    family: str
    method: str
    epochs: int
    seed: int
    variant: str = ""   # an ablation's name (`ABLATIONS`); "" for the method's defaults

    @property
    def name(self) -> str:
        method = f"{self.method}[{self.variant}]" if self.variant else self.method
        return f"{self.family}/{method}/{self.epochs}ep/seed{self.seed}"


# ---- the plan -------------------------------------------------------------------------------------

def validate(s: Settings) -> None:
    """Raise FrontierError for settings that make no frontier, before anything trains."""
    for name in ("baseline", "budgets") + (("c2f_budgets",) if "coarse_to_fine" in s.methods else ()):
        b = list(getattr(s, name))
        if not b or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in b) or b != sorted(set(b)):
            raise FrontierError(f"--{name.replace('_', '-')} {','.join(map(str, b)) or '(empty)'} must be ascending "
                                "positive whole epochs. Hint: e.g. 1,2,4,6")
    if max(s.baseline) <= s.headline:
        raise FrontierError(f"the baseline's largest budget ({max(s.baseline)}) must be above the methods' "
                            f"({s.headline}), so that their accuracy can be read off its frontier. Hint: add "
                            f"{2 * s.headline} to --baseline")
    if "coarse_to_fine" in s.methods and min(s.c2f_budgets) < 2:
        raise FrontierError(f"--c2f-budgets {','.join(map(str, s.c2f_budgets))}: coarse-to-fine needs 2 epochs or "
                            "more to reach its last stage. Hint: e.g. 2,4")
    if min(s.budgets) < 2:
        raise FrontierError(f"--budgets {','.join(map(str, s.budgets))}: kernel rescaling needs 2 epochs or more "
                            "(one before the grow, one after). Hint: e.g. 2,4")
    for name in ("width", "batch_size"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FrontierError(f"--{name.replace('_', '-')} {value} must be a positive whole number. Hint: "
                                f"--{name.replace('_', '-')} {getattr(Settings, name)}")
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown or not s.methods:
        raise FrontierError(f"unknown method(s) {', '.join(unknown) or '(none given)'}. Hint: choose from "
                            f"{', '.join(METHODS)}")
    if s.ablations and s.ablation_epochs not in s.budgets:
        raise FrontierError(f"--ablation-epochs {s.ablation_epochs} must be one of --budgets "
                            f"{','.join(map(str, s.budgets))}, so that each variant meets its method's defaults. "
                            f"Hint: --ablation-epochs {min(s.budgets)}")
    least = 1 if s.quick else 2
    if s.seeds < least or s.headline_seeds < s.seeds:
        raise FrontierError(f"--seeds {s.seeds} / --headline-seeds {s.headline_seeds}: need at least {least} "
                            "seeds per point and at least as many at the headline. Hint: --seeds 2 --headline-seeds 3")
    if not 0 < s.decay <= 1 or not 0 < s.switch_fraction < 1:
        raise FrontierError(f"--decay {s.decay} must be in (0, 1] and --switch-fraction {s.switch_fraction} in "
                            "(0, 1). Hint: 0.5 and 0.5")


def plan_runs(s: Settings) -> list[Spec]:
    """Every run of the frontier, seed by seed, so that a stopped frontier already reads one seed whole.

    Per seed: its baselines, budgets ascending (so its trunk only goes forward), then each method,
    headline budget first; coarse-to-fine and its own baseline come last.
    """
    def has(k: int, b: int) -> bool:
        return k < (s.headline_seeds if b == s.headline else s.seeds)

    resnet = [m for m in s.methods if m != "coarse_to_fine"]
    runs = []
    for k in range(s.headline_seeds):
        runs += [Spec("resnet", "baseline", b, k) for b in s.baseline if has(k, b)]
        runs += [Spec("resnet", m, b, k) for b in sorted(s.budgets, reverse=True) for m in resnet if has(k, b)]
    if "coarse_to_fine" in s.methods:
        for k in range(s.seeds):
            runs += [Spec("c2f", m, b, k) for m in ("baseline", "coarse_to_fine") for b in s.c2f_budgets]
    if s.ablations:   # each method's best shot, after the frontier itself
        for k in range(s.seeds):
            runs += [Spec("resnet", m, s.ablation_epochs, k, v) for m in resnet for v in ABLATIONS.get(m, {})]
    return runs


def switch_epoch(s: Settings, epochs: int) -> int:
    return max(1, min(epochs - 1, round(s.switch_fraction * epochs))) if epochs > 1 else 0


def full_tail(epochs: int) -> int:
    """The last epochs at full size / in full mode: a quarter of the budget, at least one."""
    return max(1, epochs // 4)


def method_params(s: Settings, spec: Spec) -> dict:
    """Everything that defines `spec`'s method beyond the shared settings (part of its key)."""
    from recipes.kernel_rescaling import Config as KR

    if spec.method == "trunk":
        return {}
    b, sw = spec.epochs, switch_epoch(s, spec.epochs)
    kr = {k: getattr(KR, k) for k in ("grow_method", "lstsq", "recalibrate", "carry_momentum", "rewarm")}
    defaults = {"baseline": {},
            "kernel_rescaling": dict(kr, switch=sw),
            "kernel_rescaling+progressive_resizing": dict(kr, switch=sw, start=s.krpr_start, multiple=4),
            "progressive_resizing": dict(start=s.pr_start, ramp_end=max(1, b - full_tail(b)), multiple=4),
            "low_mode": dict(p_low=[s.p_low if e < b - full_tail(b) else 0.0 for e in range(b)]),
            "coarse_to_fine": dict(sizes=(8, 16, 32), stage_epochs=(0, max(1, sw // 2), max(1, sw)))}[spec.method]
    if not spec.variant:
        return defaults
    return {**defaults, **ABLATIONS[spec.method][spec.variant](b)}


def run_config(s: Settings, spec: Spec, environment: dict) -> dict:
    """The full config of a run: its cache key is a hash of this."""
    shared = {k: getattr(s, k) for k in ("width", "batch_size", "lr", "momentum", "weight_decay", "decay",
                                         "max_batches")}
    network = {"resnet": {"model": "fashion-resnet18", "width": s.width},
               "c2f": {"model": "c2f", "widths": list(s.c2f_widths)}}[spec.family]
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k != "variant" or v}   # defaults keep their keys
    return {"cache_version": CACHE_VERSION, **fields, **shared, "network": network,
            "params": method_params(s, spec), **environment}


def environment(s: Settings) -> dict:
    """The data files (names and sizes), torch's version and the device: what else changes a result."""
    import torch

    folder = Path(s.data)
    files = {p.name: p.stat().st_size for p in sorted(folder.glob("*"))} if folder.is_dir() else s.data
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return {"data": files, "torch": torch.__version__, "device": device, "threads": s.threads}


def branch_epoch(s: Settings, spec: Spec) -> int | None:
    """The trunk epoch a baseline run branches off (where its cool-down starts), if it is a whole one."""
    start = spec.epochs * (1 - s.decay)
    return int(start) if spec.method == "baseline" and start >= 1 and float(start).is_integer() else None


def epoch_kinds(s: Settings, spec: Spec, pretrain: int = 19) -> list[tuple[str, float]]:
    """Each epoch's kind of step and its low-mode share: what --estimate costs and the step table measures."""
    from modelsurgery.methods import ProgressiveResizing
    from modelsurgery.train import ramp_size

    b, p = spec.epochs, method_params(s, spec)
    if spec.family == "c2f":
        if spec.method == "baseline":
            return [("c2f 32px", 0.0)] * b
        starts = p["stage_epochs"]
        return [(f"c2f {p['sizes'][max(i for i, st in enumerate(starts) if e >= st)]}px", 0.0) for e in range(b)]
    if spec.method in ("kernel_rescaling", "kernel_rescaling+progressive_resizing"):
        sw = p["switch"]
        size = (lambda e: ramp_size(e, p["start"], pretrain, 0, sw, 4)) if "start" in p else (lambda e: pretrain)
        return [(f"pretrain {size(e)}px", 0.0) if e < sw else ("target 28px", 0.0) for e in range(b)]
    if spec.method == "progressive_resizing":
        pr = ProgressiveResizing(28, p["start"], regime="gradual", ramp_start=p.get("ramp_start", 0),
                                 ramp_end=p["ramp_end"])
        return [(f"target {pr.size_at(e)}px", 0.0) for e in range(b)]
    if spec.method == "low_mode":
        return [("target 28px", q) for q in p["p_low"]]
    return [("target 28px", 0.0)] * b


# ---- training -------------------------------------------------------------------------------------

def build(s: Settings, spec: Spec, data):
    """(network, method object, form, plan, schedule) of `spec`."""
    from modelsurgery.methods import CoarseToFine, Compose, KernelRescaling, LowMode, ProgressiveResizing
    from modelsurgery.nets import C2FNet, build_model
    from modelsurgery.train import Rewarm, WarmupStableDecay, seed_everything

    b, p = spec.epochs, method_params(s, spec)
    schedule = WarmupStableDecay(s.lr, b, decay=s.decay)
    seed_everything(spec.seed)
    if spec.family == "c2f":
        if spec.method == "baseline":
            return C2FNet(32, s.c2f_widths, data.in_chans, data.num_classes), ProgressiveResizing(32, 32, regime="fixed"), \
                "target", None, schedule
        cf = CoarseToFine(p["sizes"], p["stage_epochs"], s.c2f_widths, seed=spec.seed, in_chans=data.in_chans,
                          num_classes=data.num_classes)
        return cf.model, cf, cf.form, None, schedule
    net = build_model("fashion-resnet18", width=s.width, in_chans=data.in_chans, num_classes=data.num_classes)
    hold = ProgressiveResizing(28, 28, regime="fixed")
    if spec.method == "baseline":
        return net, hold, "target", None, schedule
    if spec.method == "low_mode":
        return net, Compose(hold, LowMode(p["p_low"], full_epochs=0, seed=spec.seed,
                                                  convs=p.get("convs"))), "target", None, schedule
    if spec.method == "progressive_resizing":
        pr = ProgressiveResizing(28, p["start"], regime="gradual", ramp_start=p.get("ramp_start", 0),
                                 ramp_end=p["ramp_end"],
                                 multiple=p["multiple"])
        return net, pr, "target", None, schedule
    kr = KernelRescaling(net, target_size=28, switch_epoch=p["switch"], grow_method=p["grow_method"],
                         lstsq=p["lstsq"], recalibrate=p["recalibrate"], carry_momentum=p["carry_momentum"])
    if p["rewarm"]:
        schedule = Rewarm(schedule, at=p["switch"], epochs=p["rewarm"])
    method = kr
    if "start" in p:
        method = Compose(kr, ProgressiveResizing(kr.plan.input_size, p["start"], regime="gradual", ramp_start=0,
                                                 ramp_end=p["switch"], multiple=p["multiple"], form="pretrain"))
    return kr.model, method, kr.form, kr.plan, schedule


def trainer_for(s: Settings, ctx: dict, model, method, form, plan, schedule, checkpoint: Path):
    from modelsurgery.train import Trainer

    return Trainer(model, ctx["train"], None, schedule=schedule, momentum=s.momentum, weight_decay=s.weight_decay,
                   seed=ctx["seed"], checkpoint_path=checkpoint, progress=False, on_epoch_start=[method.on_epoch_start],
                   step_context=method.step_context, form=form, plan=plan, device=s.device)


def grow_trunk(s: Settings, spec: Spec, ctx: dict, epoch: int) -> Path | None:
    """The baseline trunk's checkpoint at `epoch` (trained on, from its last checkpoint, if needed)."""
    from modelsurgery.train import WarmupStableDecay, fit

    trunk = Spec(spec.family, "trunk", 0, spec.seed)
    folder = Path(s.work) / f"trunk-{run_key(run_config(s, trunk, ctx['environment']))}"
    at = folder / f"epoch-{epoch}.safetensors"
    if at.is_file():
        return at
    model, method, form, plan, _ = build(s, dataclasses.replace(spec, epochs=epoch), ctx["data"])
    flat = WarmupStableDecay(s.lr, epoch / (1 - s.decay), decay=s.decay)   # constant up to `epoch`, as every branch
    trainer = trainer_for(s, ctx, model, method, form, plan, flat, folder / "last.safetensors")
    if trainer.checkpoint_path.is_file():
        from modelsurgery.train import read_checkpoint_info

        if read_checkpoint_info(trainer.checkpoint_path).train["epoch"] > epoch:
            return None   # the trunk is past this branch point (a budget added later): train from scratch
    fit(trainer, epoch, resume=True)
    shutil.copyfile(trainer.checkpoint_path, at)
    return at


def train_one(s: Settings, spec: Spec, ctx: dict) -> dict:
    """Train `spec` (resuming its own checkpoint, or branching off the trunk), evaluate, return its result."""
    from modelsurgery.train import fit, loss_jump

    ctx["seed"] = spec.seed
    config = run_config(s, spec, ctx["environment"])
    folder = Path(s.work) / run_key(config)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt, branched = folder / "last.safetensors", None
    b = branch_epoch(s, spec)
    if b is not None and b < spec.epochs and not ckpt.is_file():
        trunk = grow_trunk(s, spec, ctx, b)
        if trunk is not None:
            shutil.copyfile(trunk, ckpt)
            branched = b
    model, method, form, plan, schedule = build(s, spec, ctx["data"])
    trainer = trainer_for(s, ctx, model, method, form, plan, schedule, ckpt)
    load = load_average()
    fit(trainer, spec.epochs, resume=True, restore=method.restore)
    trainer.val_loader = ctx["val"]
    start = _now(trainer.device)
    acc = trainer.evaluate(32 if spec.family == "c2f" else 28)
    eval_s = _now(trainer.device) - start
    history = trainer.history
    one_off = sum(r.get("epoch_start_s", 0.0) for r in history)
    jump = loss_jump(history, method_params(s, spec)["switch"]) if "switch" in method_params(s, spec) else None
    result = {"key": run_key(config), "name": spec.name, "config": config, "acc": acc, "train_s": trainer.wall,
              "eval_s": round(eval_s, 3), "steps": steps_by_kind(spec, history, low_kind(method_params(s, spec))), "one_off_s": round(one_off, 3),
              "step_table": ctx.get("table"), "branched_at": branched,
              "loss_jump": jump, "loadavg": {"before": load, "after": load_average()},
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "history": [{k: v for k, v in r.items() if k not in ("loss_head", "loss_tail")} for r in history]}
    shutil.rmtree(folder, ignore_errors=True)   # the result holds what is kept; the checkpoint is not needed
    return result


def low_kind(params: dict) -> str:
    """The kind of a low-mode step under `params` (which convs are pooled)."""
    form = next(k for k, v in LOW_CONVS.items() if v == params.get("convs"))
    return f"{form} 28px"


def steps_by_kind(spec: Spec, history: list[dict], low_kind: str = "low 28px") -> dict[str, int]:
    """Iterations per kind of step ("target 28px", "pretrain 19px", "low 28px", "c2f 16px"), from the records."""
    counts: dict[str, float] = {}
    previous = 0
    for r in history:
        n = r["step"] - previous
        previous = r["step"]
        kind = f"c2f {r['size']}px" if spec.family == "c2f" else f"{r['form']} {r['size']}px"
        low = r.get("low_fraction") or 0.0
        counts[kind] = counts.get(kind, 0) + n * (1 - low)
        if low:
            counts[low_kind] = counts.get(low_kind, 0) + n * low
    return {k: round(v) for k, v in counts.items()}


def _now(device) -> float:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


# ---- the step-time table (cost model) -------------------------------------------------------------

def step_table(s: Settings, kinds: set[str], data) -> dict[str, float]:
    """Seconds of one training step of each kind, measured interleaved (median of `speed_steps` rounds)."""
    import contextlib

    import torch
    from bench.common import interleave, median
    from modelsurgery.lowmode import low_mode
    from modelsurgery.methods import CoarseToFine
    from modelsurgery.nets import build_model
    from modelsurgery.shrink import shrink

    device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    target = build_model("fashion-resnet18", width=s.width, in_chans=data.in_chans, num_classes=data.num_classes)
    small = shrink(target, target_size=28)[0]
    c2f = CoarseToFine((8, 16, 32), (0, 1, 2), s.c2f_widths, in_chans=data.in_chans, num_classes=data.num_classes)
    nets = {"target": target, "pretrain": small, "low": target, **{f"c2f{c2f.sizes[i]}": c2f.net(i) for i in range(3)}}
    nets = {k: v.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
            for k, v in nets.items()}

    def timer(kind: str):
        form, size = kind.split()[0], int(kind.split()[1][:-2])
        net = nets[f"c2f{size}" if form == "c2f" else "target" if form in LOW_CONVS else form]
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(s.batch_size, data.in_chans, size, size, device=device)
        y = torch.randint(0, data.num_classes, (s.batch_size,), device=device)

        def step() -> float:
            start = _now(device)
            with low_mode(net, 2, convs=LOW_CONVS[form]) if form in LOW_CONVS else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
            opt.step()
            return _now(device) - start

        return step

    times = interleave({k: timer(k) for k in sorted(kinds)}, s.speed_steps, warmup=2, self_timed=True)
    return {k: round(median(v), 5) for k, v in times.items()}


FULL_STEP = {"resnet": "target 28px", "c2f": "c2f 32px"}   # each family's full step: its cost axis's unit


RATIO_KINDS = ("target 28px", "pretrain 19px", "target 19px", "target 14px", "low 28px")


def width_table(s: Settings, widths: tuple[int, ...]) -> dict:
    """Step cost relative to a full step at each width: the table that picks the frontier's network.

    The kinds: kernel rescaling's pre-train step (2×2 kernels, 19 px), the same network resized
    alone (3×3 at 19 and 14 px) and a low-mode step, each against a full 28 px step, interleaved.
    """
    from modelsurgery.train import load_dataset

    data = load_dataset("fixture" if s.data == "fixture" else s.data, size=28)
    rows = {}
    for w in widths:
        print(f"width {w}: {len(RATIO_KINDS)} kinds, interleaved ...", flush=True)
        t = step_table(dataclasses.replace(s, width=w), set(RATIO_KINDS), data)
        rows[w] = {"full_step_s": t["target 28px"], "relative": {k: round(t[k] / t["target 28px"], 3)
                                                                  for k in RATIO_KINDS[1:]}}
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in rows[w]["relative"].items())
              + f" (full step {1000 * t['target 28px']:.0f} ms)", flush=True)
    return rows


def run_cost(result: dict, family: str, table: dict[str, float]) -> float | None:
    """A run's cost in seconds of this sitting's full step (`bench.frontier.full_step_equivalents`).

    None for a run that did not record its one-off work (cached before it was), or whose kinds of
    step the table lacks.
    """
    full = table.get(FULL_STEP[family])
    if not full or result.get("one_off_s") is None:
        return None
    try:
        steps = full_step_equivalents(result["steps"], {k: v / full for k, v in table.items()}, result["one_off_s"],
                                      result["train_s"])
    except KeyError:
        return None
    return round(steps * full, 2)


# ---- summary, plot, estimate ----------------------------------------------------------------------

def summarise(s: Settings, plan: list[Spec], results: dict[Spec, dict], table: dict) -> tuple[dict, list]:
    """The results file's data (frontier points, readings, verdicts, goals) from the runs finished so far."""
    def points(family: str, method: str, variant: str = "") -> list[dict]:
        out = []
        for b in sorted({sp.epochs for sp in plan if (sp.family, sp.method, sp.variant) == (family, method, variant)}):
            done = [dict(results[sp], seed=sp.seed, cost=run_cost(results[sp], family, table)) for sp in plan
                    if (sp.family, sp.method, sp.epochs, sp.variant) == (family, method, b, variant) and sp in results]
            if done:
                out.append(point_summary(b, done))
        return out

    baseline, c2f_baseline = points("resnet", "baseline"), points("c2f", "baseline")
    methods = {}
    for m in s.methods:
        base = c2f_baseline if m == "coarse_to_fine" else baseline
        methods[m] = [method_point(p, base) for p in points("c2f" if m == "coarse_to_fine" else "resnet", m)]
    ablations = {}
    for m in (m for m in ABLATIONS if m in s.methods and s.ablations):
        variants = {v: {"params": f(s.ablation_epochs), **method_point(pts[0], baseline)}
                    for v, f in ABLATIONS[m].items() if (pts := points("resnet", m, v))}
        default = next((p for p in methods[m] if p["epochs"] == s.ablation_epochs), None)
        ablations[m] = {"epochs": s.ablation_epochs, "default": default, "variants": variants}
    runs = {results[sp]["key"]: {"name": sp.name, "acc": results[sp]["acc"], "train_s": results[sp]["train_s"],
                                 "eval_s": results[sp]["eval_s"], "one_off_s": results[sp].get("one_off_s"),
                                 "cost": run_cost(results[sp], sp.family, table),
                                 "branched_at": results[sp]["branched_at"], "loss_jump": results[sp]["loss_jump"]}
            for sp in plan if sp in results}
    full = table.get(FULL_STEP["resnet"])
    axes = [{"name": sp.name, "train_s": round(results[sp]["train_s"], 1), "cost": runs[results[sp]["key"]]["cost"],
             "loadavg": results[sp].get("loadavg")} for sp in plan
            if sp in results and sp.family == "resnet" and sp.epochs == s.headline and not sp.variant]
    for a in axes:
        a["wall_over_cost"] = round(a["train_s"] / a["cost"], 3) if a["cost"] else None
    data = {"network": {"model": "fashion-resnet18", "width": s.width, "batch_size": s.batch_size,
                        "description": NETWORKS.get(s.width, "")},
            "baseline": baseline, "methods": methods, "c2f_baseline": c2f_baseline, "headline_epochs": s.headline,
            "ablations": ablations, "network_choice": network_choice(Path(s.out).with_name("step_ratios.json")),
            "step_table": {"seconds": table, "relative": {k: round(v / full, 4) for k, v in table.items()} if full
                           else {}, "full_step_s": full},
            "axis": "cost: each run's steps × their cost relative to a full step, plus its one-off work, in seconds "
                    "of a full step measured in this sitting; train_s: training wall time",
            "wall_vs_cost": {"note": "the headline's runs: training wall time over cost; 1.0 where the run's "
                                     "machine was as quiet as the step table's sitting",
                             "runs": axes},
            "runs": runs, "run_keys": sorted(runs),
            "missing": [sp.name for sp in plan if sp not in results], "complete": len(results) == len(plan),
            "quick": s.quick}
    return data, goals_of(s, methods)


def network_choice(path: Path) -> dict | None:
    """The step-cost table by width that picked the network (`--step-ratios`), if it was measured."""
    if not path.is_file():
        return None
    e = json.loads(path.read_text())
    return {"source": path.name, "processor": e["machine"].get("processor"), "widths": e["data"]["widths"]}


def goals_of(s: Settings, methods: dict[str, list[dict]]) -> list[dict]:
    """The issue's goals at the headline budget, on the cost axis."""
    head = lambda m: next((p for p in methods.get(m, []) if p["epochs"] == s.headline), {})   # noqa: E731
    goals = [goal(f"{m}_saves_at_least_{round(t * 100)}pct_at_equal_acc", head(m).get("saving_at_equal_acc"), t,
                  (head(m).get("saving_at_equal_acc") or -1) >= t) for m, t in GOALS.items() if m in methods]
    if {"kernel_rescaling+progressive_resizing", "progressive_resizing"} <= set(methods):
        both = head("kernel_rescaling+progressive_resizing").get("saving_at_equal_acc")
        alone = head("progressive_resizing").get("saving_at_equal_acc")
        goals.append(goal("kernel_rescaling+progressive_resizing_saves_more_than_progressive_resizing",
                          {"combined": both, "alone": alone}, "combined > alone",
                          both is not None and alone is not None and both > alone))
    return goals


def plot(path: Path, data: dict) -> None:
    """Accuracy against cost: the baseline frontier as a line with ± std bars, each method its own line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = data.get("network", {}).get("width")
    panels = [(f"FashionResNet-18, width {width}", data["baseline"],
               {m: p for m, p in data["methods"].items() if m != "coarse_to_fine"}),
              ("C2FNet", data["c2f_baseline"], {m: p for m, p in data["methods"].items() if m == "coarse_to_fine"})]
    panels = [p for p in panels if p[1] or p[2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    for ax, (title, base, methods) in zip(axes[0], panels):
        for name, pts, style in [("baseline", base, dict(color="k", lw=2))] + [(m, p, {}) for m, p in methods.items()]:
            pts = [p for p in pts if p.get("cost_mean") is not None]
            if pts:
                ax.errorbar([p["cost_mean"] for p in pts], [100 * p["acc_mean"] for p in pts],
                            yerr=[100 * (p["acc_std"] or 0) for p in pts], marker="o", capsize=3, label=name, **style)
                for p in pts:
                    ax.annotate(f"{p['epochs']}", (p["cost_mean"], 100 * p["acc_mean"]), fontsize=7,
                                textcoords="offset points", xytext=(3, -9))
        ax.set(title=f"{title}: accuracy against cost (labels: epochs)",
               xlabel="cost (s of full steps, measured in one sitting)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def estimate(s: Settings, plan: list[Spec]) -> tuple[list[tuple[str, float]], float]:
    """(run name, estimated seconds) per run, trunks included, and the total; from RATIOS and --epoch-s."""
    def ratio(kind: str) -> float:
        if kind in RATIOS:
            return RATIOS[kind]
        form, size = kind.split()[0], int(kind.split()[1][:-2])
        return RATIOS.get(f"{form} 19px" if form == "pretrain" else "target 28px", 1.0) * \
            (size / (19 if form == "pretrain" else 28)) ** 2

    def cost(kinds: list[tuple[str, float]]) -> float:
        return sum((1 - q) * ratio(k) + q * RATIOS["low 28px"] for k, q in kinds) * s.epoch_s

    rows, trunks = [], {}
    for sp in plan:
        kinds, b = epoch_kinds(s, sp), branch_epoch(s, sp)
        if b is not None and b < sp.epochs:
            key = (sp.family, sp.seed)
            if b > trunks.get(key, 0):
                rows.append((f"{sp.family}/trunk/seed{sp.seed} to epoch {b}", cost(kinds[trunks.get(key, 0):b])))
                trunks[key] = b
            kinds = kinds[b:]
        rows.append((sp.name, cost(kinds) + 5.0))   # + the final evaluation
    return rows, sum(t for _, t in rows)


# ---- the command line -----------------------------------------------------------------------------

def parse(argv=None) -> tuple[Settings, bool, bool, tuple[int, ...] | None]:
    """(settings, --estimate, --report, --step-ratios widths or None) from the command line."""
    ints = lambda text: tuple(int(v) for v in text.split(",") if v.strip())   # noqa: E731
    ap = argparse.ArgumentParser(prog="python -m bench.time_to_accuracy", description=__doc__.split("\n\n")[0])
    d = Settings()
    ap.add_argument("--data", default=d.data, help="IDX folder with Fashion-MNIST, or 'fixture'")
    ap.add_argument("--baseline", type=ints, default=d.baseline, help="the baseline's epoch budgets")
    ap.add_argument("--budgets", type=ints, default=d.budgets, help="the methods' budgets; the largest is the headline")
    ap.add_argument("--c2f-budgets", type=ints, default=d.c2f_budgets, help="coarse-to-fine's and its baseline's")
    ap.add_argument("--methods", type=lambda t: tuple(t.split(",")), default=d.methods, help=",".join(METHODS))
    for name, kind in (("seeds", int), ("headline_seeds", int), ("width", int), ("batch_size", int), ("lr", float),
                       ("decay", float), ("switch_fraction", float), ("max_batches", int), ("speed_steps", int),
                       ("epoch_s", float), ("threads", int)):
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, name))
    ap.add_argument("--device", default=None, help="cpu or cuda (default: CUDA if available; bf16, channels_last)")
    ap.add_argument("--out", default=None, help="the summary JSON (the PNG goes beside it)")
    ap.add_argument("--cache", default=None, help="folder of the cached runs' results")
    ap.add_argument("--work", default=None, help="folder for checkpoints of runs in progress")
    ap.add_argument("--quick", action="store_true", help="smoke run: fixture data, tiny budgets, 3 batches per epoch")
    ap.add_argument("--ablation-epochs", type=int, default=d.ablation_epochs,
                    help="the budget of the ablations (one of --budgets)")
    ap.add_argument("--no-ablations", dest="ablations", action="store_false", default=True,
                    help="skip the ablations (each method's variants) after the frontier")
    ap.add_argument("--step-ratios", type=ints, default=None, metavar="WIDTHS",
                    help="train nothing: measure each kind of step against a full one at these widths (e.g. 8,16,32,64) "
                         "and write bench/results/step_ratios.json")
    ap.add_argument("--estimate", action="store_true", help="print the run list and the estimated time; train nothing")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: summarise the cached runs (on the newest step table they carry) and plot")
    args = vars(ap.parse_args(argv))
    dry, report, widths = args.pop("estimate"), args.pop("report"), args.pop("step_ratios")
    given = {k: v for k, v in args.items() if v is not None and v != getattr(d, k, None)}
    s = Settings(**{**(QUICK if args["quick"] else {}), **given})
    return s, dry, report, widths


def main(argv=None) -> dict | None:
    try:
        s, dry, report, widths = parse(argv)
        if widths is not None:
            return step_ratios(s, widths)
        validate(s)
        plan = plan_runs(s)
        rows, total = estimate(s, plan)
        if dry:
            for name, sec in rows:
                print(f"  {name:48s} {sec:7.0f} s")
            print(f"{len(plan)} runs, estimated {total:.0f} s ({total / 3600:.2f} h) at {s.epoch_s:g} s per full epoch")
            return None
        return frontier(s, plan, report)
    except SurgeryError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def step_ratios(s: Settings, widths: tuple[int, ...]) -> dict:
    """Measure `width_table` and write it beside the frontier (`step_ratios.json`)."""
    if not widths or any(w < 1 for w in widths):
        raise FrontierError(f"--step-ratios {','.join(map(str, widths)) or '(empty)'}: widths must be positive "
                            "whole numbers. Hint: 8,16,32,64")
    run = Run("step_ratios", {"widths": widths, "batch_size": s.batch_size, "speed_steps": s.speed_steps})
    rows = width_table(s, widths)
    return run.finish(Path(s.out).with_name("step_ratios.json"), {"widths": rows, "kinds": RATIO_KINDS}, [])


def frontier(s: Settings, plan: list[Spec], report: bool = False) -> dict:
    """Train what is not cached yet, rewriting the summary after every run; returns the summary.

    With `report`, train nothing: summarise the cached runs on the newest step table they carry.
    """
    import torch

    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)   # 1 where other processes share the cores: OpenMP threads then spin
    try:
        return _frontier(s, plan, report)
    finally:
        torch.set_num_threads(threads)


def cached_runs(s: Settings, plan: list[Spec], env: dict) -> dict[Spec, dict]:
    """The plan's runs already in the cache, by spec."""
    paths = {sp: Path(s.cache) / f"{run_key(run_config(s, sp, env))}.json" for sp in plan}
    return {sp: json.loads(path.read_text()) for sp, path in paths.items() if path.is_file()}


def newest_table(results: dict[Spec, dict]) -> dict[str, float]:
    """The step table of the most recent sitting among `results` (for a report that trains nothing)."""
    tables = sorted((r["finished"], r["step_table"]) for r in results.values() if r.get("step_table"))
    if not tables:
        raise FrontierError(f"no cached run of this plan carries a step table ({len(results)} cached). Hint: run "
                            "without --report to train and measure one")
    return tables[-1][1]


def _frontier(s: Settings, plan: list[Spec], report: bool) -> dict:
    from modelsurgery.train import load_dataset, make_loaders

    run = Run("time_to_accuracy", s)
    env = environment(s)
    results, out = cached_runs(s, plan, env), Path(s.out)
    if report:
        table = newest_table(results)
    else:
        data = load_dataset(s.data, size=28)
        train, val = make_loaders(data, batch_size=s.batch_size, seed=0, max_batches=s.max_batches)
        ctx = {"data": data, "train": train, "val": val, "environment": env}
        kinds = {k for sp in plan for k, _ in epoch_kinds(s, sp)} | \
            {low_kind(method_params(s, sp)) for sp in plan if sp.method == "low_mode"}
        print(f"step times ({len(kinds)} kinds, interleaved) ...", flush=True)
        table = ctx["table"] = step_table(s, kinds, data)
        print("  " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in table.items()), flush=True)

    def write() -> dict:
        summary, goals = summarise(s, plan, results, table)
        return run.finish(out, summary, goals)

    for i, sp in enumerate(plan):
        if sp in results or report:
            continue
        print(f"[{i + 1}/{len(plan)}] {sp.name} (load {load_average()})", flush=True)
        ctx["train"].seed = sp.seed   # each seed its own data order
        results[sp] = train_one(s, sp, ctx)
        write_results(Path(s.cache) / f"{results[sp]['key']}.json", results[sp])
        r = results[sp]
        print(f"    acc {r['acc']:.4f}  train {r['train_s']:.1f} s  eval {r['eval_s']:.1f} s", flush=True)
        write()
    final = write()
    plot(out.with_suffix(".png"), final["data"])
    print(reading(final["data"]))
    print(f"goals: {[(g['name'], g['value'], g['met']) for g in final['goals']]}\nresults in {out}")
    return final


def reading(data: dict) -> str:
    """The frontier as text: the baseline's points, then each method's reading and verdict."""
    pct = lambda v: "—" if v is None else f"{100 * v:+.1f} %"   # noqa: E731
    acc = lambda p: f"{100 * p['acc_mean']:.2f}" + ("" if p["acc_std"] is None else  # noqa: E731
                                                     f" ± {100 * p['acc_std']:.2f}") + " %"
    cost = lambda p: "—" if p["cost_mean"] is None else f"{p['cost_mean']:.1f}s"   # noqa: E731
    lines = [f"{'':40s} {'ep':>3s} {'accuracy':>16s} {'cost':>7s} {'wall':>7s} {'saving':>8s}  verdict"]
    for p in data["baseline"]:
        lines.append(f"{'baseline':40s} {p['epochs']:3d} {acc(p):>16s} {cost(p):>7s} {p['train_s_mean']:6.1f}s")
    for m, pts in data["methods"].items():
        for p in pts:
            lines.append(f"{m:40s} {p['epochs']:3d} {acc(p):>16s} {cost(p):>7s} {p['train_s_mean']:6.1f}s "
                         f"{pct(p['saving_at_equal_acc']):>8s}  {p['verdict']}")
    for m, ab in data.get("ablations", {}).items():
        for v, p in ab["variants"].items():
            lines.append(f"{m + ' [' + v + ']':40.40s} {p['epochs']:3d} {acc(p):>16s} {cost(p):>7s} "
                         f"{p['train_s_mean']:6.1f}s {pct(p['saving_at_equal_acc']):>8s}  {p['verdict']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
