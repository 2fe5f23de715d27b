"""The file layer behind the CLI: shrink, grow and export, file to file (formerly `modelsurgery.convert`).

`msurg info` reads files with `modelsurgery.describe`.

Each operation checks its output first, converts, writes atomically, and returns a `FileReport`
that `msurg` formats (`cli.format_report`); none of them prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import (
    META_PLAN,
    load_reporting,
    open_weights,
    read_plan,
    read_state_dict,
    save,
    verify_state_dict,
    warn_nonfinite,
)
from .constants import DEFAULT_DOWNSCALE_METHOD, DEFAULT_FC, DEFAULT_UPSCALE, DEFAULT_WIDEN_INIT, DEFAULT_WIDEN_STD, LSQ
from .errors import CheckpointError, ConversionError, PlanError, UnknownModelError
from .images import data_source, image_stats, load_fidelity_images, load_images, require_fixture, resize_images
from .paths import check_output, check_paths, target_path
from .plan import Plan
from .statedict import with_versions
from .torchfile import WeightsRead, pick_weights
from .width import check_widen

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
        fidelity: grow, the check on the package's Fashion-MNIST test images (None: they are
            not installed, and the check was skipped).
        onnx: export, `export_onnx`'s report (exporter, opset, input_size, parity numbers).
        read: which weights of the input were read (wrapper key, prefix removed, EMA or not);
            None for shrink without `weights`.
        widen_init: grow, how the channels of a plan shrunk in width came back (None: no width).
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
    read: WeightsRead | None = None
    widen_init: str | None = None


def shrink_to_file(model: str, out, *, weights=None, method: str = DEFAULT_DOWNSCALE_METHOD, ema: bool = False,
                   force: bool = False, **shrink_kwargs: Any) -> FileReport:
    """`msurg shrink`: build the pre-train model of `model` and save it with its plan.

    Args:
        model: a timm name or `torchvision:NAME`.
        out: the output .safetensors path; refused if it exists and `force` is False.
        weights: optional trained target checkpoint to downscale (amplitude-preserving): a
            .safetensors, or a .pt/.pth/.ckpt as a training script wrote it (`modelsurgery.torchfile`).
        method: kernel downscaling for `weights`: "pinv" or "bilinear".
        ema: read the EMA weights of `weights`.
        **shrink_kwargs: passed to `modelsurgery.shrink`.

    Returns:
        The report: path written and the pre-train plan (`method` None without `weights`).
    """
    check_paths(out, force, weights)  # fail before the slow part, and again at the atomic rename
    if ema and weights is None:
        raise ConversionError("--ema reads the EMA weights of --weights. Hint: add --weights FILE, or drop --ema")
    from .grow import downscale_state_dict  # after the cheap checks
    from .shrink import shrink
    from .zoo import rebuild

    stored = open_weights(weights)[0] if weights is not None else None
    small, plan = shrink(model, **shrink_kwargs)
    read = None
    if stored is not None:
        expected = rebuild(plan.source).state_dict()
        target_state, read = pick_weights(stored, expected, ema=ema, what=f"--weights {str(weights)!r}")
        verify_state_dict(target_state, expected, f"--weights {str(weights)!r}")
        warn_nonfinite(target_state, str(weights))
        small_state = downscale_state_dict(with_versions(target_state, expected), plan, method=method)
        small.load_state_dict(small_state, strict=True)
    path = save(out, small, plan, force=force)
    return FileReport("shrink", path, plan, method=method if weights is not None else None, read=read)


# --- grow ----------------------------------------------------------------------------------------

FIDELITY_IMAGES = 8  # fixture test images in the post-grow check (a fixed batch; ~0.5 s for resnet50)
CALIBRATION_IMAGES = 1000  # BatchNorm recalibration: running statistics averaged over this many images
LSQ_IMAGES = 256  # least-squares kernel fit: 256 kept more accuracy than 32 (bench/grow_fidelity.py)


def grow_file(ckpt, out=None, *, to: int | None = None, upscale: str | None = None, fc: str = DEFAULT_FC,
              seed: int = 0, plan_file=None, calibrate=None, ema: bool = False, force: bool = False,
              progress: bool | None = None, method: str | None = None, widen_init: str = DEFAULT_WIDEN_INIT,
              widen_std: float = DEFAULT_WIDEN_STD) -> FileReport:
    """`msurg grow`: convert a pre-train checkpoint into the stock target model's and save it.

    Order: check `out`; read the checkpoint and its plan; verify every tensor against the
    pre-train model the plan describes; grow; load strictly into the rebuilt stock target;
    optionally calibrate; save atomically (form "target"); then compare the two networks on a
    fixed batch of fixture images.

    Args:
        ckpt: a modelsurgery .safetensors, or a .pt/.pth/.ckpt (a state_dict, or a training script's
            checkpoint: `modelsurgery.torchfile`) together with `plan_file`.
        out: output .safetensors; default `<ckpt stem>-target.safetensors` beside `ckpt`.
        to: target input size; default the plan's.
        upscale: kernel upscaling, see `modelsurgery.grow`; or "lsq", which starts from
            `constants.DEFAULT_UPSCALE` and fits every grown kernel to its pre-train layer by least
            squares on `calibrate` images. Default: "lsq" with `calibrate`, else
            `constants.DEFAULT_UPSCALE`.
        fc: FC interface, "resize" or "gaussian".
        seed: seed for `fc="gaussian"` and for choosing calibration images.
        plan_file: the plan for a checkpoint that carries none: a .safetensors or a plan .json.
        calibrate: calibration images (training images, not test ones): a Fashion-MNIST/MNIST IDX
            folder, an ImageFolder, or "fixture". Up to 1000 of them recalibrate BatchNorm at the
            target size (after the least-squares fit of "lsq", which uses the first 256). They are
            normalised with their own mean and std.
        ema: read the EMA weights of `ckpt`.
        force: overwrite `out`.
        progress: bars for the calibration on stderr (None: when stderr is a terminal).
        method: the old name of `upscale` (deprecated).
        widen_init, widen_std: new channels of a plan shrunk in width (`modelsurgery.grow`).

    Returns:
        The report: path written, the target plan, the upscaling (as `method`) and fc, the calibration counts, the
        fidelity check and which weights of `ckpt` were read.
    """
    out = Path(out) if out is not None else target_path(ckpt)
    check_output(out, force)  # fail before the slow part, and again at the atomic rename
    if method is not None:
        warnings.warn("grow_file's method= is deprecated: pass upscale=", DeprecationWarning, stacklevel=2)
    method = upscale or method or (LSQ if calibrate is not None else DEFAULT_UPSCALE)
    if method == LSQ and calibrate is None:
        raise ConversionError("--method lsq fits kernels to calibration images. Hint: add --calibrate DATA "
                              "(an IDX folder, an ImageFolder, or 'fixture')")
    if calibrate is not None:
        _check_calibration_data(calibrate)
    check_widen(widen_init, widen_std)
    from .grow import grow, grow_size  # after the cheap checks
    from .shrink import apply_plan
    from .zoo import rebuild

    stored, meta = open_weights(ckpt)
    plan = _grow_plan(ckpt, meta, plan_file)
    grow_size(plan, to)
    if plan.source.kind == "custom":
        raise UnknownModelError(f"the plan's model is a custom module ({plan.source.name}) that msurg cannot "
                                "rebuild. Hint: call modelsurgery.grow(state_dict, plan, model=MyNet()) in Python")
    with torch.device("meta"):  # shapes only; every tensor comes from the checkpoint
        target = rebuild(plan.source)
    full = _seeded(plan, seed) if plan.channels or plan.blocks else None   # narrowing and new blocks need data
    built = apply_plan(full, plan) if full is not None else None
    state, read = pick_weights(stored, (built or target).state_dict(), ema=ema, what=f"{str(ckpt)!r}")
    pretrain = _pretrain_net(target, plan, state, ckpt, built)
    grown_state, big_plan = grow(state, plan, to=to, upscale=DEFAULT_UPSCALE if method == LSQ else method,
                                 fc=fc, seed=seed, model=full or target, widen_init=widen_init, widen_std=widen_std)
    verify_state_dict(grown_state, target.state_dict(), f"the grown {plan.source.spec} at {big_plan.target_size}px")
    target = _holding(target, grown_state, lambda: rebuild(plan.source)).eval()
    counts = {}
    if calibrate is not None:
        counts = _calibrate(pretrain, target, plan, big_plan, calibrate, lsq=method == LSQ, seed=seed,
                            progress=progress)
        grown_state = target.state_dict()
    path = save(out, grown_state, big_plan, force=force)
    fidelity = _fidelity(pretrain, target, plan, big_plan)
    return FileReport("grow", path, big_plan, method=method, fc=fc, fidelity=fidelity, read=read,
                      widen_init=widen_init if plan.channels else None, **counts)


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


def _seeded(plan: Plan, seed: int) -> nn.Module:
    """The stock target with its own init drawn from `seed` (the source of grown blocks' tensors)."""
    from .zoo import rebuild

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return rebuild(plan.source)


def _pretrain_net(target: nn.Module, plan: Plan, state, ckpt, built: nn.Module | None = None) -> nn.Module:
    """The pre-train network of `plan` holding `state`, verified key by key and shape by shape
    (`built`: already built from a real target, as width and depth need)."""
    from .analysis import meta_copy
    from .shrink import apply_plan

    net = built if built is not None else apply_plan(meta_copy(target), plan)  # meta: shapes, no init to discard
    verify_state_dict(state, net.state_dict(), f"{str(ckpt)!r}")
    warn_nonfinite(state, str(ckpt))
    if built is not None:
        net.load_state_dict(with_versions(state, net), strict=True)
        return net.eval()
    return _holding(net, state, lambda: apply_plan(target, plan)).eval()


def _holding(net: nn.Module, state, build) -> nn.Module:
    """`net` (on the meta device) with `state` assigned as its tensors, or `build()` loaded from it.

    Assigning skips a copy of every tensor. A model with non-persistent buffers (left on the
    meta device) or a checkpoint that is not float32 (assigning would change the model's dtype)
    takes the ordinary path.
    """

    state = with_versions(state, net)  # safetensors keep no module versions; some modules need them
    if all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point()):
        net.load_state_dict(state, strict=True, assign=True)
        if not any(t.is_meta for t in (*net.parameters(), *net.buffers())):
            return net
    net = build()
    net.load_state_dict(state, strict=True)
    return net


