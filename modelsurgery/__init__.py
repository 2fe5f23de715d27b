"""modelsurgery: train CNNs faster on a spatially smaller network, then grow it back."""

__version__ = "0.1.0"

from .errors import SurgeryError  # noqa: E402
from .plan import Plan  # noqa: E402

__all__ = ["__version__", "SurgeryError", "Plan"]
