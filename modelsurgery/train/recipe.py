"""Deprecated: `modelsurgery.train.recipe` moved to `modelsurgery.recipes_kit.recipe`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "RecipeConfig": "modelsurgery.recipes_kit.recipe",
    "NetworkConfig": "modelsurgery.recipes_kit.recipe",
    "run_recipe": "modelsurgery.recipes_kit.recipe",
})