def _calibrate(pretrain: nn.Module, grown: nn.Module, plan: Plan, big_plan: Plan, data, *, lsq: bool,
               seed: int, progress: bool | None = None) -> dict[str, int]:
    """Optionally fit kernels by least squares, then recalibrate BatchNorm at the target size.

    Returns:
        The report's counts: bn_images, and with `lsq` fitted and fit_images.
    """
    from .calibrate import fit_least_squares, recalibrate_bn
    from .progress import bar

    images = _calibration_images(data, big_plan.target_size, plan.in_chans, seed)
    stats = image_stats(images)
    counts = {}
    if lsq:
        few = images[:LSQ_IMAGES]
        small = _batch(few, plan.input_size, plan.in_chans, stats)
        big = _batch(few, big_plan.target_size, plan.in_chans, stats)
        fitted = fit_least_squares(pretrain, grown, plan, small, big, seed=seed, progress=progress)
        counts = {"fitted": len(fitted), "fit_images": len(few)}
    chunks = _resized(images, big_plan.target_size).split(100)
    batches = bar((_normalized(x, plan.in_chans, stats) for x in chunks), "BatchNorm", total=len(chunks),
                  unit="batch", enabled=progress)
    return {**counts, "bn_images": recalibrate_bn(grown, batches)}


