"""The file layer behind the CLI: shrink, grow and export, file to file.

Each operation checks its output first, converts, writes atomically, and returns a `FileReport`
that `msurg` formats (`cli.format_report`); none of them prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import (META_PLAN, check_output, load, read_plan, read_state_dict, save, verify_state_dict,
                         warn_nonfinite)
from .constants import DEFAULT_DOWNSCALE_METHOD, DEFAULT_FC, DEFAULT_METHOD, LSQ
from .errors import CheckpointError, ConversionError, PlanError, UnknownModelError
from .paths import check_paths, target_path
from .plan import Plan

__all__ = ["FileReport", "Fidelity", "shrink_to_file", "grow_file", "export_file"]


@dataclass(frozen=True)
class Fidelity:
    """Pre-train logits at the pre-train size vs grown logits at the target size, on fixture images."""

    images: int  # how many fixture test images
    cosine: float  # mean cosine similarity of the two networks' logits
    agree: int  # images on which both networks pick the same top-1 class


@dataclass(frozen=True)
class FileReport:
    """What one file operation wrote; `msurg` turns it into its one or two lines of output.

    Attributes:
        verb: "shrink", "grow" or "export".
        path: the file written.
        plan: the plan of the network in that file (grow: the target-form plan).
        method: shrink, how `weights` were downscaled (None: the model's own init); grow, the
            kernel upscaling ("lsq" included).
        fc: grow, the FC-interface conversion.
        fitted: grow, kernels fitted by least squares (None: no fit), on `fit_images` images.
        fit_images: see `fitted`.
        bn_images: grow, images BatchNorm was recalibrated on (None: no calibration data was
            given; 0: the network has no BatchNorm).
        fidelity: grow, the check on fixture images.
        onnx: export, `export_onnx`'s report (exporter, opset, input_size, parity numbers).
    """

    verb: str
    path: Path
    plan: Plan
    method: str | None = None
    fc: str | None = None
    fitted: int | None = None
    fit_images: int = 0
    bn_images: int | None = None
    fidelity: Fidelity | None = None
    onnx: Mapping[str, Any] | None = None


def shrink_to_file(model: str, out, *, weights=None, method: str = DEFAULT_DOWNSCALE_METHOD, force: bool = False,
                   **shrink_kwargs: Any) -> FileReport:
    """`msurg shrink`: build the pre-train model of `model` and save it with its plan.

    Args:
        model: a timm name or `torchvision:NAME`.
        out: the output .safetensors path; refused if it exists and `force` is False.
        weights: optional trained target checkpoint to downscale (amplitude-preserving).
        method: kernel downscaling for `weights`: "pinv" or "bilinear".
        **shrink_kwargs: passed to `modelsurgery.shrink`.

    Returns:
        The report: path written and the pre-train plan (`method` None without `weights`).
    """
    check_paths(out, force, weights)  # fail before the slow part, and again at the atomic rename
    from .shrink import downscale_state_dict, shrink  # after the cheap checks
    from .zoo import rebuild

    target_state = None
    if weights is not None:
        target_state, _ = read_state_dict(weights)
    small, plan = shrink(model, **shrink_kwargs)
    if target_state is not None:
        verify_state_dict(target_state, rebuild(plan.source).state_dict(), f"--weights {str(weights)!r}")
        warn_nonfinite(target_state, str(weights))
        small.load_state_dict(downscale_state_dict(target_state, plan, method=method), strict=True)
    path = save(out, small, plan, force=force)
    return FileReport("shrink", path, plan, method=method if weights is not None else None)


# --- grow ----------------------------------------------------------------------------------------

FIDELITY_IMAGES = 8  # fixture test images in the post-grow check (a fixed batch; ~0.5 s for resnet50)
CALIBRATION_IMAGES = 1000  # BatchNorm recalibration: running statistics averaged over this many images
LSQ_IMAGES = 256  # least-squares kernel fit: 256 kept more accuracy than 32 (bench/grow_fidelity.py)


def grow_file(ckpt, out=None, *, to: int | None = None, method: str | None = None, fc: str = DEFAULT_FC,
              seed: int = 0, plan_file=None, calibrate=None, force: bool = False) -> FileReport:
    """`msurg grow`: convert a pre-train checkpoint into the stock target model's and save it.

    Order: check `out`; read the checkpoint and its plan; verify every tensor against the
    pre-train model the plan describes; grow; load strictly into the rebuilt stock target;
    optionally calibrate; save atomically (form "target"); then compare the two networks on a
    fixed batch of fixture images.

    Args:
        ckpt: a modelsurgery .safetensors, or a .pt/.pth state_dict together with `plan_file`.
        out: output .safetensors; default `<ckpt stem>-target.safetensors` beside `ckpt`.
        to: target input size; default the plan's.
        method: kernel upscaling, see `modelsurgery.grow`; or "lsq", which starts from
            `grow.DEFAULT_METHOD` and fits every grown kernel to its pre-train layer by least
            squares on `calibrate` images. Default: "lsq" with `calibrate`, else
            `grow.DEFAULT_METHOD`.
        fc: FC interface, "resize" or "gaussian".
        seed: seed for `fc="gaussian"` and for choosing calibration images.
        plan_file: the plan for a checkpoint that carries none: a .safetensors or a plan .json.
        calibrate: calibration images (training images, not test ones): a Fashion-MNIST/MNIST IDX
            folder, an ImageFolder, or "fixture". Up to 1000 of them recalibrate BatchNorm at the
            target size (after the least-squares fit of "lsq", which uses the first 256). They are
            normalised with their own mean and std.
        force: overwrite `out`.

    Returns:
        The report: path written, the target plan, method and fc, the calibration counts and
        the fidelity check.
    """
    out = Path(out) if out is not None else target_path(ckpt)
    check_output(out, force)  # fail before the slow part, and again at the atomic rename
    method = method or (LSQ if calibrate is not None else DEFAULT_METHOD)
    if method == LSQ and calibrate is None:
        raise ConversionError("--method lsq fits kernels to calibration images. Hint: add --calibrate DATA "
                              "(an IDX folder, an ImageFolder, or 'fixture')")
    from .grow import grow, grow_size  # after the cheap checks
    from .zoo import rebuild

    state, meta = read_state_dict(ckpt)
    plan = _grow_plan(ckpt, meta, plan_file)
    grow_size(plan, to)
    if plan.source.kind == "custom":
        raise UnknownModelError(f"the plan's model is a custom module ({plan.source.name}) that msurg cannot "
                                "rebuild. Hint: call modelsurgery.grow(state_dict, plan, model=MyNet()) in Python")
    with torch.device("meta"):  # shapes only; every tensor comes from the checkpoint
        target = rebuild(plan.source)
    pretrain = _pretrain_net(target, plan, state, ckpt)
    grown_state, big_plan = grow(state, plan, to=to, method=DEFAULT_METHOD if method == LSQ else method,
                                 fc=fc, seed=seed, model=target)
    verify_state_dict(grown_state, target.state_dict(), f"the grown {plan.source.spec} at {big_plan.target_size}px")
    target = _holding(target, grown_state, lambda: rebuild(plan.source)).eval()
    counts = {}
    if calibrate is not None:
        counts = _calibrate(pretrain, target, plan, big_plan, calibrate, lsq=method == LSQ, seed=seed)
        grown_state = target.state_dict()
    path = save(out, grown_state, big_plan, force=force)
    fidelity = _fidelity(pretrain, target, plan, big_plan)
    return FileReport("grow", path, big_plan, method=method, fc=fc, fidelity=fidelity, **counts)


def _grow_plan(ckpt, meta, plan_file) -> Plan:
    """The plan from --plan, else from the checkpoint's metadata; it must be a pre-train plan."""
    if plan_file is not None:
        plan = _read_plan_file(plan_file)
    elif META_PLAN in meta:
        plan = read_plan(meta, ckpt)
    else:
        raise PlanError(f"{str(ckpt)!r} carries no modelsurgery plan. Hint: pass --plan FILE (the .safetensors "
                        "that `msurg shrink` wrote, or a plan .json)")
    if plan.form != "pretrain":
        raise PlanError(f"{str(ckpt)!r} is already in {plan.form!r} form. Hint: grow the pre-train checkpoint "
                        "that `msurg shrink` wrote")
    return plan


def _read_plan_file(path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--plan {str(path)!r} is not a file. Hint: pass the .safetensors that "
                              "`msurg shrink` wrote, or a plan .json")
    if path.suffix == ".json":
        try:
            return Plan.from_json(path.read_text())
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"cannot read --plan {str(path)!r} ({err}). Hint: check the file") from None
    _, meta = read_state_dict(path)
    return read_plan(meta, path)


