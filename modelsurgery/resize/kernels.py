"""Kernel converters: bilinear, replicate and pseudo-inverse upscales, downscale, resize_kernel.

Also the helpers every converter shares: argument checks, the resize matrix of F.interpolate,
and the float32/float64 work dtype (see the package docstring for the amplitude rule).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConversionError

__all__ = ["Size", "upscale_bilinear", "upscale_replicate", "upscale_pinv", "downscale", "resize_kernel", "as_pair"]

Size = int | tuple[int, int]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")
_DOWN_METHODS = ("pinv", "bilinear", "area")
_METHODS = ("bilinear", "pinv", "replicate")


def as_pair(value, name: str = "size", minimum: int = 1) -> tuple[int, int]:
    """An int or an (h, w) pair of ints >= `minimum` as an (h, w) tuple; integral floats are accepted.

    The converters check their sizes with it; shrink reads conv attributes (kernel_size, stride,
    padding) with it, `minimum=0`.

    Raises:
        ConversionError: anything else, naming `name`.
    """
    items = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else (value, value)
    out = []
    for v in items:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            break
        out.append(v)
    if len(items) != 2 or len(out) != 2:
        kind = "positive" if minimum > 0 else "non-negative"
        raise ConversionError(f"{name} {value!r} is not a {kind} int or an (h, w) pair of them. "
                              f"Hint: pass e.g. {name}=3 or {name}=(1, 7)")
    return out[0], out[1]


def _kernel(w, fn: str, min_ndim: int = 2) -> tuple[int, int]:
    if not isinstance(w, torch.Tensor) or w.ndim < min_ndim or not w.is_floating_point():
        got = f"{w.dtype} tensor of shape {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ConversionError(f"{fn}: expected a floating-point tensor with at least {min_ndim} dims, got {got}")
    return tuple(w.shape[-2:])


def _work_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ConversionError(f"unknown {name} {value!r}. Hint: use one of {', '.join(allowed)}")
    return value


def _resize_matrix(src: tuple[int, int], dst: tuple[int, int], mode: str,
                   antialias: bool = False) -> torch.Tensor:
    """The (dst_h·dst_w, src_h·src_w) float64 matrix of F.interpolate(mode) from src to dst.

    Built by resizing basis vectors, as FlexiViT and timm do, one dim at a time: every mode
    here is separable, so the 2D map is the Kronecker product. Per dim because antialiased
    bilinear on a width-1 input (an Inception 7×1 kernel) returns a constant in torch 2.14 CPU.
    """
    rows = _resize_matrix_1d(src[0], dst[0], mode, antialias)
    cols = _resize_matrix_1d(src[1], dst[1], mode, antialias)
    return torch.einsum("ia,jb->ijab", rows, cols).reshape(dst[0] * dst[1], src[0] * src[1])


def _resize_matrix_1d(src: int, dst: int, mode: str, antialias: bool) -> torch.Tensor:
    basis = torch.eye(src, dtype=torch.float64).reshape(src, 1, 1, src)
    extra = {} if mode.startswith("nearest") or mode == "area" else {"align_corners": False}
    if antialias:
        extra["antialias"] = True
    return F.interpolate(basis, size=(1, dst), mode=mode, **extra).reshape(src, dst).T


def _apply(w: torch.Tensor, right: torch.Tensor, size: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
    """Kernel rows (..., h·w) times `right` (h·w, H·W), times `scale`, back to (..., H, W) in w's dtype."""
    lead = w.shape[:-2]
    dtype = _work_dtype(w)
    flat = w.reshape(math.prod(lead), -1).to(dtype)
    out = (flat @ right.to(device=w.device, dtype=dtype)) * scale
    return out.reshape(*lead, *size).to(w.dtype)


def _check_up(src: tuple[int, int], dst: tuple[int, int], fn: str) -> None:
    if dst[0] < src[0] or dst[1] < src[1]:
        raise ConversionError(f"{fn}: size {dst} is smaller than the kernel {src}. "
                              "Hint: use downscale or resize_kernel to shrink")


