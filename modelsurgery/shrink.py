"""Shrink: kernel-map policy -> plan -> pre-train model.

`plan_shrink` analyses the target and decides; `apply_plan` builds the pre-train network
from a plan and nothing else; `shrink` is the two together.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .analysis import SIZE_ATTRS, Analysis, analyze, flatten_source_hw, meta_copy, warn_skipped
from .channel_groups import check_exact, narrow
from .constants import DEFAULT_EVEN_PADDING, EVEN_PADDINGS
from .constants import TABLE1 as _TABLE1
from .deprecation import moved
from .depth import drop_blocks, drop_plan
from .errors import InputSizeError, KernelMapError, UnsupportedLayerError, first_line
from .layers import fit_to, set_conv_padding, set_module
from .plan import ConvSite, FCSite, ModelSource, Plan, Resample
from .policy import KeepKernels, conv_pair, decide_kernel, small_padding, target_padding
from .policy import parse_kernel_map as _parse_kernel_map
from .policy import pretrain_input_size as _pretrain_input_size
from .slimming import check_factor, example_input, narrowed
from .tracing import trace_covering

__all__ = ["plan_shrink", "apply_plan", "shrink"]



def plan_shrink(model: nn.Module, source: ModelSource, *, target_size: int, input_size: int | None = None,
                kernel_map: str | Mapping[int, int] | None = None, in_chans: int = 3,
                even_padding: str = DEFAULT_EVEN_PADDING, keep_dilated: bool = True, width: float = 1.0,
                depth: float = 1.0) -> Plan:
    """Analyse `model` and decide its pre-train variant. Does not modify `model`.

    Args:
        model: the target network.
        source: how to rebuild it (stored in the plan).
        target_size: the target input size in pixels.
        input_size: the pre-train input size; default round(target / s1).
        kernel_map: overrides of Table 1, "3:2,5:3" or {3: 2}.
        in_chans: input channels.
        even_padding: "alternate" (default: the extra pixel of padding alternates between the
            top-left and bottom-right of successive asymmetric convs, so half-pixel shifts
            cancel instead of piling up) or "bottom-right" (TF/timm "same" convention).
        width: keep this fraction of every group of channels (`modelsurgery.width.narrow`).
        depth: keep this fraction of each stage's blocks (`modelsurgery.depth.drop_plan`).

    Returns:
        The `Plan` (form "pretrain"). Its convs and FC interfaces describe the narrowed and
        shortened network; `channels` and `blocks` record what was narrowed and dropped.
    """
    if even_padding not in EVEN_PADDINGS:
        raise KernelMapError(f"unknown even_padding {even_padding!r}. Hint: use 'alternate' or 'bottom-right'")
    kmap = _parse_kernel_map(kernel_map)
    width, depth = check_factor("width", width), check_factor("depth", depth)
    blocks, channels = (), ()
    if width < 1 or depth < 1:
        model = copy.deepcopy(model).eval()
        example = example_input(in_chans, target_size)
        if depth < 1:
            blocks = tuple(drop_plan(model, depth, example))
            drop_blocks(model, blocks)
        if width < 1:
            full = copy.deepcopy(model)
            channels = tuple(narrow(model, width, example))
            check_exact(full, model, list(channels), example)
    target, gm = analyze(model, target_size, in_chans)
    warn_skipped(target)
    fc_convs = {f.name for f in target.fcs if f.kind == "conv"}
    modules = dict(model.named_modules())
    sites, n_asym = [], 0
    for rec in target.convs.values():
        if rec.name in fc_convs:
            continue
        conv = modules[rec.name]
        if conv.weight.dim() != 4:
            warnings.warn(f"not converted (weight is not a 4-D kernel): {rec.name}", stacklevel=2)
            continue
        small, reason = decide_kernel(conv, kmap, keep_dilated)
        side = "br" if even_padding == "bottom-right" or n_asym % 2 == 0 else "tl"
        small_pad = small_padding(conv, small, side)
        if not isinstance(small_pad, str) and (small_pad[0] != small_pad[1] or small_pad[2] != small_pad[3]):
            n_asym += 1
        sites.append(ConvSite(
            name=rec.name, kernel=conv_pair(conv.kernel_size), small_kernel=small, stride=conv_pair(conv.stride),
            dilation=conv_pair(conv.dilation), groups=conv.groups, in_channels=conv.in_channels,
            out_channels=conv.out_channels, padding=target_padding(conv), small_padding=small_pad,
            in_hw=rec.in_hw, out_hw=rec.out_hw, small_in_hw=(0, 0), small_out_hw=(0, 0), reason=reason))
    dilated = [site.name for site in sites if site.reason == "dilated"]
    if dilated:  # kept on purpose (a smaller dilated kernel changes its reach), but never silently
        warnings.warn(f"not converted (dilated convs keep their kernels): {', '.join(dilated)}", stacklevel=2)
    if input_size is None:
        input_size = _pretrain_input_size(target_size, sites)
    fcs = [FCSite(f.name, f.kind, f.channels, f.hw, (0, 0), f.pool, f.owner, _out_features(modules[f.name]))
           for f in target.fcs]
    plan = Plan(source=source, input_size=int(input_size), target_size=int(target_size), in_chans=in_chans,
                convs=tuple(sites), fcs=tuple(fcs), kernel_map=_kernel_record(kmap),
                even_padding=even_padding, versions=_versions(), width=width, depth=depth, channels=channels,
                blocks=blocks)
    return _measure_pretrain(model, plan, target, gm)


def _kernel_record(kmap: Mapping[int, int]) -> tuple[tuple[int, int], ...]:
    """The kernel map as the plan records it: Table 1 with the user's entries (every k -> k for "keep")."""
    if isinstance(kmap, KeepKernels):
        return tuple((k, k) for k in sorted(_TABLE1))
    return tuple(sorted({**_TABLE1, **kmap}.items()))


