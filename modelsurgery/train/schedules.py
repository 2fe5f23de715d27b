"""Learning-rate and input-size schedules as pure functions of training progress.

An LR schedule is a callable `lr(t)` of the fractional epoch `t = epoch + it / iters_per_epoch`
(epoch 0-based). The trainer sets the rate before every iteration, so:

- `Cosine` and every warmup change the rate per iteration;
- `MultiStep` changes it per epoch: the rate drops at the start of each milestone epoch
  (milestones (30, 60) mean epochs 0-29 run at `lr`, 30-59 at `lr * gamma`, as in the
  ResNet recipe "×0.1 before epochs 31 and 61", counted from 1);
- nothing depends on optimizer state, so a resumed run or a swapped-in model continues at
  exactly the same point of the schedule.

`WarmupStableDecay` (a constant rate, then a linear cool-down to zero over the last part) is
the one whose budgets share a prefix: every budget runs the same rate until its cool-down
starts, so a frontier of budgets can branch off one run (warmup-stable-decay: Hu et al. 2024,
MiniCPM; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations").

The input-size ramp (`methods.progressive_resizing.ramp_size`) is a plain function of the epoch too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..deprecation import moved
from ..errors import ScheduleError as _ScheduleError

__all__ = ["LRSchedule", "MultiStep", "Cosine", "Hold", "Rewarm", "WarmupStableDecay"]

LRSchedule = Callable[[float], float]


def _warmup(lr: float, t: float, warmup: float, start_factor: float) -> float:
    if warmup <= 0 or t >= warmup:
        return lr
    return lr * (start_factor + (1 - start_factor) * t / warmup)


@dataclass(frozen=True)
class MultiStep:
    """`lr · gamma^k` where k counts the milestones (epochs) already reached.

    Args:
        lr: base learning rate.
        milestones: epochs (0-based) at whose start the rate is multiplied by `gamma`.
        gamma: the factor.
        warmup: epochs of linear warmup from `lr * warmup_start` (per iteration).
        warmup_start: the warmup's starting fraction of `lr`.

    Example:
        >>> s = MultiStep(0.1, milestones=(30, 60))
        >>> s(29.99), s(30.0), round(s(60.0), 6)
        (0.1, 0.010000000000000002, 0.001)
    """

    lr: float
    milestones: Sequence[int]
    gamma: float = 0.1
    warmup: float = 0.0
    warmup_start: float = 0.1

    def __post_init__(self) -> None:
        if list(self.milestones) != sorted(self.milestones):
            raise _ScheduleError(f"milestones must be ascending, got {list(self.milestones)}")

    def __call__(self, t: float) -> float:
        k = sum(1 for m in self.milestones if math.floor(t) >= m)
        return _warmup(self.lr * self.gamma ** k, t, self.warmup, self.warmup_start)

    @property
    def changes(self) -> tuple[int, ...]:
        """Epochs at whose start the rate changes (the low-mode schedule keys off these)."""
        return tuple(self.milestones)


@dataclass(frozen=True)
class Cosine:
    """Half-cosine from `lr` to `min_lr` over `epochs`, per iteration, after an optional warmup.

    Example:
        >>> s = Cosine(0.1, epochs=10)
        >>> s(0.0), round(s(5.0), 6), s(10.0)
        (0.1, 0.05, 0.0)
    """

    lr: float
    epochs: float
    min_lr: float = 0.0
    warmup: float = 0.0
    warmup_start: float = 0.1

    def __call__(self, t: float) -> float:
        span = max(self.epochs - self.warmup, 1e-12)
        progress = min(max((t - self.warmup) / span, 0.0), 1.0)
        lr = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        return _warmup(lr, t, self.warmup, self.warmup_start)

    @property
    def changes(self) -> tuple[int, ...]:
        return ()


@dataclass(frozen=True)
class Hold:
    """`schedule` with its rate at epoch `at` held for `epochs` extra epochs, then resumed.

    Kernel rescaling's "keep the current learning rate for a few epochs after growing":
    `Hold(MultiStep(0.1, (30, 60)), at=28, epochs=3)` drops at 33 and 63 instead.

    Example:
        >>> s = Hold(MultiStep(0.1, (4,)), at=2, epochs=3)
        >>> [round(s(e), 3) for e in range(9)]
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01]
    """

    schedule: LRSchedule
    at: float
    epochs: float

    def __call__(self, t: float) -> float:
        if t < self.at:
            return self.schedule(t)
        if t < self.at + self.epochs:
            return self.schedule(self.at)
        return self.schedule(t - self.epochs)

    @property
    def changes(self) -> tuple[int, ...]:
        inner = getattr(self.schedule, "changes", ())
        return tuple(c if c < self.at else c + int(self.epochs) for c in inner)


@dataclass(frozen=True)
class Rewarm:
    """`schedule` with a linear warm-up again from `at`: × `start` rising to × 1 over `epochs`.

    A short re-warm-up after a grow lets the new, untrained directions of the grown kernels and
    the fresh BatchNorm statistics settle before the full rate applies.

    Example:
        >>> s = Rewarm(MultiStep(0.1, (6,)), at=4, epochs=0.5)
        >>> [round(s(t), 3) for t in (3.9, 4.0, 4.25, 4.5)]
        [0.1, 0.01, 0.055, 0.1]
    """

    schedule: LRSchedule
    at: float
    epochs: float
    start: float = 0.1

    def __call__(self, t: float) -> float:
        lr = self.schedule(t)
        if self.epochs <= 0 or not self.at <= t < self.at + self.epochs:
            return lr
        return lr * (self.start + (1 - self.start) * (t - self.at) / self.epochs)

    @property
    def changes(self) -> tuple[int, ...]:
        return tuple(getattr(self.schedule, "changes", ()))


@dataclass(frozen=True)
class WarmupStableDecay:
    """`lr` (after an optional warmup) until `decay_start`, then linear to `min_lr` at `epochs`.

    Args:
        lr: the stable rate.
        epochs: the budget; the rate reaches `min_lr` at its end.
        decay: the fraction of `epochs` the cool-down takes (0 < decay ≤ 1).
        min_lr: the rate at the end.
        warmup, warmup_start: epochs of linear warmup from `lr * warmup_start`.

    Two budgets with the same `lr`, `decay` and warmup agree until the shorter one's
    `decay_start`, so the longer run's state there is the shorter run's too.

    Example:
        >>> s = WarmupStableDecay(0.1, epochs=4, decay=0.5)
        >>> s.decay_start, [round(s(t), 3) for t in (0.0, 1.99, 2.0, 3.0, 4.0)]
        (2.0, [0.1, 0.1, 0.1, 0.05, 0.0])
    """

    lr: float
    epochs: float
    decay: float = 0.5
    min_lr: float = 0.0
    warmup: float = 0.0
    warmup_start: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.decay <= 1:
            raise _ScheduleError(f"decay must be a fraction in (0, 1], got {self.decay!r}. Hint: e.g. 0.5 "
                                "for a cool-down over the second half")
        if not self.epochs > 0:
            raise _ScheduleError(f"epochs must be positive, got {self.epochs!r}")

    @property
    def decay_start(self) -> float:
        """The epoch at which the cool-down starts."""
        return self.epochs * (1 - self.decay)

    def __call__(self, t: float) -> float:
        start = self.decay_start
        if t < start:
            return _warmup(self.lr, t, self.warmup, self.warmup_start)
        progress = min((t - start) / (self.epochs - start), 1.0)
        return self.lr + (self.min_lr - self.lr) * progress

    @property
    def changes(self) -> tuple[int, ...]:
        """The epoch the cool-down starts in: where low mode's full-mode window keys off."""
        return (math.floor(self.decay_start),)


# The input-size ramp is progressive resizing's own schedule; the error lives with the others.
__getattr__ = moved(__name__, {"ScheduleError": "modelsurgery.errors",
                               "ramp_size": "modelsurgery.methods.progressive_resizing"})
