#!/usr/bin/env python
"""Incremental coarse-to-fine training (Liu et al. 2016; SPEC §1.3): 8 -> 16 -> 32 px, growing the net.

A tiny network trains on 8×8 images; at each stage start it is grown to the next size and the
next width, and training continues on larger images:

- conv1, the layer that sees pixels, has a kernel proportional to the image (3, 6, 12 px); it
  grows by pixel replication, each weight a 2×2 block of w/4 (`resize.upscale_replicate`), so on
  a 2× nearest-upsampled image its output equals the small layer's at every other position.
  A non-integer step (e.g. 16 -> 28) uses the amplitude-preserving pinv resize instead;
- fc1, the flatten->Linear behind the last map, keeps its weights on the [::2] grid of the
  larger map and gets N(0, 0.01²) elsewhere (`resize.pad_fc_gaussian`);
- conv1, conv2 and fc1 are widened (×2 per stage by default): new filters N(0, 0.01²), their
  consumers' new inputs zero, BatchNorm weight 1 / bias 0 (`resize.widen`, `resize.widen_norm`),
  so the new units change nothing until they train;
- BatchNorm statistics are re-measured at the new size on ~1,000 training images.

The network family is `nets.C2FNet`; the baseline is its last stage trained at full size from
scratch on the same schedule.

Examples:
    python recipes/coarse_to_fine.py --data fixture --epochs 6 --baseline
    python recipes/coarse_to_fine.py --sizes 8,16,28 --baseline     # last step not exact (x1.75)

Outputs (in --out): results.json, results.png, and per run log.jsonl and last.safetensors.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from modelsurgery.grow import recalibrate_bn
from modelsurgery.resize import pad_fc_gaussian, resize_kernel, upscale_replicate, widen, widen_norm
from modelsurgery.train import DEFAULT_ROOT, MultiStep, seed_everything
from modelsurgery.train.report import (default_out, finish, fit, load_dataset, make_loaders, make_trainer,
                                       parse_config, prepare_out, summarize, train_baseline)
from modelsurgery.nets import C2FNet

METHOD = "coarse_to_fine"


@dataclass
class Config:
    """Coarse-to-fine: train a tiny net on 8 px images, grow it to 16 and 32 px (and wider) as it trains."""

    data: str = DEFAULT_ROOT            # IDX folder, "fixture" (committed subset), or ImageFolder root (train/, val/)
    out: str | None = None              # run folder; default runs/coarse_to_fine-<date-time>
    sizes: tuple[int, ...] = (8, 16, 32)  # px, input size of each stage (multiples of 4)
    stage_epochs: tuple[int, ...] | None = None  # epoch at which each stage starts; default evenly up to switch
    switch: int | None = None           # epoch of the last grow; default two before the first LR drop
    widths: tuple[int, ...] = (16, 32, 128)  # channels of conv1, conv2 and fc1 in the last stage
    widen: int = 2                      # width factor between stages (1: no new filters)
    init_std: float = 0.01              # std of new filters and of the new fc1 weights (Liu: 0.01)
    recalibrate: int = 1024             # images for BatchNorm recalibration after each grow (0: none)
    epochs: int = 8                     # epochs of the schedule
    milestones: tuple[int, ...] | None = None  # epochs at whose start the LR drops x0.1; default 3/4 of epochs
    batch_size: int = 256               # images per step (per process under torchrun)
    lr: float = 0.1                     # learning rate before the first drop
    warmup: float = 0.0                 # epochs of linear LR warm-up
    momentum: float = 0.9               # SGD momentum
    weight_decay: float = 5e-4          # on conv and linear weights (not norms, not biases)
    seed: int = 0                       # seeds the model, the data order and the new weights
    max_batches: int | None = None      # batches per epoch, for smoke tests; default all
    baseline: bool = False              # also train the last stage's network at full size from scratch
    target_acc: float | None = None     # accuracy for time-to-accuracy; default the baseline's final
    resume: bool = False                # continue the runs in --out from their checkpoints
    force: bool = False                 # reuse an --out that already holds results


def resolve(cfg: Config) -> Config:
    milestones = cfg.milestones if cfg.milestones is not None else (max(1, round(0.75 * cfg.epochs)),)
    switch = cfg.switch if cfg.switch is not None else max(1, milestones[0] - 2) if milestones else cfg.epochs // 2
    n = len(cfg.sizes)
    starts = cfg.stage_epochs
    if starts is None:
        starts = tuple(round(i * switch / (n - 1)) for i in range(n)) if n > 1 else (0,)
    if len(starts) != n or list(starts) != sorted(starts) or starts[0] != 0:
        raise SystemExit(f"--stage-epochs {starts} needs one ascending start per size in {cfg.sizes}, from 0")
    return dataclasses.replace(cfg, milestones=tuple(milestones), switch=starts[-1], stage_epochs=tuple(starts),
                               out=cfg.out or str(default_out(METHOD)))


def stage_widths(cfg: Config, stage: int) -> tuple[int, ...]:
    """Widths of stage `stage`: the last stage's divided by `widen` once per stage still to come."""
    factor = cfg.widen ** (len(cfg.sizes) - 1 - stage)
    return tuple(max(1, round(w / factor)) for w in cfg.widths)


