"""Deprecated: `modelsurgery.train.plots` moved to `modelsurgery.recipes_kit.plots`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "plot_runs": "modelsurgery.recipes_kit.plots",
    "plot_panels": "modelsurgery.recipes_kit.plots",
})
