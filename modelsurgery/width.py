"""Width: narrow every group of channels of a CNN, and widen a state_dict back with its function kept.

Channels that must change together form groups: a residual add ties every block that writes into
its stream, a concatenation splits its consumers' inputs into segments, a depthwise conv ties its
input to its output, a norm follows its conv, squeeze-excitation ties its gate to the channels it
scales. Torch-Pruning's dependency graph (DepGraph, Fang et al. 2023) builds exactly these groups
from a traced forward pass; `modelsurgery.channel_groups.narrow` lets it remove channels and
records which ones survived. This module converts state_dicts with those records.

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

import math
from collections.abc import Mapping

import torch

from .constants import DEFAULT_WIDEN_INIT, DEFAULT_WIDEN_STD, WIDEN_INITS
from .errors import ConversionError, PlanError
from .plan import ChannelDim

__all__ = ["narrow_state", "widen_state", "check_widen", "index_runs"]


def index_runs(indices: list[int]) -> tuple[tuple[int, int], ...]:
    """[0, 1, 2, 5, 6] -> ((0, 3), (5, 7)): indices as (start, stop) runs, in order."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return tuple((a, b) for a, b in runs)


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
    # On the CPU in float64 (exact copies and splits), whatever device the tensor (a momentum buffer) is on.
    work = small.detach().cpu().to(torch.float64 if small.is_floating_point() else small.dtype)
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
    return big.to(device=small.device, dtype=small.dtype)


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