def upscale_bilinear(w: torch.Tensor, size: Size, *, preserve_sum: bool = False) -> torch.Tensor:
    """Bilinearly upsample kernels and rescale their amplitude by (k'_h·k'_w)/(k_h·k_w).

    Interpolation is F.interpolate(mode="bilinear", align_corners=False) of the last two dims,
    i.e. half-pixel centres with edge clamping (scipy.ndimage.zoom(order=1, grid_mode=True,
    mode="nearest")). The factor is the amplitude rule of de Gusmão et al. 2016, §3.3.1: ÷s², never ×s².

    The kernel sum (DC gain) is kept exactly for constant kernels and whenever every source
    tap has interpolation gain 1: integer factors and k' ≤ 2 (e.g. 2→3, 1→3, 3→6). Otherwise
    it is kept only approximately: per dimension the tap gains lie in [0.96, 1.08] for 3→5,
    [0.918, 1.122] for 5→7 and [0.926, 1.099] for 7→11, so |Δsum| ≤ 0.26·Σ|w| for square
    kernels. `preserve_sum=True` divides each source tap by its gain first, which keeps every
    kernel's sum exactly at the cost of no longer mapping constant kernels to constants.

    Args:
        w: kernels (..., k'_h, k'_w).
        size: target k or (k_h, k_w), each at least the source size.
        preserve_sum: equalise tap gains so the sum is kept exactly (see above).

    Returns:
        Kernels (..., k_h, k_w) in w's dtype.

    Example:
        >>> upscale_bilinear(torch.ones(64, 3, 2, 2), 3)[0, 0]
        tensor([[0.4444, 0.4444, 0.4444],
                [0.4444, 0.4444, 0.4444],
                [0.4444, 0.4444, 0.4444]])
    """
    src = _kernel(w, "upscale_bilinear")
    dst = as_pair(size, "size")
    _check_up(src, dst, "upscale_bilinear")
    mat = _resize_matrix(src, dst, "bilinear")  # (K, k)
    scale = (src[0] * src[1]) / (dst[0] * dst[1])
    if preserve_sum:
        mat = mat / (mat.sum(0, keepdim=True) * scale)
    return _apply(w, mat.T, dst, scale)


def upscale_replicate(w: torch.Tensor, factor: Size) -> torch.Tensor:
    """Pixel replication: every tap becomes an fh×fw block of value w/(fh·fw).

    This is exact: a stride-1, unpadded conv with the replicated kernel on the nearest-upsampled
    input (×f) gives, at positions [..., ::fh, ::fw], exactly the small conv's output.

    Args:
        w: kernels (..., kh, kw).
        factor: positive integer f or (fh, fw). Non-integer ratios are an error.

    Returns:
        Kernels (..., fh·kh, fw·kw) in w's dtype.

    Example:
        >>> upscale_replicate(torch.tensor([[1., 2.], [3., 4.]]), 2)
        tensor([[0.2500, 0.2500, 0.5000, 0.5000],
                [0.2500, 0.2500, 0.5000, 0.5000],
                [0.7500, 0.7500, 1.0000, 1.0000],
                [0.7500, 0.7500, 1.0000, 1.0000]])
    """
    _kernel(w, "upscale_replicate")
    try:
        fh, fw = as_pair(factor, "factor")
    except ConversionError:
        raise ConversionError(f"replicate factor {factor!r} is not a positive integer (or pair). "
                              "Hint: use method 'bilinear' or 'pinv' for non-integer ratios") from None
    out = w.to(_work_dtype(w)).repeat_interleave(fh, dim=-2).repeat_interleave(fw, dim=-1)
    return (out / (fh * fw)).to(w.dtype)


def upscale_pinv(w: torch.Tensor, size: Size, interpolation: str = "bilinear") -> torch.Tensor:
    """FlexiViT pseudo-inverse upscale: w = pinv(Bᵀ)·w', so ⟨B·x, w⟩ = ⟨x, w'⟩ for all patches x.

    B resizes a k'_h×k'_w patch to k_h×k_w with F.interpolate(interpolation). The kernel sum is
    kept exactly (take x constant). With "nearest" and an integer factor this is exactly pixel
    replication ×1/f².

    timm's `resample_patch_embed` is the same math, but it asserts 4D input, computes in
    float32 and has bicubic defaults; we need any leading dims, float64 for exact tests and
    ConversionErrors, so the few lines are here in float64.

    Args:
        w: kernels (..., k'_h, k'_w).
        size: target k or (k_h, k_w), each at least the source size.
        interpolation: how B resizes: "bilinear", "bicubic", "nearest" or "nearest-exact".

    Returns:
        Kernels (..., k_h, k_w) in w's dtype.

    Example:
        >>> w = torch.randn(64, 3, 5, 5)
        >>> upscale_pinv(w, 7).shape
        torch.Size([64, 3, 7, 7])
    """
    src = _kernel(w, "upscale_pinv")
    dst = as_pair(size, "size")
    _check_up(src, dst, "upscale_pinv")
    mat = _resize_matrix(src, dst, _choice(interpolation, _INTERPOLATIONS, "interpolation"))
    # Upsampling maps are injective (B has full column rank; σ_min ≥ 0.5 up to 12 taps), so
    # pinv(B) = (BᵀB)⁻¹Bᵀ. A solve, unlike the SVD in linalg.pinv, does not stall for ~1 s
    # per call when MKL's threads compete on a busy 2-core machine.
    pinv = torch.linalg.solve(mat.mT @ mat, mat.mT)
    return _apply(w, pinv, dst)  # row form of pinv(Bᵀ)·w' is w'·pinv(B)


