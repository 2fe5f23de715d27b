"""Checkpoint files: safetensors with the plan in their metadata, atomic writes, strict checks.

Metadata keys are namespaced strings: `modelsurgery.version` (library version),
`modelsurgery.form` (`pretrain` or `target`) and `modelsurgery.plan` (the plan's JSON).
Only safetensors and `torch.load(weights_only=True)` are ever used to read: no pickles.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from .deprecation import moved
from .errors import CheckpointError, OutputExistsError, PlanError, first_line
from .paths import check_input as _check_input
from .paths import check_output as _check_output
from .plan import Plan
from .torchfile import StoredWeights, WeightsRead, pick_weights, read_torch, wrapper_prefix

__all__ = ["save", "load", "load_reporting", "save_state_dict", "read_state_dict", "open_weights", "read_plan",
           "atomic_write", "verify_state_dict", "warn_nonfinite", "META_VERSION", "META_FORM", "META_PLAN"]

META_VERSION = "modelsurgery.version"
META_FORM = "modelsurgery.form"
META_PLAN = "modelsurgery.plan"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, force: bool = False) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    A crash or kill mid-write leaves the old file (if any) intact and no partial file behind
    under `path`; the temporary file is removed on any error (after SIGKILL it can't be, and a
    hidden `.NAME.*.tmp` stays beside `path`). Without `force` the rename refuses to replace a
    file that appeared meanwhile. OS errors (disk full, permissions) become CheckpointError.
    """
    path = _check_output(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointError(f"cannot write in {str(path.parent)!r} ({err.strerror}). "
                              "Hint: choose another --out") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _output_mode(path))
        _rename(tmp, path, force)
    except OSError as err:
        raise CheckpointError(f"writing {str(path)!r} failed ({err.strerror or err}); the old file, if any, "
                              "is unchanged. Hint: check free space and permissions") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _rename(tmp: str, path: Path, force: bool) -> None:
    """Move `tmp` to `path` atomically; without `force`, never replace an existing file."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists (unlike rename)
    except FileExistsError:
        raise OutputExistsError(f"output {str(path)!r} appeared while writing. "
                                "Hint: pass --force to overwrite it") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise OutputExistsError(f"output {str(path)!r} appeared while writing. "
                                    "Hint: pass --force to overwrite it") from None
        os.replace(tmp, path)


def _output_mode(path: Path) -> int:
    """An overwritten file keeps its mode; a new one gets 0o666 minus the umask (mkstemp's is 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _unshare(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights); give each its own."""
    seen, out = set(), {}
    for k, v in state.items():
        v = v.detach().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        out[k] = v.clone() if key in seen or not v.is_contiguous() else v
        seen.add(key)
    return out


def save_state_dict(path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, *,
                    force: bool = False) -> Path:
    """Write a state_dict as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = _unshare(state)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata or {})), force=force)


def save(path, model: nn.Module | Mapping[str, torch.Tensor], plan: Plan, *, force: bool = False) -> Path:
    """Save a model (or state_dict) and its plan to one safetensors file, atomically.

    The file's form (`pretrain` or `target`) is `plan.form`.

    Example:
        >>> small, plan = modelsurgery.shrink("resnet18")
        >>> modelsurgery.save("small.safetensors", small, plan)
    """
    from . import __version__

    state = model.state_dict() if isinstance(model, nn.Module) else model
    meta = {META_VERSION: __version__, META_FORM: plan.form, META_PLAN: plan.to_json()}
    return save_state_dict(path, state, meta, force=force)


def read_state_dict(path, *, ema: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read model tensors and metadata from safetensors, or from a .pt/.pth/.ckpt with weights_only=True.

    A training checkpoint's optimizer and RNG state (keys under `train_state/`) is left out, so
    `msurg grow` and `load` take the recipes' checkpoints as they are.

    A .pt/.pth/.ckpt may be a bare state_dict or a training script's checkpoint (timm's,
    torchvision's reference, Lightning's: see `modelsurgery.torchfile`); the wrappers' `module.`
    and `_orig_mod.` prefixes are removed. Files that need code to unpickle are refused. With no
    model to match, a Lightning module's attribute prefix stays; the commands remove it.

    Args:
        path: the checkpoint.
        ema: read the EMA weights (`state_dict_ema`, `model_ema`) instead.

    Example:
        >>> state, meta = read_state_dict("small.safetensors")
    """
    stored, meta = open_weights(path)
    if ema and stored.ema is None:
        raise CheckpointError(f"--ema: {str(stored.path)!r} holds no EMA weights. Hint: drop --ema")
    state = stored.ema if ema else stored.weights
    if state is None:
        raise CheckpointError(f"{str(stored.path)!r} holds only EMA weights. Hint: pass --ema to read them")
    prefix = wrapper_prefix(state) if stored.format == "torch" else ""
    return {k[len(prefix):]: v for k, v in state.items()}, meta


def open_weights(path) -> tuple[StoredWeights, dict[str, str]]:
    """Read a checkpoint's tensors as stored, and its metadata ({} for a .pt/.pth/.ckpt).

    `torchfile.pick_weights` then chooses the weights meant for a model and removes their prefix.

    Example:
        >>> stored, meta = open_weights("checkpoint.pth")
    """
    path = _check_input(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix in TORCH_SUFFIXES or head[:2] == b"PK":
        return read_torch(path), {}
    tensors, meta = _read_safetensors(path)
    return StoredWeights(path, tensors, "safetensors"), meta


TRAIN_STATE_PREFIX = "train_state/"  # optimizer and RNG tensors of training checkpoints
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")  # timm writes .pth.tar


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(TRAIN_STATE_PREFIX)}
    except Exception as err:  # SafetensorError and OSError variants
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({first_line(err, 120)}); "
                              "it may be truncated or corrupt. Hint: re-create it, or pass a .pt/.pth file") from None
    return tensors, meta