def stage_at(cfg: Config, epoch: int) -> int:
    return max(i for i, start in enumerate(cfg.stage_epochs) if epoch >= start)


def grow_net(small: C2FNet, size: int, widths, cfg: Config, gen: torch.Generator) -> C2FNet:
    """`small` grown to input `size` and `widths`: replicate conv1, Gaussian-pad fc1, widen (Liu et al.)."""
    s = {k: v.detach().cpu() for k, v in small.state_dict().items()}
    big = C2FNet(size, widths, in_chans=small.conv1.in_channels, num_classes=small.fc2.out_features)
    factor = size / small.size
    if factor.is_integer() and big.kernel == small.kernel * factor:
        s["conv1.weight"] = upscale_replicate(s["conv1.weight"], int(factor))
    else:   # a non-integer step: the amplitude-preserving pinv resize (SPEC §2)
        s["conv1.weight"] = resize_kernel(s["conv1.weight"], big.kernel, "pinv")
    (c2, h, w), hw = small.fc_map, (size // 4, size // 4)
    s["fc1.weight"] = pad_fc_gaussian(s["fc1.weight"], (c2, h, w), hw, std=cfg.init_std, generator=gen)
    (c1_new, c2_new, hidden_new), (c1, _, hidden) = widths, small.widths
    new = dict(generator=gen, std=cfg.init_std)
    s["conv1.weight"], _, s["conv2.weight"] = widen(s["conv1.weight"], None, s["conv2.weight"], c1_new - c1, **new)
    fc1 = s["fc1.weight"].reshape(hidden, c2, *hw)
    s["conv2.weight"], _, fc1 = widen(s["conv2.weight"], None, fc1, c2_new - c2, **new)
    s["fc1.weight"], s["fc1.bias"], s["fc2.weight"] = widen(fc1.reshape(hidden, -1), s["fc1.bias"], s["fc2.weight"],
                                                            hidden_new - hidden, **new)
    for norm, extra in (("bn1", c1_new - c1), ("bn2", c2_new - c2)):
        keys = [k for k in s if k.startswith(norm + ".")]
        s.update(widen_norm({k: s[k] for k in keys}, extra))
    big.load_state_dict(s, strict=True)
    return big


def train_coarse_to_fine(cfg: Config, data, schedule, run_dir: Path) -> dict:
    seed_everything(cfg.seed)
    net = lambda i: C2FNet(cfg.sizes[i], stage_widths(cfg, i), data.in_chans, data.num_classes)
    loaders = make_loaders(data, batch_size=cfg.batch_size, seed=cfg.seed, max_batches=cfg.max_batches)
    last = len(cfg.sizes) - 1

    def grow_on_schedule(t, epoch):     # a condition on state (the current size), so it holds after a resume
        stage = cfg.sizes.index(t.model.size)
        while stage < stage_at(cfg, epoch):
            stage += 1
            gen = torch.Generator().manual_seed(cfg.seed * 1009 + stage)
            grown = grow_net(t.model.cpu(), cfg.sizes[stage], stage_widths(cfg, stage), cfg, gen)
            t.replace_model(grown, form="target" if stage == last else "pretrain")
            t.set_input_size(cfg.sizes[stage])
            if cfg.recalibrate:
                batches = -(-cfg.recalibrate // cfg.batch_size)
                t.train_loader.set_epoch(epoch)     # batches depend on the epoch only, also after a resume
                recalibrate_bn(t.model, (x.to(t.device) for x, _ in itertools.islice(t.train_loader, batches)))
        if t.size != cfg.sizes[stage]:
            t.set_input_size(cfg.sizes[stage])

    def restore(t, info):               # build the stage the checkpoint holds before loading it
        stage = cfg.sizes.index(info.train["size"])
        t.replace_model(net(stage), form=info.form)

    trainer = make_trainer(cfg, net(0), loaders, schedule, run_dir, on_epoch_start=[grow_on_schedule],
                           form="pretrain" if last else "target")
    history = fit(trainer, cfg.epochs, resume=cfg.resume, restore=restore)
    return summarize(history, stage_epochs=list(cfg.stage_epochs),
                     stage_widths=[stage_widths(cfg, i) for i in range(last + 1)])


def main(cfg: Config) -> dict:
    """Train (the baseline and) the coarse-to-fine run; returns the results written to --out."""
    cfg = resolve(cfg)
    out = prepare_out(cfg.out, resume=cfg.resume, force=cfg.force)
    data = load_dataset(cfg.data, size=cfg.sizes[-1])
    schedule = MultiStep(cfg.lr, cfg.milestones, warmup=cfg.warmup)
    runs = {}
    if cfg.baseline:
        seed_everything(cfg.seed)
        model = C2FNet(cfg.sizes[-1], cfg.widths, data.in_chans, data.num_classes)
        runs["baseline"] = train_baseline(cfg, model, data, schedule, out / "baseline", size=cfg.sizes[-1])
    runs[METHOD] = train_coarse_to_fine(cfg, data, schedule, out / METHOD)
    return finish(out, METHOD, cfg, runs, target=cfg.target_acc)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__.split("\n\n")[0]))
