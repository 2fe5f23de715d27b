"""Graph analysis: shape propagation over an fx trace (`tracing`), conv sites, FC interfaces.

(Formerly `modelsurgery.trace`, a name that said tracing; the tracer is `modelsurgery.tracing`.)

Nothing here mutates the model it is given. `analyze` returns plain data (`Analysis`);
`shrink` turns it into a plan.
"""

from __future__ import annotations

import copy
import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp, _extract_tensor_metadata

from .errors import InputSizeError, SurgeryError, UnsupportedLayerError, first_line
from .layers import fit_to
from .tracing import trace_covering

__all__ = ["ConvRecord", "FCRecord", "Analysis", "analyze", "MERGE_FUNCTIONS", "meta_copy", "flatten_source_hw",
           "warn_skipped", "SIZE_ATTRS"]

# Functions and methods that merge feature maps and so need matching spatial shapes.
MERGE_FUNCTIONS = {operator.add, operator.mul, operator.sub, operator.iadd, operator.imul,
                   torch.add, torch.mul, torch.sub, torch.cat, torch.concat, torch.stack}
MERGE_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_"}
# Nodes a flatten -> Linear path may pass through between the 4-D map and the Linear.
_PASS_FUNCTIONS = {torch.flatten, F.dropout, F.relu, torch.relu, F.gelu, F.silu}
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "relu", "relu_"}
_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity, nn.ReLU, nn.GELU, nn.SiLU)
_CONV_LIKE = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class ConvRecord:
    """A conv module as it ran: its qualname and the feature maps it saw (N excluded)."""

    name: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    in_channels: int


@dataclass(frozen=True)
class FCRecord:
    """A flatten -> Linear interface found in the graph."""

    name: str
    kind: str  # "linear" or "conv"
    channels: int
    hw: tuple[int, int]
    pool: str | None = None
    owner: str | None = None


