"""Low mode: dynamic input and kernel downsampling inside the training step (SPEC §1.2).

Nouri, Moshovos and Poulos (2019) run some training iterations in *low mode*: the input is
downsampled by a ratio r, every selected conv computes with T(W), a differentiable average
pool of its kernel, and the max-pool after the stem is skipped. The gradient flows through T
into the full-size W, which the optimizer updates as usual. `low_mode` is a context manager
that switches a model into low mode and restores it exactly on exit; `LowModeSchedule`
decides which iterations run in low mode.

Example:
    >>> sched = LowModeSchedule(p_low=0.5, lr_milestones=[30, 60])
    >>> for epoch in range(90):
    ...     for it, (x, y) in enumerate(loader):
    ...         with low_mode(model) if sched.is_low(epoch, it) else contextlib.nullcontext():
    ...             loss = criterion(model(x), y)
    ...         loss.backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import math
import struct
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import InputSizeError, LowModeError, UnsupportedLayerError

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


# ---------------------------------------------------------------------------------------------
# T: the kernel transformation (pure tensor math)


def low_kernel_size(k: int, ratio: int) -> int:
    """The low-mode size of one kernel dimension: the odd one of ceil(k/r) and floor(k/r).

    3 → 1, 5 → 3, 7 → 3 and 1 → 1 for r = 2. Raises `UnsupportedLayerError` when neither is
    odd (k/r an even integer, e.g. k = 4 with r = 2), since an even kernel cannot keep the
    feature-map shape with symmetric padding.
    """
    for cand in (math.ceil(k / ratio), k // ratio):
        if cand % 2 == 1:
            return cand
    raise UnsupportedLayerError(
        f"kernel size {k} has no odd low-mode size for ratio {ratio}; "
        "exclude this conv with the `convs=` patterns of low_mode"
    )


def pool_geometry(k: int, ratio: int) -> tuple[int, int, int, int]:
    """How T pools one kernel dimension: (k_low, window, pad_before, pad_after).

    The window and stride are w = ceil(k / k_low) and the kernel is zero-padded by
    w·k_low − k < w taps, the extra tap after (TF "SAME" convention), so the windows partition
    the k taps exactly. This is the paper's rule: 3 → 1 is a 3-tap pool, 5 → 3 is a 2-tap pool
    with stride 2 and one tap of padding on one side; 7 → 3 is a 3-tap pool padded 1 + 1.
    """
    k_low = low_kernel_size(k, ratio)
    window = math.ceil(k / k_low)
    pad = window * k_low - k
    return k_low, window, pad // 2, pad - pad // 2


def pool_kernel(weight: torch.Tensor, ratio: int = 2, keep_dc: bool = True) -> torch.Tensor:
    """T(W): average-pool a conv kernel to its low-mode size, differentiably.

    Args:
        weight: (C_out, C_in/groups, kh, kw).
        ratio: the downsampling ratio r.
        keep_dc: True sums each pooling window (the kernel's sum, its DC gain, is kept, so a
            layer's output on a smooth input keeps its scale); False takes the mean, as a
            plain `AvgPool2d` with zero padding counted does (output scaled by 1/(w_h·w_w)).

    Returns:
        (C_out, C_in/groups, kh', kw') with kh' = `low_kernel_size(kh, ratio)`.

    Example:
        >>> pool_kernel(torch.ones(8, 4, 3, 3)).shape, pool_kernel(torch.ones(1, 1, 3, 3)).item()
        (torch.Size([8, 4, 1, 1]), 9.0)
    """
    if weight.dim() != 4:
        raise UnsupportedLayerError(f"pool_kernel needs a 4-D conv weight, got shape {tuple(weight.shape)}")
    (kh, wh, th, bh), (kw, ww, lw, rw) = (pool_geometry(k, ratio) for k in weight.shape[-2:])
    if (kh, kw) == tuple(weight.shape[-2:]):
        return weight
    if (kh, kw) == (1, 1):  # one window holds the whole kernel; as a GEMV it is ~3× faster
        taps = weight.shape[2] * weight.shape[3]  # than sum((2, 3)) forward and backward on CPU
        ones = weight.new_full((taps, 1), 1.0 if keep_dc else 1.0 / taps)
        return (weight.reshape(-1, taps) @ ones).view(*weight.shape[:2], 1, 1)
    if th or bh or lw or rw:
        weight = F.pad(weight, (lw, rw, th, bh))
    return F.avg_pool2d(weight, (wh, ww), stride=(wh, ww), divisor_override=1 if keep_dc else None)


# ---------------------------------------------------------------------------------------------
# Input downsampling


def _gaussian_taps(ratio: int, sigma: float | None, dtype, device) -> torch.Tensor:
    sigma = ratio / 3.0 if sigma is None else sigma  # skimage's pyramid_reduce default
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def downsample_input(
    x: torch.Tensor, ratio: int = 2, method: str = "gaussian", sigma: float | None = None
) -> torch.Tensor:
    """Downsample an image batch by an integer ratio, the low-mode input.

    "gaussian" blurs with a separable Gaussian (sigma = ratio/3 unless given, taps to 3·sigma,
    edges replicated) and keeps rows and columns 0, r, 2r, ... (the paper's preferred method).
    "bilinear" is `F.interpolate(mode="bilinear", align_corners=False)`.

    Args:
        x: (N, C, H, W) floating point, H and W divisible by `ratio`.

    Returns:
        (N, C, H/r, W/r).
    """
    h, w = x.shape[-2:]
    if x.dim() != 4 or h % ratio or w % ratio:
        raise InputSizeError(
            f"low mode needs an (N, C, H, W) input with H and W divisible by ratio {ratio}, "
            f"got shape {tuple(x.shape)}; crop or pad the images"
        )
    if method == "bilinear":
        return F.interpolate(x, size=(h // ratio, w // ratio), mode="bilinear", align_corners=False)
    if method != "gaussian":
        raise LowModeError(f"unknown downsample method {method!r}; use 'gaussian' or 'bilinear'")
    g = _gaussian_taps(ratio, sigma, x.dtype, x.device)
    c, rad = x.shape[1], g.numel() // 2
    x = F.pad(x, (rad, rad, rad, rad), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(ratio, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, ratio), groups=c)


# ---------------------------------------------------------------------------------------------
# Which convs (analysis: returns names, mutates nothing)


def _resnet_block_convs(model: nn.Module) -> list[str] | None:
    """Paper defaults: both 3×3 convs of a basic block, conv2 of a bottleneck."""
    import timm.models.resnet as tr
    import torchvision.models.resnet as tv

    names = []
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, (tr.BasicBlock, tv.BasicBlock)):
            names += [prefix + "conv1", prefix + "conv2"]
        elif isinstance(m, (tr.Bottleneck, tv.Bottleneck)):
            names.append(prefix + "conv2")
    return names or None


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def select_convs(model: nn.Module, convs: str | Sequence[str] | None = None) -> list[str]:
    """Qualnames of the convs that low mode pools, in module order.

    With `convs=None`: ResNet basic blocks (timm and torchvision) give conv1 and conv2,
    bottlenecks conv2 only (the paper's choice); any other model gives every stride-1
    `nn.Conv2d` with a kernel larger than 1×1, except the stem (the first conv in module
    order). Stride-2 convs, depthwise or not, are left alone. Otherwise `convs` is one or more
    `fnmatch` patterns over conv qualnames, e.g. ``"layer[34].*.conv2"``; every pattern must
    match at least one conv.

    Example:
        >>> select_convs(timm.create_model("resnet50"))[:2]
        ['layer1.0.conv2', 'layer1.1.conv2']
    """
    all_convs = _convs(model)
    if not all_convs:
        raise UnsupportedLayerError(f"{type(model).__name__} has no nn.Conv2d; low mode has nothing to pool")
    if convs is None:
        chosen = _resnet_block_convs(model)
        if chosen is None:
            stem = next(iter(all_convs))
            chosen = [n for n, m in all_convs.items()
                      if n != stem and m.stride == (1, 1) and max(m.kernel_size) > 1]
        if not chosen:
            raise LowModeError(
                f"no conv of {type(model).__name__} qualifies for low mode by default (stride 1, "
                f"kernel > 1×1, not the stem); name them with convs=, e.g. {list(all_convs)[:2]}"
            )
        return chosen
    patterns = [convs] if isinstance(convs, str) else list(convs)
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in all_convs):
            raise LowModeError(
                f"conv pattern {p!r} matches no nn.Conv2d in {type(model).__name__}; "
                f"conv names look like {list(all_convs)[:3]}"
            )
    return [n for n in all_convs if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def stem_pool(model: nn.Module, selected: Sequence[str]) -> str | None:
    """The max-pool right after the stem, skipped in low mode, or None.

    That is the first `nn.MaxPool2d` in module order that comes after the first conv and
    before the first selected conv (`maxpool` in timm and torchvision ResNets).
    """
    seen_conv, first_sel = False, selected[0] if selected else None
    for name, m in model.named_modules():
        if name == first_sel:
            return None
        if isinstance(m, nn.Conv2d):
            seen_conv = True
        elif seen_conv and isinstance(m, nn.MaxPool2d):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# Low-mode forwards


def _low_padding(conv: nn.Conv2d, k_low: tuple[int, int]) -> tuple[int, int]:
    """Padding that keeps the conv's output size: reduced by d·(k − k')/2, at least 0."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":  # k' is odd, so "same" is symmetric
        return tuple(d * (kl - 1) // 2 for d, kl in zip(conv.dilation, k_low))
    return tuple(max(0, p - d * (k - kl) // 2)
                 for p, d, k, kl in zip(conv.padding, conv.dilation, conv.kernel_size, k_low))


def _low_conv_forward(conv: nn.Conv2d, ratio: int, keep_dc: bool) -> Callable:
    from timm.layers import Conv2dSame, conv2d_same

    k_low = tuple(low_kernel_size(k, ratio) for k in conv.kernel_size)
    padding = _low_padding(conv, k_low)
    if isinstance(conv, Conv2dSame):
        def forward(x):
            w = pool_kernel(conv.weight, ratio, keep_dc)
            return conv2d_same(x, w, conv.bias, conv.stride, (0, 0), conv.dilation, conv.groups)
    elif type(conv).forward is nn.Conv2d.forward:
        def forward(x):
            w, pad = pool_kernel(conv.weight, ratio, keep_dc), padding
            if conv.padding_mode != "zeros":
                x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), mode=conv.padding_mode)
                pad = 0
            return F.conv2d(x, w, conv.bias, conv.stride, pad, conv.dilation, conv.groups)
    else:
        raise UnsupportedLayerError(
            f"{type(conv).__name__} overrides Conv2d.forward and cannot run in low mode; "
            "exclude it with the `convs=` patterns of low_mode"
        )
    return forward


_ACTIVE: weakref.WeakSet = weakref.WeakSet()


@contextlib.contextmanager
def _patched_forward(module: nn.Module, fn: Callable) -> Iterator[None]:
    had_own = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = fn
    try:
        yield
    finally:
        if had_own:
            module.forward = old
        else:
            del module.forward


@contextlib.contextmanager
def _frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    # With track_running_stats False a train-mode BN normalises with batch statistics and
    # passes no running buffers to F.batch_norm, so nothing (not even num_batches_tracked)
    # changes; an eval-mode BN still uses its running statistics.
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    old = [m.track_running_stats for m in bns]
    try:
        for m in bns:
            m.track_running_stats = False
        yield
    finally:
        for m, t in zip(bns, old):
            m.track_running_stats = t


def _input_hook(ratio: int, downsample) -> Callable:
    def hook(module, args, kwargs):
        if not args or not isinstance(args[0], torch.Tensor):
            raise LowModeError("low mode downsamples the first positional argument of model(x); "
                               "pass x positionally")
        x = downsample(args[0]) if callable(downsample) else downsample_input(args[0], ratio, downsample)
        return (x, *args[1:]), kwargs
    return hook


@contextlib.contextmanager
def low_mode(
    model: nn.Module,
    ratio: int = 2,
    *,
    convs: str | Sequence[str] | None = None,
    downsample: str | Callable[[torch.Tensor], torch.Tensor] | None = "gaussian",
    keep_dc: bool = True,
    skip_stem_pool: bool | str = True,
    bn: str = "freeze",
) -> Iterator[list[str]]:
    """Run `model` in low mode inside the `with` block; yields the pooled convs' qualnames.

    Inside, `model(x)` downsamples x by `ratio`, every selected conv computes with
    T(W) = `pool_kernel(W)` and padding reduced to match (3×3 pad 1 → 1×1 pad 0; strides,
    dilation and groups are kept), and the max-pool after the stem is an identity. T is
    evaluated on every call, so gradients flow through it into the full-size W. Nothing is
    replaced: parameters, buffers and state_dict keys stay, and on exit (also by an
    exception) the model computes bit for bit what it did before.

    Amplitude (`keep_dc`): T sums each pooling window by default, so a conv keeps its DC gain
    (the sum of its taps) and its low-mode output keeps the full-mode scale; `keep_dc=False` is
    the paper's plain average pool, which divides the output by the window area (9 for 3 → 1).
    Measured (Fashion-MNIST, timm ResNet-18, 32 px, batch 64):

    - Scale, pre-BN output std of the 16 pooled convs, low/full, on a net trained 300 steps:
      sum median 1.05 (0.54–14.9), mean 0.10 (0.05–0.37). Without BN the mean pool compounds:
      torchvision VGG-11's features come out 1.7e-7 × the full-mode scale (sum: 0.79).
    - Training, 300 steps at p_low = 0.5 with a final full-mode epoch, full-mode eval accuracy
      over 4 seeds: sum 83.2/83.3/84.1/84.9 %, mean 83.7/84.4/84.6/85.0 % (full mode alone
      86.6/86.9 %). A BN right after the conv cancels a constant scale up to its eps, so on
      BN ResNets the two differ only slightly (mean +0.6 points on average here).
    - Eval-mode low forward with full-mode BN statistics: chance (9.7 % sum, 10.6 % mean)
      either way, so low mode is for training steps, not inference.

    We keep the DC gain because it is the only choice that works on convs not followed by a
    normalisation layer; pass `keep_dc=False` to reproduce the paper on BN ResNets.

    BatchNorm (`bn`): "freeze" (default) normalises low-mode batches with their own batch
    statistics but leaves every running statistic and `num_batches_tracked` untouched, so
    eval mode only ever sees full-mode statistics. "update" lets low-mode batches update them
    like any other batch. Low-mode statistics differ from full-mode ones: in a 300-step run
    at a constant LR (one seed), evaluated straight after mixed iterations, "update" scored
    38.6 % and "freeze" 70.7 %. With a final full-mode epoch, as above, the running averages
    forget the low batches and the two agree (84.1 % both).

    Args:
        model: the network; its first positional argument is the image batch (N, C, H, W).
        ratio: input downsampling ratio r ≥ 2; H and W must be divisible by it.
        convs: fnmatch patterns over conv qualnames; None uses `select_convs`' defaults.
        downsample: "gaussian" (blur then decimate), "bilinear", a callable x → x_low, or None
            when the caller already feeds low-resolution images.
        keep_dc: sum-pool (True) or mean-pool (False) the kernels, see above.
        skip_stem_pool: True skips the max-pool after the stem (`stem_pool`), False keeps it, a
            qualname names the module to skip.
        bn: "freeze" or "update", see above.

    Example:
        >>> with low_mode(model, ratio=2) as pooled:
        ...     loss = criterion(model(x), y)   # x at full size; the model sees x/2
        >>> loss.backward(); optimizer.step()   # updates the full-size kernels
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2:
        raise LowModeError(f"ratio must be an integer ≥ 2, got {ratio!r}")
    if bn not in ("freeze", "update"):
        raise LowModeError(f"bn must be 'freeze' or 'update', got {bn!r}")
    if model in _ACTIVE:
        raise LowModeError(f"{type(model).__name__} is already in low mode; low_mode does not nest")
    modules = dict(model.named_modules())
    selected = select_convs(model, convs)
    forwards = {n: _low_conv_forward(modules[n], ratio, keep_dc) for n in selected}
    pool = stem_pool(model, selected) if skip_stem_pool is True else skip_stem_pool or None
    if pool is not None and pool not in modules:
        raise LowModeError(f"skip_stem_pool names {pool!r}, which is not a module of {type(model).__name__}")
    with contextlib.ExitStack() as stack:
        _ACTIVE.add(model)
        stack.callback(_ACTIVE.discard, model)
        for name, fn in forwards.items():
            stack.enter_context(_patched_forward(modules[name], fn))
        if pool is not None:
            stack.enter_context(_patched_forward(modules[pool], lambda x: x))
        if bn == "freeze":
            stack.enter_context(_frozen_bn_stats(model))
        if downsample is not None:
            handle = model.register_forward_pre_hook(_input_hook(ratio, downsample), with_kwargs=True)
            stack.callback(handle.remove)
        yield selected


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
