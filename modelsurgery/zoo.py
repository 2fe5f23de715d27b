"""Build target models by name: a timm name, or `torchvision:NAME`. Never from a hub.

Example:
    >>> model, source = build("resnet18", num_classes=10)
    >>> source.spec
    'resnet18'
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import torch.nn as nn

from .errors import UnknownModelError
from .plan import ModelSource

__all__ = ["build", "rebuild", "default_input_size", "TORCHVISION_PREFIX"]

TORCHVISION_PREFIX = "torchvision:"

# Keys that only select weights; we never download, so they are refused rather than ignored.
_HUB_KWARGS = ("pretrained", "weights", "pretrained_cfg_overlay", "checkpoint_path")


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _unknown(name: str, known: list[str], prefix: str = "") -> UnknownModelError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(prefix + c for c in close)}?" if close else "no close match"
    where = "torchvision" if prefix else "timm (or `torchvision:NAME` for torchvision)"
    return UnknownModelError(f"unknown model {prefix + name!r} in {where}: {hint}")


def _json_kwargs(kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    from .plan import _tuplify  # one normalisation for JSON values, shared with Plan

    return tuple(sorted((str(k), _tuplify(v)) for k, v in kwargs.items() if v is not None))


def build(spec: str, **kwargs: Any) -> tuple[nn.Module, ModelSource]:
    """Build a randomly initialised target model by name.

    Args:
        spec: a timm model name (`resnet34`) or `torchvision:NAME` (`torchvision:alexnet`).
        **kwargs: constructor arguments such as `num_classes` or `in_chans` (timm). For
            torchvision, `in_chans` other than 3 is refused: its models have no such argument.

    Returns:
        The model in eval mode, and the `ModelSource` that rebuilds it.

    Raises:
        UnknownModelError: the name is known to neither library; the message lists close names.

    Example:
        >>> model, src = build("torchvision:alexnet", num_classes=10)
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for key in _HUB_KWARGS:
        if kwargs.get(key):
            raise UnknownModelError(f"`{key}` would load weights from a hub, which modelsurgery never does. "
                                    "Hint: pass local weights with `--weights FILE`")
        kwargs.pop(key, None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if spec.startswith(TORCHVISION_PREFIX):
        name = spec[len(TORCHVISION_PREFIX):]
        model = _build_torchvision(name, kwargs)
        source = ModelSource("torchvision", name, _json_kwargs(kwargs))
    else:
        model = _build_timm(spec, kwargs)
        source = ModelSource("timm", spec, _json_kwargs(kwargs))
    return model.eval(), source


def _build_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise _unknown(name, _timm_names())
    return timm.create_model(name, pretrained=False, **kwargs)


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm

    names = _torchvision_names()
    if name not in names:
        raise _unknown(name, names, TORCHVISION_PREFIX)
    in_chans = kwargs.pop("in_chans", 3)
    if in_chans != 3:
        raise UnknownModelError(f"torchvision:{name} takes 3 input channels, not in_chans={in_chans}. "
                                "Hint: use the timm equivalent, which accepts --in-chans")
    if name in ("inception_v3", "googlenet"):
        # The stock default (None) means True with a FutureWarning; the auxiliary heads stay
        # (aux_logits=True), so the keys are the default constructor's.
        kwargs.setdefault("init_weights", True)
    return tvm.get_model(name, weights=None, **kwargs)


def rebuild(source: ModelSource) -> nn.Module:
    """Build the target model a plan's `ModelSource` describes.

    Raises:
        UnknownModelError: for `custom` sources, which only the caller can rebuild.
    """
    if source.kind == "custom":
        raise UnknownModelError(f"the plan's model is a custom module ({source.name}); "
                                "Hint: pass a fresh target instance, e.g. `load(path, model=MyNet())`")
    spec = source.spec
    model, _ = build(spec, **source.kwargs_dict())
    return model


def default_input_size(model: nn.Module, source: ModelSource | None = None, fallback: int = 224) -> int:
    """The model's own input size: timm's pretrained_cfg, torchvision's weights' crop size, else `fallback`.

    Neither lookup downloads anything: both read metadata shipped with the library.
    """
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    if size and len(size) == 3:
        return int(size[-1])
    if source is not None and source.kind == "torchvision":
        import torchvision.models as tvm

        try:
            crop = tvm.get_model_weights(source.name).DEFAULT.transforms().crop_size
            return int(crop[0])
        except (ValueError, AttributeError, KeyError, TypeError):
            return fallback
    return fallback
