"""Channel converters: add filters to a layer (and inputs to its consumer) or channels to a BatchNorm.

Liu et al. 2016, §III-C: new filters start as noise, zeros or flipped copies, and the consumer's
new inputs are zero, so the network computes exactly what it did before.
"""

from __future__ import annotations

import torch

from ..errors import ConversionError
from .kernels import _choice, _kernel

__all__ = ["widen", "widen_norm"]

_INITS = ("gaussian", "zero", "flip-h", "flip-v", "flip-d", "flip-c")


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
    """Add `new_out` output filters to a layer and zero inputs to its consumer (Liu et al. 2016, §III-C).

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
