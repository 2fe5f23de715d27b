#!/usr/bin/env python
"""Progressive resizing (Wanger & Frohn 2018, the ENTR hypothesis): start small, end full.

One network (global-average-pooled, so it runs at any size) trains on images whose size follows
one of three regimes, as in the paper; evaluation is always at the full size:

- `fixed`:   `--start-size` for the whole run (`--start-size 28` is the plain baseline);
- `gradual`: FFCV's ramp: `--start-size` until `--ramp-start`, then linear up to `--size` at
  `--ramp-end`, each epoch's size rounded to a multiple of `--multiple` (FFCV: 160 -> 192 in
  steps of 32); by default the ramp ends at the first LR drop, so the low-LR epochs see full size;
- `step`:    `--start-size` until `--step-epoch`, then `--size` in one step.

The loader resizes the whole data set once per size and caches it (FFCV also resizes in the
loader); the resize is part of the measured training time. The method is
`modelsurgery.methods.ProgressiveResizing`.

Examples:
    python recipes/progressive_resizing.py --data fixture --epochs 6 --baseline
    python recipes/progressive_resizing.py --regime step --baseline      # full Fashion-MNIST

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsurgery.methods.progressive_resizing import ProgressiveResizing
from modelsurgery.recipes_kit.accuracy import summarize
from modelsurgery.recipes_kit.config import parse_config
from modelsurgery.recipes_kit.recipe import NetworkConfig, run_recipe
from modelsurgery.recipes_kit.runs import train_method

METHOD = "progressive_resizing"


@dataclass
class Config(NetworkConfig):
    """Progressive resizing: train on small images first, then raise the size (fixed, gradual, step)."""

    regime: str = "gradual"             # fixed, gradual or step
    size: int = 28                      # px, final (and evaluation) input size
    start_size: int = 16                # px, the first epochs' input size
    ramp_start: int | None = None       # gradual: last epoch at start_size; default a quarter of epochs
    ramp_end: int | None = None         # gradual: first epoch at full size; default the first LR drop
    multiple: int = 4                   # px, gradual sizes are rounded to a multiple of this
    step_epoch: int | None = None       # step: first epoch at full size; default the middle of the ramp


def resolve(cfg: Config) -> Config:
    if cfg.regime not in ProgressiveResizing.REGIMES:
        raise SystemExit(f"--regime {cfg.regime!r} is not one of {', '.join(ProgressiveResizing.REGIMES)}")
    milestones = cfg.drops()
    ramp_end = cfg.ramp_end if cfg.ramp_end is not None else (milestones[0] if milestones else cfg.epochs)
    ramp_start = cfg.ramp_start if cfg.ramp_start is not None else min(round(cfg.epochs / 4), ramp_end)
    step = cfg.step_epoch if cfg.step_epoch is not None else round((ramp_start + ramp_end) / 2)
    return cfg.resolved(f"{METHOD}-{cfg.regime}", ramp_start=ramp_start, ramp_end=ramp_end, step_epoch=step)


def train(cfg: Config, data, schedule, run_dir) -> dict:
    """The model at `size_at(epoch)` px under the regime; evaluation at `size`."""
    pr = ProgressiveResizing(cfg.size, cfg.start_size, regime=cfg.regime, ramp_start=cfg.ramp_start,
                             ramp_end=cfg.ramp_end, step_epoch=cfg.step_epoch, multiple=cfg.multiple)
    history = train_method(cfg, cfg.network(data), data, schedule, run_dir, method=pr, eval_size=pr.eval_size)
    return summarize(history, regime=cfg.regime)


def main(cfg: Config) -> dict:
    """Train (the baseline and) one progressive-resizing regime; returns the results written to --out."""
    cfg = resolve(cfg)
    return run_recipe(cfg, f"{METHOD}_{cfg.regime}", train, size=cfg.size, baseline=cfg.network)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
