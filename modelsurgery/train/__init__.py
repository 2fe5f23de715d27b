"""The training loop any user can take: `Trainer(methods=[...])`, its data loader, schedules, state.

- `loop`: `Trainer`, which calls its training methods' hooks (`modelsurgery.methods`);
- `loader`: `TensorLoader` and `make_loaders` (the images come from `modelsurgery.images`);
- `schedules`: LR schedules; `state`: training checkpoints; `dist`: devices, seeds, torchrun.

What the recipes share beyond the loop (run folders, results JSON, plots, machine info, config
parsing, `run_recipe`) lives in `modelsurgery.recipes_kit`; its names are still found here, with
a DeprecationWarning.

Example:
    >>> from modelsurgery.train import Trainer, TensorLoader, MultiStep, load_fashion_mnist
    >>> x, y = load_fashion_mnist("train", source="fixture")
    >>> vx, vy = load_fashion_mnist("test", source="fixture")
    >>> train = TensorLoader(x, y, batch_size=128, size=16)
    >>> val = TensorLoader(vx, vy, batch_size=500, train=False, mean=train.mean, std=train.std)
    >>> Trainer(model, train, val, schedule=MultiStep(0.1, (6,)), methods=[LowMode(0.5)]).fit(8)
"""

from ..deprecation import moved
from ..errors import DatasetError, ScheduleError
from ..images import (
                      DEFAULT_ROOT,
                      FASHION_MNIST_CLASSES,
                      SOURCES,
                      Dataset,
                      data_source,
                      fixture_path,
                      load_dataset,
                      load_fashion_mnist,
                      load_fixture_fashion_mnist,
                      load_idx,
                      load_image_folder,
                      load_images,
                      read_idx,
                      resize_images,
)
from .dist import DistInfo, barrier, cleanup_distributed, dist_info, pick_device, seed_everything, setup_distributed
from .loader import TensorLoader, make_loaders
from .loop import Trainer, param_groups
from .schedules import Cosine, Hold, LRSchedule, MultiStep, Rewarm, WarmupStableDecay
from .state import TrainingCheckpointInfo, load_training_checkpoint, read_checkpoint_info, save_training_checkpoint

__all__ = [
    "Trainer", "param_groups",
    "TensorLoader", "make_loaders", "DatasetError", "DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "fixture_path",
    "load_fashion_mnist", "load_fixture_fashion_mnist", "load_idx", "load_image_folder",
    "read_idx", "resize_images", "SOURCES", "Dataset", "data_source", "load_images", "load_dataset",
    "MultiStep", "Cosine", "Hold", "Rewarm", "WarmupStableDecay", "LRSchedule", "ScheduleError",
    "TrainingCheckpointInfo", "save_training_checkpoint", "load_training_checkpoint", "read_checkpoint_info",
    "DistInfo", "setup_distributed", "cleanup_distributed", "dist_info", "barrier", "pick_device",
    "seed_everything",
]

_KIT = "modelsurgery.recipes_kit."
_MOVED = {
    "parse_config": _KIT + "config", "RecipeConfig": _KIT + "recipe", "NetworkConfig": _KIT + "recipe",
    "run_recipe": _KIT + "recipe", "plot_runs": _KIT + "plots", "plot_panels": _KIT + "plots",
    "machine_info": _KIT + "machine", "ramp_size": "modelsurgery.methods.progressive_resizing",
    "CheckpointInfo": "modelsurgery.train.state:TrainingCheckpointInfo",
    "format_table": _KIT + "accuracy:format_comparison",
    "fit": _KIT + "runs:fit_resuming",
}
_MOVED.update({name: _KIT + "runs" for name in ("default_out", "prepare_out", "make_trainer", "train_method",
                                               "train_baseline")})
_MOVED.update({name: _KIT + "accuracy" for name in ("TOLERANCE", "time_to_accuracy", "loss_jump", "summarize",
                                                   "compare")})
_MOVED.update({name: _KIT + "results" for name in ("FRONTIER", "finish", "frontier_reading", "git_revision",
                                                  "write_results")})
# The recipes' reporting moved out of the training loop's package.
__getattr__ = moved(__name__, _MOVED)
