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

# `shrink` and `grow` share their names with their modules: import them now, so that the package
# attribute is the function even after `import modelsurgery.shrink` (which would rebind it).
from .checkpoint import load, save  # noqa: E402
from .grow import grow  # noqa: E402
from .shrink import apply_plan, shrink  # noqa: E402

# ONNX export and low mode are imported on first use.
_LAZY = {
    "export_onnx": "export",
    "low_mode": "lowmode",
    "LowModeSchedule": "lowmode",
}

__all__ = ["__version__", "SurgeryError", "Plan", "resize", "shrink", "apply_plan", "grow", "save", "load", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'modelsurgery' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
