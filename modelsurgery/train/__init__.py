"""The minimal training loop, its in-memory data loaders, and LR / input-size schedules.

Example:
    >>> from modelsurgery.train import Trainer, TensorLoader, MultiStep, load_fashion_mnist
    >>> x, y = load_fashion_mnist("train", source="fixture")
    >>> vx, vy = load_fashion_mnist("test", source="fixture")
    >>> train = TensorLoader(x, y, batch_size=128, size=16)
    >>> val = TensorLoader(vx, vy, batch_size=500, train=False, mean=train.mean, std=train.std)
    >>> Trainer(model, train, val, schedule=MultiStep(0.1, (6,))).fit(8)
"""

from .data import (DEFAULT_ROOT, FASHION_MNIST_CLASSES, DatasetError, TensorLoader, fixture_path,
                   load_fashion_mnist, load_fixture_fashion_mnist, load_idx, load_image_folder,
                   read_idx, resize_images)
from .dist import (DistInfo, barrier, cleanup_distributed, dist_info, pick_device, seed_everything,
                   setup_distributed)
from .loop import Trainer, param_groups
from .schedules import Cosine, Hold, LRSchedule, MultiStep, ramp_size
from .state import CheckpointInfo, load_training_checkpoint, read_checkpoint_info, save_training_checkpoint

__all__ = [
    "Trainer", "param_groups",
    "TensorLoader", "DatasetError", "DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "fixture_path",
    "load_fashion_mnist", "load_fixture_fashion_mnist", "load_idx", "load_image_folder",
    "read_idx", "resize_images",
    "MultiStep", "Cosine", "Hold", "LRSchedule", "ramp_size",
    "CheckpointInfo", "save_training_checkpoint", "load_training_checkpoint", "read_checkpoint_info",
    "DistInfo", "setup_distributed", "cleanup_distributed", "dist_info", "barrier", "pick_device",
    "seed_everything",
]
