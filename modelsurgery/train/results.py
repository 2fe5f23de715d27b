"""Deprecated: split into `modelsurgery.recipes_kit.accuracy` (measures) and `.results` (files)."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "TOLERANCE": "modelsurgery.recipes_kit.accuracy",
    "time_to_accuracy": "modelsurgery.recipes_kit.accuracy",
    "loss_jump": "modelsurgery.recipes_kit.accuracy",
    "summarize": "modelsurgery.recipes_kit.accuracy",
    "compare": "modelsurgery.recipes_kit.accuracy",
    "FRONTIER": "modelsurgery.recipes_kit.results",
    "write_results": "modelsurgery.recipes_kit.results",
    "git_revision": "modelsurgery.recipes_kit.results",
    "finish": "modelsurgery.recipes_kit.results",
    "frontier_reading": "modelsurgery.recipes_kit.results",
    "format_table": "modelsurgery.recipes_kit.accuracy:format_comparison",
    "machine_info": "modelsurgery.recipes_kit.machine",
})
