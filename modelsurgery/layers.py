"""Replacement layers for the pre-train network.

A replaced conv keeps its class (so `StdConv2d`, `ScaledStdConv2d` and friends keep their weight
standardisation) and its `weight`/`bias` keys; only its kernel and padding change. Where the new
padding is asymmetric (even kernels), the conv's class is swapped for a padded subclass of it
that pads the input explicitly before the base forward. fx treats every conv as a leaf.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PaddedConv", "padded_conv_class", "set_conv_padding", "fit_to", "FitTo", "DYNAMIC_PAD_CONVS"]

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _dynamic_pad_types() -> tuple[type, ...]:
    """Conv classes that may compute TF-style "same" padding at forward time (timm).

    `Conv2dSame` always does; the Std/ScaledStd variants only when their `same_pad` is set.
    """
    from timm.layers import Conv2dSame
    from timm.layers.std_conv import ScaledStdConv2dSame, StdConv2dSame

    return (Conv2dSame, StdConv2dSame, ScaledStdConv2dSame)


DYNAMIC_PAD_CONVS = _dynamic_pad_types()


class PaddedConv:
    """Mixin: pad the input by `self.pad` = (left, right, top, bottom), then the base forward.

    The base conv's own padding is zero. `F.pad` runs on the actual input, so the layer
    works at any input size (progressive resizing relies on that).
    """

    pad: tuple[int, int, int, int]
    pad_mode: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if any(self.pad):
            x = F.pad(x, self.pad, mode=self.pad_mode)
        return super().forward(x)  # type: ignore[misc]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"  # type: ignore[misc]


_PADDED: dict[type, type] = {}


def padded_conv_class(base: type) -> type:
    """The padded subclass of a conv class (one per base class, cached)."""
    if issubclass(base, PaddedConv):
        return base
    if base not in _PADDED:
        _PADDED[base] = type(f"Padded{base.__name__}", (PaddedConv, base), {"__module__": __name__})
    return _PADDED[base]


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
