#!/usr/bin/env python
"""Kernel rescaling (de Gusmão et al. 2016; SPEC §1.1): train a spatially smaller copy, grow it, finish.

1. `shrink` the target: every 3×3 kernel becomes 2×2 (Table 1), the input 28 → 19 px.
2. Train that pre-train network at the small size, on the target's LR schedule, until the
   switch epoch (default: two epochs before the first LR drop, where the paper grew).
3. `grow` its weights into the target (kernels upscaled with the amplitude rule, FC interface
   resized like a kernel), recalibrate BatchNorm on ~1,000 training images at full size, and
   keep training the target at full size on the same schedule (`--extra-epochs N` holds the
   current LR for N more epochs first, the paper's §5.2 option).

Examples:
    python recipes/kernel_rescaling.py --demo                 # fixture data, vs baseline, < 5 min
    python recipes/kernel_rescaling.py --baseline             # full Fashion-MNIST, with the baseline
    python recipes/kernel_rescaling.py --low-p 0.5             # stretch: low mode after the grow
    python recipes/kernel_rescaling.py --model resnet18 --size 64 --data my_images/ --epochs 30
    torchrun --nproc_per_node=2 recipes/kernel_rescaling.py --out runs/kr

Outputs (in --out): results.json (config, plan, git revision, per-epoch logs, final accuracy,
time to the target accuracy), results.png (accuracy against wall time and epoch), and per run a
log.jsonl and last.safetensors (the training checkpoint; `--resume` continues from it).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

from modelsurgery.grow import fit_least_squares, grow, plan_at, recalibrate_bn
from modelsurgery.lowmode import LowModeSchedule, low_mode
# not `modelsurgery.shrink`: once the submodule is imported, that attribute is the module, not the function
from modelsurgery.shrink import shrink
from modelsurgery.train import DEFAULT_ROOT, Hold, MultiStep, Trainer, seed_everything
from modelsurgery.train.report import (default_out, finish, fit, load_dataset, make_loaders, make_trainer,
                                       parse_config, prepare_out, summarize, train_baseline)
from modelsurgery.nets import build_model

METHOD = "kernel_rescaling"


@dataclass
class Config:
    """Kernel rescaling: pre-train a shrunk copy at a small input size, grow it, finish at full size."""

    data: str = DEFAULT_ROOT            # IDX folder, "fixture" (committed subset), or ImageFolder root (train/, val/)
    out: str | None = None              # run folder; default runs/kernel_rescaling-<date-time>
    model: str = "fashion-resnet18"     # fashion-resnet18 / fashion-resnet10, or a timm name / torchvision:NAME
    width: int = 8                      # channels of the first stage (fashion-resnet only)
    size: int = 28                      # px, target input size
    pretrain_size: int | None = None    # px, pre-train input size; default size / s of the stem (28 -> 19)
    kernel_map: str | None = None       # overrides of Table 1 as TARGET:PRETRAIN pairs, e.g. "3:2,5:3"
    epochs: int = 8                     # epochs of the schedule (the baseline trains this many)
    milestones: tuple[int, ...] | None = None  # epochs at whose start the LR drops x0.1; default 3/4 of epochs
    switch: int | None = None           # epoch at which to grow; default two before the first LR drop
    extra_epochs: int = 0               # epochs the LR is held after the grow; the run gets this much longer
    grow_method: str = "pinv"           # kernel upscale: pinv, bilinear or replicate
    lstsq: int = 0                      # images for the least-squares kernel fit after the grow (0: off)
    recalibrate: int = 1024             # images for BatchNorm recalibration after the grow (0: none)
    low_p: float = 0.0                  # with low mode: p_low of the target's iterations after the grow (0: off)
    low_full_epochs: int = 4            # with low mode: full-mode-only epochs after each LR change
    batch_size: int = 256               # images per step (per process under torchrun)
    lr: float = 0.1                     # learning rate before the first drop
    warmup: float = 0.0                 # epochs of linear LR warm-up
    momentum: float = 0.9               # SGD momentum
    weight_decay: float = 5e-4          # on conv and linear weights (not norms, not biases)
    seed: int = 0                       # seeds the model, the data order and every random decision
    max_batches: int | None = None      # batches per epoch, for smoke tests; default all
    baseline: bool = False              # also train the target at full size on the same schedule
    target_acc: float | None = None     # accuracy for time-to-accuracy; default the baseline's final
    resume: bool = False                # continue the runs in --out from their checkpoints
    force: bool = False                 # reuse an --out that already holds results
    demo: bool = False                  # short comparison on the fixture data with --baseline (README)


# The demo: fixture data (3,000 train / 1,000 test images), small batches so it takes enough steps.
DEMO = dict(data="fixture", epochs=12, batch_size=64, lr=0.05, baseline=True)


def resolve(cfg: Config) -> Config:
    """Fill in the defaults that depend on other settings (milestones, switch) and the demo's."""
    if cfg.demo:   # the demo's settings, except where the caller changed a default
        cfg = dataclasses.replace(cfg, **{k: v for k, v in DEMO.items() if getattr(cfg, k) == getattr(Config, k)})
    milestones = cfg.milestones if cfg.milestones is not None else (max(1, round(0.75 * cfg.epochs)),)
    switch = cfg.switch if cfg.switch is not None else max(1, milestones[0] - 2) if milestones else cfg.epochs // 2
    return dataclasses.replace(cfg, milestones=tuple(milestones), switch=switch,
                               out=cfg.out or str(default_out(METHOD + ("-demo" if cfg.demo else ""))))


