"""Deprecated: the image readers are in `modelsurgery.images`, `TensorLoader` in `modelsurgery.train.loader`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "DEFAULT_ROOT": "modelsurgery.images",
    "FASHION_MNIST_CLASSES": "modelsurgery.images",
    "FIXTURE_NAME": "modelsurgery.images",
    "FIDELITY_IMAGES_FILE": "modelsurgery.images",
    "read_idx": "modelsurgery.images",
    "load_idx": "modelsurgery.images",
    "fixture_path": "modelsurgery.images",
    "load_fixture_fashion_mnist": "modelsurgery.images",
    "require_fixture": "modelsurgery.images",
    "load_fidelity_images": "modelsurgery.images",
    "load_fashion_mnist": "modelsurgery.images",
    "load_image_folder": "modelsurgery.images",
    "resize_images": "modelsurgery.images",
    "TensorLoader": "modelsurgery.train.loader",
})
