"""Checks of input and output paths, done before any model or tensor is touched.

This module imports no torch, so `msurg` reports a missing checkpoint or an existing `--out` at
once; `checkpoint` and `files` run the same checks again as the first step of their work.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError, OutputExistsError

__all__ = ["check_paths", "check_input", "check_output", "target_path"]


def check_output(path: str | os.PathLike, force: bool = False) -> Path:
    """Validate an output path before any work is done: writable folder, no clobbering.

    Example:
        >>> check_output("small.safetensors")   # raises OutputExistsError if it exists
        PosixPath('small.safetensors')
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"output {str(path)!r} is a directory. Hint: give a file name, e.g. "
                              f"{path / 'model.safetensors'}")
    if path.exists() and not force:
        raise OutputExistsError(f"output {str(path)!r} exists. Hint: pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise CheckpointError(f"output folder {str(parent)!r} is a file, not a folder. Hint: choose another --out")
    if not parent.is_dir():
        raise CheckpointError(f"output folder {str(parent)!r} does not exist. Hint: create it first")
    if not os.access(parent, os.W_OK):
        raise CheckpointError(f"output folder {str(parent)!r} is not writable. Hint: choose another --out")
    return path


def check_input(path: str | os.PathLike) -> Path:
    """A checkpoint path that exists and is a file (not a folder).

    Example:
        >>> check_input("small.safetensors")   # raises CheckpointError if it is missing
        PosixPath('small.safetensors')
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist. Hint: check the path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file. Hint: name the file inside it")
    return path


def check_paths(out: str | os.PathLike, force: bool = False, *inputs: str | os.PathLike | None) -> Path:
    """`check_output(out, force)`, then `check_input` on every input that is not None.

    Example:
        >>> check_paths("small.safetensors", False, "target.pth")   # `msurg shrink --weights target.pth`
        PosixPath('small.safetensors')
    """
    out = check_output(out, force)
    for path in inputs:
        if path is not None:
            check_input(path)
    return out


def target_path(ckpt: str | os.PathLike) -> Path:
    """`msurg grow`'s default output: `<ckpt stem>-target.safetensors` beside `ckpt`.

    Example:
        >>> target_path("runs/small.safetensors")
        PosixPath('runs/small-target.safetensors')
    """
    path = Path(ckpt)
    return path.with_name(f"{path.stem}-target.safetensors")
