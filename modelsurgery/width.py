"""Width: narrow every group of channels of a CNN, and widen a state_dict back with its function kept.

Channels that must change together form groups: a residual add ties every block that writes into
its stream, a concatenation splits its consumers' inputs into segments, a depthwise conv ties its
input to its output, a norm follows its conv, squeeze-excitation ties its gate to the channels it
scales. Torch-Pruning's dependency graph (DepGraph, Fang et al. 2023) builds exactly these groups
from a traced forward pass; `narrow` lets it remove channels and reads back which ones survived.

Every group keeps its first channels (in a grouped conv, the first of each conv group), as Liu et
al. 2016, §III-C, append the new maps after the existing ones when a network grows. `widen_state`
is the inverse (Liu et al. 2016, §III-C; Chen et al. 2016, Net2WiderNet):

- "gaussian": new filters N(0, σ²), and every consumer's weights on the new channels zero;
- "zeros": new filters zero, and every consumer's weights on them N(0, σ²), so that they learn;
- "flip": new filters are copies of existing ones rotated by 180° (a copy for 1×1 and Linear);
  consumers' weights on them zero;
- "net2net": new channels replicate existing ones (filters, biases and norm statistics copied),
  and every consumer's weights on a replicated channel are divided by its number of copies.

All four keep the network's function exactly where channels meet only through per-channel norms
(BatchNorm) and activations that map 0 to 0. A norm that mixes channels (LayerNorm over channels,
GroupNorm) sees the new channels: there only "net2net" with a width factor of exactly 1/2 keeps
it, since every channel then has one copy and the channel mean and variance do not move.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn

from .constants import DEFAULT_WIDEN_INIT, DEFAULT_WIDEN_STD, WIDEN_INITS
from .errors import ConversionError, PlanError, UnsupportedLayerError, first_line
from .plan import ChannelDim

__all__ = ["narrow", "narrow_state", "widen_state", "check_widen", "check_exact", "output_layers", "index_runs"]

PRUNE_LIMIT_S = 240     # Torch-Pruning needs seconds for most models; some graphs never finish
_BASE = 2.0 ** 21          # a tag holds (row index) * _BASE + (column index), exact in float64
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


def index_runs(indices: list[int]) -> tuple[tuple[int, int], ...]:
    """[0, 1, 2, 5, 6] -> ((0, 3), (5, 7)): indices as (start, stop) runs, in order."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return tuple((a, b) for a, b in runs)


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


def narrow_state(state: Mapping[str, torch.Tensor], channels: tuple[ChannelDim, ...]) -> dict[str, torch.Tensor]:
    """Keep the recorded entries of each narrowed tensor (a target state_dict -> the narrow one)."""
    out = dict(state)
    for rec in channels:
        if rec.key not in out:
            raise PlanError(f"the plan narrows {rec.key!r}, which the state_dict lacks. Hint: was it saved from "
                            "a different model?")
        t = out[rec.key]
        if t.shape[rec.dim] != rec.size:
            raise PlanError(f"{rec.key}: dimension {rec.dim} is {t.shape[rec.dim]}, the plan says {rec.size}")
        out[rec.key] = t.index_select(rec.dim, torch.tensor(rec.indices(), device=t.device))
    return out


def _sources(rec: ChannelDim) -> torch.Tensor:
    """For every target index, the kept index whose channel it copies (itself where kept).

    A new index copies within the run of kept indices before it, round robin, so that every tensor
    that holds a group's channels (a conv's outputs, its norm, a consumer's inputs, each segment
    of a concatenation) makes the same copies.
    """
    src = list(range(rec.size))
    runs = list(rec.kept)
    for i, (start, stop) in enumerate(runs):
        end = runs[i + 1][0] if i + 1 < len(runs) else rec.size
        for q in range(stop, end):
            src[q] = start + (q - start) % (stop - start)
    first = runs[0][0] if runs else 0
    for q in range(first):   # new indices before the first kept one copy the first run
        src[q] = runs[0][0] + q % (runs[0][1] - runs[0][0])
    return torch.tensor(src)


def check_widen(init: str, std: float) -> None:
    """Raise `ConversionError` for an unknown init or a σ that is not a finite positive number."""
    if init not in WIDEN_INITS:
        raise ConversionError(f"unknown widen init {init!r}. Hint: use one of {', '.join(WIDEN_INITS)}")
    if isinstance(std, bool) or not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ConversionError(f"widen std must be a positive number, got {std!r}. Hint: e.g. --widen-std 0.01")


