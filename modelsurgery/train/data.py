"""Image data held in memory, resized once per input size.

Three sources give uint8 tensors: IDX files (Fashion-MNIST, MNIST), the small Fashion-MNIST
subset committed in the repo's `fixtures/`, and a torchvision `ImageFolder` of your own
images. `TensorLoader` batches them. It resizes the whole dataset once for each input size the
schedule asks for and caches the result as uint8, so a resolution schedule costs one resize per
size, not one per batch. Normalisation, channel repeat and the optional flip/crop happen per
batch, on the loader's device.

Under DistributedDataParallel each rank iterates its own shard: training order comes from
`torch.utils.data.DistributedSampler` (seeded, `set_epoch` per epoch), evaluation takes every
`world_size`-th example with no padding, so accuracies summed over ranks are exact.

Finding the fixture: `fixtures/` sits at the repository top, next to the package, so
`fixture_path()` looks in `<package parent>/fixtures/` (this works from a checkout and from an
editable install, not from a plain `pip install`, which installs the package alone). Set
`MODELSURGERY_FIXTURES=/some/dir` to look elsewhere; a missing file raises `DatasetError`.
The few test images of `msurg grow`'s fidelity check ship inside the package instead
(`modelsurgery/data/fidelity.safetensors`, `load_fidelity_images`), so that check works from
any install.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ..errors import DatasetError
from .dist import mix_seed

__all__ = [
    "DatasetError",
    "DEFAULT_ROOT",
    "FASHION_MNIST_CLASSES",
    "read_idx",
    "load_idx",
    "fixture_path",
    "load_fixture_fashion_mnist",
    "require_fixture",
    "load_fidelity_images",
    "load_fashion_mnist",
    "load_image_folder",
    "resize_images",
    "TensorLoader",
]

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FIXTURE_NAME = "fashion_mnist_subset.safetensors"
FIDELITY_IMAGES_FILE = "fidelity.safetensors"  # package data, built by fixtures/make_fidelity_data.py
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read one IDX file, gzipped or plain (detected from its first bytes).

    Args:
        path: the file, e.g. `train-images-idx3-ubyte.gz`.

    Returns:
        A tensor with the file's shape and dtype (uint8 for image and label files).

    Example:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        >>> images.shape, images.dtype
        (torch.Size([10000, 28, 28]), torch.uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()}). "
                           "Hint: pass the *-idx*-ubyte(.gz) files of MNIST or Fashion-MNIST")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DatasetError(f"{path}: header says shape {shape} ({expected} bytes of data) "
                           f"but the file holds {len(raw) - offset}. Hint: the file is truncated")
    array = np.frombuffer(raw, dtype, offset=offset).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _find_idx(root: Path, stem: str) -> Path:
    # Debian ships `train-images-idx3-ubyte.gz`; the MNIST mirrors also use `train-images.idx3-ubyte`.
    names = [stem, stem.replace("-idx", ".idx")]
    for name in names:
        for candidate in (root / f"{name}.gz", root / name):
            if candidate.is_file():
                return candidate
    raise DatasetError(f"no {stem}[.gz] in {root}. Hint: install Debian's `dataset-fashion-mnist` "
                       f"or pass the directory holding the IDX files (e.g. --data DIR)")


def load_idx(root: str | os.PathLike = DEFAULT_ROOT, split: str = "train"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of an MNIST-style IDX dataset (Fashion-MNIST, MNIST).

    Args:
        root: directory with `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
        split: "train" or "test".

    Returns:
        (images, labels): uint8 N×H×W and int64 N.

    Example:
        >>> images, labels = load_idx(split="test")
        >>> images.shape, labels[:3]
        (torch.Size([10000, 28, 28]), tensor([9, 2, 1]))
    """
    if split not in _SPLIT_PREFIX:
        raise DatasetError(f"unknown split {split!r}. Hint: use 'train' or 'test'")
    root, prefix = Path(root), _SPLIT_PREFIX[split]
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte")).long()
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(f"{root}: {split} images {tuple(images.shape)} and labels "
                           f"{tuple(labels.shape)} do not match")
    return images, labels


def fixture_path() -> Path:
    """Where the committed Fashion-MNIST subset lives: `$MODELSURGERY_FIXTURES` or `<repo>/fixtures`."""
    env = os.environ.get("MODELSURGERY_FIXTURES")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "fixtures"
    return folder / FIXTURE_NAME


