"""Channel groups: Torch-Pruning narrows a CNN, and the records say which entries of each tensor stayed.

Torch-Pruning's dependency graph (DepGraph, Fang et al. 2023) finds the channels that must change
together; `narrow` lets it remove all but the first of every group and reads back, from a tagged
float64 copy, which target indices each narrowed tensor kept. `check_exact` grows the result back
(`modelsurgery.width.widen_state`) and refuses a narrowing that no longer means what the layer did.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn

from .errors import UnsupportedLayerError, first_line
from .plan import ChannelDim
from .width import index_runs, widen_state

__all__ = ["narrow", "check_exact", "output_layers", "PRUNE_LIMIT_S"]

PRUNE_LIMIT_S = 240     # Torch-Pruning needs seconds for most models; some graphs never finish
_BASE = 2.0 ** 21       # a tag holds (row index) * _BASE + (column index), exact in float64
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


class _FirstChannels:
    """Torch-Pruning importance: earlier channels matter more, so every group keeps its first ones."""

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        return -torch.arange(len(group[0].idxs), dtype=torch.float32)


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose outputs leave the network (the classifier), which keep their outputs."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, (tuple, list)) else out
    width = out.shape[1] if out.ndim > 1 else out.shape[0]
    last = [m for m in order if (getattr(m, "out_features", None) or getattr(m, "out_channels", None)) == width]
    return last[-1:]


def narrow(model: nn.Module, width: float, example: torch.Tensor, *, record: bool = True) -> list[ChannelDim]:
    """Narrow `model` in place to `width` of its channels; return which entries of each tensor it kept.

    The classifier keeps its outputs and the network its input channels. The records come from a
    float64 copy whose every entry holds its own (row, column) index: pruned alongside the model,
    its surviving values are the kept indices, whatever Torch-Pruning did to get there. With
    `record` False only the model is narrowed (the choices are deterministic) and [] is returned.

    Raises:
        UnsupportedLayerError: Torch-Pruning cannot narrow the model, or narrowed a dimension
            other than a layer's outputs or inputs.
    """
    if any(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in model.modules()):
        raise UnsupportedLayerError("width shrinking does not support transposed convs. Hint: pass --width 1")
    full = {k: v.shape for k, v in model.state_dict().items()}
    tagged = _tag(copy.deepcopy(model).double().eval()) if record else None
    _prune(model, width, example)
    _check_runs(model, example)
    if tagged is None:
        return []
    _prune(tagged, width, example.double())
    return _records(model, tagged, full)


def _prune(net: nn.Module, width: float, example: torch.Tensor) -> None:
    try:
        import torch_pruning as tp
    except ImportError:  # pragma: no cover - a dependency
        raise UnsupportedLayerError("width shrinking needs torch-pruning. Hint: pip install torch-pruning") from None
    example = example.to(next(net.parameters()).dtype)
    try:
        with warnings.catch_warnings(), _time_limit(PRUNE_LIMIT_S), torch.enable_grad():   # DepGraph traces autograd
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(net, example, importance=_FirstChannels(), pruning_ratio=1.0 - width,
                                          ignored_layers=output_layers(net, example))
            pruner.step()
    except _TimeUp:
        raise UnsupportedLayerError(f"torch-pruning did not finish grouping this model's channels in {PRUNE_LIMIT_S} "
                                    "s (seen with timm's RexNet, whose residual adds cover part of the channels). "
                                    "Hint: pass --width 1 to shrink kernels and depth only") from None
    except Exception as err:  # Torch-Pruning raises many kinds; all mean the same to the user
        raise UnsupportedLayerError(f"torch-pruning cannot narrow this model ({first_line(err, 160)}). "
                                    "Hint: pass --width 1 to shrink kernels and depth only") from None


class _TimeUp(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    """Raise `_TimeUp` in the main thread after `seconds` (no limit elsewhere, or without SIGALRM)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise _TimeUp

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """The narrowed network must still run: a layer that splits channels by fixed sizes (timm's mixed
    kernel convs) is not among Torch-Pruning's groups, and breaks. The error names the innermost
    module that was running."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(m, args) -> None:
        stack.append(names[m])

    def leave(m, args, out) -> None:
        stack.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in model.modules()]
    hooks += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(example.to(next(model.parameters()).dtype))
    except Exception as err:  # any op may reject the narrowed shapes; all mean the same to the user
        where = f"{stack[-1]} ({type(model.get_submodule(stack[-1])).__name__})" if stack and stack[-1] else "the model"
        raise UnsupportedLayerError(f"{where} cannot be narrowed: it splits or reshapes its channels in fixed sizes "
                                    f"that torch-pruning's channel groups do not follow ({first_line(err, 80)}). "
                                    "Hint: pass --width 1 to shrink kernels and depth only") from None
    finally:
        for h in hooks:
            h.remove()


def _tag(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for t in model.state_dict().values():
            if not t.is_floating_point() or t.ndim == 0:
                continue
            tag = torch.arange(t.shape[0], dtype=torch.float64).view(-1, *[1] * (t.ndim - 1)) * _BASE
            if t.ndim >= 2:
                tag = tag + torch.arange(t.shape[1], dtype=torch.float64).view(1, -1, *[1] * (t.ndim - 2))
            t.copy_(tag.expand_as(t))
    return model


def _records(model: nn.Module, tagged: nn.Module, full: Mapping[str, torch.Size]) -> list[ChannelDim]:
    modules = dict(model.named_modules())
    out = []
    for key, t in tagged.state_dict().items():
        shape = full[key]
        if tuple(t.shape) == tuple(shape):
            continue
        changed = [d for d in range(t.ndim) if t.shape[d] != shape[d]]
        if any(d > 1 for d in changed) or not t.is_floating_point():
            raise UnsupportedLayerError(f"{key}: torch-pruning narrowed dimension {changed} of {tuple(shape)}; only a "
                                        "layer's outputs (0) and inputs (1) can grow back. Hint: pass --width 1")
        flat = t.reshape(t.shape[0], -1)[:, 0] if t.ndim > 1 else t
        for d in changed:
            idx = (flat // _BASE) if d == 0 else (t.reshape(t.shape[0], t.shape[1], -1)[0, :, 0] % _BASE)
            owner = modules.get(key.rsplit(".", 1)[0]) if "." in key else model
            out.append(ChannelDim(key, d, int(shape[d]), index_runs([int(i) for i in idx.tolist()]),
                                  _role(owner, key.rsplit(".", 1)[-1], d, t.ndim)))
    return out


def _role(owner: nn.Module | None, leaf: str, dim: int, ndim: int) -> str:
    if dim == 1:
        return "in"
    if isinstance(owner, _NORMS):
        return "scale" if leaf in ("weight", "running_var") else "shift"
    if isinstance(owner, (nn.Conv2d, nn.Linear, nn.Conv1d)) and leaf == "bias":
        return "bias"
    return "out" if ndim > 1 else "vector"


def check_exact(full: nn.Module, narrowed: nn.Module, records: list[ChannelDim], example: torch.Tensor) -> None:
    """Grow `narrowed` back into `full`'s shapes and check that it computes what `narrowed` does.

    A layer that reshapes its channels into parts (selective-kernel attention's paths, a channel
    shuffle) runs after Torch-Pruning narrows it, but no longer means what it did; the grown
    network then differs. Net2Net at width 1/2 is exact through any norm; otherwise Liu's
    Gaussian init is, where norms are per channel (the check is skipped where they are not).

    Raises:
        UnsupportedLayerError: naming the first layer whose output differs.
    """
    half = all(r.size == 2 * sum(b - a for a, b in r.kept) for r in records)
    if not half and any(isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for m in full.modules()):
        return
    big = copy.deepcopy(full).eval()
    big.load_state_dict(widen_state(narrowed.state_dict(), tuple(records), init="net2net" if half else "gaussian"))
    small_out, big_out = _outputs(narrowed.eval(), example), _outputs(big, example)
    rows = {r.key.rsplit(".", 1)[0]: r for r in records if r.dim == 0 and r.key.endswith(".weight")}
    for name, a in small_out.items():
        b = big_out.get(name)
        if b is None or b.ndim < 2 or a.ndim != b.ndim:
            continue
        if a.shape[1] != b.shape[1]:   # compare the kept channels where the layer's own record says which
            keep = rows[name].indices() if name in rows else []
            if len(keep) != a.shape[1] or b.shape[1] <= max(keep):
                continue
            b = b[:, keep]
        if a.shape == b.shape and float((a - b).abs().max()) > 1e-4 * (1 + float(a.abs().max())):
            raise UnsupportedLayerError(f"{name} ({type(narrowed.get_submodule(name)).__name__}) cannot be narrowed: "
                                        "it rearranges its channels in a way torch-pruning's groups do not follow, so "
                                        "the narrowed network would not grow back into the same function. Hint: pass "
                                        "--width 1 to shrink kernels and depth only")


def _outputs(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named module's output tensor, in the order they ran."""
    outs: dict[str, torch.Tensor] = {}
    names = {m: n for n, m in model.named_modules() if n}

    def keep(m, args, out) -> None:
        if isinstance(out, torch.Tensor) and names[m] not in outs:
            outs[names[m]] = out.detach().double()

    hooks = [m.register_forward_hook(keep) for m in names]
    try:
        with torch.no_grad():
            model(example.to(next(model.parameters()).dtype))
    finally:
        for h in hooks:
            h.remove()
    return outs
