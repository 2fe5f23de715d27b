"""The training data: `TensorLoader` batches in-memory images; `make_loaders` builds a run's two.

`TensorLoader` resizes the whole dataset once for each input size the schedule asks for and
caches the result as uint8, so a resolution schedule costs one resize per size, not one per
batch. Normalisation, channel repeat and the optional flip/crop happen per batch, on the
loader's device. The images come from `modelsurgery.images` (`load_dataset`, `load_fashion_mnist`).

Under DistributedDataParallel each rank iterates its own shard: training order comes from
`torch.utils.data.DistributedSampler` (seeded, `set_epoch` per epoch), evaluation takes every
`world_size`-th example with no padding, so accuracies summed over ranks are exact.

Example:
    >>> data = modelsurgery.images.load_dataset("fixture")
    >>> train, val = make_loaders(data, batch_size=128)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ..errors import DatasetError
from ..images import Dataset, image_stats, resize_images
from .dist import mix_seed

__all__ = ["TensorLoader", "make_loaders"]


class TensorLoader:
    """Batches in-memory uint8 images, resized once per input size and cached.

    Args:
        images: uint8 N×S×S or N×C×S×S (square).
        labels: int64 N.
        batch_size: examples per batch on each rank (under DDP the global batch is
            `batch_size * world_size`).
        train: shuffle, drop the last partial batch, and apply augmentation. For evaluation
            (`train=False`) the order is fixed and nothing is dropped.
        size: input size to start with (default: the images' own).
        channels: output channels. 1-channel images are repeated to 3 when `channels=3`.
        mean, std: normalisation in [0, 1] units, one value or one per channel. Default:
            computed from `images` (pass the training loader's `mean`/`std` to the evaluation
            loader).
        seed: shuffle and augmentation seed; the order in epoch e depends only on (seed, e).
        flip: random horizontal flips (train only). Off by default; Fashion-MNIST is not symmetric.
        crop_pad: random translation by up to this many pixels, reflect-padded (train only).
        device: where the cache lives and batches are built.
        max_batches: stop each epoch after this many batches (short smoke runs).
        rank, world_size: shard for this process; default from `torch.distributed` when initialised.

    Example:
        >>> x, y = load_fashion_mnist("train", source="fixture")
        >>> train = TensorLoader(x, y, batch_size=128, size=16)
        >>> train.set_epoch(0)
        >>> xb, yb = next(iter(train))
        >>> xb.shape
        torch.Size([128, 1, 16, 16])
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 train: bool = True, size: int | None = None, channels: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 seed: int = 0, flip: bool = False, crop_pad: int = 0,
                 device: str | torch.device = "cpu", max_batches: int | None = None,
                 rank: int | None = None, world_size: int | None = None):
        if images.dtype != torch.uint8 or images.ndim not in (3, 4):
            raise DatasetError(f"images must be uint8 N×H×W or N×C×H×W, got {images.dtype} "
                               f"{tuple(images.shape)}")
        if len(labels) != len(images):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        images = images if images.ndim == 4 else images[:, None]
        if images.shape[-1] != images.shape[-2]:
            raise DatasetError(f"images must be square, got {images.shape[-2]}×{images.shape[-1]}. "
                               "Hint: load_image_folder centre-crops to a square")
        self.device = torch.device(device)
        self.native_size = images.shape[-1]
        self.channels = channels or images.shape[1]
        if self.channels != images.shape[1] and images.shape[1] != 1:
            raise DatasetError(f"cannot turn {images.shape[1]}-channel images into {self.channels}")
        self.labels = labels.long().to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.flip, self.crop_pad, self.max_batches = flip, crop_pad, max_batches
        self._rank, self._world = rank, world_size
        self.mean, self.std = image_stats(images, mean, std)
        if len(self.mean) not in (1, self.channels) or len(self.std) != len(self.mean):
            raise DatasetError(f"mean {self.mean} and std {self.std} need 1 or {self.channels} values")
        self._mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        self._cache = {images.shape[-1]: images.to(self.device)}
        self.epoch = 0
        self.size = self.native_size
        self.set_size(size or self.native_size)

    def set_size(self, size: int) -> None:
        """Serve batches at `size`×`size` from now on; resizes the dataset only on first use."""
        if size not in self._cache:
            self._cache[size] = resize_images(self._cache[self.native_size], size)
        self.size = size

    def set_epoch(self, epoch: int) -> None:
        """Pick the shuffle and augmentation of `epoch` (call it before iterating)."""
        self.epoch = epoch

    def _shard(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world or 1
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def indices(self) -> torch.Tensor:
        """This rank's example order for the current epoch."""
        rank, world = self._shard()
        n = len(self.labels)
        if not self.train:
            return torch.arange(rank, n, world)
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        sampler.set_epoch(self.epoch)
        return torch.tensor(list(sampler))

    def __len__(self) -> int:
        rank, world = self._shard()
        n = len(self.labels)
        per_rank = -(-n // world) if self.train else len(range(rank, n, world))
        batches = per_rank // self.batch_size if self.train else -(-per_rank // self.batch_size)
        return min(batches, self.max_batches) if self.max_batches is not None else batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = self._cache[self.size]
        order = self.indices().to(self.device)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self._shard()[0]))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = images[idx].float().div_(255)
            if self.train and (self.flip or self.crop_pad):
                x = _augment(x, gen, self.flip, self.crop_pad)
            x = x.expand(-1, self.channels, -1, -1)
            yield (x - self._mean) / self._std, self.labels[idx]


def _augment(x: torch.Tensor, gen: torch.Generator, flip: bool, pad: int) -> torch.Tensor:
    """Random horizontal flip and per-image translation (reflect padding), drawn from `gen`."""
    n, _, h, w = x.shape
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
    if pad:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen)).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]   # n×h×1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]   # n×1×w
        x = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    return x


def make_loaders(data: Dataset, *, batch_size: int, seed: int = 0, max_batches: int | None = None,
                 eval_batch_size: int = 1000, device: str | torch.device = "cpu"):
    """(train, val) `TensorLoader`s; the validation set is normalised with the training statistics."""
    train = TensorLoader(data.train_images, data.train_labels, batch_size, seed=seed, max_batches=max_batches,
                         device=device)
    val = TensorLoader(data.test_images, data.test_labels, eval_batch_size, train=False, mean=train.mean,
                       std=train.std, device=device)
    return train, val
