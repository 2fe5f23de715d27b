"""fx tracing with timm's leaf modules and autowrap functions, in eval or train mode.

`trace` gives the GraphModule that the analyses in `modelsurgery.analysis` read; `trace_covering`
also covers layers that run only in train mode (auxiliary classifiers).
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from .errors import UnsupportedLayerError, first_line

__all__ = ["trace", "trace_covering"]


def _timm_leaves() -> tuple[set[type], set]:
    from timm.layers import get_notrace_functions, get_notrace_modules

    return set(get_notrace_modules()), set(get_notrace_functions())


class _Tracer(fx.Tracer):
    """fx tracer that keeps every conv (subclasses too) and timm's no-trace modules as leaves."""

    def __init__(self) -> None:
        leaves, functions = _timm_leaves()
        super().__init__(autowrap_functions=tuple(functions))
        self._leaves = tuple(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Conv2d, nn.Linear, *self._leaves)):
            return True
        return super().is_leaf_module(m, qualname)



def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace `model` with timm's leaf modules and autowrap functions.

    Raises:
        UnsupportedLayerError: the model cannot be traced by torch.fx (data-dependent control flow).
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as err:  # fx raises many types; all mean "not traceable"
        raise UnsupportedLayerError(
            f"{type(model).__name__} cannot be traced by torch.fx ({first_line(err, 160)}). "
            "Hint: modelsurgery needs an fx-traceable CNN; wrap untraceable parts with "
            "`timm.layers.register_notrace_module`") from None
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def trace_covering(model: nn.Module) -> tuple[fx.GraphModule, list[str]]:
    """Trace `model`; if some of its convs and Linears run only in train mode, trace its train mode.

    Auxiliary classifiers (torchvision's GoogLeNet `aux1`/`aux2`, Inception-v3 `AuxLogits`,
    Szegedy et al. 2015, §5) run only when `model.training`, so an eval-mode trace never sees
    them, yet they are part of the state_dict and must fit the pre-train network when it
    trains. The train-mode graph holds them; shapes are still propagated in eval mode.

    Returns:
        The GraphModule and the qualnames of the convs/Linears that only its train mode runs
        (empty when the eval-mode trace already covers them all, or the model is in train mode).

    Example:
        >>> gm, train_only = trace_covering(torchvision.models.googlenet().eval())
        >>> train_only[:2]
        ['aux1.conv.conv', 'aux1.fc1']
    """
    gm = trace(model)
    missing = _uncalled(model, gm)
    if model.training or not missing:
        return gm, []
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        train_gm = trace(model)
    finally:  # the trace shares the model's modules: give every one its own mode back
        for m, mode in modes:
            m.training = mode
    train_gm.training = False
    still = _uncalled(model, train_gm)
    if len(still) == len(missing):
        return gm, []
    return train_gm, sorted(set(missing) - set(still))


def _uncalled(model: nn.Module, gm: fx.GraphModule) -> list[str]:
    """Convs and Linears of `model` that no call_module node of `gm` runs, nor any leaf holding them."""
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}

    def covered(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in called for i in range(1, len(parts) + 1))

    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not covered(name)]
