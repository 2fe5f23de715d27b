"""Deprecated: `modelsurgery.train.runs` moved to `modelsurgery.recipes_kit.runs`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "default_out": "modelsurgery.recipes_kit.runs",
    "prepare_out": "modelsurgery.recipes_kit.runs",
    "make_trainer": "modelsurgery.recipes_kit.runs",
    "fit": "modelsurgery.recipes_kit.runs",
    "train_method": "modelsurgery.recipes_kit.runs",
    "train_baseline": "modelsurgery.recipes_kit.runs",
})
