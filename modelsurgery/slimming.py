"""Width and depth of a plan, applied to a target network: the factors' checks and the narrowed copy.

`plan_shrink` decides which blocks go (`depth.drop_plan`) and which channels stay (`width.narrow`);
`narrowed` repeats both from the plan alone, as `apply_plan` needs, and checks that Torch-Pruning
made the same choices.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .channel_groups import narrow
from .depth import drop_blocks
from .errors import FactorError, PlanError
from .plan import Plan

__all__ = ["check_factor", "example_input", "narrowed"]


def check_factor(name: str, value) -> float:
    """A width or depth factor as a float in (0, 1].

    Raises:
        FactorError: anything else.
    """
    try:
        factor = float("nan") if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        factor = float("nan")
    if not 0 < factor <= 1:
        raise FactorError(f"--{name} {value!r} is not in (0, 1]: it is the fraction of the network's "
                          f"{'channels' if name == 'width' else 'blocks'} to keep. Hint: e.g. --{name} 0.5")
    return factor


def example_input(in_chans: int, size: int) -> torch.Tensor:
    """The input that width and depth decisions trace: two images (BatchNorm), fixed noise."""
    return torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(0))


def narrowed(model: nn.Module, plan: Plan) -> nn.Module:
    """A copy of `model` with the plan's blocks dropped and its channels narrowed (kernels as the target's).

    Raises:
        PlanError: the installed Torch-Pruning narrows the model differently from the plan.
    """
    net = copy.deepcopy(model)
    if plan.blocks:
        drop_blocks(net, plan.blocks)
    if plan.channels:
        narrow(net, plan.width, example_input(plan.in_chans, plan.target_size), record=False)
        state = net.state_dict()
        wrong = [f"{r.key}[{r.dim}]" for r in plan.channels
                 if r.key not in state or state[r.key].shape[r.dim] != sum(b - a for a, b in r.kept)]
        if wrong:
            raise PlanError(f"the installed torch-pruning narrows this model differently from the plan "
                            f"({', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''}). Hint: re-create the plan "
                            "with `msurg shrink`, or install the torch-pruning it was made with")
    return net
