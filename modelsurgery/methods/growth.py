"""Coarse-to-fine on any CNN: narrower, shallower copies train on smaller images first (Liu et al. 2016).

Each stage is the target shrunk in width and depth (`shrink(..., width=, depth=, kernel_map="keep")`)
and trained at its own input size. Every group keeps its first channels and every stage drops its
last blocks, so a stage's channels and blocks are a subset of the next one's: growing one stage
into the next is the grow of `modelsurgery.width` and `modelsurgery.depth` between the two plans.
New channels come with `widen_init` (Liu et al. 2016, §III-C, or Net2Net), new blocks with the
end of their residual branch zeroed (§IV-E), so that the grown network computes what the small
one did; resolution grows through the input size alone, as the network is global-pooled.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..calibrate import recalibrate_bn
from ..constants import DEFAULT_WIDEN_INIT, DEFAULT_WIDEN_STD, WIDEN_INITS
from ..depth import new_blocks
from ..errors import MethodError
from ..plan import ChannelDim, ModelSource, Plan
from ..shrink import apply_plan, plan_shrink
from ..width import index_runs, widen_state
from .base import Method, check_choice, check_int, recalibrate_from_loader

__all__ = ["GrowInStages", "stage_map"]


def stage_map(small: Plan, big: Plan) -> tuple[ChannelDim, ...]:
    """The width records that take a network of plan `small` to one of plan `big` (same target).

    Raises:
        MethodError: `small` keeps a channel that `big` drops (the stages do not nest).
    """
    bigs = {(r.key, r.dim): r for r in big.channels}
    out = []
    for r in small.channels:
        outer = bigs.get((r.key, r.dim))
        have = outer.indices() if outer is not None else list(range(r.size))
        pos = {v: i for i, v in enumerate(have)}
        missing = [v for v in r.indices() if v not in pos]
        if missing:
            raise MethodError(f"{r.key}: a stage keeps channels {missing[:3]} that the next stage drops. Hint: "
                              "widths must not fall from one stage to the next")
        if len(r.indices()) == len(have):
            continue
        out.append(ChannelDim(r.key, r.dim, len(have), index_runs([pos[v] for v in r.indices()]), r.role))
    return tuple(out)


def _factors(name: str, values: Sequence[float], n: int) -> tuple[float, ...]:
    values = tuple(values)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1
                               for v in values):
        raise MethodError(f"{name} {values} needs one factor in (0, 1] per stage ({n}). Hint: e.g. 0.25,0.5,1")
    if list(values) != sorted(values):
        raise MethodError(f"{name} {values} must not fall from one stage to the next: each stage grows. "
                          "Hint: e.g. 0.25,0.5,1")
    return tuple(float(v) for v in values)


class GrowInStages(Method):
    """Train stages of rising size, width and depth, each grown from the last (Liu et al. 2016, §III).

    Args:
        target: the full network (an `nn.Module`, not modified); its last stage is this network.
        sizes: px, each stage's input size (ascending; the network must be global-pooled).
        stage_epochs: the epoch at which each stage starts (ascending, from 0).
        widths: each stage's width factor (ascending to 1 or below).
        depths: each stage's depth factor (ascending).
        widen_init: new channels: "gaussian", "zeros", "flip" or "net2net" (`modelsurgery.width`).
        widen_std: σ of the Gaussian draws.
        recalibrate: images for the BatchNorm recalibration after each grow (0: none).
        seed: seeds the new weights.
        in_chans: input channels.

    Attributes:
        model: the first stage's network.
        plans: each stage's plan (width and depth against `target`).

    Example:
        >>> g = GrowInStages(timm.create_model("resnet18", num_classes=10), sizes=(16, 24, 32),
        ...                  stage_epochs=(0, 2, 4), widths=(0.25, 0.5, 1), depths=(0.5, 1, 1))
        >>> model = g.model
        >>> for epoch in range(6):
        ...     model = g.grow(model, epoch)          # a plain loop: rebuild the optimizer when it changes
    """

    def __init__(self, target: nn.Module, sizes: Sequence[int] = (14, 20, 28), stage_epochs: Sequence[int] = (0, 2, 4),
                 widths: Sequence[float] = (0.25, 0.5, 1.0), depths: Sequence[float] = (0.5, 1.0, 1.0), *,
                 widen_init: str = DEFAULT_WIDEN_INIT, widen_std: float = DEFAULT_WIDEN_STD, recalibrate: int = 1024,
                 seed: int = 0, in_chans: int = 3):
        n = len(tuple(sizes))
        if n < 1 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes) or \
                list(sizes) != sorted(set(sizes)):
            raise MethodError(f"sizes {tuple(sizes)} must be distinct ascending pixel counts. Hint: e.g. 14,20,28")
        starts = list(stage_epochs)
        if len(starts) != n or starts != sorted(starts) or starts[0] != 0:
            raise MethodError(f"stage_epochs {tuple(starts)} needs one ascending start per size in {tuple(sizes)}, "
                              "from 0. Hint: e.g. 0,2,4")
        self.widths, self.depths = _factors("widths", widths, n), _factors("depths", depths, n)
        self.widen_init = check_choice("widen_init", widen_init, WIDEN_INITS)
        if isinstance(widen_std, bool) or not isinstance(widen_std, (int, float)) or not widen_std > 0:
            raise MethodError(f"widen_std must be a positive number, got {widen_std!r}. Hint: Liu et al. use 0.01")
        self.widen_std = float(widen_std)
        self.recalibrate = check_int("recalibrate", recalibrate, 0, "pass a number of images, or 0 for none")
        self.sizes, self.stage_epochs, self.seed = tuple(sizes), tuple(starts), seed
        self.target = copy.deepcopy(target).eval()
        src = ModelSource("custom", type(target).__name__)
        self.plans = tuple(plan_shrink(self.target, src, target_size=self.sizes[-1], kernel_map="keep",
                                       in_chans=in_chans, width=w, depth=d) for w, d in zip(self.widths, self.depths,
                                                                                             strict=True))
        self.last = n - 1
        self.stage = 0
        self.model = self.net(0).train()

    @property
    def form(self) -> str:
        return "target" if self.stage == self.last else "pretrain"

    def stage_at(self, epoch: int) -> int:
        """The stage that trains in `epoch`."""
        return max(i for i, start in enumerate(self.stage_epochs) if epoch >= start)

    def net(self, stage: int) -> nn.Module:
        """The network of `stage`, with the target's own weights narrowed and shortened."""
        plan = self.plans[stage]
        net = apply_plan(self.target, plan) if plan.channels or plan.blocks else copy.deepcopy(self.target)
        net._growth_stage = stage   # what `on_epoch_start` reads back after a resume
        return net

    def convert(self, state: dict[str, torch.Tensor], stage: int, *, linear: bool = False) -> dict[str, torch.Tensor]:
        """A state_dict of stage `stage` converted into stage `stage + 1`'s (`linear`: optimizer state)."""
        small, big = self.plans[stage], self.plans[stage + 1]
        out = widen_state(state, stage_map(small, big), init=self.widen_init, std=self.widen_std,
                          seed=self.seed * 1009 + stage + 1, linear=linear)
        kept = {b.name for b in big.blocks}
        back = tuple(b for b in small.blocks if b.name not in kept)
        if back:
            out.update(new_blocks(self.net(stage + 1), back, linear=linear))   # the target's init, branch end zeroed
        return out

    def grow_stage(self, model: nn.Module, calibration=None) -> nn.Module:
        """`model` (the current stage's network) grown into the next stage's."""
        if self.stage >= self.last:
            raise MethodError("the network is the last stage already; nothing to grow into")
        state = self.convert({k: v.detach().cpu() for k, v in model.state_dict().items()}, self.stage)
        grown = self.net(self.stage + 1)
        grown.load_state_dict(state, strict=True)
        if calibration is not None:
            recalibrate_bn(grown, calibration)
        self.stage += 1
        return grown.train(model.training)

    def grow(self, model: nn.Module, epoch: int, calibration=None) -> nn.Module:
        """`model` grown through every stage that starts by `epoch` (none: `model` itself).

        `calibration(size)`, if given, returns normalised batches at `size` for the recalibration.
        """
        while self.stage < self.stage_at(epoch):
            model = self.grow_stage(model, calibration(self.sizes[self.stage + 1]) if calibration else None)
        return model

    # ---- the Trainer's hooks ------------------------------------------------------------------
    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.stage = getattr(trainer.model, "_growth_stage", self.stage)   # the model a resume restored
        while self.stage < self.stage_at(epoch):
            stage = self.stage
            grown = self.grow_stage(trainer.model)
            trainer.replace_model(grown, form=self.form,
                                  convert_momentum=lambda s, stage=stage: self.convert(s, stage, linear=True))
            trainer.set_input_size(self.sizes[self.stage])
            if self.recalibrate:
                recalibrate_from_loader(trainer, epoch, self.recalibrate)
        if trainer.size != self.sizes[self.stage]:
            trainer.set_input_size(self.sizes[self.stage])

    def restore(self, trainer: Any, info: Any) -> None:
        """Build the stage the checkpoint holds before its weights are loaded."""
        self.stage = self.sizes.index(info.train["size"])
        trainer.replace_model(self.net(self.stage), form=info.form)

