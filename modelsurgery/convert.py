"""File-to-file conversions behind the CLI: check the output first, convert, write atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import check_output, read_state_dict, save, verify_state_dict, warn_nonfinite
from .plan import Plan

__all__ = ["shrink_to_file"]


def shrink_to_file(model: str, out, *, weights=None, method: str = "pinv", force: bool = False,
                   **shrink_kwargs: Any) -> tuple[Plan, Path]:
    """`msurg shrink`: build the pre-train model of `model` and save it with its plan.

    Args:
        model: a timm name or `torchvision:NAME`.
        out: the output .safetensors path; refused if it exists and `force` is False.
        weights: optional trained target checkpoint to downscale (amplitude-preserving).
        method: kernel downscaling for `weights`: "pinv" or "bilinear".
        **shrink_kwargs: passed to `modelsurgery.shrink`.

    Returns:
        (plan, path written).
    """
    from .shrink import downscale_state_dict, shrink
    from .zoo import rebuild

    check_output(out, force)  # fail before the slow part, and again at the atomic rename
    target_state = None
    if weights is not None:
        target_state, _ = read_state_dict(weights)
    small, plan = shrink(model, **shrink_kwargs)
    if target_state is not None:
        verify_state_dict(target_state, rebuild(plan.source).state_dict(), f"--weights {str(weights)!r}")
        warn_nonfinite(target_state, str(weights))
        small.load_state_dict(downscale_state_dict(target_state, plan, method=method), strict=True)
    return plan, save(out, small, plan, force=force)