def _out_features(module: nn.Module) -> int:
    return int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)


def _versions() -> tuple[tuple[str, str], ...]:
    import timm
    import torchvision

    from . import __version__

    return (("modelsurgery", __version__), ("timm", timm.__version__), ("torch", torch.__version__),
            ("torchvision", torchvision.__version__))


def _node_hw(gm: fx.GraphModule) -> dict[str, tuple[int, int]]:
    out = {}
    for n in gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape") and len(meta.shape) == 4:
            out[n.name] = tuple(meta.shape[-2:])
    return out


class _Probe(nn.Linear):
    """Stands in for an FC-interface Linear while the pre-train shapes are measured."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.out_features)


def _measure_pretrain(model: nn.Module, plan: Plan, target: Analysis, gm_t: fx.GraphModule) -> Plan:
    """Fill in the pre-train shapes: FC interfaces first (measured with probes), then every conv."""
    ratio, node_hw = plan.target_size / plan.input_size, _node_hw(gm_t)
    if plan.fcs:
        small, gm = analyze(_fc_probe(model, plan), plan.input_size, plan.in_chans, fit_merges=True,
                            ratio=ratio, target_hw=node_hw)
        plan = plan.replace(fcs=tuple(_measure_fc(fc, small, gm, target) for fc in plan.fcs))
    net = meta_copy(model)
    _apply_convs(net, plan.convs)
    _apply_fcs(net, plan.fcs)
    small, _ = analyze(net, plan.input_size, plan.in_chans, fit_merges=True, ratio=ratio, target_hw=node_hw)
    convs = []
    for site in plan.convs:
        rec = small.convs.get(site.name)
        if rec is None:
            raise UnsupportedLayerError(f"conv {site.name!r} ran at the target size but not in the pre-train "
                                        "network. Hint: report this model; pass kernel_map={} to keep kernels")
        _check_not_vanished(site, rec.in_hw, plan.input_size)
        convs.append(site.__class__(**{**site.__dict__, "small_in_hw": rec.in_hw, "small_out_hw": rec.out_hw}))
    resamples = tuple(Resample(*r) for r in small.resamples)
    if target.train_only:
        _check_trains(net, plan.input_size, plan.in_chans, target.train_only, resamples)
    return plan.replace(convs=tuple(convs), resamples=resamples)


def _check_trains(net: nn.Module, size: int, in_chans: int, train_only: list[str], resamples=()) -> None:
    """The pre-train network (meta) must also run a train-mode forward, its auxiliary heads included."""
    if resamples:
        raise _two_modes_error(train_only)
    net = meta_copy(net).train()
    try:
        with torch.no_grad():
            net(torch.zeros(2, in_chans, size, size, device="meta"))  # batch 2: BatchNorm on 1x1 maps
    except Exception as err:  # any op may reject the shape; all mean the same to the user
        heads = ", ".join(sorted({name.split(".")[0] for name in train_only}))
        raise InputSizeError(f"the pre-train network cannot train at {size}px: its train-only layers ({heads}) "
                             f"fail ({first_line(err, 120)}). Hint: pass a larger --input-size, or in Python build "
                             "the model without auxiliary heads: shrink(name, aux_logits=False)") from None


def _two_modes_error(train_only: list[str]) -> UnsupportedLayerError:
    # An fx graph bakes one mode in: editing the eval graph would silently drop the train-only layers.
    heads = ", ".join(sorted({name.split(".")[0] for name in train_only}))
    return UnsupportedLayerError(f"the pre-train network needs resampled merges at this input size, and its "
                                 f"train-only layers ({heads}) cannot keep running beside an edited graph. Hint: "
                                 "pass another --input-size (the default one needs no resampling), or in Python "
                                 "build the model without auxiliary heads: shrink(name, aux_logits=False)")


def _fc_probe(model: nn.Module, plan: Plan) -> nn.Module:
    """A meta copy with shrunk convs whose FC layers only record what reaches them."""
    probe = meta_copy(model)
    _apply_convs(probe, plan.convs)
    for fc in plan.fcs:
        old = probe.get_submodule(fc.name)
        if fc.kind == "linear":
            set_module(probe, fc.name, _Probe(1, old.out_features, bias=False, device="meta"))
        else:  # conv FC: a 1x1 stand-in keeps the map's size, so its input is recorded
            old.weight = nn.Parameter(old.weight.detach()[..., :1, :1])
            old.kernel_size = (1, 1)
            if fc.owner is not None:
                _set_size_attr(probe.get_submodule(fc.owner), 1)
    return probe


def _check_not_vanished(site: ConvSite, small_in: tuple[int, int], size: int) -> None:
    """A downsampling conv that meets a 1-pixel map where the target's is larger has lost it."""
    for stride, t_in, s_in in zip(site.stride, site.in_hw, small_in, strict=False):
        if stride > 1 and s_in == 1 and t_in > 1:
            raise InputSizeError(
                f"input size {size} is too small: the feature map has vanished to 1 pixel before "
                f"{site.name!r} (stride {stride}; {t_in} pixels in the target). Hint: pass a larger --input-size")


