"""One script per training-speedup method; each runs as `python recipes/NAME.py` or imports as `recipes.NAME`.

Every recipe is a config dataclass (`modelsurgery.recipes_kit.recipe.RecipeConfig` plus its own fields), a
`resolve` that fills in the defaults that depend on other settings, a `train` that runs its
method object (`modelsurgery.methods`), and a `main` that hands both to
`modelsurgery.recipes_kit.recipe.run_recipe`.
"""