def _pretrain_net(target: nn.Module, plan: Plan, state, ckpt) -> nn.Module:
    """The pre-train network of `plan` holding `state`, verified key by key and shape by shape."""
    from .shrink import apply_plan
    from .trace import meta_copy

    net = apply_plan(meta_copy(target), plan)  # shapes only: no init to draw and discard
    verify_state_dict(state, net.state_dict(), f"{str(ckpt)!r}")
    warn_nonfinite(state, str(ckpt))
    return _holding(net, state, lambda: apply_plan(target, plan)).eval()


def _holding(net: nn.Module, state, build) -> nn.Module:
    """`net` (on the meta device) with `state` assigned as its tensors, or `build()` loaded from it.

    Assigning skips a copy of every tensor. A model with non-persistent buffers (left on the
    meta device) or a checkpoint that is not float32 (assigning would change the model's dtype)
    takes the ordinary path.
    """
    if all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point()):
        net.load_state_dict(state, strict=True, assign=True)
        if not any(t.is_meta for t in (*net.parameters(), *net.buffers())):
            return net
    net = build()
    net.load_state_dict(state, strict=True)
    return net


def _calibrate(pretrain: nn.Module, grown: nn.Module, plan: Plan, big_plan: Plan, data, *, lsq: bool,
               seed: int) -> dict[str, int]:
    """Optionally fit kernels by least squares, then recalibrate BatchNorm at the target size.

    Returns:
        The report's counts: bn_images, and with `lsq` fitted and fit_images.
    """
    from .calibrate import fit_least_squares, recalibrate_bn
    from .train.data import TensorLoader

    images = _calibration_images(data, big_plan.target_size, plan.in_chans, seed)
    labels = torch.zeros(len(images), dtype=torch.long)
    loader = TensorLoader(images, labels, 100, train=False, size=big_plan.target_size, channels=plan.in_chans)
    counts = {}
    if lsq:
        few = images[:LSQ_IMAGES]
        small = _batch(few, plan.input_size, plan.in_chans, loader)
        big = _batch(few, big_plan.target_size, plan.in_chans, loader)
        fitted = fit_least_squares(pretrain, grown, plan, small, big, seed=seed)
        counts = {"fitted": len(fitted), "fit_images": len(few)}
    return {**counts, "bn_images": recalibrate_bn(grown, (x for x, _ in loader))}


