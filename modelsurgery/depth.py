"""Depth: drop repeated blocks of each stage, and make new ones that have no effect when growing back.

Liu et al. 2016, §IV-E, add layers "initialised to have no effect"; Net2Net's deeper operator
(Chen et al. 2016) does the same. A residual block whose last norm scale (or the layer that ends
its branch) is zero returns its input unchanged: timm's `zero_init_last` trick. A stage is a
`Sequential` or `ModuleList` of blocks; a block can go when it keeps its input's shape (no stride,
no change of channels) and a zeroed branch makes it an identity on the inputs the network really
gives it, which `find_droppable` checks numerically. The first block of every stage stays.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from .errors import UnsupportedLayerError
from .plan import BlockSite

__all__ = ["drop_plan", "drop_blocks", "new_blocks"]


def _containers(model: nn.Module) -> list[list[tuple[str, nn.Module]]]:
    """The blocks (children with layers of their own) of every Sequential, ModuleList and ModuleDict,
    and of any module whose blocks are all of one class (timm's RegNet stages name theirs b1, b2, ...)."""
    out = []
    for name, m in model.named_modules():
        kids = [(f"{name}.{k}" if name else k, c) for k, c in m.named_children()]
        blocks = [(n, c) for n, c in kids if any(isinstance(x, nn.Conv2d) for x in c.modules()) and list(c.children())]
        listing = isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
        if len(blocks) >= 2 and (listing or len({type(c) for _, c in blocks}) == 1):
            out.append(blocks)
    return out


def _stages(containers, seen: dict[str, tuple]) -> list[list[tuple[str, nn.Module]]]:
    """Each container's blocks cut into stages: a stage starts at a block that changes its input's shape."""
    stages = []
    for blocks in containers:
        stage: list[tuple[str, nn.Module]] = []
        for name, block in blocks:
            x, y = seen.get(name, (None, None))
            keeps = x is not None and y is not None and x.shape == y.shape
            if stage and not keeps:
                stages.append(stage)
                stage = []
            stage.append((name, block))
        stages.append(stage)
    return [st for st in stages if len(st) >= 2]


def _inputs(model: nn.Module, names: list[str], example: torch.Tensor) -> dict[str, tuple]:
    """The (input, output) each named block sees in one forward pass of a train-mode copy.

    Train mode, so that BatchNorm normalises with the batch's statistics: in eval mode a fresh
    network's activations can shrink towards zero, where any block looks like an identity.
    """
    model = copy.deepcopy(model).train()
    seen: dict[str, tuple] = {}
    hooks = []
    for n in names:
        def hook(m, args, out, n=n):
            if n not in seen and len(args) == 1 and isinstance(args[0], torch.Tensor):
                seen[n] = (args[0].detach().clone(), out.detach().clone() if isinstance(out, torch.Tensor) else None)
        hooks.append(model.get_submodule(n).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _zero_candidates(block: nn.Module, x: torch.Tensor) -> list[tuple[str, ...]]:
    """Keys to zero, most likely first: the parametric layers in reverse order of execution."""
    order: list[str] = []
    names = {m: n for n, m in block.named_modules()}
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(names[m])) for m in block.modules()
             if m is not block and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            block(x)
    finally:
        for h in hooks:
            h.remove()
    direct = [(n,) for n, _ in block.named_parameters(recurse=False)]   # a layer scale held by the block
    layers = [tuple(f"{n}.{p}" for p, _ in block.get_submodule(n).named_parameters(recurse=False))
              for n in reversed(list(dict.fromkeys(order)))]
    return direct + layers


def _identity_keys(block: nn.Module, x: torch.Tensor) -> tuple[str, ...] | None:
    """The first candidate whose zeroing makes `block` return `x`, or None."""
    for keys in _zero_candidates(block, x):
        trial = copy.deepcopy(block).eval()
        with torch.no_grad():
            params = dict(trial.named_parameters())
            for k in keys:
                params[k].zero_()
            y = trial(x)
        if float(x.abs().max()) > 0 and isinstance(y, torch.Tensor) and torch.equal(y, x):   # exact: x + 0 == x
            return keys
    return None


def drop_plan(model: nn.Module, depth: float, example: torch.Tensor) -> list[BlockSite]:
    """Which blocks to drop for `depth`, and what grow zeroes to bring each back with no effect.

    Each stage keeps max(1, ceil(n · depth)) of its n blocks where it can: its last blocks go first,
    and a block that changes the shape of its input, or that a zeroed branch does not turn into an
    identity, stays.

    Raises:
        UnsupportedLayerError: no stage of repeated blocks was found, or none of them can be dropped.
    """
    containers = _containers(model)
    if not containers:
        raise UnsupportedLayerError(f"{type(model).__name__} has no stage of repeated blocks (a Sequential, "
                                    "ModuleList or ModuleDict of blocks) to drop. Hint: pass --depth 1")
    seen = _inputs(model, [n for blocks in containers for n, _ in blocks], example)
    stages = _stages(containers, seen)
    if not stages:
        raise UnsupportedLayerError(f"no block of {type(model).__name__} can be dropped: every block changes its "
                                    f"input's shape (e.g. {containers[0][-1][0]}). Hint: pass --depth 1")
    sites: list[BlockSite] = []
    for blocks in stages:
        n_drop = len(blocks) - max(1, math.ceil(len(blocks) * depth - 1e-9))
        for name, block in reversed(blocks[1:]):
            if n_drop <= 0:
                break
            if any(_nested(name, s.name) for s in sites):   # a stage inside a dropped block, or around one
                continue
            keys = _identity_keys(block, seen[name][0])
            if keys is not None:
                sites.append(BlockSite(name, keys))
                n_drop -= 1
    if not sites:
        raise UnsupportedLayerError(f"no block of {type(model).__name__} can be dropped: zeroing no single layer "
                                    f"turns a block into an identity (no residual path, e.g. {stages[0][-1][0]}). "
                                    "Hint: pass --depth 1")
    return sorted(sites, key=lambda s: [int(p) if p.isdigit() else p for p in s.name.split(".")])


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def drop_blocks(model: nn.Module, blocks: tuple[BlockSite, ...] | list[BlockSite]) -> nn.Module:
    """Replace each dropped block by `nn.Identity` in place (the other blocks keep their names)."""
    for site in blocks:
        parent, _, leaf = site.name.rpartition(".")
        container = model.get_submodule(parent) if parent else model
        container._modules[leaf] = nn.Identity()
    return model


def new_blocks(target: nn.Module, blocks: tuple[BlockSite, ...], *, linear: bool = False) -> dict[str, torch.Tensor]:
    """The dropped blocks' tensors for the grown state_dict: `target`'s own init, the branch end zeroed.

    With `linear` (optimizer state) every entry is zero.
    """
    state = target.state_dict()
    out = {}
    for site in blocks:
        prefix = site.name + "."
        zero = {prefix + k for k in site.zero}
        for key, value in state.items():
            if key.startswith(prefix):
                out[key] = torch.zeros_like(value) if linear or key in zero else value.detach().clone()
    return out
