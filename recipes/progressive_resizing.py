#!/usr/bin/env python
"""Progressive resizing (Wanger & Frohn 2018, the ENTR hypothesis; SPEC §1.4): start small, end full.

One network (global-average-pooled, so it runs at any size) trains on images whose size follows
one of three regimes, as in the paper; evaluation is always at the full size:

- `fixed`:   `--start-size` for the whole run (`--start-size 28` is the plain baseline);
- `gradual`: FFCV's ramp: `--start-size` until `--ramp-start`, then linear up to `--size` at
  `--ramp-end`, each epoch's size rounded to a multiple of `--multiple` (FFCV: 160 -> 192 in
  steps of 32); by default the ramp ends at the first LR drop, so the low-LR epochs see full size;
- `step`:    `--start-size` until `--step-epoch`, then `--size` in one step.

The loader resizes the whole data set once per size and caches it (FFCV also resizes in the
loader); the resize is part of the measured training time.

Examples:
    python recipes/progressive_resizing.py --data fixture --epochs 6 --baseline
    python recipes/progressive_resizing.py --regime step --baseline      # full Fashion-MNIST

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from modelsurgery.train import DEFAULT_ROOT, MultiStep, ramp_size, seed_everything
from modelsurgery.train.report import (default_out, finish, fit, load_dataset, make_loaders, make_trainer,
                                       parse_config, prepare_out, summarize, train_baseline)
from modelsurgery.nets import build_model

METHOD = "progressive_resizing"
REGIMES = ("fixed", "gradual", "step")


@dataclass
class Config:
    """Progressive resizing: train on small images first, then raise the size (fixed, gradual, step)."""

    data: str = DEFAULT_ROOT            # IDX folder, "fixture" (committed subset), or ImageFolder root (train/, val/)
    out: str | None = None              # run folder; default runs/progressive_resizing-<date-time>
    model: str = "fashion-resnet18"     # fashion-resnet18 / fashion-resnet10, or a timm name / torchvision:NAME
    width: int = 8                      # channels of the first stage (fashion-resnet only)
    regime: str = "gradual"             # fixed, gradual or step
    size: int = 28                      # px, final (and evaluation) input size
    start_size: int = 16                # px, the first epochs' input size
    ramp_start: int | None = None       # gradual: last epoch at start_size; default a quarter of epochs
    ramp_end: int | None = None         # gradual: first epoch at full size; default the first LR drop
    multiple: int = 4                   # px, gradual sizes are rounded to a multiple of this
    step_epoch: int | None = None       # step: first epoch at full size; default the middle of the ramp
    epochs: int = 8                     # epochs of the schedule
    milestones: tuple[int, ...] | None = None  # epochs at whose start the LR drops x0.1; default 3/4 of epochs
    batch_size: int = 256               # images per step (per process under torchrun)
    lr: float = 0.1                     # learning rate before the first drop
    warmup: float = 0.0                 # epochs of linear LR warm-up
    momentum: float = 0.9               # SGD momentum
    weight_decay: float = 5e-4          # on conv and linear weights (not norms, not biases)
    seed: int = 0                       # seeds the model, the data order and every random decision
    max_batches: int | None = None      # batches per epoch, for smoke tests; default all
    baseline: bool = False              # also train the same model at full size throughout
    target_acc: float | None = None     # accuracy for time-to-accuracy; default the baseline's final
    resume: bool = False                # continue the runs in --out from their checkpoints
    force: bool = False                 # reuse an --out that already holds results


def resolve(cfg: Config) -> Config:
    if cfg.regime not in REGIMES:
        raise SystemExit(f"--regime {cfg.regime!r} is not one of {', '.join(REGIMES)}")
    milestones = cfg.milestones if cfg.milestones is not None else (max(1, round(0.75 * cfg.epochs)),)
    ramp_end = cfg.ramp_end if cfg.ramp_end is not None else (milestones[0] if milestones else cfg.epochs)
    ramp_start = cfg.ramp_start if cfg.ramp_start is not None else min(round(cfg.epochs / 4), ramp_end)
    step = cfg.step_epoch if cfg.step_epoch is not None else round((ramp_start + ramp_end) / 2)
    return dataclasses.replace(cfg, milestones=tuple(milestones), ramp_start=ramp_start, ramp_end=ramp_end,
                               step_epoch=step, out=cfg.out or str(default_out(f"{METHOD}-{cfg.regime}")))


def size_at(cfg: Config, epoch: int) -> int:
    """The training size of `epoch` under the configured regime."""
    if cfg.regime == "fixed":
        return cfg.start_size
    if cfg.regime == "step":
        return cfg.size if epoch >= cfg.step_epoch else cfg.start_size
    return ramp_size(epoch, cfg.start_size, cfg.size, cfg.ramp_start, cfg.ramp_end, cfg.multiple)


def train_progressive(cfg: Config, data, schedule, run_dir: Path) -> dict:
    seed_everything(cfg.seed)
    model = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
    loaders = make_loaders(data, batch_size=cfg.batch_size, seed=cfg.seed, max_batches=cfg.max_batches)

    def resize(t, epoch):
        if t.size != size_at(cfg, epoch):
            t.set_input_size(size_at(cfg, epoch))

    trainer = make_trainer(cfg, model, loaders, schedule, run_dir, on_epoch_start=[resize], eval_size=cfg.size)
    history = fit(trainer, cfg.epochs, resume=cfg.resume)
    return summarize(history, regime=cfg.regime)


def main(cfg: Config) -> dict:
    """Train (the baseline and) one progressive-resizing regime; returns the results written to --out."""
    cfg = resolve(cfg)
    out = prepare_out(cfg.out, resume=cfg.resume, force=cfg.force)
    data = load_dataset(cfg.data, size=cfg.size)
    schedule = MultiStep(cfg.lr, cfg.milestones, warmup=cfg.warmup)
    runs = {}
    if cfg.baseline:
        seed_everything(cfg.seed)
        model = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
        runs["baseline"] = train_baseline(cfg, model, data, schedule, out / "baseline")
    name = f"{METHOD}_{cfg.regime}"
    runs[name] = train_progressive(cfg, data, schedule, out / name)
    return finish(out, name, cfg, runs, target=cfg.target_acc)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
