"""Dynamic input and kernel downsampling (Nouri et al. 2019): some iterations run in low mode.

There is no second network. Each iteration is a low-mode iteration with probability `p_low`
(Algorithm 1 of §3.2, a Bernoulli draw per iteration; or every n-th one): the batch is
downsampled by r, the selected convs compute with average-pooled kernels T(W), and the gradient
flows through T into the full-size kernels (§2.2). The `full_epochs` epochs after each
learning-rate change run in full mode only (§3.1; 4 epochs in §4). The functional core is
`modelsurgery.lowmode`: `low_mode` (the context) and `LowModeSchedule` (which iterations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from torch import nn

from ..errors import MethodError
from ..lowmode.forward import low_mode
from ..lowmode.schedule import LowModeSchedule
from .base import Method, check_choice, check_int

__all__ = ["LowMode"]

DOWNSAMPLE = ("gaussian", "bilinear")
BN = ("freeze", "update")
FORMS = ("pretrain", "target")


class LowMode(Method):
    """Run a Bernoulli share of the iterations in low mode (Nouri et al. 2019, Algorithm 1).

    Args:
        p_low: probability that an iteration is low; a float, a per-epoch sequence or a callable
            epoch → p. Ignored (pass None) with `every`.
        every: instead of p_low: every n-th iteration is low (deterministic).
        full_epochs: full-mode-only epochs after each LR change (4 in the paper).
        ratio: input and kernel downsampling ratio r (≥ 2).
        downsample: input downsampling, "gaussian" (blur, decimate) or "bilinear".
        bn: low-mode batches and BatchNorm running statistics, "freeze" or "update".
        convs: fnmatch pattern of the convs to pool; default both 3×3 convs of every ResNet block.
        seed: seeds the Bernoulli draws, one per (epoch, iteration), so a resume draws the same.
        lr_milestones: epochs at which the LR changes (`MultiStep.changes`).
        form: apply only while the trainer's network has this form ("target": after a grow);
            None: always.

    Raises:
        MethodError: a bad ratio, downsample, bn or form. LowModeError: a bad p_low, every or
            full_epochs (from `LowModeSchedule`).

    Example:
        >>> lm = LowMode(0.5, lr_milestones=(6,))
        >>> with lm.context(model, epoch, it) or contextlib.nullcontext():
        ...     loss = F.cross_entropy(model(x), y); loss.backward()
    """

    def __init__(self, p_low: float | Sequence[float] | Callable[[int], float] | None = 0.5, *,
                 every: int | None = None, full_epochs: int = 4, ratio: int = 2, downsample: str = "gaussian",
                 bn: str = "freeze", convs: str | None = None, seed: int = 0, lr_milestones: Sequence[int] = (),
                 form: str | None = None):
        self.ratio = check_int("ratio", ratio, 2, "pass the downsampling ratio r, e.g. 2")
        self.downsample = check_choice("downsample", downsample, DOWNSAMPLE)
        self.bn = check_choice("bn", bn, BN)
        if form is not None:
            check_choice("form", form, FORMS)
        if convs is not None and not isinstance(convs, str):
            raise MethodError(f"convs must be an fnmatch pattern (str) or None, got {convs!r}")
        self.convs, self.form = convs, form
        self.schedule = LowModeSchedule(p_low=p_low, every=every, seed=seed, full_epochs_after_lr_change=full_epochs,
                                        lr_milestones=lr_milestones)

    def p(self, epoch: int) -> float:
        """p_low at `epoch` (0 in a full-mode window after an LR change)."""
        return self.schedule.p(epoch)

    def is_low(self, epoch: int, it: int) -> bool:
        """Whether iteration `it` of `epoch` runs in low mode: a pure function of (seed, epoch, it)."""
        return self.schedule.is_low(epoch, it)

    def context(self, model: nn.Module, epoch: int, it: int) -> ContextManager | None:
        """`low_mode(model, ...)` for a low iteration, None for a full one."""
        if not self.is_low(epoch, it):
            return None
        return low_mode(model, self.ratio, convs=self.convs, downsample=self.downsample, bn=self.bn)

    def step_context(self, trainer: Any, epoch: int, it: int) -> ContextManager | None:
        if self.form is not None and trainer.form != self.form:
            return None
        return self.context(trainer.model, epoch, it)