def _check_calibration_data(data) -> None:
    """Refuse --calibrate DATA that names nothing (a missing folder, or 'fixture' outside a checkout) at once."""
    if data_source(data) == "fixture":
        require_fixture()


def _calibration_images(data, size: int, in_chans: int, seed: int) -> torch.Tensor:
    """Up to CALIBRATION_IMAGES uint8 training images (N, C, H, W), a seeded random choice.

    The data source is decided by the recipes' rule (`modelsurgery.images.data_source`).
    """
    images, _ = load_images(data, "train", size=size, channels=1 if in_chans == 1 else 3)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:CALIBRATION_IMAGES]]


def _batch(images: torch.Tensor, size: int, in_chans: int, stats=None) -> torch.Tensor:
    """Normalised float images at `size` with `in_chans` channels (`stats`: mean and std, else their own)."""
    images = images if images.ndim == 4 else images[:, None]
    stats = stats or image_stats(images)
    return _normalized(_resized(images, size), in_chans, stats)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    return resize_images(images, size) if size != images.shape[-1] else images


def _normalized(images: torch.Tensor, in_chans: int, stats) -> torch.Tensor:
    """uint8 N×C×H×W -> float, channels repeated to `in_chans`, normalised as `TensorLoader` does."""
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    return (images.float().div_(255).expand(-1, in_chans, -1, -1) - mean) / std


