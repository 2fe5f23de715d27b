"""The surgery plan: the contract between shrink, grow, the checkpoint and the CLI.

A `Plan` is a frozen, versioned record of what shrink decided for one model. It is keyed by
module qualname, which is the same string as the state_dict prefix, so grow can convert a
state_dict with nothing but the plan. `Plan.from_json(p.to_json()) == p` always holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .errors import PlanError

__all__ = ["PLAN_VERSION", "ConvSite", "FCSite", "Resample", "ChannelDim", "BlockSite", "ModelSource", "Plan"]

PLAN_VERSION = 2   # 2: width and depth (`channels`, `blocks`); version-1 plans load unchanged

Pair = tuple[int, int]
Pad4 = tuple[int, int, int, int]  # (left, right, top, bottom), the order of F.pad


@dataclass(frozen=True)
class ConvSite:
    """One spatial conv of the target and what it becomes in the pre-train model.

    Attributes:
        name: module qualname (the state_dict prefix of its `weight`).
        kernel: target kernel (kh, kw).
        small_kernel: pre-train kernel (kh', kw'). Equal to `kernel` when the conv is kept.
        stride: (sh, sw).
        dilation: (dh, dw).
        groups: conv groups; depthwise and grouped convs keep theirs.
        in_channels, out_channels: channel counts.
        padding: target padding as (left, right, top, bottom), or "same"/"valid" strings,
            or "dynamic" for TF-style same padding computed at forward time.
        small_padding: pre-train padding in the same form.
        in_hw, out_hw: target input and output feature-map size at `Plan.target_size`.
        small_in_hw, small_out_hw: the same at `Plan.input_size`.
        reason: why the kernel was kept or how it was mapped ("table", "rule", "patchify",
            "dilated", "1x1", "user").
    """

    name: str
    kernel: Pair
    small_kernel: Pair
    stride: Pair
    dilation: Pair
    groups: int
    in_channels: int
    out_channels: int
    padding: Pad4 | str
    small_padding: Pad4 | str
    in_hw: Pair
    out_hw: Pair
    small_in_hw: Pair
    small_out_hw: Pair
    reason: str = "table"

    @property
    def changed(self) -> bool:
        return tuple(self.kernel) != tuple(self.small_kernel)


@dataclass(frozen=True)
class FCSite:
    """A flatten -> Linear interface (or a conv acting as the first FC layer).

    The Linear (or conv) sees `channels * hw` inputs in the target and
    `channels * small_hw` in the pre-train; its outputs are unchanged.

    Attributes:
        name: qualname of the Linear, or of the conv for `kind == "conv"` (timm vgg ConvMlp.fc1).
        kind: "linear" or "conv".
        channels: C of the feature map that is flattened.
        hw: (H, W) in the target at `Plan.target_size`.
        small_hw: (H', W') in the pre-train at `Plan.input_size`.
        pool: qualname of a fixed-output adaptive pool in front of it whose output size
            scales with the interface (torchvision AlexNet/VGG), else None.
        owner: qualname of a module whose input-size attribute must follow `small_hw`
            (timm vgg ConvMlp's `input_kernel_size`), else None.
        out_features: the layer's outputs (unchanged by shrink).
    """

    name: str
    kind: str
    channels: int
    hw: Pair
    small_hw: Pair
    pool: str | None = None
    owner: str | None = None
    out_features: int = 0


@dataclass(frozen=True)
class Resample:
    """A feature map that is centre-cropped or zero-padded so that an add/mul/cat fits.

    Attributes:
        node: name of the fx node (in the pre-train trace) whose input is fitted.
        arg: index of the fitted input among the node's tensor inputs.
        ref: index of the input whose spatial size it is fitted to.
        from_hw: the fitted input's size at `Plan.input_size`.
        to_hw: the size it is fitted to.
    """

    node: str
    arg: int
    ref: int
    from_hw: Pair
    to_hw: Pair


@dataclass(frozen=True)
class ChannelDim:
    """One dimension of one tensor that shrink narrowed: which of the target's entries it kept.

    Attributes:
        key: the state_dict key (`layer1.0.conv1.weight`).
        dim: 0 (a layer's outputs, or a per-channel vector) or 1 (a layer's inputs; for a grouped
            conv, its inputs within one group).
        size: the target's length of that dimension.
        kept: the kept target indices as (start, stop) runs, in order; the pre-train tensor holds
            exactly these entries, in this order.
        role: how grow fills the entries that are new: "out" (a layer's new filters), "in" (a
            consumer's weights on new channels), "bias", "scale" (a norm's weight or running_var),
            "shift" (a norm's bias or running_mean) or "vector" (any other per-channel tensor).
    """

    key: str
    dim: int
    size: int
    kept: tuple[Pair, ...]
    role: str

    def indices(self) -> list[int]:
        """The kept target indices, in order."""
        return [i for start, stop in self.kept for i in range(start, stop)]


@dataclass(frozen=True)
class BlockSite:
    """A block that shrink dropped (replaced by an identity), and how grow makes it have no effect.

    Attributes:
        name: the block's qualname (`layer3.4`).
        zero: its tensors (keys relative to the block) that grow sets to zero so that the new
            block returns its input unchanged: the last norm of its residual branch, or the layer
            that ends that branch.
    """

    name: str
    zero: tuple[str, ...]


@dataclass(frozen=True)
class ModelSource:
    """How to rebuild the target model.

    Attributes:
        kind: "timm", "torchvision" or "custom" (a module instance the caller must pass again).
        name: the model name, e.g. "resnet34" or "alexnet"; the class name for "custom".
        kwargs: constructor keyword arguments as sorted (key, value) pairs of JSON values.
    """

    kind: str
    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> str:
        """The name as the CLI takes it (`resnet34`, `torchvision:alexnet`)."""
        return f"torchvision:{self.name}" if self.kind == "torchvision" else self.name

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(self.kwargs)


@dataclass(frozen=True)
class Plan:
    """Everything shrink decided about one model; enough to rebuild either form of it.

    Attributes:
        source: how to build the target model.
        input_size: pre-train input size (square images, pixels).
        target_size: target input size (pixels).
        in_chans: input channels.
        convs: one `ConvSite` per spatial conv, in graph order.
        fcs: the FC interfaces.
        resamples: feature maps cropped or padded so that merges fit.
        kernel_map: the kernel map used, as sorted (target, pre-train) pairs.
        even_padding: how even kernels are padded: "alternate" or "bottom-right".
        form: "pretrain" or "target": which network a checkpoint with this plan holds.
        width: the width factor shrink applied (1.0: every channel kept).
        depth: the depth factor shrink applied (1.0: every block kept).
        channels: the narrowed tensor dimensions (`ChannelDim`), empty when `width` is 1.
        blocks: the dropped blocks (`BlockSite`), empty when `depth` is 1.
        versions: library versions at the time of shrink.
        version: the plan format version.
    """

    source: ModelSource
    input_size: int
    target_size: int
    in_chans: int = 3
    convs: tuple[ConvSite, ...] = ()
    fcs: tuple[FCSite, ...] = ()
    resamples: tuple[Resample, ...] = ()
    kernel_map: tuple[Pair, ...] = ()
    even_padding: str = "alternate"
    form: str = "pretrain"
    width: float = 1.0
    depth: float = 1.0
    channels: tuple[ChannelDim, ...] = ()
    blocks: tuple[BlockSite, ...] = ()
    versions: tuple[tuple[str, str], ...] = ()
    version: int = PLAN_VERSION

    def conv(self, name: str) -> ConvSite:
        for site in self.convs:
            if site.name == name:
                return site
        raise KeyError(name)

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        if not isinstance(data, dict):
            raise PlanError(f"plan must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if not isinstance(version, int):
            raise PlanError("plan has no integer 'version'. Hint: re-create it with `msurg shrink`")
        if version > PLAN_VERSION:
            raise PlanError(
                f"plan version {version} is newer than this modelsurgery supports ({PLAN_VERSION}). "
                "Hint: upgrade modelsurgery (`pip install -U modelsurgery`)"
            )
        try:
            return _from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise PlanError(f"malformed plan JSON ({err!r}). Hint: re-create it with `msurg shrink`") from None

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"plan is not valid JSON ({err.msg} at char {err.pos}). "
                            "Hint: re-create it with `msurg shrink`") from None
        return cls.from_dict(data)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _tuplify(obj: Any) -> Any:
    """JSON lists back to tuples, recursively (dataclasses here hold tuples only)."""
    if isinstance(obj, list):
        return tuple(_tuplify(v) for v in obj)
    if isinstance(obj, dict):
        return tuple(sorted((k, _tuplify(v)) for k, v in obj.items()))
    return obj


def _record(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**{k: _tuplify(v) for k, v in data.items()})


def _from_dict(data: dict[str, Any]) -> Plan:
    data = dict(data)
    src = dict(data.pop("source"))
    src["kwargs"] = tuple((str(k), _tuplify(v)) for k, v in src.get("kwargs", ()))
    source = ModelSource(**src)
    convs = tuple(_record(ConvSite, c) for c in data.pop("convs", ()))
    fcs = tuple(_record(FCSite, f) for f in data.pop("fcs", ()))
    resamples = tuple(_record(Resample, r) for r in data.pop("resamples", ()))
    channels = tuple(_record(ChannelDim, c) for c in data.pop("channels", ()))
    blocks = tuple(_record(BlockSite, b) for b in data.pop("blocks", ()))
    rest = {k: _tuplify(v) for k, v in data.items()}
    names = {f.name for f in dataclasses.fields(Plan)}
    unknown = set(rest) - names
    if unknown:
        raise ValueError(f"unknown Plan fields {sorted(unknown)}")
    return Plan(source=source, convs=convs, fcs=fcs, resamples=resamples, channels=channels, blocks=blocks, **rest)
