"""Calibration after a grow: data-driven refinements that close most of the accuracy dip.

Both work on built networks and need calibration images at the target size (training images,
not test ones):

- `recalibrate_bn`: fresh BatchNorm running statistics measured at the target size.
- `fit_least_squares`: each target kernel re-solved, layer by layer, so that its output on the
  grown network's own input matches the pre-train layer's output, upsampled (ridge towards the
  kernel it starts from).

`modelsurgery.grow` re-exports both.

Example:
    >>> grown.load_state_dict(grow(small.state_dict(), plan)[0])
    >>> fit_least_squares(small, grown, plan, x_small, x_big)
    >>> recalibrate_bn(grown, batches)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConversionError
from .layers import DYNAMIC_PAD_CONVS
from .plan import Plan
from .progress import bar
from .tracing import trace

__all__ = ["recalibrate_bn", "fit_least_squares"]

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
        for m, momentum in zip(norms, momenta, strict=False):
            m.momentum = momentum
        model.eval()
    return seen


def _conv_inputs(model: nn.Module, x: torch.Tensor, names: set[str]):
    """Run `model` node by node (fx) and yield (name, input) just before each conv in `names` runs.

    The conv runs after the caller resumes, with whatever weights it holds by then, so a fit
    made at one layer is seen by every later one: a whole layer-by-layer fit costs one forward
    pass. Values are freed after their last use, as `fx.Interpreter` does.
    """
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
                      layers: str = "changed", seed: int = 0, progress: bool | None = False) -> list[str]:
    """Re-solve each grown kernel so that it reproduces its pre-train layer.

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
        progress: a bar over the layers on stderr (None: when stderr is a terminal).

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
        layers_in = bar(_conv_inputs(grown, big, wanted), "least squares", total=len(wanted), unit="layer",
                        enabled=progress)
        for name, x in layers_in:
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
    pad = conv.padding
    if isinstance(conv, DYNAMIC_PAD_CONVS):
        from timm.layers.padding import pad_same

        x, pad = pad_same(x, conv.kernel_size, conv.stride, conv.dilation), 0
    elif conv.padding_mode != "zeros":
        return None
    elif pad == "valid":
        pad = 0
    elif pad == "same":  # stride 1; PyTorch puts the odd pixel at the bottom/right
        (th, tw) = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=False)]
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
    for xs, ys in zip(x.split(chunk), y_small.split(chunk), strict=False):
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
