"""Images from disk, in memory as uint8: what `--data` names, the fixture, the fidelity images.

Three sources give uint8 tensors: IDX files (Fashion-MNIST, MNIST), the small Fashion-MNIST
subset committed in the repo's `fixtures/`, and a torchvision `ImageFolder` of your own images.
`data_source(spec)` is the one rule for what a data argument names; everything that reads
images by name uses it (the recipes through `train.loader.load_dataset`, `msurg grow
--calibrate` through `load_images`):

- `"fixture"`: the committed Fashion-MNIST subset (3,000 train, 1,000 test images);
- `"idx"`: a folder holding MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, ...), e.g.
  Debian's Fashion-MNIST in `DEFAULT_ROOT`;
- `"image_folder"`: any other folder, read as torchvision ImageFolders: `root/train/CLASS/*`
  and `root/val/CLASS/*` (or `root/test/`). A folder without `train/` is itself one split
  (`root/CLASS/*`), which is enough for calibration images.

Finding the fixture: `fixtures/` sits at the repository top, next to the package, so
`fixture_path()` looks in `<package parent>/fixtures/` (this works from a checkout and from an
editable install, not from a plain `pip install`, which installs the package alone). Set
`MODELSURGERY_FIXTURES=/some/dir` to look elsewhere; a missing file raises `DatasetError`.
The few test images of `msurg grow`'s fidelity check ship inside the package instead
(`modelsurgery/data/fidelity.safetensors`, `load_fidelity_images`), so that check works from
any install. This module sits below both the file layer and `train/`, which read images here.

Example:
    >>> images, labels = load_images("fixture", "train", size=28, channels=1)
    >>> image_stats(images)[0]
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError

__all__ = ["DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "SOURCES", "read_idx", "load_idx", "fixture_path",
           "load_fixture_fashion_mnist", "require_fixture", "load_fidelity_images", "load_fashion_mnist",
           "load_image_folder", "resize_images", "image_stats", "Dataset", "data_source", "load_images", "load_dataset"]

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
    folder = Path(env) if env else Path(__file__).resolve().parents[1] / "fixtures"
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


def image_stats(images: torch.Tensor, mean=None, std=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N×C×H×W images in [0, 1] units, unless given.

    Example:
        >>> image_stats(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))
        ((1.0,), (0.0,))
    """
    if mean is None or std is None:
        x = images.double().div(255).transpose(0, 1).reshape(images.shape[1], -1)
        mean = x.mean(1).tolist() if mean is None else mean
        std = x.std(1).tolist() if std is None else std
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


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
