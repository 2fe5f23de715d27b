"""Time to accuracy on the full Fashion-MNIST: the baseline and every recipe, in one run.

Every method trains the same model on the same schedule from the same seed:

- model: `FashionResNet-18`, width 8 (`modelsurgery.nets`): the ResNet-18 layout (2-2-2-2 basic
  blocks, stage widths 8-16-32-64), 1 channel, 28 px, a 3×3 stride-1 stem and no max-pool, so
  the stages see 28, 14, 7 and 4 px maps. Why this one: an ImageNet stem (7×7/2 and a max-pool)
  leaves 7 px maps after the stem and 1×1 maps in layer4 at 28 px, where 3×3 kernels see mostly
  padding; upsampling the images to 56/64 px instead makes every step ≥ 4× dearer, and five
  trainings on 60,000 images would not fit in 30 minutes on 2 cores. At width 8 one epoch takes well under a
  minute, and the per-step speed table below (measured at the start of every run, same
  process) shows what each method can save at most: the pre-train step (2×2 kernels, 19 px)
  and the low-mode step (1×1 kernels, 14 px) cost only a fraction of a full step even at this
  size, where per-layer overheads weigh most.
- schedule: SGD, momentum 0.9, weight decay 5e-4, batch 256, LR 0.1 dropping ×0.1 at epoch 6,
  8 epochs; no augmentation. Kernel rescaling grows at epoch 4 (two epochs before the drop,
  the paper's choice); low mode runs p = 0.5 with full-mode epochs after the LR change
  (Nouri et al. 2019, Algorithm 1); progressive resizing ramps 16 → 28 px (gradual, multiples of 4) or steps once.
- coarse-to-fine (Liu et al. 2016) needs a network whose classifier sees the feature map, so it runs the
  `C2FNet` family (8 → 16 → 32 px) against its own baseline (the last stage trained at 32 px
  from scratch), on the same schedule and seed.

The target of each group is its baseline's final accuracy; a method reaches it at the first
epoch within 0.3 points, and its saving is 1 − t_method / t_baseline with both times measured
to that target (training wall time; evaluation excluded). Wall time is the metric, so the run
waits for a quiet machine first (`--wait-load`), and records the load averages around every run.

Usage (from the repository root):
    python -m bench.time_to_accuracy                      # ~25 min on 2 quiet cores
    python -m bench.time_to_accuracy --methods kernel_rescaling,low_mode
    python -m bench.time_to_accuracy --data fixture --max-batches 2 --epochs 2 --speed-steps 1 \
        --wait-load none --methods kernel_rescaling --out /tmp/tta --runs /tmp/tta/runs   # smoke run

Writes bench/results/time_to_accuracy.json and .png (runs' own outputs: runs/bench-<time>/).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import RESULTS, ROOT, Run, goal, interleave, load_average, median
from modelsurgery.lowmode import low_mode as low_mode_context
from modelsurgery.nets import C2FNet, build_model
from modelsurgery.shrink import shrink
from modelsurgery.train import DEFAULT_ROOT, MultiStep, seed_everything
from modelsurgery.train.report import compare, format_table, load_dataset, parse_config, plot_panels, train_baseline
from recipes import coarse_to_fine, kernel_rescaling, low_mode, progressive_resizing

METHODS = ("kernel_rescaling", "low_mode", "progressive_gradual", "progressive_step", "coarse_to_fine",
           "kernel_rescaling+low_mode")
# What fits in 30 minutes on 2 cores; progressive_step and the stretch run when asked for.
DEFAULT_METHODS = ("kernel_rescaling", "low_mode", "progressive_gradual", "coarse_to_fine")
GOALS = {"kernel_rescaling": 0.20, "low_mode": 0.15}   # saved wall time to the baseline's accuracy


@dataclass
class Config:
    """Time to accuracy: baseline and every recipe on full Fashion-MNIST, same model, schedule and seed."""

    data: str = DEFAULT_ROOT            # IDX folder with Fashion-MNIST (or "fixture" for a smoke run)
    out: str = str(RESULTS)             # folder for time_to_accuracy.json and .png
    runs: str | None = None             # folder for the runs' own outputs; default runs/bench-<date-time>
    methods: tuple[str, ...] = DEFAULT_METHODS  # methods besides the baseline; also progressive_step, kernel_rescaling+low_mode
    model: str = "fashion-resnet18"     # the shared model (modelsurgery.nets)
    width: int = 8                      # channels of its first stage
    epochs: int = 8                     # epochs of the shared schedule
    milestones: tuple[int, ...] = (6,)  # epochs at whose start the LR drops x0.1
    batch_size: int = 256               # images per step
    lr: float = 0.1                     # learning rate before the drop
    seed: int = 0                       # the same seed for every run
    max_batches: int | None = None      # batches per epoch, for smoke tests; default all
    wait_load: float | None = 1.5       # wait until the 1-minute load average is below this (none: don't)
    max_wait: float = 3600.0            # s, give up waiting for a quiet machine after this long
    speed_steps: int = 6                # timed steps per setting in the per-step speed table (0: skip)


def wait_for_quiet(limit: float | None, max_wait: float) -> list[float]:
    """Poll the load average every 60 s until the 1-minute value is below `limit`; return it."""
    start = time.monotonic()
    while limit is not None and load_average()[0] >= limit and time.monotonic() - start < max_wait:
        print(f"waiting for a quiet machine: load {load_average()[0]:.2f} >= {limit}", flush=True)
        time.sleep(60)
    return load_average()


def step_time(model, size: int, batch: int, steps: int, context=None) -> float:
    """Median seconds of one SGD step (forward, backward, update) at `size` px."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))
    model.train()

    def step() -> None:
        with context() if context else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
        opt.step()

    return median(interleave({"step": step}, steps, warmup=2)["step"])


