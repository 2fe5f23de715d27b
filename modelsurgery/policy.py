"""The kernel-map policy: which pre-train kernel and padding each conv gets.

de Gusmão et al. 2016, §3.2.1 and Table 1: a target kernel k becomes k' (3 -> 2, 5 -> 3, 7 -> 5,
11 -> 7) and the pre-train input shrinks by s1 = k/k' of the first shrunk kernel. The padding is
scaled with the kernel so that every feature map keeps its shape. Pure decisions on conv
attributes: nothing here builds or changes a network (`shrink.plan_shrink` does).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn as nn

from .constants import TABLE1 as _TABLE1
from .deprecation import moved
from .errors import KernelMapError
from .layers import DYNAMIC_PAD_CONVS
from .plan import ConvSite
from .resize.kernels import as_pair

__all__ = ["KeepKernels", "parse_kernel_map", "map_kernel", "conv_pair", "decide_kernel", "target_padding",
           "small_padding", "pretrain_input_size"]


def conv_pair(value) -> tuple[int, int]:
    """A conv attribute (kernel_size, stride, dilation, padding) as an (h, w) pair."""
    return as_pair(value, "conv attribute", minimum=0)


class KeepKernels(dict):
    """The kernel map "keep": every kernel maps to itself (shrink width and depth alone)."""

    def __contains__(self, k) -> bool:
        return True

    def __getitem__(self, k: int) -> int:
        return k


def parse_kernel_map(spec: str | Mapping[int, int] | None) -> dict[int, int]:
    """Parse and validate a kernel map such as "3:2,5:3"; entries override Table 1.

    "keep" keeps every kernel (and so the input size): width and depth shrink alone.

    Raises:
        KernelMapError: malformed entries, or a pre-train kernel outside 1..k.

    Example:
        >>> parse_kernel_map("3:2,9:5")[9]
        5
    """
    if spec is None or spec == "":
        return {}
    if isinstance(spec, KeepKernels) or (isinstance(spec, str) and spec.strip().lower() == "keep"):
        return KeepKernels()
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            parts = item.strip().split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise KernelMapError(f"malformed kernel map entry {item.strip()!r} in {spec!r}. "
                                     "Hint: use TARGET:PRETRAIN pairs, e.g. --kernel-map 3:2,5:3,7:5")
            pairs.append((int(parts[0]), int(parts[1])))
    else:
        pairs = [(int(k), int(v)) for k, v in dict(spec).items()]
    result = {}
    for k, v in pairs:
        if not 1 <= v <= k:
            raise KernelMapError(f"kernel map entry {k}:{v} is invalid: the pre-train kernel must be "
                                 f"between 1 and {k}. Hint: e.g. --kernel-map 3:2,5:3")
        result[k] = v
    return result


def map_kernel(k: int, kernel_map: Mapping[int, int]) -> tuple[int, str]:
    """Pre-train size of one kernel dimension, and the rule that chose it.

    The documented rule for sizes neither Table 1 nor the user lists is k' = round(2k/3),
    which reproduces every entry of Table 1 (3->2, 5->3, 7->5, 11->7) and gives 9->6, 13->9.
    """
    if k in kernel_map:
        return kernel_map[k], "user"
    if k in _TABLE1:
        return _TABLE1[k], "table"
    return max(1, round(2 * k / 3)), "rule"


def decide_kernel(conv: nn.Conv2d, kernel_map: Mapping[int, int], keep_dilated: bool):
    """The pre-train kernel (kh', kw') of `conv` and the reason ("table", "user", "rule", "stride", ...)."""
    k, s, d = conv_pair(conv.kernel_size), conv_pair(conv.stride), conv_pair(conv.dilation)
    if k == (1, 1):
        return k, "1x1"
    if keep_dilated and d != (1, 1):
        return k, "dilated"
    if k == s:
        return k, "patchify"  # kernel == stride: a smaller kernel would skip pixels
    small, reasons = [], []
    for kd, sd in zip(k, s, strict=False):
        kk, why = map_kernel(kd, kernel_map)
        if kk < sd:  # never skip pixels: a kernel at least as large as its stride
            kk, why = min(sd, kd), "stride"
        small.append(kk)
        reasons.append(why)
    reason = next((r for r in ("user", "stride", "rule") if r in reasons), "table")
    return tuple(small), reason


def target_padding(conv: nn.Conv2d):
    """The conv's padding as (left, right, top, bottom), or "same", "valid" or "dynamic"."""
    # timm's Conv2dSame always pads at forward time; its Std/ScaledStd "Same" convs only when
    # `same_pad` is set (otherwise they use static symmetric padding like any Conv2d).
    if getattr(conv, "same_pad", isinstance(conv, DYNAMIC_PAD_CONVS)):
        return "dynamic"
    if isinstance(conv.padding, str):
        return conv.padding
    ph, pw = conv_pair(conv.padding)
    return (pw, pw, ph, ph)


def _split(total: int, side: str) -> tuple[int, int]:
    small = total // 2
    return (small, total - small) if side == "br" else (total - small, small)


def small_padding(conv: nn.Conv2d, small_kernel, side: str):
    """The pre-train padding (left, right, top, bottom) for `small_kernel`; odd pixels go to `side` ("br"/"tl")."""
    pad = target_padding(conv)
    if isinstance(pad, str):
        return pad
    k, d = conv_pair(conv.kernel_size), conv_pair(conv.dilation)
    totals = []
    for total, kd, kk, dd in zip((pad[2] + pad[3], pad[0] + pad[1]), k, small_kernel, d, strict=False):
        if total == (kd - 1) * dd:  # "same": output = ceil(H / stride), at any H
            totals.append((kk - 1) * dd)
        elif total == 0 or kd == 1:  # "valid"
            totals.append(total if kd == kk else 0)
        else:  # partial padding (AlexNet, OverFeat): proportional to the kernel's reach
            totals.append(round(total * (kk - 1) / (kd - 1)))
    (top, bottom), (left, right) = _split(totals[0], side), _split(totals[1], side)
    return (left, right, top, bottom)


def pretrain_input_size(target_size: int, convs: list[ConvSite]) -> int:
    """round(target / s1), s1 = k/k' of the first conv whose kernel shrinks (224 -> 160 for 7->5)."""
    first = next((c for c in convs if c.changed), None)
    if first is None:
        return target_size
    s1 = first.kernel[0] / first.small_kernel[0]
    return max(1, round(target_size / s1))


# Table 1 is a shared choice, read from `constants` by the CLI too.
__getattr__ = moved(__name__, {"TABLE1": "modelsurgery.constants"})
