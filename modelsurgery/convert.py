"""Deprecated: the file layer is `modelsurgery.files`; `msurg info`'s reader is `modelsurgery.describe`."""

from .deprecation import moved

_NAMES = {name: "modelsurgery.files" for name in (
    "FileReport", "Fidelity", "shrink_to_file", "grow_file", "export_file", "FIDELITY_IMAGES", "CALIBRATION_IMAGES",
    "LSQ_IMAGES")}
_NAMES.update(CheckpointInfo="modelsurgery.describe", describe_file="modelsurgery.describe")
__getattr__ = moved(__name__, _NAMES)
