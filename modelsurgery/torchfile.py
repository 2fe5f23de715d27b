"""PyTorch checkpoints (.pt/.pth/.ckpt) as the usual training scripts write them, read without code.

Layouts read (the top-level keys each script's save code writes):

* a bare `model.state_dict()`;
* timm's `train.py` (`CheckpointSaver`): `state_dict`, `state_dict_ema`, `optimizer`, `args`
  (an `argparse.Namespace`), `arch`, `epoch`, `metric`, `version`, maybe `amp_scaler`;
* torchvision's classification reference: `model`, `model_ema` (an `AveragedModel` state_dict:
  `module.<name>` keys and `n_averaged`), `optimizer`, `lr_scheduler`, `epoch`, `args`, maybe
  `scaler`;
* PyTorch Lightning: `state_dict` under the LightningModule's attribute (`model.`, `net.`, ...),
  `hyper_parameters`, `callbacks`, `loops`, `optimizer_states`, `lr_schedulers`, `epoch`,
  `global_step`, `pytorch-lightning_version`.

Files load with `torch.load(weights_only=True)`; the only class allowed beyond torch's own list is
`argparse.Namespace` (a plain attribute bag), and only for the duration of the load. A file that
needs any other code is refused before anything in it runs.

A prefix that wrappers put before every key (DDP's `module.`, `torch.compile`'s `_orig_mod.`, a
LightningModule's attribute) is found by matching the keys against the model's (`pick_weights`).
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, first_line

__all__ = ["StoredWeights", "WeightsRead", "read_torch", "pick_weights", "wrapper_prefix", "SAFE_GLOBALS",
           "WEIGHT_KEYS", "EMA_KEYS"]

SAFE_GLOBALS = (argparse.Namespace,)  # timm's and torchvision's `args`; nothing that runs code
WEIGHT_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
WRAPPER_PARTS = ("module", "_orig_mod")  # DistributedDataParallel / DataParallel, torch.compile
AVERAGED_COUNT = "n_averaged"  # torch.optim.swa_utils.AveragedModel's counter, not a weight
SHOWN = 3  # keys quoted in an error


@dataclass(frozen=True)
class StoredWeights:
    """The weights a checkpoint file holds, as stored (prefixes not yet removed).

    Attributes:
        path: the file.
        format: "torch" (.pt/.pth/.ckpt) or "safetensors".
        weights: the model's state_dict (None: the file holds only EMA weights).
        key: the top-level key of `weights` (None: the file is a bare state_dict).
        ema: the EMA weights, with AveragedModel's `n_averaged` dropped (None: none).
        ema_key: the top-level key of `ema`.
        ignored: the other top-level keys (optimizer, args, epoch, ...), which are not read.
        lightning: the file was written by PyTorch Lightning (`pytorch-lightning_version`).
    """

    path: Path
    weights: dict[str, torch.Tensor] | None
    format: str = "torch"
    key: str | None = None
    ema: dict[str, torch.Tensor] | None = None
    ema_key: str | None = None
    ignored: tuple[str, ...] = ()
    lightning: bool = False


@dataclass(frozen=True)
class WeightsRead:
    """Which weights of a file a command read: `msurg` prints it.

    Attributes:
        path: the file.
        format: see `StoredWeights`.
        key: the top-level key read (None: a bare state_dict, or a safetensors file).
        prefix: the prefix removed from every key ("" for none).
        ema: the EMA weights were read.
        left_out: keys outside `prefix`, not read (e.g. a LightningModule's loss buffers).
    """

    path: Path
    format: str
    key: str | None
    prefix: str = ""
    ema: bool = False
    left_out: tuple[str, ...] = ()


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _load(path: Path) -> Any:
    """torch.load with weights_only=True, `SAFE_GLOBALS` allowed for this call only."""
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needs = _unsafe_globals(path) or first_line(err, 160)
        raise CheckpointError(f"refusing {str(path)!r}: it needs code to unpickle ({needs}); modelsurgery only loads "
                              "with weights_only=True. Hint: re-save it as a plain state_dict or safetensors") from None
    except Exception as err:
        raise CheckpointError(f"{str(path)!r} is not a readable PyTorch checkpoint ({first_line(err, 120)}). "
                              "Hint: check that the file is complete") from None


def _unsafe_globals(path: Path) -> str:
    """The classes and functions the file would import, read without unpickling ("" if unknown)."""
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a bare (non-zip) pickle: torch can only list globals of its zip format
        return ""
    return ", ".join(names[:SHOWN])


def read_torch(path: Path) -> StoredWeights:
    """Read a .pt/.pth/.ckpt file's weights without running code.

    Raises:
        CheckpointError: the file needs code to unpickle, is unreadable, or holds no state_dict.

    Example:
        >>> read_torch(Path("checkpoint.pth")).key   # torchvision's reference script
        'model'
    """
    obj = _load(path)
    if _is_state_dict(obj):
        return StoredWeights(path, dict(obj))
    key = next((k for k in WEIGHT_KEYS if isinstance(obj, dict) and _is_state_dict(obj.get(k))), None)
    ema_key = next((k for k in EMA_KEYS if isinstance(obj, dict) and _is_state_dict(obj.get(k))), None)
    if key is None and ema_key is None:
        found = f" (top-level keys: {_quote(obj)})" if isinstance(obj, dict) else ""
        raise CheckpointError(f"{str(path)!r} holds no state_dict of tensors{found}. "
                              "Hint: save `model.state_dict()`")
    ema = None if ema_key is None else {k: v for k, v in obj[ema_key].items() if k != AVERAGED_COUNT}
    ignored = tuple(str(k) for k in obj if k not in (key, ema_key))
    return StoredWeights(path, None if key is None else dict(obj[key]), "torch", key, ema, ema_key, ignored,
                         "pytorch-lightning_version" in obj)


def _quote(keys: Iterable[Any], n: int = SHOWN) -> str:
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(repr(str(k)) for k in keys[:n]) + more


def wrapper_prefix(keys: Iterable[str], lightning: bool = False) -> str:
    """The prefix that wrappers put before the keys, found without a model.

    DDP's `module.` and torch.compile's `_orig_mod.`, in any order, where every key has them. In
    a Lightning checkpoint, first the LightningModule's attribute that holds most keys (an EMA
    copy aside). The commands match against the model's keys instead (`pick_weights`); this is
    what `msurg info` shows.

    Example:
        >>> wrapper_prefix(["module._orig_mod.fc.weight", "module._orig_mod.fc.bias"])
        'module._orig_mod.'
    """
    keys, head = list(keys), ""
    if lightning:
        firsts = Counter(f"{k.split('.')[0]}." for k in keys if "." in k and not _is_ema(f"{k.split('.')[0]}."))
        head = firsts.most_common(1)[0][0] if firsts else ""
        keys = [k[len(head):] for k in keys if k.startswith(head)]
    split = [k.split(".") for k in keys]
    parts = []
    for i in range(min((len(p) - 1 for p in split), default=0)):
        first = {p[i] for p in split}
        if len(first) != 1 or not first <= set(WRAPPER_PARTS):
            break
        parts.append(first.pop())
    return head + "".join(f"{p}." for p in parts)


def _is_ema(prefix: str) -> bool:
    return any(re.search(r"(^|_)ema($|_)", part.lower()) for part in prefix.split(".")[:-1])


def _prefix_counts(keys: Iterable[str], expected: Mapping[str, Any]) -> Counter:
    """For each prefix P: how many keys read as an expected key once P is removed."""
    counts = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in expected:
                counts["".join(f"{p}." for p in parts[:i])] += 1
    return counts


def _choose_prefix(counts: Counter, expected: Mapping[str, Any], ema: bool | None, what: str) -> str | None:
    """The prefix under which every expected key is found; None when there is none.

    A LightningModule may hold the network twice (`model.` and an EMA copy, `ema.module.`):
    `ema` True takes the prefix that names an EMA, False the one that does not, None either.
    Then the shortest wins; two of the same length are ambiguous.
    """
    full = [p for p, n in counts.items() if n == len(expected)]
    if ema is not None:
        full = [p for p in full if _is_ema(p) == ema] or ([] if ema else full)
    if not full:
        return None
    depth = min(p.count(".") for p in full)
    best = sorted(p for p in full if p.count(".") == depth)
    if len(best) > 1:
        raise CheckpointError(f"{what} holds the model's keys under several prefixes ({_quote(best)}). "
                              "Hint: save the one you want as a plain state_dict")
    return best[0]


def pick_weights(ckpt: StoredWeights, expected: Mapping[str, Any], *, ema: bool = False,
                 what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], WeightsRead]:
    """The state_dict in `ckpt` that is meant for a model with the keys `expected`.

    The prefix removed is the shortest under which every expected key is found. Failing that,
    the one under which most are (at least half), so that `verify_state_dict` can then list
    what differs.

    Args:
        ckpt: see `read_torch`.
        expected: the model's state_dict (only its keys are used).
        ema: read the EMA weights (`state_dict_ema`, `model_ema`, or a LightningModule's EMA copy).
        what: how errors name the file, e.g. "--weights 'ckpt.pth'".

    Returns:
        (state_dict with the model's keys, which weights were read).

    Raises:
        CheckpointError: `ema` and the file has no EMA weights; no key matches the model under
            any prefix; several prefixes match equally.

    Example:
        >>> state, read = pick_weights(read_torch(path), model.state_dict(), ema=True)
        >>> read.key, read.prefix
        ('model_ema', 'module.')
    """
    key, state = (ckpt.ema_key, ckpt.ema) if ema and ckpt.ema is not None else (ckpt.key, ckpt.weights)
    if state is None:
        raise CheckpointError(f"{what} holds only EMA weights ({ckpt.ema_key!r}). Hint: pass --ema to read them")
    counts = _prefix_counts(state, expected)
    in_ema = ema and ckpt.ema is not None
    prefix = _choose_prefix(counts, expected, None if in_ema else ema, what)
    if prefix is None and ema and not in_ema:
        where = (f"top-level keys: {_quote([ckpt.key, *ckpt.ignored])}" if ckpt.key else
                 "a safetensors file" if ckpt.format == "safetensors" else "a bare state_dict")
        raise CheckpointError(f"--ema: {what} holds no EMA weights ({where}). Hint: drop --ema to read "
                              f"{'its ' + repr(ckpt.key) if ckpt.key else 'the state_dict'}")
    near = Counter({p: n for p, n in counts.items() if 2 * n >= len(expected)})  # not a few look-alike names
    if prefix is None and not near:
        raise CheckpointError(f"{what}{f' [{key!r}]' if key else ''} matches the model under no prefix: it holds "
                              f"{_quote(state)}; the model expects {_quote(expected)}. Hint: was it saved from "
                              "another model? `msurg info FILE` shows what it holds")
    if prefix is None:  # most keys match: verify_state_dict lists what differs
        prefix = max(near, key=lambda p: (near[p], -len(p)))
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    left_out = tuple(k for k in state if not k.startswith(prefix))
    return picked, WeightsRead(ckpt.path, ckpt.format, key, prefix, ema, left_out)
