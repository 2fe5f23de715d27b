"""Pure converters for kernels and FC interfaces: resize, pad and widen.

Tensors in, tensors out: nothing is read, written or cached. A kernel is any (..., kh, kw)
tensor, typically a conv weight (O, I/groups, kh, kw); leading dims are carried through and
non-square sizes work per dimension. The work is done in float64 for float64 input and in
float32 otherwise (resize matrices are always built in float64), and the result is cast back
to the input dtype at the end, as timm's `adapt_input_conv` does.

The amplitude rule (de Gusmão et al. 2016, §3.3.1): a kernel resized from k' to k taps per
dimension sums k/k' times more input per dimension, so an upscale multiplies by
(k'_h·k'_w)/(k_h·k_w) and a downscale by the inverse. Pixel replication's ×1/4 for f = 2 is the same rule.

The pseudo-inverse pair follows FlexiViT: B is the linear map that resizes a k'×k' patch to
k×k. `upscale_pinv` returns pinv(Bᵀ)·w', so that ⟨B·x, w⟩ = ⟨x, w'⟩ for every small patch x;
`downscale(method="pinv")` returns the adjoint Bᵀ·w, so that the small kernel on a patch sees
what the big kernel sees on the upsampled patch, and downscale ∘ upscale_pinv is the identity.

The converters live in three modules: `kernels` (upscale, downscale, resize_kernel), `fc` (the FC
interface: resize_fc, pad_fc_gaussian) and `channels` (widen, widen_norm). Import them from here.
"""

from __future__ import annotations

from .channels import widen, widen_norm
from .fc import pad_fc_gaussian, resize_fc
from .kernels import downscale, resize_kernel, upscale_bilinear, upscale_pinv, upscale_replicate

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
