"""Pure converters for kernels and FC interfaces: resize, pad and widen.

Tensors in, tensors out: nothing is read, written or cached. A kernel is any (..., kh, kw)
tensor, typically a conv weight (O, I/groups, kh, kw); leading dims are carried through and
non-square sizes work per dimension. The work is done in float64 for float64 input and in
float32 otherwise (resize matrices are always built in float64), and the result is cast back
to the input dtype at the end, as timm's `adapt_input_conv` does.

The amplitude rule (SPEC §2): a kernel resized from k' to k taps per dimension sums k/k' times
more input per dimension, so an upscale multiplies by (k'_h·k'_w)/(k_h·k_w) and a downscale by
the inverse. Pixel replication's ×1/4 for f = 2 is the same rule.

The pseudo-inverse pair follows FlexiViT: B is the linear map that resizes a k'×k' patch to
k×k. `upscale_pinv` returns pinv(Bᵀ)·w', so that ⟨B·x, w⟩ = ⟨x, w'⟩ for every small patch x;
`downscale(method="pinv")` returns the adjoint Bᵀ·w, so that the small kernel on a patch sees
what the big kernel sees on the upsampled patch, and downscale ∘ upscale_pinv is the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ConversionError

__all__ = [
    "upscale_bilinear",
    "upscale_replicate",
    "upscale_pinv",
    "downscale",
    "resize_kernel",
    "resize_fc",
    "pad_fc_gaussian",
    "widen",
    "widen_norm",
]

Size = int | tuple[int, int]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")
_DOWN_METHODS = ("pinv", "bilinear", "area")
_METHODS = ("bilinear", "pinv", "replicate")
_INITS = ("gaussian", "zero", "flip-h", "flip-v", "flip-d", "flip-c")


def _pair(value, name: str) -> tuple[int, int]:
    """An int or an (h, w) pair of positive ints; integral floats are accepted."""
    items = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else (value, value)
    out = []
    for v in items:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            break
        out.append(v)
    if len(items) != 2 or len(out) != 2:
        raise ConversionError(f"{name} {value!r} is not a positive int or an (h, w) pair of them. "
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
    mode="nearest")). The factor is the SPEC §2 amplitude rule: ÷s², never ×s².

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
    dst = _pair(size, "size")
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
        fh, fw = _pair(factor, "factor")
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
    dst = _pair(size, "size")
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
    dst = _pair(size, "size")
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
    dst = _pair(size, "size")
    _choice(method, _METHODS, "method")
    if src == dst:
        return w.clone()
    up, down = all(d >= s for d, s in zip(dst, src)), all(d <= s for d, s in zip(dst, src))
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
    """Resize the FC interface as a conv (SPEC §1.1): each row becomes a C×H×W kernel.

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

    SPEC §1.3. Old position i (per dimension) lands at floor(i·H2/H), the positions that
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
    src, dst = tuple(kernels.shape[-2:]), _pair(hw_to, "hw_to")
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


def _new_filters(weight: torch.Tensor, n: int, init: str, std: float, generator) -> torch.Tensor:
    if init in ("gaussian", "zero"):
        shape = (n, *weight.shape[1:])
        if init == "zero":
            return torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        device = generator.device if generator is not None else weight.device
        noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=device) * std
        return noise.to(device=weight.device, dtype=weight.dtype)
    if weight.ndim != 4 or (init == "flip-d" and weight.shape[-1] != weight.shape[-2]):
        raise ConversionError(f"widen: init {init!r} needs a conv weight (O, I, k, k) "
                              f"{'with a square kernel ' if init == 'flip-d' else ''}"
                              f"but got shape {tuple(weight.shape)}. Hint: use init='gaussian' or 'zero'")
    src = weight[torch.arange(n, device=weight.device) % weight.shape[0]]
    if init == "flip-d":
        return src.transpose(-1, -2).contiguous()
    dims = {"flip-h": (-1,), "flip-v": (-2,), "flip-c": (-2, -1)}[init]
    return src.flip(dims)


