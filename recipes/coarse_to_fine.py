#!/usr/bin/env python
"""Incremental coarse-to-fine training (Liu et al. 2016): 8 -> 16 -> 32 px, growing the net.

A tiny network trains on 8×8 images; at each stage start it is grown to the next size and the
next width (conv1 by pixel replication, fc1 kept on the [::2] grid and Gaussian-padded, new
filters N(0, 0.01²) whose consumers start at zero), its BatchNorm statistics are re-measured on
~1,000 training images, and training continues on larger images. The network family is
`modelsurgery.nets.C2FNet`, the method `modelsurgery.methods.CoarseToFine`; the baseline is the
last stage trained at full size from scratch on the same schedule.

Examples:
    python recipes/coarse_to_fine.py --data fixture --epochs 6 --baseline
    python recipes/coarse_to_fine.py --sizes 8,16,28 --baseline     # last step not exact (x1.75)

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsurgery.errors import MethodError
from modelsurgery.methods.coarse_to_fine import CoarseToFine, check_stages
from modelsurgery.nets import C2FNet
from modelsurgery.recipes_kit.accuracy import summarize
from modelsurgery.recipes_kit.config import parse_config
from modelsurgery.recipes_kit.recipe import RecipeConfig, run_recipe
from modelsurgery.recipes_kit.runs import train_method

METHOD = "coarse_to_fine"


@dataclass
class Config(RecipeConfig):
    """Coarse-to-fine: train a tiny net on 8 px images, grow it to 16 and 32 px (and wider) as it trains."""

    sizes: tuple[int, ...] = (8, 16, 32)  # px, input size of each stage (multiples of 4)
    stage_epochs: tuple[int, ...] | None = None  # epoch at which each stage starts; default evenly up to switch
    switch: int | None = None           # epoch of the last grow; default two before the first LR drop
    widths: tuple[int, ...] = (16, 32, 128)  # channels of conv1, conv2 and fc1 in the last stage
    widen: int = 2                      # width factor between stages (1: no new filters)
    init_std: float = 0.01              # std of new filters and of the new fc1 weights (Liu: 0.01)
    recalibrate: int = 1024             # images for BatchNorm recalibration after each grow (0: none)


def resolve(cfg: Config) -> Config:
    switch = cfg.switch if cfg.switch is not None else cfg.default_switch()
    n = len(cfg.sizes)
    starts = cfg.stage_epochs
    if starts is None:
        starts = tuple(round(i * switch / (n - 1)) for i in range(n)) if n > 1 else (0,)
    try:
        check_stages(cfg.sizes, starts)
    except MethodError as err:
        raise SystemExit(f"--stage-epochs / --sizes: {err}") from None
    return cfg.resolved(METHOD, switch=starts[-1], stage_epochs=tuple(starts))


def train(cfg: Config, data, schedule, run_dir) -> dict:
    """Stage by stage: each stage's network grown from the last one's at the stage's first epoch."""
    cf = CoarseToFine(cfg.sizes, cfg.stage_epochs, cfg.widths, widen=cfg.widen, init_std=cfg.init_std,
                      recalibrate=cfg.recalibrate, seed=cfg.seed, in_chans=data.in_chans,
                      num_classes=data.num_classes)
    history = train_method(cfg, cf.model, data, schedule, run_dir, method=cf, form=cf.form)
    return summarize(history, stage_epochs=list(cfg.stage_epochs),
                     stage_widths=[cf.stage_widths(i) for i in range(len(cfg.sizes))])


def main(cfg: Config) -> dict:
    """Train (the baseline and) the coarse-to-fine run; returns the results written to --out."""
    cfg = resolve(cfg)
    return run_recipe(cfg, METHOD, train, size=cfg.sizes[-1],
                      baseline=lambda data: C2FNet(cfg.sizes[-1], cfg.widths, data.in_chans, data.num_classes))


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
