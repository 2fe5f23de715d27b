"""modelsurgery: train CNNs faster on a spatially smaller network, then grow it back.

Example:
    >>> import modelsurgery
    >>> small, plan = modelsurgery.shrink("resnet34", num_classes=10)   # 160 px, 7->5, 3->2
    >>> modelsurgery.save("small.safetensors", small, plan)
    >>> small, plan = modelsurgery.load("small.safetensors")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from . import resize  # noqa: E402  (pure tensor math: torch only)
from .errors import SurgeryError  # noqa: E402
from .plan import Plan  # noqa: E402

# The graph passes pull in timm and torchvision; import them on first use, not with the package.
_LAZY = {
    "shrink": "shrink",
    "apply_plan": "shrink",
    "save": "checkpoint",
    "load": "checkpoint",
    "grow": "grow",
    "export_onnx": "export",
    "low_mode": "lowmode",
    "LowModeSchedule": "lowmode",
}

__all__ = ["__version__", "SurgeryError", "Plan", "resize", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'modelsurgery' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