def widen(weight: torch.Tensor, bias: torch.Tensor | None, next_weight: torch.Tensor, new_out: int,
          init: str = "gaussian", std: float = 0.01, generator: torch.Generator | None = None):
    """Add `new_out` output filters to a layer and zero inputs to its consumer (SPEC §1.3).

    New filters: "gaussian" N(0, std²) from `generator`; "zero"; or flipped copies of existing
    filters, new filter j copying filter j mod O: "flip-h" (mirror left-right, last dim),
    "flip-v" (up-down, dim -2), "flip-d" (transpose kh/kw, square kernels) or "flip-c" (rot180).
    New biases are 0, or the copied filter's bias for flips. The consumer's new input columns
    are zero, so the network function is unchanged exactly. A BatchNorm between the two grows
    with `widen_norm`.

    Args:
        weight: (O, I, ...) conv weight (O, I, kh, kw) with groups=1, or a Linear weight (O, I).
        bias: (O,) or None.
        next_weight: (O2, O, ...) consumer weight, conv or Linear (dim 1 is its inputs). For a
            flatten→Linear consumer pass it reshaped to (O2, O, H, W).
        new_out: number of filters to add (≥ 0).
        init: "gaussian", "zero", "flip-h", "flip-v", "flip-d" or "flip-c".
        std: standard deviation for "gaussian".
        generator: torch.Generator for "gaussian".

    Returns:
        (weight (O+new_out, I, ...), bias (O+new_out,) or None, next_weight (O2, O+new_out, ...)),
        each in its input's dtype.

    Example:
        >>> w, b, nw = widen(torch.randn(16, 3, 3, 3), torch.zeros(16), torch.randn(32, 16, 3, 3), 8)
        >>> w.shape, b.shape, nw.shape
        (torch.Size([24, 3, 3, 3]), torch.Size([24]), torch.Size([32, 24, 3, 3]))
    """
    _kernel(weight, "widen")
    _kernel(next_weight, "widen")
    _choice(init, _INITS, "init")
    if isinstance(new_out, bool) or not isinstance(new_out, int) or new_out < 0:
        raise ConversionError(f"widen: new_out {new_out!r} must be a non-negative int")
    n_out = weight.shape[0]
    if next_weight.shape[1] != n_out:
        raise ConversionError(f"widen: next_weight {tuple(next_weight.shape)} has {next_weight.shape[1]} "
                              f"inputs but weight has {n_out} outputs. Hint: reshape a flatten→Linear "
                              "weight to (O2, C, H, W); grouped consumers are not supported")
    if bias is not None and tuple(bias.shape) != (n_out,):
        raise ConversionError(f"widen: bias shape {tuple(bias.shape)} does not match {n_out} outputs")
    new_w = torch.cat([weight, _new_filters(weight, new_out, init, std, generator)], 0)
    if bias is not None:
        extra = bias[torch.arange(new_out, device=bias.device) % n_out] if init.startswith("flip") \
            else bias.new_zeros(new_out)
        bias = torch.cat([bias, extra])
    zeros = next_weight.new_zeros((next_weight.shape[0], new_out, *next_weight.shape[2:]))
    return new_w, bias, torch.cat([next_weight, zeros], 1)


_NORM_FILL = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


def widen_norm(state: dict[str, torch.Tensor], new: int) -> dict[str, torch.Tensor]:
    """Grow a BatchNorm's per-channel tensors by `new` channels: weight 1, bias 0, mean 0, var 1.

    Keys may carry a prefix ("bn1.weight"); they are matched on their last component. Other
    tensors (num_batches_tracked) are copied. Returns a new dict; the input is not changed.

    Args:
        state: the norm's state_dict entries, each per-channel tensor of shape (C,).
        new: channels to add.

    Returns:
        A dict with the same keys, per-channel tensors of shape (C+new,).

    Example:
        >>> bn = torch.nn.BatchNorm2d(4)
        >>> widen_norm(bn.state_dict(), 2)["running_var"]
        tensor([1., 1., 1., 1., 1., 1.])
    """
    out = {}
    for key, value in state.items():
        fill = _NORM_FILL.get(key.rsplit(".", 1)[-1])
        if fill is None:
            out[key] = value.clone()
        elif value.ndim != 1:
            raise ConversionError(f"widen_norm: {key} has shape {tuple(value.shape)}, expected (C,)")
        else:
            out[key] = torch.cat([value, value.new_full((new,), fill)])
    return out