def _measure_fc(fc: FCSite, small: Analysis, gm: fx.GraphModule, target: Analysis) -> FCSite:
    if fc.kind == "conv":
        hw = small.convs[fc.name].in_hw
    elif fc.pool is not None:  # scale the fixed pool output with the map entering it
        t_in, s_in = target.pool_in_hw[fc.pool], small.pool_in_hw[fc.pool]
        hw = fc.hw if tuple(s_in) == tuple(t_in) else \
            tuple(max(1, min(s, round(o * s / t))) for o, s, t in zip(fc.hw, s_in, t_in, strict=False))
    else:
        hw = flatten_source_hw(gm, fc.name)
        if hw is None:
            raise UnsupportedLayerError(f"cannot find the feature map that {fc.name!r} flattens")
    if min(hw) < 1:
        raise InputSizeError(f"the feature map entering {fc.name!r} vanishes at the pre-train size. "
                             "Hint: pass a larger --input-size")
    return fc.__class__(**{**fc.__dict__, "small_hw": tuple(hw)})


def _set_size_attr(owner: nn.Module, value: int) -> None:
    for attr in SIZE_ATTRS:
        if hasattr(owner, attr):
            setattr(owner, attr, value)
            return


def _resampled_like(w: torch.Tensor, shape: tuple[int, ...], gain: float, gen: torch.Generator) -> torch.Tensor:
    """A fresh tensor drawn from `w`'s own values, times `gain`: the model's init at a new shape.

    Inits in timm and torchvision (kaiming, xavier, trunc-normal, PyTorch's default) draw
    from one distribution per tensor whose scale goes as 1/sqrt(fan); resampling the target's
    values keeps the family, and `gain` = sqrt(old fan / new fan) adjusts the scale.
    """
    flat = w.detach().flatten().float()
    if flat.numel() == 0 or not bool(flat.any()):
        return torch.zeros(shape, dtype=w.dtype)
    idx = torch.randint(flat.numel(), (math.prod(shape),), generator=gen)
    return (flat[idx] * gain).reshape(shape).to(w.dtype)