def downscale(w: torch.Tensor, size: Size, method: str = "pinv", *,
              interpolation: str = "bilinear") -> torch.Tensor:
    """Shrink kernels to a smaller size, keeping their amplitude (used by `shrink --weights`).

    - "pinv": the adjoint w' = Bᵀ·w of the upsampling map B (k'→k, `interpolation`), so the
      small kernel on a patch x gives what the big one gives on B·x. The sum is kept exactly
      and downscale(upscale_pinv(w', k), k') == w'.
    - "bilinear": antialiased bilinear resize × (k_h·k_w)/(k'_h·k'_w); the sum is kept
      approximately.
    - "area": block averages (F.interpolate "area") × (k_h·k_w)/(k'_h·k'_w); for an integer
      factor these are block sums, the exact inverse of `upscale_replicate`.

    Args:
        w: kernels (..., k_h, k_w).
        size: target k' or (k'_h, k'_w), each at most the source size.
        method: "pinv", "bilinear" or "area".
        interpolation: B's interpolation for "pinv".

    Returns:
        Kernels (..., k'_h, k'_w) in w's dtype.

    Example:
        >>> small = torch.randn(8, 4, 3, 3, dtype=torch.float64)
        >>> torch.allclose(downscale(upscale_pinv(small, 5), 3), small)
        True
    """
    src = _kernel(w, "downscale")
    dst = as_pair(size, "size")
    if dst[0] > src[0] or dst[1] > src[1]:
        raise ConversionError(f"downscale: size {dst} is larger than the kernel {src}. "
                              "Hint: use an upscale function or resize_kernel to grow")
    _choice(method, _DOWN_METHODS, "downscale method")
    if method == "pinv":
        mat = _resize_matrix(dst, src, _choice(interpolation, _INTERPOLATIONS, "interpolation"))
        return _apply(w, mat, dst)  # row form of Bᵀ·w is w·B
    mat = _resize_matrix(src, dst, method, antialias=method == "bilinear")
    return _apply(w, mat.T, dst, (src[0] * src[1]) / (dst[0] * dst[1]))


def resize_kernel(w: torch.Tensor, size: Size, method: str = "bilinear", *,
                  interpolation: str = "bilinear") -> torch.Tensor:
    """Resize kernels up or down with one method name, as grow and shrink use it.

    Up: "bilinear" → `upscale_bilinear`, "pinv" → `upscale_pinv`, "replicate" →
    `upscale_replicate`. Down: "bilinear" → `downscale(method="bilinear")`, "pinv" →
    `downscale(method="pinv")`, "replicate" → block sums (`downscale(method="area")`), its
    exact inverse. "replicate" needs sizes that divide evenly. Equal sizes return a copy. A size
    that grows one dim and shrinks the other is done one dim at a time (every method here is
    separable).

    Args:
        w: kernels (..., kh, kw).
        size: target k or (kh, kw).
        method: "bilinear", "pinv" or "replicate".
        interpolation: B's interpolation for "pinv".

    Returns:
        Kernels (..., size_h, size_w) in w's dtype.

    Example:
        >>> resize_kernel(torch.randn(16, 16, 1, 7), (1, 5), "pinv").shape
        torch.Size([16, 16, 1, 5])
    """
    src = _kernel(w, "resize_kernel")
    dst = as_pair(size, "size")
    _choice(method, _METHODS, "method")
    if src == dst:
        return w.clone()
    up, down = all(d >= s for d, s in zip(dst, src, strict=False)), all(d <= s for d, s in zip(dst, src, strict=False))
    if not (up or down):
        work = w.to(_work_dtype(w))  # round once, at the end
        out = resize_kernel(resize_kernel(work, (dst[0], src[1]), method, interpolation=interpolation),
                            dst, method, interpolation=interpolation)
        return out.to(w.dtype)
    if method == "replicate":
        big, small = (dst, src) if up else (src, dst)
        if big[0] % small[0] or big[1] % small[1]:
            raise ConversionError(f"replicate: size {big} is not an integer multiple of {small}. "
                                  "Hint: use method 'bilinear' or 'pinv' for non-integer ratios")
        if up:
            return upscale_replicate(w, (dst[0] // src[0], dst[1] // src[1]))
        return downscale(w, dst, "area")
    if up:
        if method == "bilinear":
            return upscale_bilinear(w, dst)
        return upscale_pinv(w, dst, interpolation)
    return downscale(w, dst, method, interpolation=interpolation)
