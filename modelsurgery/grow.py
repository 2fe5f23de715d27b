"""Grow: a trained pre-train state_dict + its plan -> the target network's state_dict.

`grow` is pure (dict -> dict, SPEC §1.1 and §2): every shrunk kernel is upscaled with its
amplitude preserved, the FC interface is converted like a kernel, and every other tensor is
copied. Two optional, data-driven refinements close most of the accuracy dip that follows a
grow; they work on built networks and need calibration images at the target size:

- `recalibrate_bn`: fresh BatchNorm running statistics measured at the target size.
- `fit_least_squares`: each target kernel re-solved, layer by layer, so that its output on the
  grown network's own input matches the pre-train layer's output, upsampled (ridge towards the
  kernel it starts from).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError, ConversionError, InputSizeError, PlanError
from .plan import ConvSite, Plan
from .resize import pad_fc_gaussian, resize_fc, resize_kernel

__all__ = ["METHODS", "DEFAULT_METHOD", "FC_MODES", "grow", "plan_at", "grow_size", "recalibrate_bn",
           "fit_least_squares"]

METHODS = ("bilinear", "pinv", "replicate")
# pinv and bilinear keep about the same accuracy for 2x2 -> 3x3 kernels (bench/grow_fidelity.py,
# bench/results/grow_fidelity.json); for 5x5 -> 7x7 stems pinv is clearly closer (SPEC §2, and
# tests/test_grow.py's amplitude guard), and it is exact wherever replication is.
DEFAULT_METHOD = "pinv"
FC_MODES = ("resize", "gaussian")


def grow(state_dict: Mapping[str, torch.Tensor], plan: Plan, *, to: int | None = None,
         method: str = DEFAULT_METHOD, fc: str = "resize", seed: int = 0,
         model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], Plan]:
    """Convert a pre-train state_dict into the target's: upscale kernels, convert the FC interface.

    Every changed conv in `plan` is resized to its target kernel with `resize.resize_kernel`
    (amplitude ÷s², SPEC §2). The FC interface is resized like a kernel (`fc="resize"`, with the
    same method; SPEC §1.1) or keeps its weights on a grid and is Gaussian-padded
    (`fc="gaussian"`, SPEC §1.3, seeded by `seed`). Biases, norms, later Linears and every
    other tensor are copied. The input is not modified.

    Args:
        state_dict: the pre-train network's tensors (keys as the target's, shapes as the plan's).
        plan: the shrink plan, form "pretrain".
        to: target input size; default `plan.target_size`. A different size re-measures the
            feature maps (and the H×W of a flatten->Linear interface) on the target model.
        method: kernel upscaling, "bilinear", "pinv" or "replicate" (integer factors only).
        fc: "resize" or "gaussian".
        seed: seed for `fc="gaussian"`.
        model: a fresh target instance; needed only for custom models when `to` differs.

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
    if method not in METHODS:
        raise ConversionError(f"unknown grow method {method!r}. Hint: use one of {', '.join(METHODS)}")
    if fc not in FC_MODES:
        raise ConversionError(f"unknown fc mode {fc!r}. Hint: use one of {', '.join(FC_MODES)}")
    if plan.form != "pretrain":
        raise PlanError(f"the plan's form is {plan.form!r}: this checkpoint is already grown. "
                        "Hint: grow the pre-train checkpoint that `msurg shrink` wrote")
    _check_planned(state_dict, plan)
    target = plan_at(plan, to, model)
    grown = {}
    for site in plan.convs:
        if site.changed:
            key = f"{site.name}.weight"
            grown[key] = _named(key, lambda: resize_kernel(state_dict[key], tuple(site.kernel), method))
    gen = torch.Generator().manual_seed(seed)
    for small, big in zip(plan.fcs, target.fcs):
        key = f"{small.name}.weight"
        chw = (small.channels, *small.small_hw)
        if fc == "gaussian":
            grown[key] = _named(key, lambda: pad_fc_gaussian(state_dict[key], chw, tuple(big.hw), generator=gen))
        else:
            grown[key] = _named(key, lambda: resize_fc(state_dict[key], chw, tuple(big.hw), method))
    return {k: grown[k] if k in grown else v.clone() for k, v in state_dict.items()}, target


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
    from .trace import analyze, meta_copy
    from .zoo import rebuild

    probe = meta_copy(model if model is not None else rebuild(plan.source))
    for fc in plan.fcs:  # a Linear sized for target_size would stop propagation at `to`
        if fc.kind == "linear" and fc.pool is None:
            width = _input_width(probe, fc.name, to, plan.in_chans)
            _set_module(probe, fc.name, nn.Linear(width, fc.out_features, device="meta"))
    analysis, gm = analyze(probe, to, plan.in_chans)
    convs = tuple(_site_at(site, analysis.convs) for site in plan.convs)
    fcs = tuple(fc if fc.kind == "conv" or fc.pool is not None else
                fc.__class__(**{**fc.__dict__, "hw": _flatten_source_hw(gm, fc.name)}) for fc in plan.fcs)
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
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, size, size, device="meta"))
    except _Stop:
        pass
    except (RuntimeError, ValueError) as err:
        raise InputSizeError(f"the target network fails at input size {size} before {name!r} "
                             f"({str(err).splitlines()[0][:120]}). Hint: pass a larger --to") from None
    finally:
        handle.remove()
    if "width" not in seen:
        raise InputSizeError(f"{name!r} did not run at input size {size}")
    return int(seen["width"])


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _site_at(site: ConvSite, records) -> ConvSite:
    rec = records.get(site.name)
    if rec is None:
        return site
    return site.__class__(**{**site.__dict__, "in_hw": rec.in_hw, "out_hw": rec.out_hw})


