"""Deprecated: `modelsurgery.train.config` moved to `modelsurgery.recipes_kit.config`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "parse_config": "modelsurgery.recipes_kit.config",
})
