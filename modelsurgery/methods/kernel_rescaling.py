"""Kernel rescaling (de Gusmão et al. 2016): pre-train a spatially smaller copy, grow it, continue.

1. `shrink` the target: every kernel gets the smaller size of Table 1 (3×3 → 2×2) and the input
   shrinks by the stem's factor (28 → 19 px), with the same state_dict keys (§3.2).
2. Train that pre-train network at the small size until the switch epoch; growing before the
   learning rate drops keeps the target's accuracy (§5.1).
3. Grow its weights into the target (kernels upscaled with the amplitude rule, the FC interface
   resized like a kernel, §3.3), optionally re-fit the kernels by least squares on training
   images, re-measure BatchNorm statistics at the full size, and continue at full size.

`grow_into` is the functional core (a pre-train network in, a grown target out); the class
`KernelRescaling` decides when, and serves `Trainer` through its hooks or a plain loop through
`should_grow`, `grow` and `input_size`.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..calibrate import fit_least_squares, recalibrate_bn
from ..constants import DEFAULT_WIDEN_INIT, UPSCALES, WIDEN_INITS
from ..errors import FactorError, MethodError
from ..grow import grow as grow_state_dict
from ..grow import plan_at
from ..plan import Plan
from ..shrink import shrink
from .base import Method, check_choice, check_int

__all__ = ["KernelRescaling", "grow_into"]


def grow_into(pretrain: nn.Module, plan: Plan, target: nn.Module, *, upscale: str = "pinv",
              calibration: Iterable[torch.Tensor] | None = None,
              fit_images: tuple[torch.Tensor, torch.Tensor] | None = None,
              method: str | None = None, **grow_kwargs: Any) -> tuple[nn.Module, Plan]:
    """`pretrain`'s weights grown into a copy of `target`, refined on training images.

    Args:
        pretrain: the trained pre-train network (not modified).
        plan: its shrink plan (form "pretrain").
        target: a network of the target architecture (not modified; a copy gets the weights).
        upscale: kernel upscaling: "pinv", "bilinear" or "replicate" (`modelsurgery.grow`).
        calibration: normalised image batches at the target size; BatchNorm statistics are
            re-measured on them (`recalibrate_bn`). None keeps the pre-train's statistics.
        fit_images: (small, big), the same normalised images at the pre-train and the target
            size; every grown kernel is then re-fitted to reproduce its pre-train layer
            (`fit_least_squares`) before the recalibration.
        method: the old name of `upscale` (deprecated).
        **grow_kwargs: passed to `modelsurgery.grow` (`widen_init`, `widen_std` for a plan shrunk
            in width; `target` itself provides new blocks' tensors for one shrunk in depth).

    Returns:
        (the grown network on `pretrain`'s device and in its training mode, the target plan).

    Example:
        >>> small, plan = modelsurgery.shrink(target, target_size=28)
        >>> grown, target_plan = grow_into(small, plan, target, calibration=[x for x, _ in batches])
    """
    if method is not None:
        warnings.warn("grow_into's method= is deprecated: pass upscale=", DeprecationWarning, stacklevel=2)
        upscale = method
    state, target_plan = grow_state_dict({k: v.detach().cpu() for k, v in pretrain.state_dict().items()}, plan,
                                         upscale=upscale, model=target, **grow_kwargs)
    grown = copy.deepcopy(target).train()
    grown.load_state_dict(state, strict=True)
    grown.to(next(iter(state.values())).device)
    if fit_images is not None:
        fit_least_squares(pretrain, grown, plan, *fit_images)
    if calibration is not None:
        recalibrate_bn(grown, calibration)
    return grown.train(pretrain.training), target_plan


class KernelRescaling(Method):
    """Train a shrunk copy of `target` until `switch_epoch`, then grow it into `target` and go on.

    Args:
        target: the network to end with (not modified: the grow fills a copy).
        target_size: px, its input size.
        switch_epoch: the epoch (0-based) at whose start the network grows.
        pretrain_size: px, the pre-train input size; default `target_size` / s of the stem.
        kernel_map: overrides of Table 1 as TARGET:PRETRAIN pairs, e.g. "3:2,5:3".
        grow_method: kernel upscaling, "pinv", "bilinear" or "replicate".
        lstsq: images for the least-squares kernel fit after the grow (0: off).
        recalibrate: images for the BatchNorm recalibration after the grow (0: none).
        carry_momentum: with the Trainer, carry SGD momentum across the grow through the
            weights' linear map (`convert_state`, `carry_momentum`) instead of restarting it
            from zero.
        width, depth: shrink the pre-train network in channels and blocks too (a compound
            pre-train network, `modelsurgery.width` and `modelsurgery.depth`); 1 keeps them.
        widen_init: how the grow brings channels back ("gaussian", "zeros", "flip", "net2net").

    Attributes:
        model: the pre-train network, the one to train first.
        plan: the shrink plan that relates it to `target`.
        form: "pretrain" until the grow, then "target".
        target_plan: the target-form plan, once grown.

    Raises:
        MethodError: a hyperparameter out of range (the message names it and the fix).

    Example:
        >>> kr = KernelRescaling(FashionResNet(width=8), target_size=28, switch_epoch=6)
        >>> model = kr.model                       # 2×2 kernels, 19 px inputs
        >>> if kr.should_grow(epoch):
        ...     model = kr.grow(model, calibration=[x for x, _ in batches])   # 3×3, 28 px
    """

    def __init__(self, target: nn.Module, *, target_size: int, switch_epoch: int, pretrain_size: int | None = None,
                 kernel_map: str | None = None, grow_method: str = "pinv", lstsq: int = 0, recalibrate: int = 1024,
                 carry_momentum: bool = False, width: float = 1.0, depth: float = 1.0,
                 widen_init: str = DEFAULT_WIDEN_INIT):
        if not isinstance(target, nn.Module):
            raise MethodError(f"target must be an nn.Module, got {type(target).__name__}. Hint: pass the network "
                              "to train in the end, e.g. modelsurgery.nets.FashionResNet()")
        self.target_size = check_int("target_size", target_size, 1, "pass the target's input size in px")
        self.switch_epoch = check_int("switch_epoch", switch_epoch, 0, "pass the epoch at which to grow, "
                                      "e.g. two before the first LR drop")
        if pretrain_size is not None:
            check_int("pretrain_size", pretrain_size, 1, "pass None for the default, target_size / s")
        self.grow_method = check_choice("grow_method", grow_method, UPSCALES)
        self.lstsq = check_int("lstsq", lstsq, 0, "pass a number of images, or 0 for no least-squares fit")
        self.recalibrate = check_int("recalibrate", recalibrate, 0, "pass a number of images, or 0 for none")
        if not isinstance(carry_momentum, bool):
            raise MethodError(f"carry_momentum must be True or False, got {carry_momentum!r}")
        self.carry_momentum = carry_momentum
        self.widen_init = check_choice("widen_init", widen_init, WIDEN_INITS)
        if self.lstsq and (width != 1 or depth != 1):
            raise MethodError("lstsq fits each grown kernel to its pre-train layer, which needs the same channels. "
                              "Hint: pass lstsq=0 with width or depth below 1")
        self._target = copy.deepcopy(target)
        try:
            self.model, self.plan = shrink(target, target_size=target_size, input_size=pretrain_size,
                                           kernel_map=kernel_map, width=width, depth=depth)
        except FactorError as err:
            raise MethodError(str(err)) from None
        self.form, self.target_plan = "pretrain", None

    @property
    def input_size(self) -> int:
        """px: the size the current network trains at, the pre-train size until the grow."""
        return self.plan.input_size if self.form == "pretrain" else self.target_size

    def should_grow(self, epoch: int) -> bool:
        """Whether to grow before `epoch`: at or after the switch, while still the pre-train network."""
        return self.form == "pretrain" and epoch >= self.switch_epoch

    def grow(self, model: nn.Module, calibration: Iterable[torch.Tensor] | None = None, *,
             fit_images: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
        """The trained pre-train `model` grown into the target (see `grow_into`); `form` becomes "target".

        `calibration` holds normalised batches at `target_size` for the BatchNorm recalibration
        (None: none), `fit_images` the (small, big) images of the least-squares fit (None: off).
        """
        grown, self.target_plan = grow_into(model, self.plan, self._target, upscale=self.grow_method,
                                            calibration=calibration, fit_images=fit_images, widen_init=self.widen_init)
        self.form = "target"
        return grown

    def convert_state(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The grow's linear map on pre-train-shaped tensors (e.g. momentum buffers), without the data fits.

        Example:
            >>> opt = carry_momentum(small, opt, big, new_opt, kr.convert_state)
        """
        return grow_state_dict(dict(tensors), self.plan, upscale=self.grow_method, linear=True, model=self._target,
                               widen_init=self.widen_init)[0]

    # ---- the Trainer's hooks ------------------------------------------------------------------
    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.form = trainer.form   # the trainer's form is what a resume restores
        if self.should_grow(epoch):
            convert = self.convert_state if self.carry_momentum else None
            trainer.replace_model(self._grow_trainer_model(trainer, epoch), form="target", plan=self.target_plan,
                                  convert_momentum=convert)
        if trainer.size != self.input_size:
            trainer.set_input_size(self.input_size)

    def restore(self, trainer: Any, info: Any) -> None:
        """A checkpoint written after the grow: build the target before its weights are loaded."""
        self.form = info.form
        if info.form == "target":
            self.target_plan = plan_at(self.plan)
            trainer.replace_model(copy.deepcopy(self._target), form="target", plan=self.target_plan)

    def _grow_trainer_model(self, trainer: Any, epoch: int) -> nn.Module:
        """Grow with images from the trainer's loader; they depend on the epoch only, also after a resume."""
        loader = trainer.train_loader
        loader.set_epoch(epoch)
        fit_images = None
        if self.lstsq:
            def first():   # the loader's first batch: the same images at either size
                return next(iter(loader))[0][:self.lstsq].to(trainer.device)

            small = first()
            loader.set_size(self.target_size)
            fit_images = (small, first())
        trainer.set_input_size(self.target_size)
        calibration = None
        if self.recalibrate:
            batches = -(-self.recalibrate // loader.batch_size)
            calibration = (x.to(trainer.device) for x, _ in itertools.islice(loader, batches))
        return self.grow(trainer.model, calibration, fit_images=fit_images)