def speed_table(cfg: Config) -> dict:
    """Per-step time of every setting the methods train in, and its ratio to a full step (same process)."""
    torch.manual_seed(cfg.seed)
    target = build_model(cfg.model, width=cfg.width)
    small, plan = shrink(build_model(cfg.model, width=cfg.width), target_size=28)
    settings = {
        "target 28 px": lambda: step_time(target, 28, cfg.batch_size, cfg.speed_steps),
        f"pre-train {plan.input_size} px (2x2 kernels)": lambda: step_time(small, plan.input_size, cfg.batch_size,
                                                                           cfg.speed_steps),
        "low mode (14 px, 1x1 kernels)": lambda: step_time(target, 28, cfg.batch_size, cfg.speed_steps,
                                                           lambda: low_mode_context(target, 2)),
        **{f"target {s} px": (lambda s=s: step_time(target, s, cfg.batch_size, cfg.speed_steps)) for s in (16, 20, 24)},
        **{f"C2FNet stage {s} px": (lambda s=s, w=w: step_time(C2FNet(s, w), s, cfg.batch_size, cfg.speed_steps))
           for s, w in ((8, (4, 8, 32)), (16, (8, 16, 64)), (32, (16, 32, 128)))},
    }
    ms = {name: 1000 * measure() for name, measure in settings.items()}
    full = ms["target 28 px"]
    table = {name: {"ms": round(v, 2), "ratio": round(v / full, 3)} for name, v in ms.items()}
    for name, row in table.items():
        print(f"  {name:32s} {row['ms']:8.1f} ms/step  ratio {row['ratio']:.3f}", flush=True)
    return table


def recipe_config(module, cfg: Config, out: Path, **overrides):
    """The recipe's Config with the shared settings."""
    shared = dict(data=cfg.data, model=cfg.model, width=cfg.width, epochs=cfg.epochs, milestones=cfg.milestones,
                  batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, max_batches=cfg.max_batches,
                  out=str(out), force=True)
    names = {f.name for f in dataclasses.fields(module.Config)}
    return module.Config(**{k: v for k, v in {**shared, **overrides}.items() if k in names})


