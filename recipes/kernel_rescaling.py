#!/usr/bin/env python
"""Kernel rescaling (de Gusmão et al. 2016): train a spatially smaller copy, grow it, finish.

The target's kernels shrink by Table 1 (3×3 → 2×2) and its input by the stem's factor
(28 → 19 px); that pre-train network trains on the target's LR schedule until the switch epoch
(default: two epochs before the first LR drop, §5.1), is grown into the target (§3.3), its
BatchNorm re-measured on ~1,000 training images, and training continues at full size
(`--extra-epochs N` first holds the current LR for N more epochs, the paper's §5.2 option).
The method is `modelsurgery.methods.KernelRescaling`.

The grow's defaults (least squares on 512 images, momentum carried, a 0.2-epoch LR re-warm-up)
come from the loss-jump ablation, `python -m bench.grow_loss_jump`: the training loss over the
first iterations after the grow against the last ones before it, for each refinement; its
numbers are in bench/results/grow_loss_jump.json and the generated bench/results/README.md.

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
from dataclasses import dataclass

from modelsurgery.methods.base import Compose
from modelsurgery.methods.kernel_rescaling import KernelRescaling
from modelsurgery.methods.low_mode import LowMode
from modelsurgery.recipes_kit.accuracy import loss_jump, summarize
from modelsurgery.recipes_kit.config import parse_config
from modelsurgery.recipes_kit.recipe import NetworkConfig, run_recipe
from modelsurgery.recipes_kit.results import frontier_reading
from modelsurgery.recipes_kit.runs import train_method
from modelsurgery.train.dist import dist_info
from modelsurgery.train.schedules import Hold, Rewarm

METHOD = "kernel_rescaling"


@dataclass
class Config(NetworkConfig):
    """Kernel rescaling: pre-train a shrunk copy at a small input size, grow it, finish at full size."""

    size: int = 28                      # px, target input size
    pretrain_size: int | None = None    # px, pre-train input size; default size / s of the stem (28 -> 19)
    kernel_map: str | None = None       # overrides of Table 1 as TARGET:PRETRAIN pairs, e.g. "3:2,5:3"
    switch: int | None = None           # epoch at which to grow; default two before the first LR drop
    extra_epochs: int = 0               # epochs the LR is held after the grow; the run gets this much longer
    grow_method: str = "pinv"           # kernel upscale: pinv, bilinear or replicate
    lstsq: int = 512                    # images for the least-squares kernel fit after the grow (0: off)
    recalibrate: int = 1024             # images for BatchNorm recalibration after the grow (0: none)
    carry_momentum: bool = True         # carry SGD momentum across the grow through the weights' linear map
    rewarm: float = 0.2                 # epochs of LR re-warm-up (from x0.1) right after the grow (0: none)
    low_p: float = 0.0                  # with low mode: p_low of the target's iterations after the grow (0: off)
    low_full_epochs: int = 4            # with low mode: full-mode-only epochs after each LR change
    demo: bool = False                  # short comparison on the fixture data with --baseline (README)


# The demo: fixture data (3,000 train / 1,000 test images), small batches so it takes enough steps.
DEMO = dict(data="fixture", epochs=12, batch_size=64, lr=0.05, baseline=True)


def resolve(cfg: Config) -> Config:
    """Fill in the defaults that depend on other settings (milestones, switch) and the demo's."""
    if cfg.demo:   # the demo's settings, except where the caller changed a default
        cfg = dataclasses.replace(cfg, **{k: v for k, v in DEMO.items() if getattr(cfg, k) == getattr(Config, k)})
    switch = cfg.switch if cfg.switch is not None else cfg.default_switch()
    return cfg.resolved(METHOD + ("-demo" if cfg.demo else ""), switch=switch)


def train(cfg: Config, data, schedule, run_dir) -> dict:
    """The pre-train network until the switch, then the grown target; with --low-p, low mode after the grow."""
    kr = KernelRescaling(cfg.network(data), target_size=cfg.size, switch_epoch=cfg.switch,
                         pretrain_size=cfg.pretrain_size, kernel_map=cfg.kernel_map, grow_method=cfg.grow_method,
                         lstsq=cfg.lstsq, recalibrate=cfg.recalibrate, carry_momentum=cfg.carry_momentum)
    if cfg.extra_epochs:
        schedule = Hold(schedule, at=cfg.switch, epochs=cfg.extra_epochs)
    if cfg.rewarm:
        schedule = Rewarm(schedule, at=cfg.switch, epochs=cfg.rewarm)
    method = kr
    if cfg.low_p:   # the pre-train net stays in full mode: its 2x2 kernels and 19 px maps have little to pool
        method = Compose(kr, LowMode(cfg.low_p, full_epochs=cfg.low_full_epochs, seed=cfg.seed,
                                     lr_milestones=schedule.changes, form="target"))
    history = train_method(cfg, kr.model, data, schedule, run_dir, method=method,
                           epochs=cfg.epochs + cfg.extra_epochs, form=kr.form, plan=kr.plan)
    return summarize(history, plan=kr.plan, switch=cfg.switch, loss_jump=loss_jump(history, cfg.switch))


def main(cfg: Config) -> dict:
    """Train (the baseline and) the kernel-rescaling run; returns the results written to --out."""
    cfg = resolve(cfg)
    name = METHOD + ("+low_mode" if cfg.low_p else "")
    results = run_recipe(cfg, name, train, size=cfg.size, baseline=cfg.network)
    if cfg.demo and dist_info().is_main:
        print(f"\nThat was a smoke run: {cfg.epochs} epochs on the fixture subset (3,000 images), one seed. It shows "
              "that the recipe runs; it is too small to say whether the method saves time.")
        print(frontier_reading(METHOD))
    return results


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
