"""The low-mode forward: which convs are pooled, and the context manager that switches a model.

Nothing is replaced: selected convs get an instance `forward` that convolves with T(W), the
stem's max-pool an identity one, and a pre-hook downsamples the input (Nouri et al. 2019, §2.2).
"""

from __future__ import annotations

import contextlib
import fnmatch
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import LowModeError, UnsupportedLayerError
from .kernel import downsample_input, low_kernel_size, pool_kernel

__all__ = ["select_convs", "stem_pool", "low_mode"]


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
        return tuple(d * (kl - 1) // 2 for d, kl in zip(conv.dilation, k_low, strict=False))
    return tuple(max(0, p - d * (k - kl) // 2)
                 for p, d, k, kl in zip(conv.padding, conv.dilation, conv.kernel_size, k_low, strict=False))


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
        for m, t in zip(bns, old, strict=False):
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
