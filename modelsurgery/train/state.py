"""Training checkpoints: safetensors for every tensor, JSON metadata for everything else.

Layout of one file (no pickle anywhere):

- the model's state_dict under its own keys (`conv1.weight`, ...), so the weights read like
  any modelsurgery checkpoint;
- `train_state/optim/<param index>/<name>`: optimizer state tensors (SGD momentum buffers);
- `train_state/rng/torch`, `train_state/rng/cuda/<i>`: generator states as uint8 tensors;
- metadata `modelsurgery.version`, `modelsurgery.form` ("pretrain" or "target"),
  `modelsurgery.plan` (the plan JSON, when given) and `modelsurgery.train` (JSON: epoch, step,
  wall seconds, input size, seed, the per-epoch log so far, optimizer hyper-parameters and
  non-tensor optimizer state, Python's `random` state).

Files are written to a temporary file in the same folder and renamed into place
(`modelsurgery.checkpoint.atomic_write`).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..checkpoint import META_FORM, META_PLAN, META_VERSION, atomic_write
from ..deprecation import moved
from ..errors import CheckpointError
from ..plan import Plan

__all__ = ["TrainingCheckpointInfo", "save_training_checkpoint", "load_training_checkpoint", "read_checkpoint_info"]

PREFIX = "train_state/"
TRAIN_KEY = "modelsurgery.train"


@dataclass(frozen=True)
class TrainingCheckpointInfo:
    """What a training checkpoint says about itself (`describe.CheckpointInfo` describes a surgery file).

    Attributes:
        form: "pretrain" or "target": which network the weights belong to.
        plan: the surgery plan JSON, or None.
        version: the modelsurgery version that wrote it.
        train: the training state (epoch, step, wall, size, seed, history, ...).
    """

    form: str
    plan: str | None
    version: str
    train: dict[str, Any]


def save_training_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer | None, *, train: dict[str, Any],
                             plan: Plan | str | None = None, form: str = "target",
                             force: bool = False) -> Path:
    """Write model weights, optimizer state, RNG state and `train` to one safetensors file.

    Example:
        >>> save_training_checkpoint("run/last.safetensors", model, opt, train={"epoch": 3}, force=True)
    """
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    scalars: dict[str, Any] = {}
    groups: list = []
    if optimizer is not None:
        saved = optimizer.state_dict()
        groups = saved["param_groups"]
        for idx, entries in saved["state"].items():
            for name, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"{PREFIX}optim/{idx}/{name}"] = value.detach().cpu().contiguous().clone()
                else:
                    scalars[f"{idx}/{name}"] = value
    tensors[f"{PREFIX}rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{PREFIX}rng/cuda/{i}"] = state
    train = dict(train, optimizer={"param_groups": groups, "scalars": scalars},
                 python_random=random.getstate())
    metadata = {META_VERSION: __version__, META_FORM: form, TRAIN_KEY: json.dumps(train, sort_keys=True)}
    if plan is not None:
        metadata[META_PLAN] = plan if isinstance(plan, str) else plan.to_json()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), force=force)


def read_checkpoint_info(path: str | os.PathLike) -> TrainingCheckpointInfo:
    """Read only the metadata (cheap): decide which model to build before resuming.

    Example:
        >>> info = read_checkpoint_info("run/last.safetensors")
        >>> info.form, info.train["epoch"]
        ('target', 12)
    """
    return _info(path, _open_metadata(path))


def load_training_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None,
                             optimizer: torch.optim.Optimizer | None = None,
                             restore_rng: bool = True) -> TrainingCheckpointInfo:
    """Load weights into `model` (strict), state into `optimizer`, and the RNG states.

    Raises:
        CheckpointError: not a training checkpoint, or keys/shapes that do not match `model`
            (all of them listed in one message).

    Example:
        >>> info = load_training_checkpoint("run/last.safetensors", model, optimizer)
    """
    metadata = _open_metadata(path)
    with safe_open(os.fspath(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = _info(path, metadata)
    if model is not None:
        _load_weights(path, model, {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}, info)
    if optimizer is not None:
        _load_optimizer(path, optimizer, tensors, info.train["optimizer"])
    if restore_rng:
        torch.set_rng_state(tensors[f"{PREFIX}rng/torch"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith(f"{PREFIX}rng/cuda/")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        version, state, gauss = info.train["python_random"]
        random.setstate((version, tuple(state), gauss))
    return info


def _open_metadata(path: str | os.PathLike) -> dict[str, str]:
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with safe_open(os.fspath(path), "pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    if TRAIN_KEY not in metadata:
        raise CheckpointError(f"{path} has no '{TRAIN_KEY}' metadata, so it is not a training "
                              "checkpoint. Hint: resume only from files the Trainer wrote")
    return metadata


def _info(path, metadata: dict[str, str]) -> TrainingCheckpointInfo:
    return TrainingCheckpointInfo(form=metadata.get(META_FORM, "target"), plan=metadata.get(META_PLAN),
                          version=metadata.get(META_VERSION, "?"),
                          train=json.loads(metadata[TRAIN_KEY]))


def _load_weights(path, model: torch.nn.Module, weights: dict[str, torch.Tensor],
                  info: TrainingCheckpointInfo) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or shapes:
        problems = [f"{label}: {keys[:8]}{' ...' if len(keys) > 8 else ''}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        raise CheckpointError(f"{path} (form {info.form!r}) does not fit the model; "
                              + "; ".join(problems)
                              + ". Hint: build the model the checkpoint holds (e.g. the grown "
                              "target) before resuming")
    model.load_state_dict(weights, strict=True)


def _load_optimizer(path, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    saved: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(f"{PREFIX}optim/"):
            idx, name = key[len(f"{PREFIX}optim/"):].split("/", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in saved["scalars"].items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    except ValueError as err:
        raise CheckpointError(f"{path}: optimizer state does not fit ({err}). Hint: build the "
                              "same model and optimizer that wrote the checkpoint") from None


__getattr__ = moved(__name__, {"CheckpointInfo": "modelsurgery.train.state:TrainingCheckpointInfo"})
