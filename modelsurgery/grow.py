"""Grow: a trained pre-train state_dict + its plan -> the target network's state_dict, and back.

`grow` is pure (dict -> dict, de Gusmão et al. 2016, §3.3): every shrunk kernel is upscaled with
its amplitude preserved, the FC interface is converted like a kernel, and every other tensor is
copied. `downscale_state_dict` is its inverse (`msurg shrink --weights`). The data-driven
refinements that close most of the accuracy dip after a grow (`recalibrate_bn`,
`fit_least_squares`) live in `modelsurgery.calibrate`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn

from .analysis import analyze, flatten_source_hw, meta_copy
from .constants import (
    DEFAULT_DOWNSCALE_METHOD,
    DEFAULT_FC,
    DEFAULT_UPSCALE,
    DEFAULT_WIDEN_INIT,
    DEFAULT_WIDEN_STD,
    UPSCALES,
)
from .constants import FC_MODES as _FC_MODES
from .deprecation import moved
from .errors import CheckpointError, ConversionError, InputSizeError, PlanError, first_line
from .layers import set_module
from .plan import ConvSite, Plan
from .resize.fc import pad_fc_gaussian, resize_fc
from .resize.kernels import resize_kernel
from .statedict import with_versions as _with_versions
from .width import check_widen, narrow_state, widen_state

__all__ = ["grow", "momentum_map", "plan_at", "grow_size", "downscale_state_dict"]


def grow(state_dict: Mapping[str, torch.Tensor], plan: Plan, *, to: int | None = None,
         upscale: str = DEFAULT_UPSCALE, fc: str = DEFAULT_FC, seed: int = 0,
         model: nn.Module | None = None, method: str | None = None, widen_init: str = DEFAULT_WIDEN_INIT,
         widen_std: float = DEFAULT_WIDEN_STD, linear: bool = False) -> tuple[dict[str, torch.Tensor], Plan]:
    """Convert a pre-train state_dict into the target's: upscale kernels, convert the FC interface.

    Every changed conv in `plan` is resized to its target kernel with `resize.resize_kernel`
    (amplitude ÷s², de Gusmão et al. 2016, §3.3.1). The FC interface is resized like a kernel
    (`fc="resize"`, with the same upscaling; §3.3.2) or keeps its weights on a grid and is
    Gaussian-padded (`fc="gaussian"`, Liu et al. 2016, §III-B, seeded by `seed`). Biases, norms, later Linears and every
    other tensor are copied. The input is not modified.

    A plan narrowed in width gets its channels back with `widen_init` (`modelsurgery.width`:
    Liu et al. 2016, §III-C's "gaussian", "zeros" and "flip", or Net2Net's "net2net"); a plan
    shortened in depth gets its blocks back with the target's own init and the end of each
    residual branch zeroed, so that they have no effect (Liu et al. 2016, §IV-E).

    Args:
        state_dict: the pre-train network's tensors (keys as the target's, shapes as the plan's).
        plan: the shrink plan, form "pretrain".
        to: target input size; default `plan.target_size`. A different size re-measures the
            feature maps (and the H×W of a flatten->Linear interface) on the target model.
        upscale: kernel upscaling, "bilinear", "pinv" or "replicate" (integer factors only).
        fc: "resize" or "gaussian".
        seed: seed for `fc="gaussian"`.
        model: a fresh target instance; needed for custom models when `to` differs or blocks
            come back (their new tensors are drawn from it).
        method: the old name of `upscale` (deprecated).
        widen_init: new channels' init, "gaussian", "zeros", "flip" or "net2net".
        widen_std: σ of the Gaussian draws of "gaussian" and "zeros".
        linear: convert optimizer state (momentum) instead of weights: only the linear part of
            the map, so that new entries start at zero and Net2Net's copies are split like weights.

    Returns:
        (target state_dict, plan with form "target" and target_size `to`).

    Raises:
        PlanError: the plan is already in target form.
        CheckpointError: planned tensors are missing or mis-shaped (all listed at once).
        ConversionError: unknown method, or a replicate factor that does not divide evenly.
        InputSizeError: `to` is smaller than the pre-train input size.

    Example:
        >>> small, plan = modelsurgery.shrink("resnet18", num_classes=10)
        >>> state, big_plan = grow(small.state_dict(), plan)
        >>> timm.create_model("resnet18", num_classes=10).load_state_dict(state)
    """
    upscale = _renamed("method", method, "upscale", upscale)
    if upscale not in UPSCALES:
        raise ConversionError(f"unknown grow method {upscale!r}. Hint: use one of {', '.join(UPSCALES)}")
    if fc not in _FC_MODES:
        raise ConversionError(f"unknown fc mode {fc!r}. Hint: use one of {', '.join(_FC_MODES)}")
    check_widen(widen_init, widen_std)
    if plan.form != "pretrain":
        raise PlanError(f"the plan's form is {plan.form!r}: this checkpoint is already grown. "
                        "Hint: grow the pre-train checkpoint that `msurg shrink` wrote")
    _check_planned(state_dict, plan)
    target = plan_at(plan, to, model)
    grown = {}
    for site in plan.convs:
        if site.changed:
            key = f"{site.name}.weight"
            grown[key] = _named(key, lambda key=key, site=site: resize_kernel(state_dict[key], tuple(site.kernel),
                                                                                upscale))
    gen = torch.Generator().manual_seed(seed)
    for small, big in zip(plan.fcs, target.fcs, strict=False):
        key = f"{small.name}.weight"
        chw = (small.channels, *small.small_hw)
        if fc == "gaussian":
            grown[key] = _named(key, lambda key=key, chw=chw, big=big: pad_fc_gaussian(state_dict[key], chw,
                                                                                        tuple(big.hw), generator=gen))
        else:
            grown[key] = _named(key, lambda key=key, chw=chw, big=big: resize_fc(state_dict[key], chw, tuple(big.hw),
                                                                                  upscale))
    out = {k: grown[k] if k in grown else v.clone() for k, v in state_dict.items()}
    if plan.channels:
        out = widen_state(out, plan.channels, init=widen_init, std=widen_std, seed=seed, linear=linear)
    if plan.blocks:
        out = _with_blocks(out, plan, model, seed, linear)
    return _with_versions(out, state_dict), target


def momentum_map(plan: Plan, **grow_kwargs):
    """The converter that `carry_momentum` (and `Trainer.replace_model`) needs for a grow with `plan`.

    It sends optimizer state through the linear part of `grow` (`linear=True`): kernels and FC
    interfaces as the weights, new channels and blocks from zero, Net2Net's copies split like
    their weights.

    Example:
        >>> opt = carry_momentum(small, opt, big, torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9),
        ...                      momentum_map(plan, widen_init="net2net"))
    """
    def convert(state):
        return grow(state, plan, linear=True, **grow_kwargs)[0]

    return convert


def _with_blocks(state: dict[str, torch.Tensor], plan: Plan, model: nn.Module | None, seed: int,
                 linear: bool) -> dict[str, torch.Tensor]:
    """`state` with the dropped blocks back, in the target's key order."""
    from .depth import new_blocks
    from .zoo import rebuild

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        target = model if model is not None else rebuild(plan.source)
    blocks = new_blocks(target, plan.blocks, linear=linear)
    order = list(target.state_dict())
    merged = {**state, **blocks}
    return {k: merged[k] for k in order if k in merged} | {k: v for k, v in merged.items() if k not in order}



