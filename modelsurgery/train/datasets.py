"""What a `--data` argument names, decided by one rule, and the images it holds.

`data_source(spec)` is the rule; everything that reads training images by name uses it (the
recipes through `load_dataset`, `msurg grow --calibrate` through `load_images`):

- `"fixture"`: the committed Fashion-MNIST subset (3,000 train, 1,000 test images);
- `"idx"`: a folder holding MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, ...), e.g.
  Debian's Fashion-MNIST in `DEFAULT_ROOT`;
- `"image_folder"`: any other folder, read as torchvision ImageFolders: `root/train/CLASS/*`
  and `root/val/CLASS/*` (or `root/test/`). A folder without `train/` is itself one split
  (`root/CLASS/*`), which is enough for calibration images.

Images come out as uint8 N×C×H×W (IDX data has one channel) with int64 labels.

Example:
    >>> data = load_dataset("fixture")
    >>> images, labels = load_images("fixture", "train", size=28, channels=1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DatasetError
from .data import DEFAULT_ROOT, TensorLoader, load_fixture_fashion_mnist, load_idx, load_image_folder

__all__ = ["SOURCES", "Dataset", "data_source", "load_images", "load_dataset", "make_loaders"]

SOURCES = ("fixture", "idx", "image_folder")
_SPLITS = {"train": ("train",), "test": ("val", "test"), "val": ("val", "test")}


@dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8 N×C×S×S) with int64 labels, and what the model needs."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    in_chans: int
    num_classes: int
    source: str


def data_source(spec: str | os.PathLike | None) -> str:
    """Which of `SOURCES` the data argument `spec` names (None: `DEFAULT_ROOT`, an IDX folder).

    Raises:
        DatasetError: `spec` is neither "fixture" nor a folder.

    Example:
        >>> data_source("fixture"), data_source("/usr/share/datasets/fashion-mnist")
        ('fixture', 'idx')
    """
    return _resolve(spec)[0]


def _resolve(spec: str | os.PathLike | None) -> tuple[str, Path | None]:
    spec = os.fspath(spec) if spec is not None else DEFAULT_ROOT
    if spec == "fixture":
        return "fixture", None
    root = Path(spec)
    if not root.is_dir():
        raise DatasetError(f"--data {spec!r} is not a folder. Hint: pass 'fixture', a folder of IDX files "
                           f"(e.g. {DEFAULT_ROOT}) or an ImageFolder root with train/ and val/")
    return ("idx" if any(root.glob("train-images*")) else "image_folder"), root


def _split_folder(root: Path, split: str) -> Path | None:
    """The ImageFolder of `split` under `root`; `root` itself for "train" when it has no train/."""
    found = next((root / name for name in _SPLITS[split] if (root / name).is_dir()), None)
    if found is None and split == "train" and not (root / "val").is_dir() and not (root / "test").is_dir():
        return root
    return found


def _load(spec, split: str, size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    if split not in _SPLITS:
        raise DatasetError(f"unknown split {split!r}. Hint: use 'train' or 'test'")
    source, root = _resolve(spec)
    idx_split = "train" if split == "train" else "test"
    if source == "fixture":
        images, labels = load_fixture_fashion_mnist(idx_split)
        return images[:, None], labels, None
    if source == "idx":
        images, labels = load_idx(root, idx_split)
        return images[:, None], labels, None
    folder = _split_folder(root, split)
    if folder is None:
        raise DatasetError(f"{root} has no {' or '.join(f'{n}/' for n in _SPLITS[split])} folder. Hint: lay an "
                           "ImageFolder out as root/train/CLASS/img.png and root/val/CLASS/img.png")
    return load_image_folder(folder, size, channels)


def load_images(spec: str | os.PathLike | None, split: str = "train", *, size: int = 28,
                channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the data `spec` names, by the rule of `data_source`.

    Args:
        spec: "fixture", an IDX folder, or an ImageFolder root (see the module docstring).
        split: "train" or "test" ("val" is the same as "test").
        size: decode ImageFolder images at this size (shorter side, then a centre crop).
        channels: ImageFolder channels (1 or 3). IDX and fixture images always have 1.

    Returns:
        (images, labels): uint8 N×C×H×W and int64 N.

    Raises:
        DatasetError: no such folder, split or files.

    Example:
        >>> images, labels = load_images("fixture", "train")
        >>> images.shape, images.dtype, labels.dtype
        (torch.Size([3000, 1, 28, 28]), torch.uint8, torch.int64)
    """
    images, labels, _ = _load(spec, split, size, channels)
    return images, labels


def load_dataset(spec: str | os.PathLike | None = None, *, size: int = 28, channels: int = 3) -> Dataset:
    """The data a recipe's `--data` names: both splits, the input channels and the classes.

    Args:
        spec: "fixture" (3,000 + 1,000 committed Fashion-MNIST images), a folder with
            MNIST-style IDX files (default Debian's Fashion-MNIST), or an ImageFolder root
            holding `train/` and `val/` (or `test/`) with one sub-folder per class.
        size: decode ImageFolder images at this size (the largest the recipe trains at).
        channels: ImageFolder channels (1 or 3). IDX data is always 1 channel.

    Raises:
        DatasetError: the folder holds neither IDX files nor train/val class folders.

    Example:
        >>> data = load_dataset("fixture")
        >>> data.train_images.shape, data.in_chans, data.num_classes
        (torch.Size([3000, 1, 28, 28]), 1, 10)
    """
    source, root = _resolve(spec)
    if source == "image_folder" and (not (root / "train").is_dir() or _split_folder(root, "test") is None):
        raise DatasetError(f"{root} holds neither IDX files (train-images-idx3-ubyte[.gz]) nor train/ and val/ "
                           "class folders. Hint: lay an ImageFolder out as root/train/CLASS/img.png and "
                           "root/val/CLASS/img.png")
    x, y, classes = _load(spec, "train", size, channels)
    vx, vy, val_classes = _load(spec, "test", size, channels)
    if classes != val_classes:
        raise DatasetError(f"{root}: train classes {classes} differ from {_split_folder(root, 'test').name} "
                           f"classes {val_classes}")
    name = "fixture" if root is None else str(root)
    if classes is None:   # IDX and fixture: one channel, classes 0 .. max label
        return Dataset(x, y, vx, vy, 1, 10 if root is None else int(y.max()) + 1, name)
    return Dataset(x, y, vx, vy, channels, len(classes), name)


def make_loaders(data: Dataset, *, batch_size: int, seed: int = 0, max_batches: int | None = None,
                 eval_batch_size: int = 1000, device: str | torch.device = "cpu"):
    """(train, val) `TensorLoader`s; the validation set is normalised with the training statistics."""
    train = TensorLoader(data.train_images, data.train_labels, batch_size, seed=seed, max_batches=max_batches,
                         device=device)
    val = TensorLoader(data.test_images, data.test_labels, eval_batch_size, train=False, mean=train.mean,
                       std=train.std, device=device)
    return train, val