def load_fixture_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load the committed, class-balanced Fashion-MNIST subset (3,000 train, 1,000 test).

    Example:
        >>> images, labels = load_fixture_fashion_mnist("test")
        >>> images.shape, labels.bincount().tolist()
        (torch.Size([1000, 28, 28]), [100, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    """
    from safetensors.torch import load_file

    if split not in _SPLIT_PREFIX:
        raise DatasetError(f"unknown split {split!r}. Hint: use 'train' or 'test'")
    tensors = load_file(require_fixture())
    return tensors[f"{split}_images"], tensors[f"{split}_labels"].long()


def require_fixture() -> Path:
    """`fixture_path()` if the file is there, else a one-line `DatasetError` saying what to pass instead.

    Example:
        >>> require_fixture().name
        'fashion_mnist_subset.safetensors'
    """
    path = fixture_path()
    if not path.is_file():
        raise DatasetError(f"'fixture' names the Fashion-MNIST subset in the repository's fixtures/ folder, and "
                           f"{path} is not there (a pip-installed package does not carry it; a checkout rebuilds it "
                           "with `python fixtures/make_fixtures.py`). Hint: pass a folder of IDX files or an "
                           "ImageFolder instead, or set MODELSURGERY_FIXTURES to the folder holding the file")
    return path


def load_fidelity_images() -> tuple[torch.Tensor, torch.Tensor] | None:
    """The Fashion-MNIST test images shipped inside the package (32, uint8 28×28), or None if absent.

    Example:
        >>> images, labels = load_fidelity_images()
        >>> images.shape, images.dtype
        (torch.Size([32, 28, 28]), torch.uint8)
    """
    from importlib.resources import files

    from safetensors.torch import load

    resource = files("modelsurgery").joinpath("data").joinpath(FIDELITY_IMAGES_FILE)  # one name a call: 3.10
    if not resource.is_file():
        return None
    tensors = load(resource.read_bytes())
    return tensors["test_images"], tensors["test_labels"].long()


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                       source: str = "idx") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST from the IDX files (`source="idx"`) or the committed subset (`"fixture"`).

    Example:
        >>> x, y = load_fashion_mnist("train", source="fixture")
    """
    if source == "fixture":
        return load_fixture_fashion_mnist(split)
    if source == "idx":
        return load_idx(root if root is not None else DEFAULT_ROOT, split)
    raise DatasetError(f"unknown source {source!r}. Hint: use 'idx' or 'fixture'")


def load_image_folder(root: str | os.PathLike, size: int, channels: int = 3
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode a torchvision `ImageFolder` (root/CLASS/IMAGE) into memory at `size`.

    Each image is resized (shorter side to `size`, antialiased) and centre-cropped to
    `size`×`size`. `size` is the largest size training will use; `TensorLoader` resizes down from it.

    Returns:
        (images, labels, classes): uint8 N×C×size×size, int64 N, and the class names.

    Example:
        >>> images, labels, classes = load_image_folder("my_photos/train", size=224)
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    steps = [v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    if channels == 1:
        steps.append(v2.Grayscale(1))
    elif channels != 3:
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    try:
        folder = ImageFolder(os.fspath(root), transform=v2.Compose(steps))
    except (FileNotFoundError, RuntimeError) as err:
        raise DatasetError(f"cannot read image folder {root}: {err}. "
                           "Hint: lay it out as root/CLASS_NAME/image.png") from None
    if not len(folder):
        raise DatasetError(f"{root} holds no images. Hint: lay it out as root/CLASS_NAME/image.png")
    images = torch.stack([image for image, _ in folder])
    return images.to(torch.uint8), torch.tensor(folder.targets, dtype=torch.long), list(folder.classes)


def resize_images(images: torch.Tensor, size: int | Sequence[int], chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 N×C×H×W images with antialiased bilinear interpolation; uint8 out.

    Works in chunks so that upscaling a large set never holds it all as float.

    Example:
        >>> resize_images(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), 16).shape
        torch.Size([10, 1, 16, 16])
    """
    from torchvision.transforms.v2.functional import resize

    hw = [size, size] if isinstance(size, int) else list(size)
    return torch.cat([resize(part, hw, antialias=True) for part in images.split(chunk)])


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
        self.mean, self.std = _stats(images, mean, std)
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


def _stats(images: torch.Tensor, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, unless given."""
    if mean is None or std is None:
        x = images.double().div(255).transpose(0, 1).reshape(images.shape[1], -1)
        mean = x.mean(1).tolist() if mean is None else mean
        std = x.std(1).tolist() if std is None else std
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


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
