"""Deprecated: what `--data` names is read by `modelsurgery.images`; `make_loaders` is in `train.loader`."""

from ..deprecation import moved

__getattr__ = moved(__name__, {
    "SOURCES": "modelsurgery.images",
    "Dataset": "modelsurgery.images",
    "data_source": "modelsurgery.images",
    "load_images": "modelsurgery.images",
    "load_dataset": "modelsurgery.images",
    "make_loaders": "modelsurgery.train.loader",
})
