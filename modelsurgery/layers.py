"""Replacement layers for the pre-train network.

A replaced conv keeps its class (so `StdConv2d`, `ScaledStdConv2d` and friends keep their weight
standardisation) and its `weight`/`bias` keys; only its kernel and padding change. Where the new
padding is asymmetric (even kernels), the conv's class is swapped for a padded subclass of it
that pads the input explicitly before the base forward, or folds the padding into the conv
where that is exact and cheaper. fx treats every conv as a leaf.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PaddedConv", "padded_conv_class", "fold_geometry", "FOLD_MAX_EXTRA", "set_conv_padding", "fit_to", "FitTo",
           "DYNAMIC_PAD_CONVS", "set_module"]

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _dynamic_pad_types() -> tuple[type, ...]:
    """Conv classes that may compute TF-style "same" padding at forward time (timm).

    `Conv2dSame` always does; the Std/ScaledStd variants only when their `same_pad` is set.
    """
    from timm.layers import Conv2dSame
    from timm.layers.std_conv import ScaledStdConv2dSame, StdConv2dSame

    return (Conv2dSame, StdConv2dSame, ScaledStdConv2dSame)


DYNAMIC_PAD_CONVS = _dynamic_pad_types()


# The folded path (below) convolves over a grid that may be larger than the wanted output and
# crops it. It is taken only while the extra output area is at most this fraction. 0 means only
# exact fits (no wasted multiplications, no crop), e.g. stride-2 convs with the extra pixel after
# an even map: those then need no padding at all. bench/even_kernel_pad.py measures both paths.
FOLD_MAX_EXTRA = 0.0


@functools.lru_cache(maxsize=4096)
def fold_geometry(size: int, kernel: int, stride: int, dilation: int, before: int, after: int):
    """Fold the padding (before, after) of one spatial dimension into a symmetric conv padding.

    conv(F.pad(x, (before, after)), padding=0) along this dimension equals
    conv(x, padding=p)[off : off + n], because window i of the first starts at i·stride − before
    and window j of the second at j·stride − p. So p ≥ before with p − before a multiple of the
    stride (off = (p − before) / stride), and the smallest such p whose grid (`full` windows)
    still holds the last wanted window is taken. Positions outside the input read zeros in both.

    Returns:
        (p, off, n, full): symmetric padding, crop offset, wanted output size, computed output
        size; None when the padded input is smaller than the kernel (F.pad + conv raises then).

    Example:
        >>> fold_geometry(40, 2, 2, 1, 0, 1)  # even size, extra pixel after: no padding at all
        (0, 0, 20, 20)
        >>> fold_geometry(40, 2, 1, 1, 0, 1)  # stride 1: pad 1 both sides, drop the first output
        (1, 1, 40, 41)
    """
    reach = dilation * (kernel - 1)
    n = (size + before + after - reach - 1) // stride + 1
    if size + before + after - reach < 1 or n < 1:
        return None
    p = before
    while True:  # terminates: each step adds 2 computed windows and 1 to the offset
        off = (p - before) // stride
        full = (size + 2 * p - reach - 1) // stride + 1
        if off + n <= full:
            return p, off, n, full
        p += stride


class PaddedConv:
    """Mixin: the base conv applied to the input padded by `self.pad` = (left, right, top, bottom).

    The base conv's own padding is zero. For a plain `nn.Conv2d` base with zero padding the
    padding is folded into the convolution (`fold_geometry`): a symmetric conv padding and, when
    needed, a crop of the output, which saves the padded copy of the input (and of its gradient)
    that F.pad makes. Where folding would compute more than `FOLD_MAX_EXTRA` extra output
    area, and for bases that override `forward` (weight standardisation) or pad by reflection,
    the input is padded with F.pad. Both paths are exactly equal; the geometry follows the actual
    input size, so the layer works at any size (progressive resizing relies on that).
    """

    pad: tuple[int, int, int, int]
    pad_mode: str
    _foldable: bool = False  # set per class by `padded_conv_class`

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not any(self.pad):
            return super().forward(x)  # type: ignore[misc]
        fold = self._fold(x.shape[-2], x.shape[-1]) if self._foldable and self.pad_mode == "constant" else None
        if fold is None:
            return super().forward(F.pad(x, self.pad, mode=self.pad_mode))  # type: ignore[misc]
        (ph, oh, nh, fh), (pw, ow, nw, fw) = fold
        y = F.conv2d(x, self.weight, self.bias, self.stride, (ph, pw), self.dilation, self.groups)  # type: ignore[attr-defined]
        if (nh, nw) != (fh, fw):
            y = y[..., oh:oh + nh, ow:ow + nw]
        return y

    def _fold(self, h: int, w: int):
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation  # type: ignore[attr-defined]
        left, right, top, bottom = self.pad
        rows, cols = fold_geometry(h, kh, sh, dh, top, bottom), fold_geometry(w, kw, sw, dw, left, right)
        if rows is None or cols is None or rows[3] * cols[3] > (1 + FOLD_MAX_EXTRA) * rows[2] * cols[2]:
            return None
        return rows, cols

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"  # type: ignore[misc]


_PADDED: dict[type, type] = {}


def padded_conv_class(base: type) -> type:
    """The padded subclass of a conv class (one per base class, cached)."""
    if issubclass(base, PaddedConv):
        return base
    if base not in _PADDED:
        foldable = issubclass(base, nn.Conv2d) and base.forward is nn.Conv2d.forward
        _PADDED[base] = type(f"Padded{base.__name__}", (PaddedConv, base),
                             {"__module__": __name__, "_foldable": foldable})
    return _PADDED[base]


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule `name` (a qualname) of `root`, in place."""
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def set_conv_padding(conv: nn.Conv2d, padding: tuple[int, int, int, int] | str) -> None:
    """Give `conv` (in place) the padding (left, right, top, bottom), or a string mode.

    Symmetric paddings stay plain `Conv2d.padding`; asymmetric ones switch the module to its
    padded subclass. Strings ("same", "valid", "dynamic") keep the conv's own mechanism.
    """
    if isinstance(padding, str):
        if padding in ("same", "valid"):
            conv.padding = padding
        return
    left, right, top, bottom = padding
    if left == right and top == bottom:
        conv.padding = (top, left)
        conv._reversed_padding_repeated_twice = [left, left, top, top]
        return
    mode = _PAD_MODES[conv.padding_mode]
    conv.__class__ = padded_conv_class(type(conv))
    conv.padding = (0, 0)
    conv.padding_mode = "zeros"
    conv._reversed_padding_repeated_twice = [0, 0, 0, 0]
    conv.pad = (left, right, top, bottom)
    conv.pad_mode = mode


@torch.fx.wrap
def fit_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Centre-crop or zero-pad `x` (N, C, H, W) to the spatial size of `ref`.

    Used where branches of a merge (add, mul, cat) disagree by a pixel in the pre-train
    network; the plan records every place it is inserted.
    """
    dh = ref.shape[-2] - x.shape[-2]
    dw = ref.shape[-1] - x.shape[-1]
    # F.pad with negative amounts crops; int() truncates towards zero, so the odd pixel is
    # added or removed at the bottom/right in both directions.
    top, left = int(dh / 2), int(dw / 2)
    return F.pad(x, (left, dw - left, top, dh - top))


class FitTo(nn.Module):
    """Module form of `fit_to`, for graphs that prefer call_module nodes."""

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return fit_to(x, ref)