def run_baseline(cfg: Config, out: Path) -> dict:
    """The shared baseline: the model at full size on the schedule (what `--baseline` of a recipe runs)."""
    kcfg = kernel_rescaling.resolve(recipe_config(kernel_rescaling, cfg, out))
    data = load_dataset(kcfg.data, size=kcfg.size)
    seed_everything(kcfg.seed)
    model = build_model(kcfg.model, width=kcfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
    schedule = MultiStep(kcfg.lr, kcfg.milestones, warmup=kcfg.warmup)
    return train_baseline(kcfg, model, data, schedule, out)


def run_methods(cfg: Config, runs_dir: Path) -> tuple[dict, dict, dict]:
    """Train everything; returns (ResNet runs, C2F runs, load averages around each run)."""
    resnet, c2f, loads = {}, {}, {}
    plan = [("baseline", None, {}),
            ("kernel_rescaling", kernel_rescaling, {}),
            ("low_mode", low_mode, {}),
            ("progressive_gradual", progressive_resizing, dict(regime="gradual")),
            ("progressive_step", progressive_resizing, dict(regime="step")),
            ("kernel_rescaling+low_mode", kernel_rescaling, dict(low_p=0.5)),
            ("coarse_to_fine", coarse_to_fine, dict(baseline=True))]
    for name, module, overrides in plan:
        if name not in cfg.methods and name != "baseline":
            continue
        before = load_average()
        print(f"== {name} (load {before})", flush=True)
        if module is None:
            resnet["baseline"] = run_baseline(cfg, runs_dir / name / "baseline")
        else:
            result = module.main(recipe_config(module, cfg, runs_dir / name, **overrides))
            for run_name, run in result["runs"].items():
                target = c2f if module is coarse_to_fine else resnet
                target["c2f_baseline" if module is coarse_to_fine and run_name == "baseline" else run_name] = run
        loads[name] = {"before": before, "after": load_average()}
    return resnet, c2f, loads


def main(cfg: Config) -> dict:
    """Run the benchmark; returns (and writes) the results."""
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    load_start = wait_for_quiet(cfg.wait_load, cfg.max_wait)
    run = Run("time_to_accuracy", cfg)
    runs_dir = Path(cfg.runs or ROOT / "runs" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"per-step speed (batch {cfg.batch_size}, load {load_start}):", flush=True)
    speed = speed_table(cfg) if cfg.speed_steps else {}
    resnet, c2f, loads = run_methods(cfg, runs_dir)
    rows = compare(resnet, "baseline")
    c2f_rows = compare(c2f, "c2f_baseline") if c2f else []
    goals = [goal(f"{name}_saves_at_least_{round(target * 100)}pct_to_target", resnet[name]["saved"], target,
                  resnet[name]["saved"] is not None and resnet[name]["saved"] >= target)
             for name, target in GOALS.items() if name in resnet]
    data = {"loadavg_runs": loads, "step_speed": speed, "table": format_table(rows),
            "c2f_table": format_table(c2f_rows) if c2f_rows else None, "comparison": rows, "c2f_comparison": c2f_rows,
            "runs": {**resnet, **c2f}}
    out = Path(cfg.out)
    results = run.finish(out / "time_to_accuracy.json", data, goals)
    panels = [("FashionResNet-18 w8", resnet, resnet["baseline"]["final_acc"])]
    if c2f:
        panels.append(("C2FNet (coarse-to-fine)", c2f, c2f["c2f_baseline"]["final_acc"]))
    plot_panels(out / "time_to_accuracy.png", panels)
    print(data["table"])
    if c2f_rows:
        print(data["c2f_table"])
    m = results["machine"]
    print(f"goals: {goals}\nload average start {m['loadavg_start']}, end {m['loadavg_end']}; "
          f"{m['runtime_s']:.0f} s in all; results in {out / 'time_to_accuracy.json'}")
    return results


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
