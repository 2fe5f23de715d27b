"""The example networks now live in the package: `modelsurgery.nets` (kept here for old imports)."""

from modelsurgery.nets import MODELS, C2FNet, FashionResNet, build_model  # noqa: F401

__all__ = ["FashionResNet", "C2FNet", "build_model", "MODELS"]
