"""modelsurgery: train CNNs faster on a spatially smaller network, then grow it back.

Example:
    >>> import modelsurgery
    >>> small, plan = modelsurgery.shrink("resnet34", num_classes=10)   # 160 px, 7->5, 3->2
    >>> modelsurgery.save("small.safetensors", small, plan)
    >>> small, plan = modelsurgery.load("small.safetensors")
"""

__version__ = "0.1.0"

from . import resize  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from .errors import SurgeryError  # noqa: E402
from .plan import Plan  # noqa: E402
from .shrink import apply_plan, shrink  # noqa: E402

__all__ = ["__version__", "SurgeryError", "Plan", "shrink", "apply_plan", "save", "load", "resize"]