def grow_target(cfg: Config, trainer: Trainer, plan, data, epoch: int):
    """The pre-train network's weights grown into a fresh target, refined on training images.

    Optionally (`--lstsq N`) every grown kernel is re-fitted, layer by layer, so that it
    reproduces its pre-train layer on N images (`grow.fit_least_squares`); then BatchNorm
    statistics are measured at full size. The batches depend on the epoch only, also after a resume.
    """
    small = trainer.model
    state, target_plan = grow(small.state_dict(), plan, method=cfg.grow_method)
    target = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
    target.load_state_dict(state, strict=True)
    target.to(trainer.device)
    loader = trainer.train_loader
    loader.set_epoch(epoch)
    if cfg.lstsq:
        first = lambda: next(iter(loader))[0][:cfg.lstsq].to(trainer.device)   # the same images at both sizes
        images_small = first()
        loader.set_size(cfg.size)
        fit_least_squares(small, target, plan, images_small, first())
    trainer.set_input_size(cfg.size)
    if cfg.recalibrate:
        batches = -(-cfg.recalibrate // cfg.batch_size)
        recalibrate_bn(target, (x.to(trainer.device) for x, _ in itertools.islice(loader, batches)))
    return target, target_plan


def train_kernel_rescaling(cfg: Config, data, schedule, run_dir: Path) -> tuple[dict, object]:
    seed_everything(cfg.seed)
    target = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
    small, plan = shrink(target, target_size=cfg.size, input_size=cfg.pretrain_size,
                        kernel_map=cfg.kernel_map)
    if cfg.extra_epochs:
        schedule = Hold(schedule, at=cfg.switch, epochs=cfg.extra_epochs)
    loaders = make_loaders(data, batch_size=cfg.batch_size, seed=cfg.seed, max_batches=cfg.max_batches)

    def pretrain_then_grow(t, epoch):   # a condition on state, so it also holds after a resume
        if epoch >= cfg.switch and t.form == "pretrain":
            grown, target_plan = grow_target(cfg, t, plan, data, epoch)
            t.replace_model(grown, form="target", plan=target_plan)
        wanted = plan.input_size if t.form == "pretrain" else cfg.size
        if t.size != wanted:
            t.set_input_size(wanted)

    def restore(t, info):               # resuming after the grow: build the target before loading
        if info.form == "target":
            target = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
            t.replace_model(target, form="target", plan=plan_at(plan))

    # Stretch (kernel rescaling + low mode): after the grow, Algorithm 1 on the target. The
    # pre-train network stays in full mode: its 2x2 kernels and 19 px maps have little left to pool.
    policy = LowModeSchedule(p_low=cfg.low_p, full_epochs_after_lr_change=cfg.low_full_epochs, seed=cfg.seed,
                             lr_milestones=schedule.changes)

    def low_after_grow(t, epoch, it):
        if cfg.low_p and t.form == "target" and policy.is_low(epoch, it):
            return low_mode(t.model, 2)
        return None

    trainer = make_trainer(cfg, small, loaders, schedule, run_dir, on_epoch_start=[pretrain_then_grow],
                           step_context=low_after_grow, form="pretrain", plan=plan)
    history = fit(trainer, cfg.epochs + cfg.extra_epochs, resume=cfg.resume, restore=restore)
    return summarize(history, plan=plan, switch=cfg.switch), plan


def main(cfg: Config) -> dict:
    """Train (the baseline and) the kernel-rescaling run; returns the results written to --out."""
    cfg = resolve(cfg)
    out = prepare_out(cfg.out, resume=cfg.resume, force=cfg.force)
    data = load_dataset(cfg.data, size=cfg.size)
    schedule = MultiStep(cfg.lr, cfg.milestones, warmup=cfg.warmup)
    runs = {}
    if cfg.baseline:
        seed_everything(cfg.seed)
        model = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
        runs["baseline"] = train_baseline(cfg, model, data, schedule, out / "baseline")
    name = METHOD + ("+low_mode" if cfg.low_p else "")
    runs[name], plan = train_kernel_rescaling(cfg, data, schedule, out / name)
    return finish(out, name, cfg, runs, plan=plan, target=cfg.target_acc)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
