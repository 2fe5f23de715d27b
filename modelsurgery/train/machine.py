"""Deprecated: `modelsurgery.train.machine` moved to `modelsurgery.recipes_kit.machine`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "cpu_model": "modelsurgery.recipes_kit.machine",
    "load_average": "modelsurgery.recipes_kit.machine",
    "machine_info": "modelsurgery.recipes_kit.machine",
})
