"""FC-interface converters: resize a flatten->Linear (or conv-FC) weight like a kernel, or Gaussian-pad it."""

from __future__ import annotations

import torch

from ..errors import ConversionError
from .kernels import Size, _kernel, _work_dtype, as_pair, resize_kernel

__all__ = ["resize_fc", "pad_fc_gaussian"]


def _fc_as_kernel(weight: torch.Tensor, chw_from, fn: str) -> torch.Tensor:
    """(out, C·H·W) or (out, C, H, W) → (out, C, H, W), checked against chw_from."""
    _kernel(weight, fn)
    if weight.ndim == 4 and chw_from is None:
        return weight
    if chw_from is None or len(tuple(chw_from)) != 3:
        raise ConversionError(f"{fn}: chw_from {chw_from!r} must be (C, H, W) of the flattened map")
    c, h, w = (int(v) for v in chw_from)
    if weight.ndim == 2 and weight.shape[1] == c * h * w:
        return weight.reshape(weight.shape[0], c, h, w)
    if weight.ndim == 4 and tuple(weight.shape[1:]) == (c, h, w):
        return weight
    raise ConversionError(f"{fn}: weight of shape {tuple(weight.shape)} does not take a {c}x{h}x{w} "
                          "input. Hint: pass the (C, H, W) of the feature map in front of it")


def resize_fc(weight: torch.Tensor, chw_from, hw_to: Size, method: str = "bilinear", *,
              interpolation: str = "bilinear") -> torch.Tensor:
    """Resize the FC interface as a conv (de Gusmão et al. 2016, §3.3.2): each row becomes a C×H×W kernel.

    Every output row is reshaped to C×H×W (torch.flatten order), resized to C×H2×W2 with
    `resize_kernel` (same amplitude rule, up or down) and flattened back. A 4D conv-FC weight
    (timm vgg `ConvMlp.fc1`) is resized in place of its spatial dims. On a feature map that
    is the small one upsampled, the big Linear reproduces the small one's output exactly for
    "replicate" with nearest upsampling (integer factor) and for "pinv" with upsampling by its
    `interpolation`; "bilinear" is approximate.

    Args:
        weight: (out, C·H·W) Linear weight or (out, C, H, W) conv weight.
        chw_from: (C, H, W) of the flattened feature map; may be None for a 4D weight.
        hw_to: target (H2, W2) or an int.
        method: "bilinear", "pinv" or "replicate".
        interpolation: B's interpolation for "pinv".

    Returns:
        (out, C·H2·W2), or (out, C, H2, W2) for a 4D weight, in weight's dtype.

    Example:
        >>> resize_fc(torch.randn(10, 32 * 5 * 5), (32, 5, 5), 7).shape
        torch.Size([10, 1568])
    """
    kernels = _fc_as_kernel(weight, chw_from, "resize_fc")
    out = resize_kernel(kernels, hw_to, method, interpolation=interpolation)
    return out.reshape(weight.shape[0], -1) if weight.ndim == 2 else out


def pad_fc_gaussian(weight: torch.Tensor, chw_from, hw_to: Size, std: float = 0.01,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Grow the FC interface by keeping old weights on a grid and filling the rest with noise.

    Liu et al. 2016, §III-B. Old position i (per dimension) lands at floor(i·H2/H), the positions that
    F.interpolate(mode="nearest") samples when it shrinks H2 back to H. For an integer factor f
    that is i·f, the [::f] grid where pixel replication is exact. Every other position gets
    N(0, std²). Old weights are not rescaled.

    Args:
        weight: (out, C·H·W) Linear weight or (out, C, H, W) conv weight.
        chw_from: (C, H, W) of the flattened feature map; may be None for a 4D weight.
        hw_to: target (H2, W2) or an int, each at least (H, W).
        std: standard deviation of the new weights.
        generator: torch.Generator for the noise; the result is a function of its state.

    Returns:
        (out, C·H2·W2), or (out, C, H2, W2) for a 4D weight, in weight's dtype.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pad_fc_gaussian(torch.randn(10, 8 * 2 * 2), (8, 2, 2), 4, generator=g).shape
        torch.Size([10, 128])
    """
    kernels = _fc_as_kernel(weight, chw_from, "pad_fc_gaussian")
    src, dst = tuple(kernels.shape[-2:]), as_pair(hw_to, "hw_to")
    if dst[0] < src[0] or dst[1] < src[1]:
        raise ConversionError(f"pad_fc_gaussian: hw_to {dst} is smaller than the source map {src}. "
                              "Hint: use resize_fc to shrink an FC interface")
    device = generator.device if generator is not None else weight.device
    shape = (*kernels.shape[:-2], *dst)
    out = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    out = (out * std).to(device=weight.device, dtype=_work_dtype(weight))
    rows = torch.arange(src[0], device=weight.device) * dst[0] // src[0]
    cols = torch.arange(src[1], device=weight.device) * dst[1] // src[1]
    out[..., rows[:, None], cols[None, :]] = kernels.to(out.dtype)
    out = out.to(weight.dtype)
    return out.reshape(weight.shape[0], -1) if weight.ndim == 2 else out