def read_plan(meta: Mapping[str, str], path="checkpoint") -> Plan:
    """The plan stored in a checkpoint's metadata."""
    text = meta.get(META_PLAN)
    if text is None:
        raise PlanError(f"{str(path)!r} carries no modelsurgery plan. Hint: save it with `msurg shrink` or "
                        "`modelsurgery.save` (`msurg grow` also takes the plan from --plan FILE)")
    plan = Plan.from_json(text)
    form = meta.get(META_FORM, plan.form)
    return plan if form == plan.form else plan.replace(form=form)


def verify_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise one CheckpointError listing every missing, unexpected or mis-shaped key."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if shapes:
        problems.append(f"wrong shapes [{'; '.join(shapes)}]")
    if problems:
        raise CheckpointError(f"{what} does not match its plan: {', '.join(problems)}. "
                              "Hint: was it saved from a different model or plan?")


def warn_nonfinite(state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> list[str]:
    """Warn, naming the tensors, when any floating tensor holds NaN or Inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        warnings.warn(f"{what} has NaN or Inf in: {', '.join(bad)}", stacklevel=2)
    return bad


def load(path, model: nn.Module | None = None, *, plan: Plan | None = None, ema: bool = False
         ) -> tuple[nn.Module, Plan]:
    """Rebuild the network a checkpoint holds, pre-train or target, and load it strictly.

    Args:
        path: a safetensors file written by `save` (or `msurg shrink`/`msurg grow`), or a
            .pt/.pth/.ckpt as a training script wrote it (see `modelsurgery.torchfile`) with `plan`.
        model: a fresh *target* instance, needed only for custom (non-timm/torchvision) models.
        plan: the plan of the network in `path`, for a file that carries none (a .pt); its form
            says which network that is.
        ema: read the file's EMA weights (`state_dict_ema`, `model_ema`).

    Returns:
        (model in eval mode, plan).

    Example:
        >>> small, plan = modelsurgery.load("small.safetensors")
        >>> small, plan = modelsurgery.load("checkpoint.pth", plan=plan, ema=True)
    """
    net, plan, _ = load_reporting(path, model, plan=plan, ema=ema)
    return net, plan


def load_reporting(path, model: nn.Module | None = None, *, plan: Plan | None = None, ema: bool = False
                   ) -> tuple[nn.Module, Plan, WeightsRead]:
    """`load`, also saying which weights of the file it read (the wrapper key, the prefix removed)."""
    from .shrink import apply_plan
    from .statedict import with_versions
    from .zoo import rebuild

    stored, meta = open_weights(path)
    plan = plan if plan is not None else read_plan(meta, path)
    target = model if model is not None else rebuild(plan.source)
    net = apply_plan(target, plan) if plan.form == "pretrain" else copy.deepcopy(target)
    state, read = pick_weights(stored, net.state_dict(), ema=ema, what=f"{str(path)!r}")
    verify_state_dict(state, net.state_dict(), f"{str(path)!r}")
    warn_nonfinite(state, str(path))
    net.load_state_dict(with_versions(state, net), strict=True)  # safetensors keep no module versions
    return net.eval(), plan, read


# `check_output` lives with the other path checks.
__getattr__ = moved(__name__, {"check_output": "modelsurgery.paths"})
