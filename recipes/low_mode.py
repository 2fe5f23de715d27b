#!/usr/bin/env python
"""Dynamic input and kernel downsampling (Nouri et al. 2019): cheap low-mode steps.

There is no second network. Each training iteration is a *low-mode* iteration with probability
`p_low` (Algorithm 1, §3.2): the batch is downsampled by r = 2 (Gaussian blur, then every 2nd
pixel), both 3×3 convs of every ResNet block compute with their kernels average-pooled to 1×1,
and the gradient flows into the full-size kernels. The first `full_epochs` epochs after every
LR change run in full mode only (§3.1). BatchNorm running statistics are not updated by
low-mode batches (`--bn freeze`), so evaluation, always at full size, sees full-mode statistics
only. The method is `modelsurgery.methods.LowMode`.

Examples:
    python recipes/low_mode.py --data fixture --epochs 6 --baseline
    python recipes/low_mode.py --baseline                         # full Fashion-MNIST
    python recipes/low_mode.py --every 2                          # deterministic alternation

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsurgery.methods.low_mode import LowMode
from modelsurgery.recipes_kit.accuracy import summarize
from modelsurgery.recipes_kit.config import parse_config
from modelsurgery.recipes_kit.recipe import NetworkConfig, run_recipe
from modelsurgery.recipes_kit.runs import train_method

METHOD = "low_mode"


@dataclass
class Config(NetworkConfig):
    """Low mode: some iterations run on 2x downsampled images with average-pooled kernels."""

    size: int = 28                      # px, input size (divisible by ratio)
    p_low: float = 0.5                  # probability that an iteration runs in low mode (Algorithm 1)
    every: int | None = None            # instead of p_low: every n-th iteration is low (deterministic)
    full_epochs: int = 4                # full-mode-only epochs after each LR change (4 in the paper)
    ratio: int = 2                      # input and kernel downsampling ratio r
    downsample: str = "gaussian"        # input downsampling: gaussian (blur, decimate) or bilinear
    bn: str = "freeze"                  # low-mode batches and BN running stats: freeze or update
    convs: str | None = None            # fnmatch pattern of the convs to pool; default both 3x3 convs per block


def resolve(cfg: Config) -> Config:
    return cfg.resolved(METHOD)


def train(cfg: Config, data, schedule, run_dir) -> dict:
    """The model at `size`, low mode on the iterations Algorithm 1 picks; evaluation at `size`."""
    model = cfg.network(data)
    lm = LowMode(None if cfg.every else cfg.p_low, every=cfg.every, full_epochs=cfg.full_epochs, ratio=cfg.ratio,
                 downsample=cfg.downsample, bn=cfg.bn, convs=cfg.convs, seed=cfg.seed,
                 lr_milestones=schedule.changes)
    history = train_method(cfg, model, data, schedule, run_dir, method=lm, size=cfg.size, eval_size=cfg.size)
    return summarize(history, p_low=[lm.p(e) for e in range(cfg.epochs)])


def main(cfg: Config) -> dict:
    """Train (the baseline and) the low-mode run; returns the results written to --out."""
    cfg = resolve(cfg)
    return run_recipe(cfg, METHOD, train, size=cfg.size, baseline=cfg.network)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