def _new_weight(old: torch.Tensor, shape: tuple[int, ...], gain: float, gen: torch.Generator | None) -> nn.Parameter:
    if old.is_meta:  # shape analysis: no data to draw
        new = torch.empty(shape, dtype=old.dtype, device="meta")
    else:
        new = _resampled_like(old, shape, gain, gen or torch.Generator().manual_seed(0))
    return nn.Parameter(new, requires_grad=old.requires_grad)


def _apply_convs(model: nn.Module, sites, gen: torch.Generator | None = None) -> None:
    for site in sites:
        conv = model.get_submodule(site.name)
        if site.changed:
            shape = (*conv.weight.shape[:2], *site.small_kernel)
            gain = math.sqrt(math.prod(site.kernel) / math.prod(site.small_kernel))
            conv.weight = _new_weight(conv.weight, shape, gain, gen)
            conv.kernel_size = tuple(site.small_kernel)
        set_conv_padding(conv, site.small_padding)


def _apply_fcs(model: nn.Module, fcs, gen: torch.Generator | None = None) -> None:
    for fc in fcs:
        module = model.get_submodule(fc.name)
        if fc.pool is not None:
            model.get_submodule(fc.pool).output_size = tuple(fc.small_hw)
        if fc.owner is not None:
            _set_size_attr(model.get_submodule(fc.owner), fc.small_hw[0])
        gain = math.sqrt(math.prod(fc.hw) / math.prod(fc.small_hw))
        if fc.kind == "linear":
            shape = (module.out_features, fc.channels * math.prod(fc.small_hw))
            module.in_features = shape[1]
        else:
            shape = (module.out_channels, module.weight.shape[1], *fc.small_hw)
            module.kernel_size = tuple(fc.small_hw)
        module.weight = _new_weight(module.weight, shape, gain, gen)


def _apply_resamples(model: nn.Module, resamples) -> nn.Module:
    """Insert `fit_to` before the merges the plan lists; the only place the graph is edited."""
    if not resamples:
        return model
    gm, train_only = trace_covering(model)
    if train_only:
        raise _two_modes_error(train_only)
    nodes = {n.name: n for n in gm.graph.nodes}
    for r in resamples:
        node = nodes.get(r.node)
        if node is None:
            raise UnsupportedLayerError(f"plan resamples node {r.node!r}, which this model's trace lacks. "
                                        "Hint: re-run `msurg shrink` with the installed timm/torchvision")
        is_cat = not isinstance(node.args[0], fx.Node)
        inputs = list(node.args[0] if is_cat else node.args)
        with gm.graph.inserting_before(node):
            inputs[r.arg] = gm.graph.call_function(fit_to, (inputs[r.arg], inputs[r.ref]))
        node.args = ((inputs, *node.args[1:]) if is_cat else tuple(inputs))
    gm.graph.lint()
    gm.recompile()
    # GraphModule keeps only what the graph touches, in graph order; give it the model's own
    # modules, parameters and buffers back so the state_dict keys and their order are the target's.
    gm._modules, gm._parameters, gm._buffers = model._modules, model._parameters, model._buffers
    return gm


