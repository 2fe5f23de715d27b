"""What the recipes in `recipes/` share beyond the training loop: runs, results and their files.

- `config`: `parse_config`, a command line from a recipe's config dataclass;
- `recipe`: `RecipeConfig`, `NetworkConfig` and `run_recipe`, the common `main()`;
- `runs`: run folders, `make_trainer`, `fit_resuming`, `train_method`, `train_baseline`;
- `accuracy`: time to accuracy, `summarize`, `compare`, `format_comparison`;
- `results`: `results.json`, the git revision, `finish`, the measured frontier's reading;
- `plots`: `results.png`; `machine`: the CPU, threads and load beside every timing.

It stands on `modelsurgery.train` (the loop) and `modelsurgery.methods`; nothing below imports it.

Example:
    >>> from modelsurgery.recipes_kit.recipe import RecipeConfig, run_recipe
"""