def _flatten_source_hw(gm: fx.GraphModule, name: str) -> tuple[int, int]:
    """H×W of the last 4-D map on the path into the module `name`."""
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
    cur = node.args[0]
    while isinstance(cur, fx.Node):
        meta = cur.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape") and len(meta.shape) == 4:
            return tuple(meta.shape[-2:])
        cur = cur.args[0] if cur.args else None
    raise InputSizeError(f"cannot find the feature map that {name!r} flattens at the new size")


# --- data-driven refinements -------------------------------------------------------------------

_NORMS = (nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace BatchNorm running statistics with their cumulative average over `batches`.

    Statistics are reset, then every batch is run with only the norm layers in train mode
    (momentum=None: an exact average over batches, so the result does not depend on how many
    there are), and no gradient. Dropout and everything else stay in eval mode. The model is
    left in eval mode, with its norms' momenta restored.

    Args:
        model: the grown network (changed in place).
        batches: input tensors (N, C, H, W) at the target size, normalised as for training.

    Returns:
        The number of images seen (0 when the model has no BatchNorm).

    Example:
        >>> recalibrate_bn(net, (x for x, _ in loader))
    """
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += len(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return seen


def _conv_inputs(model: nn.Module, x: torch.Tensor, names: set[str]):
    """Run `model` node by node (fx) and yield (name, input) just before each conv in `names` runs.

    The conv runs after the caller resumes, with whatever weights it holds by then, so a fit
    made at one layer is seen by every later one: a whole layer-by-layer fit costs one forward
    pass. Values are freed after their last use, as `fx.Interpreter` does.
    """
    from .trace import trace

    gm = trace(model)
    interp = fx.Interpreter(gm)
    interp.env = env = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            return
        if node.op == "placeholder":
            env[node] = x if not env else (node.args[0] if node.args else None)
        else:
            if node.op == "call_module" and node.target in names:
                yield node.target, interp.fetch_args_kwargs_from_env(node)[0][0]
            env[node] = interp.run_node(node)
        for dead in interp.user_to_last_uses.get(node, []):
            env.pop(dead, None)


@torch.no_grad()
def fit_least_squares(pretrain: nn.Module, grown: nn.Module, plan: Plan, small: torch.Tensor,
                      big: torch.Tensor, *, ridge: float = 0.05, max_rows: int = 131072,
                      layers: str = "changed", seed: int = 0) -> list[str]:
    """Re-solve each grown kernel so that it reproduces its pre-train layer (SPEC §2).

    Layer by layer in forward order, the grown conv's input is taken from the grown network
    itself (earlier layers already fitted), and its target is the pre-train conv's output on
    the same images at the small size, bilinearly upsampled to the target map, minus the bias.
    Each kernel minimises ‖X·w − y‖² + λ‖w − w₀‖² per output channel (and group), where w₀ is
    the kernel it starts from and λ = `ridge` × the mean diagonal of XᵀX. Both networks run
    once, side by side (fx), so the cost is about one forward pass of each plus the solves.

    Args:
        pretrain: the trained pre-train network (not modified).
        grown: the grown network, changed in place (recalibrate its BatchNorm afterwards).
        plan: the plan that relates them.
        small: calibration images at `plan.input_size`, (N, C, h, w), normalised.
        big: the same images at the target size.
        ridge: regularisation towards w₀, relative to the data's scale.
        max_rows: at most this many output positions per layer (a seeded random choice).
        layers: "changed" (the kernels grow resized) or "all" (every planned conv, 1×1 too).

    Returns:
        The names of the convs that were fitted. Convs whose padding cannot be reproduced as
        patches (reflect, dynamic modes other than timm's "same") keep their kernels.

    Example:
        >>> grown.load_state_dict(grow(small.state_dict(), plan)[0])
        >>> fit_least_squares(small, grown, plan, x_small, x_big)
        >>> recalibrate_bn(grown, batches)
    """
    gen = torch.Generator().manual_seed(seed)
    if layers not in ("changed", "all"):
        raise ConversionError(f"unknown layers {layers!r}. Hint: use 'changed' or 'all'")
    wanted = {s.name for s in plan.convs if s.changed or layers == "all"}
    was = pretrain.training, grown.training
    pretrain.eval()
    grown.eval()
    fitted: list[str] = []
    reference = _conv_inputs(pretrain, small, wanted)
    try:
        for name, x in _conv_inputs(grown, big, wanted):
            y_small = _pretrain_output(reference, pretrain, name)
            if y_small is None or name in fitted:
                continue
            conv = grown.get_submodule(name)
            system = _normal_equations(conv, x, y_small, max_rows, gen)
            if system is None:
                continue
            conv.weight.copy_(_ridge_solve(*system, conv.weight, ridge))
            fitted.append(name)
    finally:
        pretrain.train(was[0])
        grown.train(was[1])
    return fitted


def _pretrain_output(reference, pretrain: nn.Module, name: str) -> torch.Tensor | None:
    """Advance the pre-train network to conv `name` and return that conv's output (None if absent)."""
    for other, x in reference:
        if other == name:
            return pretrain.get_submodule(name)(x)
    return None


def _patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor | None:
    """(N·L, I·kh·kw) input patches of a zero-padded conv, or None for padding it cannot reproduce."""
    from .layers import DYNAMIC_PAD_CONVS

    pad = conv.padding
    if isinstance(conv, DYNAMIC_PAD_CONVS):
        from timm.layers.padding import pad_same

        x, pad = pad_same(x, conv.kernel_size, conv.stride, conv.dilation), 0
    elif conv.padding_mode != "zeros":
        return None
    elif pad == "valid":
        pad = 0
    elif pad == "same":  # stride 1; PyTorch puts the odd pixel at the bottom/right
        (th, tw) = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        x, pad = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2)), 0
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=pad, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _normal_equations(conv: nn.Conv2d, x: torch.Tensor, y_small: torch.Tensor, max_rows: int,
                      gen: torch.Generator):
    """Per-group XᵀX (G, d, d) and Xᵀy (G, d, O/G) in float64, accumulated over image chunks.

    X holds the conv's input patches, y the pre-train output upsampled to the conv's output map
    minus the bias. Output positions are kept with probability max_rows / total, so memory stays
    bounded whatever the image size. None when the conv's padding cannot be reproduced.
    """
    out_hw = tuple(conv(x[:1]).shape[-2:])
    groups, out_ch = conv.groups, conv.weight.shape[0]
    d = conv.weight[0].numel()
    keep = min(1.0, max_rows / (len(x) * out_hw[0] * out_hw[1]))
    chunk = max(1, int(2 ** 23 // max(1, groups * d * out_hw[0] * out_hw[1])))
    gram = torch.zeros(groups, d, d, dtype=torch.float64)
    xty = torch.zeros(groups, d, out_ch // groups, dtype=torch.float64)
    for xs, ys in zip(x.split(chunk), y_small.split(chunk)):
        patches = _patches(conv, xs)
        if patches is None:
            return None
        y = F.interpolate(ys, size=out_hw, mode="bilinear", align_corners=False)
        if conv.bias is not None:
            y = y - conv.bias.view(1, -1, 1, 1)
        y = y.permute(0, 2, 3, 1).reshape(-1, out_ch)
        if keep < 1.0:
            rows = torch.rand(len(y), generator=gen) < keep
            patches, y = patches[rows], y[rows]
        xg = patches.double().reshape(len(y), groups, d).transpose(0, 1)
        yg = y.double().reshape(len(y), groups, out_ch // groups).transpose(0, 1)
        gram += xg.transpose(1, 2) @ xg
        xty += xg.transpose(1, 2) @ yg
    return gram, xty


def _ridge_solve(gram: torch.Tensor, xty: torch.Tensor, w0: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_w ‖X·w − y‖² + λ‖w − w₀‖² per group from the normal equations; w0 (O, I/G, kh, kw)."""
    groups, d, _ = gram.shape
    w0g = w0.double().reshape(groups, -1, d).transpose(1, 2)  # (G, d, O/G)
    lam = (ridge * gram.diagonal(dim1=1, dim2=2).mean(1)).clamp_min(1e-12).view(-1, 1, 1)
    eye = torch.eye(d, dtype=gram.dtype)
    w = torch.linalg.solve(gram + lam * eye, xty + lam * w0g)
    return w.transpose(1, 2).reshape(w0.shape).to(w0.dtype)
