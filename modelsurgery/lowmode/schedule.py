"""Which training iterations run in low mode: Nouri et al. 2019, §3.1 and Algorithm 1."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

from ..errors import LowModeError

__all__ = ["LowModeSchedule"]


# ---------------------------------------------------------------------------------------------
# Schedule


def _uniform(seed: int, epoch: int, iteration: int) -> float:
    """A uniform draw in [0, 1) that depends on (seed, epoch, iteration) only."""
    digest = hashlib.blake2b(struct.pack("<qqq", seed, epoch, iteration), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class LowModeSchedule:
    """Which iterations run in low mode (the paper's Algorithm 1).

    Iteration `it` of epoch `e` is low with probability p_low(e), decided by a Bernoulli draw
    seeded by (seed, e, it): the same arguments always give the same answer, whatever the call
    order, so a resumed run makes the same decisions. With `every=n` the decision is
    deterministic instead: iterations n−1, 2n−1, ... (every n-th) are low.

    The `full_epochs_after_lr_change` epochs starting at each learning-rate change run in full
    mode only. LR changes come from `lr_milestones` (the epochs at which a step schedule
    changes the LR, as in `MultiStepLR`) and from `notify_lr(epoch, lr)` calls. The start of
    training is not an LR change: Algorithm 1 has no full-mode warm-up and the paper reports
    low mode hurting most "in the first epoch", so low iterations start at epoch 0; pass
    `full_at_start=True` to treat the start as one.

    Args:
        p_low: probability of low mode, a float, a per-epoch sequence, or a callable epoch → p.
        full_epochs_after_lr_change: full-mode epochs after each LR change (4 in the paper).
        seed: seed of the Bernoulli draws.
        every: deterministic alternative: every n-th iteration is low. Exclusive with p_low.
        lr_milestones: epochs at which the LR changes.
        full_at_start: count epoch 0 as an LR change.

    Example:
        >>> s = LowModeSchedule(p_low=0.5, lr_milestones=[80, 120])
        >>> [s.is_low(80, i) for i in range(3)]
        [False, False, False]
    """

    def __init__(
        self,
        p_low: float | Sequence[float] | Callable[[int], float] | None = 0.5,
        full_epochs_after_lr_change: int = 4,
        seed: int = 0,
        *,
        every: int | None = None,
        lr_milestones: Sequence[int] = (),
        full_at_start: bool = False,
    ):
        self._validate(p_low, every, full_epochs_after_lr_change)
        self.p_low, self.every, self.seed = p_low, every, int(seed)
        self.full_epochs_after_lr_change = full_epochs_after_lr_change
        self._changes = set(int(m) for m in lr_milestones) | ({0} if full_at_start else set())
        self._last_lr = None

    @classmethod
    def _validate(cls, p_low, every, full_epochs):
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise LowModeError(f"every must be an integer ≥ 1, got {every!r}")
            if p_low is not None and (callable(p_low) or not isinstance(p_low, (int, float)) or p_low != 0.5):
                raise LowModeError("give either p_low or every, not both")
        elif p_low is None:
            raise LowModeError("give p_low (a probability) or every (an iteration period)")
        if isinstance(full_epochs, bool) or not isinstance(full_epochs, int) or full_epochs < 0:
            raise LowModeError(f"full_epochs_after_lr_change must be an integer ≥ 0, got {full_epochs!r}")
        if isinstance(p_low, (int, float)):
            cls._check_p(p_low, "p_low")

    @staticmethod
    def _check_p(p, what):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise LowModeError(f"{what} must be a probability in [0, 1], got {p!r}")
        return float(p)

    @property
    def lr_changes(self) -> tuple[int, ...]:
        """The epochs at which the learning rate changed, sorted."""
        return tuple(sorted(self._changes))

    def notify_lr(self, epoch: int, lr: float | Sequence[float]) -> None:
        """Tell the schedule the LR in use at `epoch` (e.g. at each epoch's start).

        The first call records the initial LR; a later call with a different LR (any param
        group) marks `epoch` as an LR change. Meant for step schedules: a cosine schedule
        changes the LR every epoch, and notifying it would keep training in full mode.
        """
        lr = tuple(lr) if isinstance(lr, Sequence) else (lr,)
        if self._last_lr is not None and lr != self._last_lr:
            self._changes.add(int(epoch))
        self._last_lr = lr

    def p(self, epoch: int) -> float:
        """p_low at `epoch`, 0 inside a full-mode window after an LR change."""
        if any(c <= epoch < c + self.full_epochs_after_lr_change for c in self._changes):
            return 0.0
        if self.every is not None:
            return 1.0 / self.every
        if callable(self.p_low):
            return self._check_p(self.p_low(epoch), f"p_low({epoch})")
        if isinstance(self.p_low, Sequence):
            if not 0 <= epoch < len(self.p_low):
                raise LowModeError(f"p_low has {len(self.p_low)} per-epoch entries but epoch {epoch} "
                                   "was asked; give one per epoch")
            return self._check_p(self.p_low[epoch], f"p_low[{epoch}]")
        return float(self.p_low)

    def is_low(self, epoch: int, iteration: int) -> bool:
        """Whether iteration `iteration` (0-based, within the epoch) of `epoch` runs in low mode."""
        if epoch < 0 or iteration < 0:
            raise LowModeError(f"epoch and iteration must be ≥ 0, got ({epoch}, {iteration})")
        p = self.p(epoch)
        if p == 0.0:
            return False
        if self.every is not None:
            return (iteration + 1) % self.every == 0
        return _uniform(self.seed, epoch, iteration) < p

    def state_dict(self) -> dict:
        """The LR history, for checkpointing (p_low, every and seed come from the constructor)."""
        return {"lr_changes": list(self.lr_changes), "last_lr": self._last_lr}

    def load_state_dict(self, state: dict) -> None:
        self._changes = set(state["lr_changes"])
        self._last_lr = None if state["last_lr"] is None else tuple(state["last_lr"])
