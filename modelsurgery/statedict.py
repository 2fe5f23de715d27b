"""state_dict helpers shared by grow and the checkpoint code: module versions.

`nn.Module.state_dict()` returns an OrderedDict whose `_metadata` holds each module's version;
a few modules need it to load (torchvision's MNASNet), and safetensors files keep none. Imports
only torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn

__all__ = ["with_versions"]

def with_versions(state: Mapping[str, torch.Tensor], *sources) -> OrderedDict:
    """`state` as an OrderedDict with module versions (`_metadata`), as `nn.Module.state_dict()` gives.

    A few modules refuse a state_dict without their version (torchvision's MNASNet raises
    ValueError), and safetensors files, like any plain dict, carry none. `state`'s own versions
    are kept; else those of the first source that has them: a state_dict, or a module built
    from the same code (its own versions).

    Example:
        >>> net.load_state_dict(with_versions(load_file("big.safetensors"), net))
    """
    out = OrderedDict(state)
    for source in (state, *sources):
        versions = getattr(source.state_dict() if isinstance(source, nn.Module) else source, "_metadata", None)
        if versions is not None:
            out._metadata = versions
            break
    return out
