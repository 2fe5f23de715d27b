#!/usr/bin/env python
"""Dynamic input and kernel downsampling (Nouri et al. 2019; SPEC §1.2): cheap low-mode steps.

There is no second network. Each training iteration is a *low-mode* iteration with probability
`p_low` (the paper's Algorithm 1, a Bernoulli draw per iteration): the batch is downsampled by
r = 2 (Gaussian blur, then every 2nd pixel), both 3×3 convs of every ResNet block compute with
T(W), their kernels average-pooled to 1×1, and the gradient flows through T into the full-size
kernels. The first `full_epochs` epochs after every learning-rate change run in full mode only.
BatchNorm running statistics are not updated by low-mode batches (`--bn freeze`), so evaluation,
always at full size, sees full-mode statistics only.

Examples:
    python recipes/low_mode.py --data fixture --epochs 6 --baseline
    python recipes/low_mode.py --baseline                         # full Fashion-MNIST
    python recipes/low_mode.py --every 2                          # deterministic alternation

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from modelsurgery.lowmode import LowModeSchedule, low_mode
from modelsurgery.train import DEFAULT_ROOT, MultiStep, seed_everything
from modelsurgery.train.report import (default_out, finish, fit, load_dataset, make_loaders, make_trainer,
                                       parse_config, prepare_out, summarize, train_baseline)
from modelsurgery.nets import build_model

METHOD = "low_mode"


@dataclass
class Config:
    """Low mode: some iterations run on 2x downsampled images with average-pooled kernels."""

    data: str = DEFAULT_ROOT            # IDX folder, "fixture" (committed subset), or ImageFolder root (train/, val/)
    out: str | None = None              # run folder; default runs/low_mode-<date-time>
    model: str = "fashion-resnet18"     # fashion-resnet18 / fashion-resnet10, or a timm name / torchvision:NAME
    width: int = 8                      # channels of the first stage (fashion-resnet only)
    size: int = 28                      # px, input size (divisible by ratio)
    epochs: int = 8                     # epochs of the schedule
    milestones: tuple[int, ...] | None = None  # epochs at whose start the LR drops x0.1; default 3/4 of epochs
    p_low: float = 0.5                  # probability that an iteration runs in low mode (Algorithm 1)
    every: int | None = None            # instead of p_low: every n-th iteration is low (deterministic)
    full_epochs: int = 4                # full-mode-only epochs after each LR change (4 in the paper)
    ratio: int = 2                      # input and kernel downsampling ratio r
    downsample: str = "gaussian"        # input downsampling: gaussian (blur, decimate) or bilinear
    bn: str = "freeze"                  # low-mode batches and BN running stats: freeze or update
    convs: str | None = None            # fnmatch pattern of the convs to pool; default both 3x3 convs per block
    batch_size: int = 256               # images per step (per process under torchrun)
    lr: float = 0.1                     # learning rate before the first drop
    warmup: float = 0.0                 # epochs of linear LR warm-up
    momentum: float = 0.9               # SGD momentum
    weight_decay: float = 5e-4          # on conv and linear weights (not norms, not biases)
    seed: int = 0                       # seeds the model, the data order and the low/full draws
    max_batches: int | None = None      # batches per epoch, for smoke tests; default all
    baseline: bool = False              # also train the same model in full mode only
    target_acc: float | None = None     # accuracy for time-to-accuracy; default the baseline's final
    resume: bool = False                # continue the runs in --out from their checkpoints
    force: bool = False                 # reuse an --out that already holds results


def resolve(cfg: Config) -> Config:
    milestones = cfg.milestones if cfg.milestones is not None else (max(1, round(0.75 * cfg.epochs)),)
    return dataclasses.replace(cfg, milestones=tuple(milestones), out=cfg.out or str(default_out(METHOD)))


def train_low_mode(cfg: Config, data, schedule, run_dir: Path) -> dict:
    seed_everything(cfg.seed)
    model = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
    loaders = make_loaders(data, batch_size=cfg.batch_size, seed=cfg.seed, max_batches=cfg.max_batches)
    policy = LowModeSchedule(p_low=None if cfg.every else cfg.p_low, every=cfg.every, seed=cfg.seed,
                           full_epochs_after_lr_change=cfg.full_epochs, lr_milestones=schedule.changes)

    def full_size(t, epoch):
        if t.size != cfg.size:
            t.set_input_size(cfg.size)

    def low_or_full(t, epoch, it):      # a pure function of (seed, epoch, it): resumes make the same calls
        if not policy.is_low(epoch, it):
            return None
        return low_mode(t.model, cfg.ratio, convs=cfg.convs, downsample=cfg.downsample, bn=cfg.bn)

    trainer = make_trainer(cfg, model, loaders, schedule, run_dir, on_epoch_start=[full_size],
                           step_context=low_or_full, eval_size=cfg.size)
    history = fit(trainer, cfg.epochs, resume=cfg.resume)
    return summarize(history, p_low=[policy.p(e) for e in range(cfg.epochs)])


def main(cfg: Config) -> dict:
    """Train (the baseline and) the low-mode run; returns the results written to --out."""
    cfg = resolve(cfg)
    out = prepare_out(cfg.out, resume=cfg.resume, force=cfg.force)
    data = load_dataset(cfg.data, size=cfg.size)
    schedule = MultiStep(cfg.lr, cfg.milestones, warmup=cfg.warmup)
    runs = {}
    if cfg.baseline:
        seed_everything(cfg.seed)
        model = build_model(cfg.model, width=cfg.width, in_chans=data.in_chans, num_classes=data.num_classes)
        runs["baseline"] = train_baseline(cfg, model, data, schedule, out / "baseline")
    runs[METHOD] = train_low_mode(cfg, data, schedule, out / METHOD)
    return finish(out, METHOD, cfg, runs, target=cfg.target_acc)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
