"""One error hierarchy for the whole library.

`SurgeryError` is the base. Errors caused by what the user passed in (a name, a file, a
size) are also `ValueError`s, so ordinary Python code can catch them as such. The CLI turns
any `SurgeryError` into a one-line message and exit code 1.

`first_line` quotes an error from below in one line. This module imports nothing, so that `msurg`
can report an error without loading torch.
"""

__all__ = [
    "SurgeryError",
    "UnknownModelError",
    "KernelMapError",
    "FactorError",
    "InputSizeError",
    "UnsupportedLayerError",
    "PlanError",
    "CheckpointError",
    "OutputExistsError",
    "ConversionError",
    "LowModeError",
    "ExportError",
    "DatasetError",
    "ScheduleError",
    "MethodError",
    "first_line",
]


class SurgeryError(Exception):
    """Base class of every error raised on purpose by modelsurgery."""


class UnknownModelError(SurgeryError, ValueError):
    """A model name that neither timm nor torchvision knows."""


class FactorError(SurgeryError, ValueError):
    """A width or depth factor outside (0, 1]."""


class KernelMapError(SurgeryError, ValueError):
    """A malformed or invalid kernel map."""


class InputSizeError(SurgeryError, ValueError):
    """An input size that is invalid for this model (a feature map vanishes, or grow shrinks)."""


class UnsupportedLayerError(SurgeryError, ValueError):
    """A layer that modelsurgery cannot convert safely."""


class PlanError(SurgeryError, ValueError):
    """A missing, malformed or too-new surgery plan."""


class CheckpointError(SurgeryError, ValueError):
    """A checkpoint that is missing, unreadable, or does not match its plan."""


class OutputExistsError(SurgeryError, ValueError):
    """An output file exists and `force` was not given."""


class ConversionError(SurgeryError, ValueError):
    """A converter was called with arguments it cannot honour (e.g. an uneven factor)."""


class LowModeError(SurgeryError, ValueError):
    """Invalid low-mode arguments: a ratio, a conv pattern, a schedule setting."""


class ExportError(SurgeryError, RuntimeError):
    """The model could not be exported to ONNX, or the export does not match PyTorch."""



class DatasetError(SurgeryError, ValueError):
    """A data file or folder that is missing, malformed, or does not fit the request."""


class ScheduleError(SurgeryError, ValueError):
    """Schedule arguments that make no sense (e.g. unsorted milestones)."""


class MethodError(SurgeryError, ValueError):
    """A training method (`modelsurgery.methods`) built with a hyperparameter it cannot use."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, at most `limit` characters; its type's name when empty.

    Library errors quote what went wrong below them in one line (torch.load on an empty file, for
    one, raises with no message at all).

    Example:
        >>> first_line(RuntimeError("shape mismatch\\n  at layer1"))
        'shape mismatch'
    """
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]