def _calibration_images(data, size: int, in_chans: int, seed: int) -> torch.Tensor:
    """Up to CALIBRATION_IMAGES uint8 training images (N, C, H, W), a seeded random choice.

    The data source is decided by the recipes' rule (`modelsurgery.train.datasets.data_source`).
    """
    from .train.datasets import load_images

    images, _ = load_images(data, "train", size=size, channels=1 if in_chans == 1 else 3)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:CALIBRATION_IMAGES]]


def _batch(images: torch.Tensor, size: int, in_chans: int, like=None) -> torch.Tensor:
    """Normalised float images at `size` with `in_chans` channels (stats from `like`, else their own)."""
    from .train.data import TensorLoader

    labels = torch.zeros(len(images), dtype=torch.long)
    stats = {"mean": like.mean, "std": like.std} if like is not None else {}
    loader = TensorLoader(images, labels, len(images), train=False, size=size, channels=in_chans, **stats)
    return next(iter(loader))[0]


def _fidelity(pretrain: nn.Module, grown: nn.Module, plan: Plan, big_plan: Plan) -> Fidelity:
    """Logit cosine and top-1 agreement: pre-train at its size vs grown at the target size."""
    from .train.data import load_fixture_fashion_mnist

    images, _ = load_fixture_fashion_mnist("test")
    images = images[:FIDELITY_IMAGES, None]
    small = _batch(images, plan.input_size, plan.in_chans)
    big = _batch(images, big_plan.target_size, plan.in_chans)  # same images, so the same mean/std
    with torch.inference_mode():
        a, b = _logits(pretrain.eval()(small)), _logits(grown.eval()(big))
    cos = F.cosine_similarity(a.double(), b.double(), dim=1).mean().item()
    return Fidelity(len(images), cos, int((a.argmax(1) == b.argmax(1)).sum()))


def _logits(output) -> torch.Tensor:
    """The logits of a forward's output (the first element of a tuple-like output)."""
    return output if isinstance(output, torch.Tensor) else output[0]


# --- export --------------------------------------------------------------------------------------

def export_file(ckpt, out, *, input_size: int | None = None, opset: int | None = None,
                force: bool = False) -> FileReport:
    """`msurg export`: load a checkpoint (pre-train or target) and export it to ONNX.

    Args:
        ckpt: a modelsurgery .safetensors checkpoint (from `msurg shrink` or `msurg grow`).
        out: the output .onnx path; refused if it exists and `force` is False.
        input_size: export size; default the plan's `input_size` for a pre-train checkpoint,
            `target_size` for a target one.
        opset: ONNX opset (see `export.export_onnx`).
        force: overwrite `out`.

    Returns:
        The report: path written, the checkpoint's plan, and `export_onnx`'s report as `onnx`.

    Example:
        >>> export_file("small.safetensors", "small.onnx").onnx["exporter"]
        'dynamo'
    """
    check_paths(out, force, ckpt)
    from .export import export_checked

    model, plan = load(ckpt)
    size = input_size or (plan.input_size if plan.form == "pretrain" else plan.target_size)
    # load() has already warned about non-finite weights, naming the file
    onnx = export_checked(model, out, input_size=size, in_chans=plan.in_chans, opset=opset, check=True, force=force)
    return FileReport("export", Path(onnx["path"]), plan, onnx=onnx)
