"""modelsurgery: train CNNs faster on a spatially smaller network, then grow it back.

Example:
    >>> import modelsurgery
    >>> small, plan = modelsurgery.shrink("resnet34", num_classes=10)   # 160 px, 7->5, 3->2
    >>> modelsurgery.save("small.safetensors", small, plan)
    >>> small, plan = modelsurgery.load("small.safetensors")

Importing the package imports no torch: every public name is imported from its module on first
use (PEP 562), so `msurg --help` and `msurg`'s file errors answer without loading torch, timm or
torchvision.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "SurgeryError": "errors",
    "Plan": "plan",
    "shrink": "shrink",
    "apply_plan": "shrink",
    "grow": "grow",
    "momentum_map": "grow",
    "save": "checkpoint",
    "load": "checkpoint",
    "export_onnx": "export",
    "low_mode": "lowmode",
    "LowModeSchedule": "lowmode",
}
# Functions that share their name with their module.
_VERBS = ("shrink", "grow")

__all__ = ["__version__", "SurgeryError", "Plan", "resize", "shrink", "apply_plan", "grow", "momentum_map", "save",
           "load", "export_onnx", "low_mode", "LowModeSchedule"]


class _Package(types.ModuleType):
    """The package's module type; it keeps `modelsurgery.shrink` and `modelsurgery.grow` the functions.

    Importing a submodule binds it as an attribute of its package (`import modelsurgery.shrink`
    runs `setattr(modelsurgery, "shrink", <module>)`), which would hide the function of the same
    name. This `__setattr__` binds the module's function instead, so the documented API holds
    whichever is imported first; the module itself stays in `sys.modules["modelsurgery.shrink"]`.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _VERBS and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """A public name, or a subpackage such as `resize`, imported on first use (and then kept)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif (name.isidentifier() and not name.startswith("_")
          and importlib.util.find_spec(f"{__name__}.{name}") is not None):
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
