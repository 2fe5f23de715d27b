"""Old import paths that still work, with a `DeprecationWarning` naming the new one.

A module whose names moved keeps a module `__getattr__` (PEP 562) built here, as timm's
`timm.models.layers` does for `timm.layers`: the first access to a moved name imports its new
module, warns, and returns it. Nothing inside modelsurgery imports through these paths
(`tests/test_imports.py` checks both). This module imports only the standard library.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved"]


def moved(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that finds each moved name in its new home, with a `DeprecationWarning`.

    Args:
        module: the old module's `__name__`.
        names: old name -> `"new.module"` (same name) or `"new.module:new_name"` (renamed).

    Example:
        >>> __getattr__ = moved(__name__, {"first_line": "modelsurgery.errors"})
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new_name = names[name].partition(":")
        new_name = new_name or name
        warnings.warn(f"{module}.{name} is deprecated: import {new_name} from {target}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(target), new_name)

    __getattr__.moved = dict(names)  # what tests/test_imports.py checks
    return __getattr__