@dataclass
class Analysis:
    """What a traced forward pass at one input size revealed."""

    size: int
    convs: dict[str, ConvRecord] = field(default_factory=dict)  # forward order
    fcs: list[FCRecord] = field(default_factory=list)
    pool_in_hw: dict[str, tuple[int, int]] = field(default_factory=dict)
    functional_convs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    resamples: list[tuple[str, int, int, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    output_shape: tuple[int, ...] = ()
    train_only: list[str] = field(default_factory=list)  # convs/Linears only train mode runs


class _Propagator(ShapeProp):
    """ShapeProp that fits mismatched merges (recording them) instead of failing.

    It records the same `tensor_meta` as ShapeProp, but lets errors propagate as they are
    (ShapeProp prints a traceback first, which is noise for a user's bad input size).
    """

    def __init__(self, gm: fx.GraphModule, fit_merges: bool, ratio: float) -> None:
        super().__init__(gm)
        self.fit_merges = fit_merges
        self.ratio = ratio
        self.resamples: list = []
        self.node: fx.Node | None = None

    def run_node(self, n: fx.Node):
        self.node = n
        if self.fit_merges and _is_merge(n):
            result = self._run_merge(n)
        else:
            result = fx.Interpreter.run_node(self, n)
        if isinstance(result, torch.Tensor):
            n.meta["tensor_meta"] = _extract_tensor_metadata(result)
        return result

    def _run_merge(self, n: fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        is_cat = n.target in (torch.cat, torch.concat, torch.stack)
        tensors = list(args[0]) if is_cat else list(args)
        # (N, C, 1, 1) operands (squeeze-excite gates, layer scales) broadcast; they never need fitting.
        maps = [(i, t) for i, t in enumerate(tensors)
                if isinstance(t, torch.Tensor) and t.dim() == 4 and tuple(t.shape[-2:]) != (1, 1)]
        if len({tuple(t.shape[-2:]) for _, t in maps}) > 1:
            ref_i, ref = maps[_reference(maps, n, self.ratio)]
            for i, t in maps:
                if t.shape[-2:] != ref.shape[-2:]:
                    self.resamples.append((n.name, i, ref_i, tuple(t.shape[-2:]), tuple(ref.shape[-2:])))
                    tensors[i] = fit_to(t, ref)
            args = (tensors, *args[1:]) if is_cat else tuple(tensors)
        return getattr(self, n.op)(n.target, args, kwargs)


def _reference(maps, n: fx.Node, ratio: float) -> int:
    """Index in `maps` of the branch whose size is closest to the target's / ratio."""
    wanted = n.meta.get("target_hw")
    if wanted is None:
        return max(range(len(maps)), key=lambda j: maps[j][1].shape[-2] * maps[j][1].shape[-1])
    goal = (wanted[0] / ratio, wanted[1] / ratio)
    return min(range(len(maps)), key=lambda j: (abs(maps[j][1].shape[-2] - goal[0])
                                               + abs(maps[j][1].shape[-1] - goal[1]),
                                               -maps[j][1].shape[-2]))


def _is_merge(n: fx.Node) -> bool:
    if n.op == "call_function":
        return n.target in MERGE_FUNCTIONS
    return n.op == "call_method" and n.target in MERGE_METHODS


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers live on the meta device (no data)."""
    memo: dict[int, object] = {}
    for t in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def analyze(model: nn.Module, size: int, in_chans: int, *, gm: fx.GraphModule | None = None,
            fit_merges: bool = False, ratio: float = 1.0,
            target_hw: dict[str, tuple[int, int]] | None = None) -> tuple[Analysis, fx.GraphModule]:
    """Trace `model` and propagate a (1, in_chans, size, size) input through it.

    Args:
        model: the network; it is not modified (hooks are removed afterwards).
        size: input height and width.
        in_chans: input channels.
        gm: an existing trace of `model` to reuse; default `trace_covering`'s (train-only heads included).
        fit_merges: fit mismatched merge inputs (pre-train networks) instead of failing.
        ratio: target size / this size, used to choose which merge input is the reference.
        target_hw: node name -> spatial size of the same node in the target network.

    Returns:
        The `Analysis` and the traced GraphModule (with shape metadata on its nodes).

    Raises:
        InputSizeError: a feature map vanishes at this input size.
    """
    analysis = Analysis(size=size)
    if gm is None:
        gm, analysis.train_only = trace_covering(meta_copy(model))
    if target_hw:
        for n in gm.graph.nodes:
            if n.name in target_hw:
                n.meta["target_hw"] = target_hw[n.name]
    handles = _install_hooks(gm, analysis)
    was_training = gm.training
    gm.eval()
    prop = _Propagator(gm, fit_merges, ratio)
    try:
        # Meta tensors carry shapes without computing: propagation costs no convolutions.
        device = next(iter(gm.parameters()), torch.empty(0)).device
        with torch.no_grad():
            out = prop.propagate(torch.zeros(1, in_chans, size, size, device=device))
    except SurgeryError:
        raise
    except Exception as err:  # any op may reject a shape: report where, with the size
        raise _size_error(err, size, prop.node) from None
    finally:
        for h in handles:
            h.remove()
        gm.train(was_training)
    analysis.resamples = prop.resamples
    analysis.output_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
    analysis.fcs = _find_fcs(gm, analysis)
    analysis.functional_convs = [n.name for n in gm.graph.nodes
                                 if n.op == "call_function" and n.target in (F.conv2d, torch.conv2d)]
    return analysis, gm


_VANISHED = ("can't be greater than actual input size", "Output size is too small", "non-positive",
             "Given input size")


def _size_error(err: Exception, size: int, node: fx.Node | None) -> Exception:
    """Turn a failure while propagating into one line naming the input size and the node."""
    msg = first_line(err, 200)
    where = f" at {node.target if node.op == 'call_module' else node.name!r}" if node is not None else ""
    if isinstance(err, AssertionError):
        return UnsupportedLayerError(
            f"the network asserts a fixed feature-map size{where}, so it cannot run at {size}px "
            "(attention with fixed position embeddings?). Hint: pass --input-size equal to the target size "
            "to shrink kernels only")
    if any(s in msg for s in _VANISHED):
        return InputSizeError(f"input size {size} is too small: a feature map vanishes{where} ({msg}). "
                              "Hint: pass a larger --input-size")
    return InputSizeError(f"the network fails at input size {size}{where} ({msg}). Hint: pass another "
                          "--input-size, e.g. a multiple of 32 (window and space-to-depth layers need one)")


def _install_hooks(gm: nn.Module, analysis: Analysis) -> list:
    handles = []
    for name, m in gm.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(_conv_hook(name, analysis)))
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            handles.append(m.register_forward_hook(_pool_hook(name, analysis)))
        elif isinstance(m, _CONV_LIKE) and name not in analysis.skipped:
            analysis.skipped.append(name)
    return handles


def _conv_hook(name: str, analysis: Analysis):
    def hook(module, inputs, output):
        x = inputs[0]
        if name not in analysis.convs:
            analysis.convs[name] = ConvRecord(name, tuple(x.shape[-2:]), tuple(output.shape[-2:]), x.shape[1])
    return hook


def _pool_hook(name: str, analysis: Analysis):
    def hook(module, inputs, output):
        analysis.pool_in_hw.setdefault(name, tuple(inputs[0].shape[-2:]))
    return hook


def _find_fcs(gm: fx.GraphModule, analysis: Analysis) -> list[FCRecord]:
    modules = dict(gm.named_modules())
    fcs = []
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        m = modules[n.target]
        if isinstance(m, nn.Linear):
            rec = _linear_interface(n, m, modules)
            if rec:
                fcs.append(rec)
    for rec in analysis.convs.values():
        conv = modules[rec.name]
        k = tuple(conv.weight.shape[-2:]) if conv.weight.dim() == 4 else None
        # A conv spanning its whole input map (timm vgg ConvMlp.fc1: 7x7 on 7x7) is an FC layer.
        if k == rec.in_hw and k != (1, 1) and rec.out_hw == (1, 1) and conv.padding in ((0, 0), "valid"):
            parent = modules[rec.name.rpartition(".")[0]] if "." in rec.name else None
            owner = rec.name.rpartition(".")[0] if _size_attr(parent, k[0]) else None
            fcs.append(FCRecord(rec.name, "conv", rec.in_channels, rec.in_hw, owner=owner))
    return fcs


SIZE_ATTRS = ("input_kernel_size", "input_size")


def _size_attr(module: nn.Module | None, value: int) -> str | None:
    """The attribute of a head module that pins its input map size (timm ConvMlp), if any."""
    for attr in SIZE_ATTRS:
        if module is not None and getattr(module, attr, None) == value:
            return attr
    return None


def _linear_interface(node: fx.Node, linear: nn.Linear, modules: dict) -> FCRecord | None:
    """Walk back from a Linear through flatten/view/dropout to a 4-D map with H*W > 1."""
    cur, flattened = node.args[0], False
    for _ in range(16):
        if not isinstance(cur, fx.Node):
            return None
        meta = cur.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        if shape is not None and len(shape) == 4:
            c, h, w = shape[1:]
            if not flattened or c * h * w != linear.in_features:
                return None
            pool = None
            adaptive = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
            if cur.op == "call_module" and isinstance(modules[cur.target], adaptive):
                pool = cur.target
            if h * w == 1:  # a global pool head: the Linear sees C inputs at every size
                return None
            return FCRecord(node.target, "linear", c, (h, w), pool=pool)
        if _is_pass(cur, modules):
            flattened = flattened or _is_flatten(cur, modules)
            cur = cur.args[0] if cur.args else None
            continue
        return None
    return None


def _is_pass(n: fx.Node, modules: dict) -> bool:
    if n.op == "call_function":
        return n.target in _PASS_FUNCTIONS
    if n.op == "call_method":
        return n.target in _PASS_METHODS
    if n.op == "call_module":
        return isinstance(modules[n.target], _PASS_MODULES)
    return False


def _is_flatten(n: fx.Node, modules: dict) -> bool:
    if n.op == "call_function":
        return n.target is torch.flatten
    if n.op == "call_method":
        return n.target in ("flatten", "view", "reshape")
    return n.op == "call_module" and isinstance(modules[n.target], nn.Flatten)


def flatten_source_hw(gm: fx.GraphModule, name: str) -> tuple[int, int] | None:
    """H×W of the last 4-D map on the path into the module `name` (shape-propagated `gm`), or None."""
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
    cur = node.args[0]
    while isinstance(cur, fx.Node):
        meta = cur.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape") and len(meta.shape) == 4:
            return tuple(meta.shape[-2:])
        cur = cur.args[0] if cur.args else None
    return None


def warn_skipped(analysis: Analysis) -> None:
    """Warn about layers shrink leaves alone: Conv1d/3d, transposed and functional convs."""
    if analysis.skipped:
        warnings.warn(f"not converted (kept as they are): {', '.join(analysis.skipped)}", stacklevel=3)
    if analysis.functional_convs:
        warnings.warn("functional conv2d calls keep their kernels: "
                      f"{', '.join(analysis.functional_convs)}", stacklevel=3)