def _fidelity(pretrain: nn.Module, grown: nn.Module, plan: Plan, big_plan: Plan) -> Fidelity | None:
    """Logit cosine and top-1 agreement: pre-train at its size vs grown at the target size.

    The images ship inside the package; None (the check is skipped, the grow stands) if they
    are missing.
    """
    shipped = load_fidelity_images()
    if shipped is None:
        return None
    images = shipped[0][:FIDELITY_IMAGES, None]
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

def export_file(ckpt, out, *, input_size: int | None = None, opset: int | None = None, plan_file=None,
                ema: bool = False, force: bool = False, progress: bool | None = None) -> FileReport:
    """`msurg export`: load a checkpoint (pre-train or target) and export it to ONNX.

    Args:
        ckpt: a modelsurgery .safetensors checkpoint (from `msurg shrink` or `msurg grow`), or a
            .pt/.pth/.ckpt together with `plan_file`.
        out: the output .onnx path; refused if it exists and `force` is False.
        input_size: export size; default the plan's `input_size` for a pre-train checkpoint,
            `target_size` for a target one.
        opset: ONNX opset (see `export.export_onnx`).
        plan_file: the plan for a checkpoint that carries none (a .safetensors or a plan .json);
            its form says which network `ckpt` holds.
        ema: read the EMA weights of `ckpt`.
        force: overwrite `out`.
        progress: a bar over the export's stages on stderr (None: when stderr is a terminal).

    Returns:
        The report: path written, the checkpoint's plan, and `export_onnx`'s report as `onnx`.

    Example:
        >>> export_file("small.safetensors", "small.onnx").onnx["exporter"]
        'dynamo'
    """
    check_paths(out, force, ckpt)
    from .export import export_checked

    model, plan, read = load_reporting(ckpt, plan=None if plan_file is None else _read_plan_file(plan_file), ema=ema)
    size = input_size or (plan.input_size if plan.form == "pretrain" else plan.target_size)
    # load() has already warned about non-finite weights, naming the file
    onnx = export_checked(model, out, input_size=size, in_chans=plan.in_chans, opset=opset, check=True, force=force,
                          progress=progress)
    return FileReport("export", Path(onnx["path"]), plan, onnx=onnx, read=read)
