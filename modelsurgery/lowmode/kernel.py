"""T, the low-mode kernel transformation, and the low-mode input: pure tensor math.

Nouri et al. 2019, §2.2.1 (input downsampling) and §2.2.2 (kernel downsampling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputSizeError, LowModeError, UnsupportedLayerError

__all__ = ["low_kernel_size", "pool_geometry", "pool_kernel", "downsample_input"]


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
