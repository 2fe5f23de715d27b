"""The minimal training loop, its data and schedules, and the plumbing every recipe shares.

- `loop`: `Trainer`; `data`: `TensorLoader` and the image readers; `schedules`: LR and
  input-size schedules; `state`: training checkpoints; `dist`: devices, seeds, torchrun.
- `datasets`: what `--data` names (one rule: fixture, IDX folder or ImageFolder), `load_dataset`,
  `load_images`; `config`: `parse_config`; `runs`: run folders, `fit` with resume,
  `train_method`, `train_baseline`; `results`: time to accuracy, `results.json`; `plots`;
  `recipe`: `RecipeConfig` and `run_recipe`, the common part of `recipes/*.py`.

Example:
    >>> from modelsurgery.train import Trainer, TensorLoader, MultiStep, load_fashion_mnist
    >>> x, y = load_fashion_mnist("train", source="fixture")
    >>> vx, vy = load_fashion_mnist("test", source="fixture")
    >>> train = TensorLoader(x, y, batch_size=128, size=16)
    >>> val = TensorLoader(vx, vy, batch_size=500, train=False, mean=train.mean, std=train.std)
    >>> Trainer(model, train, val, schedule=MultiStep(0.1, (6,))).fit(8)
"""

from ..errors import DatasetError, ScheduleError
from .config import parse_config
from .data import (DEFAULT_ROOT, FASHION_MNIST_CLASSES, TensorLoader, fixture_path, load_fashion_mnist,
                   load_fixture_fashion_mnist, load_idx, load_image_folder, read_idx, resize_images)
from .datasets import SOURCES, Dataset, data_source, load_dataset, load_images, make_loaders
from .dist import (DistInfo, barrier, cleanup_distributed, dist_info, pick_device, seed_everything,
                   setup_distributed)
from .loop import Trainer, param_groups
from .plots import plot_panels, plot_runs
from .recipe import NetworkConfig, RecipeConfig, run_recipe
from .results import (FRONTIER, TOLERANCE, compare, finish, format_table, frontier_reading, git_revision, loss_jump,
                      machine_info, summarize, time_to_accuracy, write_results)
from .runs import default_out, fit, make_trainer, prepare_out, train_baseline, train_method
from .schedules import Cosine, Hold, LRSchedule, MultiStep, Rewarm, WarmupStableDecay, ramp_size
from .state import CheckpointInfo, load_training_checkpoint, read_checkpoint_info, save_training_checkpoint

__all__ = [
    "Trainer", "param_groups",
    "TensorLoader", "DatasetError", "DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "fixture_path",
    "load_fashion_mnist", "load_fixture_fashion_mnist", "load_idx", "load_image_folder",
    "read_idx", "resize_images",
    "SOURCES", "Dataset", "data_source", "load_images", "load_dataset", "make_loaders",
    "MultiStep", "Cosine", "Hold", "Rewarm", "WarmupStableDecay", "LRSchedule", "ScheduleError", "ramp_size",
    "CheckpointInfo", "save_training_checkpoint", "load_training_checkpoint", "read_checkpoint_info",
    "DistInfo", "setup_distributed", "cleanup_distributed", "dist_info", "barrier", "pick_device",
    "seed_everything",
    "parse_config", "RecipeConfig", "NetworkConfig", "run_recipe",
    "default_out", "prepare_out", "make_trainer", "fit", "train_method", "train_baseline",
    "TOLERANCE", "time_to_accuracy", "loss_jump", "summarize", "compare", "format_table", "write_results", "git_revision",
    "machine_info", "finish", "FRONTIER", "frontier_reading", "plot_runs", "plot_panels",
]
