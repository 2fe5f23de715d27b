"""Run folders, a `Trainer` with a recipe's settings, and fit with resume.

- `default_out`, `prepare_out`: a fresh `runs/<method>-<date-time>` folder per run; a folder
  that already holds `results.json` is reused only with `--resume` or `--force`.
- `make_trainer`: a `Trainer` with the recipe config's optimiser settings, logging to
  `log.jsonl` and checkpointing to `last.safetensors` in the run folder.
- `fit(trainer, epochs, resume=...)`: train, resuming from the trainer's checkpoint when asked
  (its methods' `restore` first rebuilds the form the checkpoint holds, e.g. the grown target),
  and keep the JSON-lines log consistent with the checkpoint.
- `train_method`: all of that for one model and one method object (`modelsurgery.methods`),
  handed to the `Trainer` as `methods=[method]`, and `train_baseline`, the same model on the
  same schedule at full size without a method.

Example:
    >>> history = train_method(cfg, model, data, schedule, "runs/lm/low_mode", method=LowMode(0.5))
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..deprecation import moved
from ..errors import OutputExistsError
from ..images import Dataset
from ..train.dist import dist_info
from ..train.loader import make_loaders
from ..train.loop import Trainer
from ..train.state import TrainingCheckpointInfo, read_checkpoint_info
from .accuracy import summarize

__all__ = ["default_out", "prepare_out", "make_trainer", "fit_resuming", "train_method", "train_baseline"]


def default_out(method: str) -> Path:
    """`runs/<method>-<YYYYmmdd-HHMMSS>`: a fresh folder per run, so nothing is overwritten."""
    return Path("runs") / f"{method}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def prepare_out(out: str | os.PathLike, *, resume: bool = False, force: bool = False) -> Path:
    """Create the run folder; refuse to reuse one that holds results unless resuming or forced."""
    out = Path(out)
    if (out / "results.json").exists() and not (resume or force):
        raise OutputExistsError(f"{out} already holds a finished run (results.json). Hint: pass --resume "
                                "to continue it, --force to start over in it, or another --out")
    if dist_info().is_main:
        out.mkdir(parents=True, exist_ok=True)
    return out


def fit_resuming(trainer, epochs: int, *, resume: bool = False,
        restore: Callable[[Any, TrainingCheckpointInfo], None] | None = None) -> list[dict[str, Any]]:
    """Train `trainer` to `epochs` epochs in total, resuming from its checkpoint if asked.

    On resume the trainer's methods switch it to the form the checkpoint holds (e.g. build the
    grown target; `Trainer.load_checkpoint`), after `restore(trainer, info)` when given (a
    function for a trainer built without methods); then weights, optimizer, RNG and history are
    loaded. The
    JSON-lines log is rewritten from the checkpoint's history, so it never holds epochs the
    checkpoint does not. A fresh run starts a fresh log.

    Returns:
        The trainer's per-epoch history.
    """
    ckpt, log = trainer.checkpoint_path, trainer.log_path
    resuming = resume and ckpt is not None and ckpt.is_file()
    if resuming:
        info = read_checkpoint_info(ckpt)
        if restore is not None:
            restore(trainer, info)
        trainer.load_checkpoint(ckpt)
    if log is not None and trainer.dist.is_main:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(json.dumps(r) + "\n" for r in trainer.history) if resuming else "")
    return trainer.fit(epochs)


def make_trainer(cfg: Any, model, loaders, schedule, run_dir: str | os.PathLike, **hooks):
    """A `Trainer` with a recipe config's optimiser settings, logging to and checkpointing in `run_dir`.

    `cfg` needs `momentum`, `weight_decay` and `seed`; `hooks` are further Trainer arguments
    (`methods`, `on_epoch_start`, `eval_size`, `form`, `plan`).

    Example:
        >>> trainer = make_trainer(cfg, model, make_loaders(data, batch_size=128), schedule, "runs/x")
    """
    train, val = loaders
    run_dir = Path(run_dir)
    return Trainer(model, train, val, schedule=schedule, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   seed=cfg.seed, log_path=run_dir / "log.jsonl", checkpoint_path=run_dir / "last.safetensors",
                   **hooks)


def train_method(cfg: Any, model, data: Dataset, schedule, run_dir: str | os.PathLike, *, method: Any = None,
                 epochs: int | None = None, size: int | None = None, eval_size: int | None = None,
                 form: str = "target", plan=None) -> list[dict[str, Any]]:
    """Train `model` with `method`'s hooks for `epochs` (default `cfg.epochs`); resume if `cfg.resume`.

    Args:
        cfg: a recipe config: `batch_size`, `seed`, `max_batches`, `momentum`, `weight_decay`,
            `epochs` and `resume` are read.
        model: the network training starts with (a method may replace it, e.g. by growing it).
        data: the training and validation images.
        schedule: the LR schedule.
        run_dir: where `log.jsonl` and `last.safetensors` go.
        method: a training method (any `modelsurgery.methods` class, or an object with their
            three hooks), passed to the Trainer as `methods=[method]`; None for plain training.
        size: train at this input size throughout; set in the first epoch's callback, so the
            one-off resize counts as training time, as it does for every method.
        eval_size, form, plan: passed to the `Trainer`.

    Returns:
        The per-epoch history.
    """
    loaders = make_loaders(data, batch_size=cfg.batch_size, seed=cfg.seed, max_batches=cfg.max_batches)
    callbacks = [_hold_size(size)] if size is not None else []
    trainer = make_trainer(cfg, model, loaders, schedule, run_dir, on_epoch_start=callbacks, eval_size=eval_size,
                           form=form, plan=plan, methods=[method] if method is not None else [])
    return fit_resuming(trainer, epochs or cfg.epochs, resume=cfg.resume)


def train_baseline(cfg: Any, model, data: Dataset, schedule, run_dir: str | os.PathLike,
                   size: int | None = None) -> dict[str, Any]:
    """The comparison every recipe offers: `model` trained at full size on `schedule` for `cfg.epochs`.

    `cfg` needs `size` (unless `size` is given), `epochs`, `batch_size`, `seed`, `max_batches`,
    `momentum`, `weight_decay` and `resume`.

    Returns:
        `summarize` of the run.
    """
    return summarize(train_method(cfg, model, data, schedule, run_dir, size=size or cfg.size))


def _hold_size(size: int) -> Callable[[Any, int], None]:
    def hold(trainer, epoch):
        if trainer.size != size:
            trainer.set_input_size(size)

    return hold


# `fit` was this function's name; beside `Trainer.fit` it read as the same thing.
__getattr__ = moved(__name__, {"fit": f"{__name__}:fit_resuming"})