def apply_plan(model: nn.Module, plan: Plan, *, seed: int = 0) -> nn.Module:
    """Build the pre-train network a plan describes from a target instance (not modified).

    Changed tensors get the model's own init at their new shapes (see `_resampled_like`),
    drawn with a generator seeded by `seed`; everything else is copied.

    Example:
        >>> small = apply_plan(timm.create_model("resnet18"), plan)
    """
    gen = torch.Generator().manual_seed(seed)
    small = narrowed(model, plan) if plan.channels or plan.blocks else copy.deepcopy(model)
    _apply_convs(small, plan.convs, gen)
    _apply_fcs(small, plan.fcs, gen)
    return _apply_resamples(small, plan.resamples)


def shrink(model_or_name: nn.Module | str, *, input_size: int | None = None, target_size: int | None = None,
           kernel_map: str | Mapping[int, int] | None = None, even_padding: str = DEFAULT_EVEN_PADDING,
           width: float = 1.0, depth: float = 1.0, **model_kwargs: Any) -> tuple[nn.Module, Plan]:
    """Build the pre-train variant of a CNN: smaller kernels, smaller images, same keys.

    Args:
        model_or_name: a timm name, `torchvision:NAME`, or an `nn.Module` (not modified).
        input_size: pre-train input size; default round(target_size / s1).
        target_size: target input size; default the model's pretrained_cfg size, else 224.
        kernel_map: overrides of Table 1, e.g. "3:2,5:3" or {3: 2}.
        even_padding: "alternate" or "bottom-right" (see `plan_shrink`).
        width: the fraction of every group of channels to keep (1: all), e.g. 0.5.
        depth: the fraction of each stage's blocks to keep (1: all), e.g. 0.5.
        **model_kwargs: constructor arguments for named models (num_classes, in_chans, ...).

    Returns:
        (pre-train model, plan). The model's state_dict has exactly the target's keys.

    Example:
        >>> small, plan = shrink("resnet34", num_classes=10)
        >>> plan.input_size, plan.target_size
        (160, 224)
    """
    from .zoo import build, default_input_size

    if isinstance(model_or_name, nn.Module):
        if model_kwargs:
            raise TypeError(f"model kwargs {sorted(model_kwargs)} only apply to a model name")
        model = model_or_name
        source = ModelSource("custom", type(model).__name__)
        in_chans = _first_conv_in_chans(model)
    else:
        model, source = build(model_or_name, **model_kwargs)
        in_chans = int(model_kwargs.get("in_chans") or 3)
    target_size = int(target_size or default_input_size(model, source))
    if input_size is not None and not 1 <= int(input_size):
        raise InputSizeError(f"input size must be positive, got {input_size}")
    plan = plan_shrink(model, source, target_size=target_size, input_size=input_size,
                       kernel_map=kernel_map, in_chans=in_chans, even_padding=even_padding, width=width,
                       depth=depth)
    return apply_plan(model, plan), plan


def _first_conv_in_chans(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3



# `downscale_state_dict` (grow's inverse) lives beside grow, the kernel policy in `policy`.
__getattr__ = moved(__name__, {"downscale_state_dict": "modelsurgery.grow", "TABLE1": "modelsurgery.constants",
                               **{name: "modelsurgery.policy" for name in ("parse_kernel_map", "map_kernel",
                                                                           "pretrain_input_size")}})