def _renamed(old: str, old_value, new: str, value):
    """`value`, or `old_value` with a DeprecationWarning when the caller used the keyword's old name."""
    if old_value is None:
        return value
    warnings.warn(f"grow's {old}= is deprecated: pass {new}=", DeprecationWarning, stacklevel=3)
    return old_value


def _named(key: str, convert):
    """Run a converter; name the tensor in its error."""
    try:
        return convert()
    except ConversionError as err:
        raise ConversionError(f"{key}: {err}") from None


def _small_shapes(plan: Plan) -> dict[str, tuple[int, ...]]:
    """Pre-train shape of every weight the plan converts."""
    shapes = {f"{s.name}.weight": (s.out_channels, s.in_channels // s.groups, *s.small_kernel) for s in plan.convs}
    for fc in plan.fcs:
        flat = (fc.channels * math.prod(fc.small_hw),) if fc.kind == "linear" else (fc.channels, *fc.small_hw)
        shapes[f"{fc.name}.weight"] = (fc.out_features, *flat)
    return shapes


def _check_planned(state: Mapping[str, torch.Tensor], plan: Plan) -> None:
    """Every tensor the plan converts is present at its pre-train shape; all problems in one error."""
    shapes = _small_shapes(plan)
    missing = [key for key in shapes if key not in state]
    wrong = [f"{key} {tuple(state[key].shape)} != {shape}" for key, shape in shapes.items()
             if key in state and tuple(state[key].shape) != shape]
    problems = ([f"missing {missing}"] if missing else []) + ([f"wrong shapes [{'; '.join(wrong)}]"] if wrong else [])
    if problems:
        raise CheckpointError(f"state_dict does not match its plan: {', '.join(problems)}. "
                              "Hint: was it saved from a different model or plan?")


def plan_at(plan: Plan, to: int | None = None, model: nn.Module | None = None) -> Plan:
    """The target-form plan at input size `to` (default `plan.target_size`).

    At a new size the target's feature maps are re-measured on `model` (default: rebuilt from
    `plan.source`). An FC interface behind a fixed adaptive pool, or a conv acting as an FC
    layer, keeps its H×W; a plain flatten->Linear takes the H×W of the map it sees at `to`.

    Raises:
        InputSizeError: `to` is smaller than `plan.input_size`, or a map vanishes at `to`.
    """
    to = grow_size(plan, to)
    if to == plan.target_size:
        return plan.replace(form="target")
    from .zoo import rebuild

    probe = meta_copy(model if model is not None else rebuild(plan.source))
    for fc in plan.fcs:  # a Linear sized for target_size would stop propagation at `to`
        if fc.kind == "linear" and fc.pool is None:
            width = _input_width(probe, fc.name, to, plan.in_chans)
            set_module(probe, fc.name, nn.Linear(width, fc.out_features, device="meta"))
    analysis, gm = analyze(probe, to, plan.in_chans)
    convs = tuple(_site_at(site, analysis.convs) for site in plan.convs)
    fcs = tuple(fc if fc.kind == "conv" or fc.pool is not None else
                fc.__class__(**{**fc.__dict__, "hw": _flattened_hw(gm, fc.name)}) for fc in plan.fcs)
    return plan.replace(form="target", target_size=to, convs=convs, fcs=fcs)


def grow_size(plan: Plan, to: int | None = None) -> int:
    """The target input size for `to` (default the plan's), checked against the pre-train size.

    Raises:
        InputSizeError: `to` is smaller than `plan.input_size`.
    """
    size = plan.target_size if to is None else int(to)
    if size < plan.input_size:
        raise InputSizeError(f"--to {size} is smaller than the pre-train input size {plan.input_size}; grow "
                             f"only enlarges. Hint: pass --to {plan.target_size} (the plan's target size) "
                             "or leave it out")
    return size


class _Stop(Exception):
    """Ends a forward pass once the layer of interest has been reached."""


def _input_width(model: nn.Module, name: str, size: int, in_chans: int) -> int:
    """in_features that the Linear `name` receives at input `size` (meta tensors: no compute)."""
    seen = {}

    def hook(module, inputs):
        seen["width"] = inputs[0].shape[-1]
        raise _Stop

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        for training in (False, True):  # train mode: a Linear of an auxiliary head (GoogLeNet aux1.fc1)
            with torch.no_grad():
                model.train(training)(torch.zeros(2, in_chans, size, size, device="meta"))
    except _Stop:
        pass
    except (RuntimeError, ValueError) as err:
        raise InputSizeError(f"the target network fails at input size {size} before {name!r} "
                             f"({first_line(err, 120)}). Hint: pass a larger --to") from None
    finally:
        handle.remove()
        model.eval()
    if "width" not in seen:
        raise InputSizeError(f"{name!r} did not run at input size {size}")
    return int(seen["width"])


def _site_at(site: ConvSite, records) -> ConvSite:
    rec = records.get(site.name)
    if rec is None:
        return site
    return site.__class__(**{**site.__dict__, "in_hw": rec.in_hw, "out_hw": rec.out_hw})


def _flattened_hw(gm, name: str) -> tuple[int, int]:
    """H×W of the map that the Linear `name` flattens, at the new size."""
    hw = flatten_source_hw(gm, name)
    if hw is None:
        raise InputSizeError(f"cannot find the feature map that {name!r} flattens at the new size")
    return hw


def downscale_state_dict(state: Mapping[str, torch.Tensor], plan: Plan, *,
                         method: str = DEFAULT_DOWNSCALE_METHOD) -> dict[str, torch.Tensor]:
    """Trained target weights -> pre-train weights, amplitude-preserving (`shrink --weights`).

    Planned convs are resized with `resize.resize_kernel` (for "pinv", the adjoint of the
    pinv upscale, so that growing back returns these weights exactly), the FC interface with
    `resize.resize_fc`; every other tensor is copied.

    Example:
        >>> small_state = downscale_state_dict(torch.load("t.pth", weights_only=True), plan)
    """
    dropped = tuple(b.name + "." for b in plan.blocks)
    out = _with_versions({k: v.clone() for k, v in state.items() if not k.startswith(dropped)}, state)
    if plan.channels:
        out = narrow_state(out, plan.channels)
    for site in plan.convs:
        if site.changed:
            key = f"{site.name}.weight"
            out[key] = resize_kernel(state[key], tuple(site.small_kernel), method)
    for fc in plan.fcs:
        key = f"{fc.name}.weight"
        out[key] = resize_fc(state[key], (fc.channels, *fc.hw), tuple(fc.small_hw), method)
    return out


# The refinements moved to `calibrate`, module versions to `statedict`, the choices to `constants`.
__getattr__ = moved(__name__, {"recalibrate_bn": "modelsurgery.calibrate",
                               "fit_least_squares": "modelsurgery.calibrate",
                               "with_versions": "modelsurgery.statedict",
                               "METHODS": "modelsurgery.constants:UPSCALES",
                               "DEFAULT_METHOD": "modelsurgery.constants:DEFAULT_UPSCALE",
                               "FC_MODES": "modelsurgery.constants"})
