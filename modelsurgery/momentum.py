"""SGD momentum carried across a grow: the buffers go through the same linear map as the weights.

A grow replaces every parameter, so a fresh optimizer starts its momentum from zero and the
first steps after the grow lose the direction the small network was moving in. Growth
operators for transformers carry the optimizer state through the growth instead (Shen et al.
2022, "Staged Training for Transformer Language Models": Adam's first moment goes through the
same map as the weights). For SGD the map is linear (kernel upscaling, the FC interface's
resize; every other tensor is copied), so converting each momentum buffer m with the weights'
map A, m_big = A·m_small, makes the momentum part of the first update after the grow exactly
the grown image of the small network's next update.

`carry_momentum` works on any pair of models and optimizers (a user's own loop); the Trainer
calls it from `replace_model(..., convert_momentum=...)`, and `KernelRescaling.convert_state`
is the map of its grow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["carry_momentum", "momentum_buffers"]

Converter = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]


def momentum_buffers(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """`optimizer`'s SGD momentum buffers of `model`'s parameters, by parameter name (those it has).

    Example:
        >>> bufs = momentum_buffers(model, opt)       # {} before the first step
    """
    names = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None and id(p) in names:
                out[names[id(p)]] = buf
    return out


@torch.no_grad()
def carry_momentum(old_model: nn.Module, old_optimizer: torch.optim.Optimizer, new_model: nn.Module,
                   new_optimizer: torch.optim.Optimizer, convert: Converter | None = None) -> torch.optim.Optimizer:
    """Give `new_optimizer` the momentum of `old_optimizer`, mapped by parameter name through `convert`.

    Args:
        old_model, old_optimizer: the network before the grow and its (stepped) optimizer.
        new_model, new_optimizer: the grown network and its fresh optimizer (changed in place).
        convert: the weights' linear map, name → tensor in, name → tensor out (e.g.
            `KernelRescaling.convert_state`). It receives every parameter of `old_model`, with
            zeros where there is no buffer yet, so that it sees the whole state it converts.
            None: buffers are copied as they are.

    A parameter of `new_model` gets a buffer only where `old_optimizer` had one for the
    parameter of the same name and the converted buffer has its shape; every other one starts
    from zero, as in a fresh optimizer.

    Returns:
        `new_optimizer`.

    Example:
        >>> big = kr.grow(small, calibration=batches)
        >>> opt = carry_momentum(small, opt, big, torch.optim.SGD(big.parameters(), lr=0.05, momentum=0.9),
        ...                      kr.convert_state)
    """
    buffers = momentum_buffers(old_model, old_optimizer)
    if not buffers:
        return new_optimizer
    # Fresh copies: a buffer loaded from a checkpoint may sit in memory aligned otherwise, and BLAS
    # kernels can round differently on it; a resumed run must convert exactly as an uninterrupted one.
    full = {name: buffers[name].detach().clone(memory_format=torch.contiguous_format) if name in buffers
            else torch.zeros_like(p, memory_format=torch.contiguous_format) for name, p in old_model.named_parameters()}
    converted = convert(full) if convert is not None else full
    for name, p in new_model.named_parameters():
        m = converted.get(name)
        if name in buffers and m is not None and tuple(m.shape) == tuple(p.shape):
            new_optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(m)
    return new_optimizer
