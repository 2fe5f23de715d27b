#!/usr/bin/env python
"""Incremental coarse-to-fine training (Liu et al. 2016): 8 -> 16 -> 32 px, growing the net.

With --model (a timm name, torchvision:NAME, or fashion-resnet18) any global-pooled CNN grows
in width, depth and resolution in stages instead: each stage is the model shrunk to a width of
--widen^-(stages to come) and to --depths of its blocks (`modelsurgery.methods.GrowInStages`),
new channels start with --widen-init (Liu et al. 2016, §III-C, or Net2Net) and new blocks with
their residual branch zeroed (§IV-E), so that every grow keeps the network's function.

A tiny network trains on 8×8 images; at each stage start it is grown to the next size and the
next width (conv1 by pixel replication, fc1 kept on the [::2] grid and Gaussian-padded, new
filters N(0, 0.01²) whose consumers start at zero), its BatchNorm statistics are re-measured on
~1,000 training images, and training continues on larger images. The network family is
`modelsurgery.nets.C2FNet`, the method `modelsurgery.methods.CoarseToFine`; the baseline is the
last stage trained at full size from scratch on the same schedule.

Examples:
    python recipes/coarse_to_fine.py --data fixture --epochs 6 --baseline
    python recipes/coarse_to_fine.py --model fashion-resnet18 --width 16 --sizes 14,20,28 --baseline
    python recipes/coarse_to_fine.py --model resnet18 --sizes 16,24,32 --depths 0.5,1,1 --widen-init net2net
    python recipes/coarse_to_fine.py --sizes 8,16,28 --baseline     # last step not exact (x1.75)

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsurgery.constants import DEFAULT_WIDEN_INIT
from modelsurgery.errors import MethodError
from modelsurgery.methods.coarse_to_fine import CoarseToFine, check_stages
from modelsurgery.methods.growth import GrowInStages
from modelsurgery.nets import C2FNet, build_model
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
    model: str = "c2f"                  # c2f (the paper's C2FNet), or a CNN: fashion-resnet18, timm, torchvision:NAME
    width: int = 8                      # channels of the first stage of fashion-resnet (--model only)
    depths: tuple[float, ...] | None = None  # fraction of blocks kept per stage (--model); default 0.5, then 1
    widen_init: str = DEFAULT_WIDEN_INIT  # new channels (--model): gaussian, zeros, flip or net2net


def resolve(cfg: Config) -> Config:
    switch = cfg.switch if cfg.switch is not None else cfg.default_switch()
    n = len(cfg.sizes)
    starts = cfg.stage_epochs
    if starts is None:
        starts = tuple(round(i * switch / (n - 1)) for i in range(n)) if n > 1 else (0,)
    try:
        if cfg.model == "c2f":
            check_stages(cfg.sizes, starts)
    except MethodError as err:
        raise SystemExit(f"--stage-epochs / --sizes: {err}") from None
    return cfg.resolved(METHOD, switch=starts[-1], stage_epochs=tuple(starts))


def stage_factors(cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(widths, depths) of each stage for --model: width widen^-(stages to come), depth 0.5 then 1."""
    n = len(cfg.sizes)
    widths = tuple(1.0 / cfg.widen ** (n - 1 - i) for i in range(n))
    depths = cfg.depths if cfg.depths is not None else tuple(0.5 if i == 0 and n > 1 else 1.0 for i in range(n))
    return widths, tuple(float(d) for d in depths)


def network(cfg: Config, data):
    return build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)


def train(cfg: Config, data, schedule, run_dir) -> dict:
    """Stage by stage: each stage's network grown from the last one's at the stage's first epoch."""
    if cfg.model != "c2f":
        widths, depths = stage_factors(cfg)
        try:
            g = GrowInStages(network(cfg, data), cfg.sizes, cfg.stage_epochs, widths, depths,
                             widen_init=cfg.widen_init, widen_std=cfg.init_std, recalibrate=cfg.recalibrate,
                             seed=cfg.seed, in_chans=data.in_chans)
        except MethodError as err:
            raise SystemExit(f"--sizes / --depths / --widen-init: {err}") from None
        history = train_method(cfg, g.model, data, schedule, run_dir, method=g, form=g.form)
        return summarize(history, stage_epochs=list(cfg.stage_epochs), stage_widths=list(widths),
                         stage_depths=list(depths))
    cf = CoarseToFine(cfg.sizes, cfg.stage_epochs, cfg.widths, widen=cfg.widen, init_std=cfg.init_std,
                      recalibrate=cfg.recalibrate, seed=cfg.seed, in_chans=data.in_chans,
                      num_classes=data.num_classes)
    history = train_method(cfg, cf.model, data, schedule, run_dir, method=cf, form=cf.form)
    return summarize(history, stage_epochs=list(cfg.stage_epochs),
                     stage_widths=[cf.stage_widths(i) for i in range(len(cfg.sizes))])


def main(cfg: Config) -> dict:
    """Train (the baseline and) the coarse-to-fine run; returns the results written to --out."""
    cfg = resolve(cfg)
    if cfg.model != "c2f":
        return run_recipe(cfg, METHOD, train, size=cfg.sizes[-1], baseline=lambda data: network(cfg, data))
    return run_recipe(cfg, METHOD, train, size=cfg.sizes[-1],
                      baseline=lambda data: C2FNet(cfg.sizes[-1], cfg.widths, data.in_chans, data.num_classes))


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
