"""What every recipe in `recipes/` shares: the common settings and the common `main()`.

A recipe subclasses `RecipeConfig` (or `NetworkConfig`, which adds a network chosen by name)
with its own fields only, one comment with units per field (the `--help` text, see
`parse_config`), and calls `run_recipe` with the function that trains its method:

    @dataclass
    class Config(NetworkConfig):
        size: int = 28                  # px, input size

    def train(cfg, data, schedule, run_dir):
        history = train_method(cfg, cfg.network(data), data, schedule, run_dir, method=LowMode(0.5))
        return summarize(history)

    def main(cfg):
        return run_recipe(cfg.resolved("low_mode"), "low_mode", train, size=cfg.size, baseline=cfg.network)

Example:
    >>> main(parse_config(Config, ["--data", "fixture", "--epochs", "2"]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images import DEFAULT_ROOT, Dataset, load_dataset
from ..train.dist import seed_everything
from ..train.schedules import LRSchedule, MultiStep
from .results import finish
from .runs import default_out, prepare_out, train_baseline

__all__ = ["RecipeConfig", "NetworkConfig", "run_recipe"]


@dataclass
class RecipeConfig:
    """The settings every recipe has: data, run folder, schedule, optimiser, baseline, resume."""

    data: str = DEFAULT_ROOT            # IDX folder, "fixture" (committed subset), or ImageFolder root (train/, val/)
    out: str | None = None              # run folder; default runs/<recipe>-<date-time>
    epochs: int = 8                     # epochs of the schedule (the baseline trains this many)
    milestones: tuple[int, ...] | None = None  # epochs at whose start the LR drops x0.1; default 3/4 of epochs
    batch_size: int = 256               # images per step (per process under torchrun)
    lr: float = 0.1                     # learning rate before the first drop
    warmup: float = 0.0                 # epochs of linear LR warm-up
    momentum: float = 0.9               # SGD momentum
    weight_decay: float = 5e-4          # on conv and linear weights (not norms, not biases)
    seed: int = 0                       # seeds the model, the data order and every random decision
    max_batches: int | None = None      # batches per epoch, for smoke tests; default all
    baseline: bool = False              # also train the baseline: the full-size network from scratch, same schedule
    target_acc: float | None = None     # accuracy for time-to-accuracy; default the baseline's final
    resume: bool = False                # continue the runs in --out from their checkpoints
    force: bool = False                 # reuse an --out that already holds results

    def drops(self) -> tuple[int, ...]:
        """The LR milestones: as given, else one drop at 3/4 of the epochs."""
        return tuple(self.milestones) if self.milestones is not None else (max(1, round(0.75 * self.epochs)),)

    def default_switch(self) -> int:
        """Two epochs before the first LR drop: grow before the learning rate drops (de Gusmão et al. 2016, §5.1)."""
        drops = self.drops()
        return max(1, drops[0] - 2) if drops else self.epochs // 2

    def resolved(self, name: str, **changes: Any):
        """A copy with the milestones and the run folder (`runs/<name>-<date-time>`) filled in, and `changes`."""
        return dataclasses.replace(self, milestones=self.drops(), out=self.out or str(default_out(name)), **changes)


@dataclass
class NetworkConfig(RecipeConfig):
    """`RecipeConfig` with a network chosen by name (`modelsurgery.nets.build_model`)."""

    model: str = "fashion-resnet18"     # fashion-resnet18 / fashion-resnet10, or a timm name / torchvision:NAME
    width: int = 8                      # channels of the first stage (fashion-resnet only)

    def network(self, data: Dataset):
        """A fresh `model` for `data`'s channels and classes."""
        from ..nets import build_model

        return build_model(self.model, width=self.width, in_chans=data.in_chans, num_classes=data.num_classes)


def run_recipe(cfg: RecipeConfig, name: str, train: Callable[[Any, Dataset, LRSchedule, Path], dict], *,
               size: int, baseline: Callable[[Dataset], Any]) -> dict:
    """The common `main()`: run folder, data, schedule, the optional baseline, the method, results.

    Args:
        cfg: the resolved config (`RecipeConfig.resolved`).
        name: the method's run: its sub-folder of `cfg.out` and its key in `results.json`'s runs.
        train: `train(cfg, data, schedule, run_dir)` trains the method and returns its
            `summarize` (with the plan, if any, under "plan"); the seed is set just before.
        size: px, the largest input size: ImageFolder images are decoded at it, and the
            baseline trains at it.
        baseline: builds the baseline network for the data (after the seed is set).

    Returns:
        The results written to `cfg.out` (`finish`).
    """
    out = prepare_out(cfg.out, resume=cfg.resume, force=cfg.force)
    data = load_dataset(cfg.data, size=size)
    schedule = MultiStep(cfg.lr, cfg.milestones, warmup=cfg.warmup)
    runs = {}
    if cfg.baseline:
        seed_everything(cfg.seed)
        runs["baseline"] = train_baseline(cfg, baseline(data), data, schedule, out / "baseline", size=size)
    seed_everything(cfg.seed)
    runs[name] = train(cfg, data, schedule, out / name)
    return finish(out, name, cfg, runs, plan=runs[name].get("plan"), target=cfg.target_acc)
