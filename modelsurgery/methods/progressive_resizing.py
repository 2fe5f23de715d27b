"""Progressive resizing (Wanger & Frohn 2018, the ENTR hypothesis): start on small images, end full.

One network (global-average-pooled, so it runs at any size) trains on images whose size follows
one of three regimes; evaluation is always at the full size:

- `fixed`:   `start_size` for the whole run (`start_size == size` is the plain baseline);
- `gradual`: FFCV's ramp: `start_size` until `ramp_start`, then linear up to `size` at
  `ramp_end`, each epoch's size rounded to a multiple of `multiple` (`ramp_size`);
- `step`:    `start_size` until `step_epoch`, then `size` in one step.

The functional core is `size_at(epoch)`, a pure function of the epoch.
"""

from __future__ import annotations

from typing import Any

from ..errors import MethodError
from .base import Method, check_choice, check_int

__all__ = ["ProgressiveResizing", "REGIMES", "ramp_size"]

REGIMES = ("fixed", "gradual", "step")


class ProgressiveResizing(Method):
    """Train at `size_at(epoch)` px, rising from `start_size` to `size` by `regime`.

    Args:
        size: px, the final (and evaluation) input size.
        start_size: px, the first epochs' input size.
        regime: "fixed", "gradual" or "step" (see the module docstring).
        ramp_start: gradual: the last epoch at `start_size`.
        ramp_end: gradual: the first epoch at `size` (needed for "gradual", and for "step"
            without `step_epoch`).
        step_epoch: step: the first epoch at `size`; default the middle of the ramp.
        multiple: px, gradual sizes are rounded to a multiple of this.
        form: apply only while the trainer's network has this form: "pretrain" ramps the input
            of kernel rescaling's pre-train phase (after `KernelRescaling` in a `Compose`, with
            `size` its pre-train size); None: always.

    Attributes:
        eval_size: px, evaluate at this size (`size`).

    Raises:
        MethodError: an unknown regime, a size that is not a positive integer, or a ramp that
            ends before it starts.

    Example:
        >>> pr = ProgressiveResizing(28, 16, regime="gradual", ramp_start=2, ramp_end=6)
        >>> [pr.size_at(e) for e in range(8)]
        [16, 16, 16, 20, 24, 24, 28, 28]
    """

    REGIMES = REGIMES

    def __init__(self, size: int, start_size: int, *, regime: str = "gradual", ramp_start: int = 0,
                 ramp_end: int | None = None, step_epoch: int | None = None, multiple: int = 4,
                 form: str | None = None):
        self.form = None if form is None else check_choice("form", form, ("pretrain", "target"))
        self.regime = check_choice("regime", regime, REGIMES)
        self.size = self.eval_size = check_int("size", size, 1, "pass the final input size in px")
        self.start_size = check_int("start_size", start_size, 1, "pass the first epochs' input size in px")
        self.multiple = check_int("multiple", multiple, 1, "pass 1 to keep every size")
        self.ramp_start = check_int("ramp_start", ramp_start, 0, "pass the last epoch at start_size")
        if ramp_end is None and (regime == "gradual" or (regime == "step" and step_epoch is None)):
            raise MethodError(f"regime {regime!r} needs ramp_end{' or step_epoch' if regime == 'step' else ''}. "
                              "Hint: pass the first epoch at full size, e.g. the first LR drop")
        if ramp_end is not None and check_int("ramp_end", ramp_end, 0, "pass an epoch") < ramp_start:
            raise MethodError(f"ramp_end {ramp_end} is before ramp_start {ramp_start}. Hint: the ramp runs "
                              "from ramp_start up to ramp_end")
        self.ramp_end = ramp_end
        if step_epoch is None and ramp_end is not None:
            step_epoch = round((ramp_start + ramp_end) / 2)
        self.step_epoch = None if step_epoch is None else check_int("step_epoch", step_epoch, 0, "pass an epoch")

    def size_at(self, epoch: int) -> int:
        """px: the training size of `epoch` under the regime."""
        if self.regime == "fixed":
            return self.start_size
        if self.regime == "step":
            return self.size if epoch >= self.step_epoch else self.start_size
        return ramp_size(epoch, self.start_size, self.size, self.ramp_start, self.ramp_end, self.multiple)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        if self.form is not None and trainer.form != self.form:
            return
        if trainer.size != self.size_at(epoch):
            trainer.set_input_size(self.size_at(epoch))


def ramp_size(epoch: int, start: int, end: int, start_epoch: int, end_epoch: int,
              multiple: int = 1) -> int:
    """FFCV-style resolution ramp: `start` up to `start_epoch`, linear to `end` at
    `end_epoch`, then `end`; in between rounded to the nearest multiple of `multiple`.

    Example:
        >>> [ramp_size(e, 160, 192, start_epoch=2, end_epoch=6, multiple=32) for e in range(8)]
        [160, 160, 160, 160, 192, 192, 192, 192]
        >>> [ramp_size(e, 8, 28, 0, 4, multiple=4) for e in range(6)]
        [8, 12, 20, 24, 28, 28]
        >>> [ramp_size(e, 16, 19, 0, 4, multiple=4) for e in range(5)]   # 18.25 rounds to 20: held at 19
        [16, 16, 16, 19, 19]
    """
    if epoch >= end_epoch:
        return end
    if epoch <= start_epoch:
        return start
    size = start + (end - start) * (epoch - start_epoch) / (end_epoch - start_epoch)
    size = max(multiple, int(size / multiple + 0.5) * multiple)
    return min(max(size, min(start, end)), max(start, end))   # rounding never leaves [start, end]
