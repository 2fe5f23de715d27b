"""Low mode: dynamic input and kernel downsampling inside the training step.

Nouri, Moshovos and Poulos (2019, §2.2) run some training iterations in *low mode*: the input is
downsampled by a ratio r, every selected conv computes with T(W), a differentiable average
pool of its kernel, and the max-pool after the stem is skipped. The gradient flows through T
into the full-size W, which the optimizer updates as usual. `low_mode` is a context manager
that switches a model into low mode and restores it exactly on exit; `LowModeSchedule`
decides which iterations run in low mode (§3, Algorithm 1).

Three modules: `kernel` (T, the kernel transformation, and the input downsampling: pure tensor
math), `forward` (which convs, and the context manager) and `schedule`. Import from here.

Example:
    >>> sched = LowModeSchedule(p_low=0.5, lr_milestones=[30, 60])
    >>> for epoch in range(90):
    ...     for it, (x, y) in enumerate(loader):
    ...         with low_mode(model) if sched.is_low(epoch, it) else contextlib.nullcontext():
    ...             loss = criterion(model(x), y)
    ...         loss.backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

from ..errors import LowModeError
from .forward import low_mode, select_convs, stem_pool
from .kernel import downsample_input, low_kernel_size, pool_geometry, pool_kernel
from .schedule import LowModeSchedule

__all__ = [
    "LowModeError",
    "LowModeSchedule",
    "downsample_input",
    "low_kernel_size",
    "low_mode",
    "pool_kernel",
    "pool_geometry",
    "select_convs",
    "stem_pool",
]