def widen_state(state: Mapping[str, torch.Tensor], channels: tuple[ChannelDim, ...], *,
                init: str = DEFAULT_WIDEN_INIT, std: float = DEFAULT_WIDEN_STD, seed: int = 0,
                linear: bool = False) -> dict[str, torch.Tensor]:
    """Widen a narrow state_dict back to the target's channel counts (see the module's docstring).

    Args:
        state: the narrow network's tensors.
        channels: the plan's records.
        init: "gaussian", "zeros", "flip" or "net2net".
        std: σ of the Gaussian draws ("gaussian" and "zeros").
        seed: seed of the Gaussian draws.
        linear: the linear part of the map only, for optimizer state (momentum): new entries are
            zero, and "net2net" copies and splits them as it does the weights.

    Raises:
        ConversionError: an unknown init, or a σ that is not a finite positive number.
    """
    check_widen(init, std)
    gen = torch.Generator().manual_seed(seed)
    by_key: dict[str, dict[int, ChannelDim]] = {}
    for rec in channels:
        by_key.setdefault(rec.key, {})[rec.dim] = rec
    out = dict(state)
    for key, dims in by_key.items():
        if key not in out and linear:   # optimizer state: parameters only, no running statistics
            continue
        if key not in out:
            raise PlanError(f"the plan widens {key!r}, which the state_dict lacks. Hint: was it saved from a "
                            "different model or plan?")
        out[key] = _widen(out[key], dims, init, std, gen, linear, key)
    return out


def _widen(small: torch.Tensor, dims: dict[int, ChannelDim], init: str, std: float, gen: torch.Generator,
           linear: bool, key: str) -> torch.Tensor:
    shape = list(small.shape)
    for d, rec in dims.items():
        if small.shape[d] != sum(b - a for a, b in rec.kept):
            raise PlanError(f"{key}: dimension {d} is {small.shape[d]}, the plan kept "
                            f"{sum(b - a for a, b in rec.kept)}. Hint: was it saved from a different plan?")
        shape[d] = rec.size
    work = small.detach().to(torch.float64 if small.is_floating_point() else small.dtype)
    big = torch.zeros(shape, dtype=work.dtype)
    kept = [torch.tensor(dims[d].indices()) if d in dims else torch.arange(small.shape[d])
            for d in range(min(2, small.ndim))]
    big[_grid(kept, small.ndim)] = work
    rows = dims.get(0)
    cols = dims.get(1)
    new_rows = _new(rows)
    new_cols = _new(cols)
    role = rows.role if rows is not None else "out"
    if rows is not None and len(new_rows):
        src = _sources(rows)[new_rows]
        if init == "net2net":
            big[new_rows] = big[src]
        elif linear:
            pass
        elif role == "scale":
            big[new_rows] = 1.0
        elif role == "out" and init == "gaussian":
            big[new_rows] = _randn((len(new_rows), *shape[1:]), std, gen)
        elif role == "out" and init == "flip":
            copied = big[src]
            big[new_rows] = copied.flip((-2, -1)) if copied.ndim == 4 else copied
        elif role in ("bias", "vector") and init == "flip":
            big[new_rows] = big[src]
    if cols is not None and len(new_cols):
        old_rows = kept[0] if rows is not None else torch.arange(shape[0])
        if init == "net2net":
            src = _sources(cols)
            counts = torch.bincount(src, minlength=cols.size).to(big.dtype)
            big[:] = big[:, src] / counts[src].view(1, -1, *[1] * (big.ndim - 2))
        elif init == "zeros" and not linear:
            draw = _randn((len(old_rows), len(new_cols), *shape[2:]), std, gen)
            big[old_rows.view(-1, 1), new_cols.view(1, -1)] = draw
    return big.to(small.dtype)


def _grid(kept: list[torch.Tensor], ndim: int):
    if ndim == 1:
        return (kept[0],)
    return (kept[0].view(-1, 1), kept[1].view(1, -1))


def _new(rec: ChannelDim | None) -> torch.Tensor:
    if rec is None:
        return torch.zeros(0, dtype=torch.long)
    keep = set(rec.indices())
    return torch.tensor([i for i in range(rec.size) if i not in keep], dtype=torch.long)


def _randn(shape, std: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std
