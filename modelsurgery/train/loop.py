"""The training loop: one `Trainer`, small enough to read top to bottom.

A recipe builds a model and two loaders, hands them to a `Trainer` with an LR schedule and its
training methods (`methods=[KernelRescaling(...), LowMode(...)]`, as Composer's trainer takes
`algorithms=[...]`), and calls `fit(epochs)`. The Trainer calls each method's three hooks
(`modelsurgery.methods.base.Method`); the keyword arguments `on_epoch_start=` and
`step_context=` take plain functions with the same signatures, run before the methods':

- `on_epoch_start(trainer, epoch)` runs before each epoch. It may call
  `trainer.set_input_size(S)` (resolution schedules) or `trainer.replace_model(m, form=...)`
  (grow the pre-train network into the target). Write them as conditions on state
  (`if epoch >= switch and trainer.form == "pretrain"`), so they also hold after a resume.
- `step_context(trainer, epoch, it)` may return a context manager that wraps the forward and
  backward of iteration `it` (e.g. `low_mode(trainer.model, 2)`), or None for a normal step.
  Wrapped iterations are counted and logged as mode "low" (all), "mixed" (some) or "full".
  Several methods' contexts nest.
- `restore(trainer, info)` runs in `load_checkpoint`, before the weights are read: it builds the
  network the checkpoint holds (e.g. the grown target), so that a resume fits.
- the schedule is a pure function of the fractional epoch (see `schedules`), so replacing the
  model or resuming keeps its position.

Time: `wall` in the log is cumulative training time in seconds: epoch-start callbacks (resizes,
grows) and the training iterations, excluding evaluation, logging and checkpoint writing.
`epoch_start_s` is the callbacks' share of each epoch: the one-off work (a grow, its fits and
BatchNorm recalibration, a dataset resize) apart from the steps.

Determinism: at the start of epoch e every global RNG is reseeded from (seed, e), the same on
every rank, so random decisions in callbacks and step contexts agree across DDP ranks; the
loader's order and augmentation depend only on (seed, e, rank). A run resumed from the
checkpoint of epoch e therefore ends with exactly the weights of an uninterrupted run (bit for
bit on the CPU).

Devices: CUDA (bf16 autocast, channels_last), then MPS, then the CPU (float32, no autocast).
Under torchrun the model is wrapped in DistributedDataParallel; rank 0 alone logs, writes
checkpoints and shows the progress bar.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..methods.base import Compose, Method
from ..momentum import carry_momentum
from ..plan import Plan
from .dist import all_reduce_sum, barrier, broadcast_buffers, mix_seed, pick_device, seed_everything, setup_distributed
from .schedules import LRSchedule
from .state import TrainingCheckpointInfo, load_training_checkpoint, read_checkpoint_info, save_training_checkpoint

__all__ = ["Trainer", "param_groups"]

EpochCallback = Callable[["Trainer", int], None]
StepContext = Callable[["Trainer", int, int], "ContextManager | None"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights with ≥ 2 dims only; none on norm scales and biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """SGD training with per-epoch hooks, JSON-lines logging and exact resume.

    Args:
        model: the network (any nn.Module mapping N×C×S×S images to logits).
        train_loader: yields (images, labels); `set_size(S)` and `set_epoch(e)` are used when
            present (`TensorLoader` has both).
        val_loader: the same for evaluation, or None to skip it.
        schedule: LR as a function of the fractional epoch (`MultiStep`, `Cosine`, `Hold`).
        momentum, nesterov, weight_decay: SGD settings (no decay on norm scales and biases).
        label_smoothing: for the cross-entropy loss.
        seed: every global RNG is reseeded from (seed, epoch) at each epoch start.
        log_path: JSON-lines file, one record per epoch (appended; rank 0 only).
        checkpoint_path: if set, the training state is written there after every epoch.
        progress: tqdm bar; default on when stderr is a terminal. Always off on ranks > 0.
        methods: training methods (`modelsurgery.methods`), whose hooks are called in order.
        on_epoch_start: callbacks `f(trainer, epoch)` run before each epoch, before the methods'.
        step_context: `f(trainer, epoch, it)` returning a context manager or None.
        eval_size: evaluate at this size; default the current training size.
        form: "pretrain" or "target", logged and stored in checkpoints.
        plan: the surgery plan (Plan or JSON) stored in checkpoints.
        device, amp, channels_last: default CUDA → MPS → CPU; autocast and channels_last on CUDA.
        step_losses: each epoch's record keeps the losses of its first and last this many
            iterations (`loss_head`, `loss_tail`; 0: none), e.g. to read the loss jump at a grow.

    Example:
        >>> kr = KernelRescaling(FashionResNet(width=4), target_size=28, switch_epoch=6)
        >>> trainer = Trainer(kr.model, train, val, schedule=MultiStep(0.1, (6,)), methods=[kr],
        ...                   form=kr.form, plan=kr.plan, log_path="log.jsonl")
        >>> history = trainer.fit(8)
        >>> history[-1]["val_acc"]
        0.87
    """

    def __init__(self, model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
                 schedule: LRSchedule, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 5e-4, label_smoothing: float = 0.0, seed: int = 0,
                 log_path: str | Path | None = None, checkpoint_path: str | Path | None = None,
                 progress: bool | None = None, on_epoch_start: Sequence[EpochCallback] = (),
                 step_context: StepContext | None = None, eval_size: int | None = None,
                 form: str = "target", plan: Plan | str | None = None,
                 device: str | torch.device | None = None, amp: bool | None = None,
                 channels_last: bool | None = None, step_losses: int = 50, methods: Sequence[Method] = ()):
        self.dist = setup_distributed()
        self.device = torch.device(device) if device is not None else pick_device(self.dist.local_rank)
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if amp is None else amp
        self.channels_last = on_cuda if channels_last is None else channels_last
        self.train_loader, self.val_loader, self.schedule = train_loader, val_loader, schedule
        self.sgd = dict(momentum=momentum, nesterov=nesterov)
        self.weight_decay, self.seed = weight_decay, seed
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.log_path = Path(log_path) if log_path else None
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        show = sys.stderr.isatty() if progress is None else progress
        self.progress = show and self.dist.is_main
        self.on_epoch_start = list(on_epoch_start)
        self.step_context = step_context
        self.methods = list(methods)
        self._hooks = Compose(_Keywords(), *self.methods)
        self.eval_size, self.form, self.plan = eval_size, form, plan
        self.step_losses = step_losses
        self.epoch, self.step, self.wall = 0, 0, 0.0   # epochs done, iterations done, seconds
        self.history: list[dict[str, Any]] = []
        self.size = getattr(train_loader, "size", None)
        self.replace_model(model, form=form)

    # ---- hooks a recipe calls -------------------------------------------------------------
    def replace_model(self, model: nn.Module, form: str | None = None, plan: Plan | str | None = None, *,
                      convert_momentum: Callable[[dict], dict] | None = None) -> None:
        """Train `model` from now on: move it, wrap it for DDP, and build a fresh optimizer.

        Momentum buffers start from zero, unless `convert_momentum` is given: then the old
        optimizer's buffers go through it, by parameter name, into the new one
        (`modelsurgery.methods.carry_momentum`; pass the weights' linear map, e.g.
        `KernelRescaling.convert_state`). The LR schedule keeps its position. Under DDP every
        rank must call this (rank 0's weights win).
        """
        old = (self.model, self.optimizer) if convert_momentum is not None and hasattr(self, "optimizer") else None
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net: nn.Module = DistributedDataParallel(model, device_ids=ids)
        else:
            self.net = model
        groups = param_groups(model, self.weight_decay)
        self.optimizer = torch.optim.SGD(groups, lr=self.schedule(self.epoch), **self.sgd)
        if old is not None:
            carry_momentum(*old, model, self.optimizer, convert_momentum)
        self.form = form or self.form
        self.plan = plan if plan is not None else self.plan

    def set_input_size(self, size: int) -> None:
        """Train (and, without `eval_size`, evaluate) at `size`×`size` from now on."""
        self.size = size
        if hasattr(self.train_loader, "set_size"):
            self.train_loader.set_size(size)

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, epochs: int) -> list[dict[str, Any]]:
        """Train until `epochs` epochs are done in total (a resumed trainer continues)."""
        while self.epoch < epochs:
            start = self._now()
            seed_everything(mix_seed(self.seed, self.epoch))   # the same on every rank
            self._hooks.on_epoch_start(self, self.epoch)
            callbacks = self._now() - start
            loss, low, lr = self._train_epoch()
            self.wall += self._now() - start
            acc = self.evaluate() if self.val_loader is not None else None
            self.epoch += 1
            record = {"epoch": self.epoch, "wall": round(self.wall, 4), "train_loss": loss,
                      "val_acc": acc, "lr": lr, "size": self.size, "eval_size": self.eval_size or self.size,
                      "mode": "full" if low == 0 else "low" if low == 1 else "mixed",
                      "low_fraction": low, "form": self.form, "step": self.step,
                      "epoch_start_s": round(callbacks, 4)}
            if self.step_losses:   # the first and last iterations' losses: what a grow's loss jump is read from
                record.update(loss_head=self._steps[:self.step_losses], loss_tail=self._steps[-self.step_losses:])
            self.history.append(record)
            self._log(record)
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path, force=True)
        return self.history

    def _train_epoch(self) -> tuple[float, float, float]:
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        n = len(loader)
        self.net.train()
        total, wrapped, lr = torch.zeros((), device=self.device), 0, self.schedule(self.epoch)
        steps = torch.zeros(n, device=self.device)   # per-step losses, read once at the end (no sync per step)
        bar = tqdm(loader, total=n, disable=not self.progress, leave=False, desc=f"epoch {self.epoch + 1}")
        for it, (x, y) in enumerate(bar):
            lr = self.schedule(self.epoch + it / n)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            ctx = self._hooks.step_context(self, self.epoch, it)
            wrapped += ctx is not None
            with ctx if ctx is not None else contextlib.nullcontext():
                with self._autocast():
                    loss = self.criterion(self.net(x), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.optimizer.step()
            self.step += 1
            total += loss.detach().float()
            if it < n:
                steps[it] = loss.detach().float()
            if self.progress and it % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", size=self.size)
        broadcast_buffers(self.model)   # DDP syncs BN statistics before a forward, not after the last
        stats = all_reduce_sum(torch.stack([total, torch.tensor(float(n), device=self.device)]))
        if self.step_losses:   # the mean over ranks, like train_loss, so every rank logs the same
            steps = all_reduce_sum(steps) / self.dist.world_size
        self._steps = [round(v, 5) for v in steps.tolist()] if self.step_losses else []
        return (stats[0] / stats[1].clamp(min=1)).item(), wrapped / max(n, 1), lr

    @torch.no_grad()
    def evaluate(self, size: int | None = None) -> float:
        """Top-1 accuracy on the validation set at `size` (default `eval_size`, else the training size)."""
        size = size or self.eval_size or self.size
        if size is not None and hasattr(self.val_loader, "set_size"):
            self.val_loader.set_size(size)
        was_training = self.model.training
        self.model.eval()
        counts = torch.zeros(2, device=self.device)
        for x, y in self.val_loader:
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            with self._autocast():
                pred = self.model(x).argmax(1)
            counts[0] += (pred == y).sum()
            counts[1] += len(y)
        self.model.train(was_training)
        correct, total = all_reduce_sum(counts).tolist()
        return correct / max(total, 1)

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, force: bool = False) -> None:
        """Write the training state (rank 0 only; every rank waits for the file)."""
        if self.dist.is_main:
            state = {"epoch": self.epoch, "step": self.step, "wall": self.wall, "size": self.size,
                     "seed": self.seed, "history": self.history}
            save_training_checkpoint(path, self.model, self.optimizer, train=state,
                                     plan=self.plan, form=self.form, force=force)
        barrier()

    def load_checkpoint(self, path: str | Path) -> TrainingCheckpointInfo:
        """Resume from `path`: the methods' `restore` builds the checkpoint's form, then its state is loaded."""
        if self.methods:
            self._hooks.restore(self, read_checkpoint_info(path))
        info = load_training_checkpoint(path, self.model, self.optimizer)
        state = info.train
        self.epoch, self.step, self.wall = state["epoch"], state["step"], state["wall"]
        self.history, self.form = list(state["history"]), info.form
        self.plan = info.plan if info.plan is not None else self.plan
        if state["size"] is not None:
            self.set_input_size(state["size"])
        return info

    # ---- small helpers --------------------------------------------------------------------
    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self) -> ContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)   # CUDA is asynchronous; time finished work only
        return time.perf_counter()

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        if self.progress:
            fields = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            tqdm.write(" ".join(fields))
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class _Keywords(Method):
    """The Trainer's `on_epoch_start=` and `step_context=` arguments as a method, read at each call."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        for callback in trainer.on_epoch_start:
            callback(trainer, epoch)

    def step_context(self, trainer: Trainer, epoch: int, it: int) -> ContextManager | None:
        return trainer.step_context(trainer, epoch, it) if trainer.step_context else None
