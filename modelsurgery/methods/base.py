"""What every method offers a training loop, and `Compose`, which runs several as one.

A method here is what Composer calls an algorithm: a small object that checks its
hyperparameters when it is built and changes training through the three hooks that
`modelsurgery.train.Trainer` calls:

- `on_epoch_start(trainer, epoch)` before each epoch: set the input size, grow the network;
- `step_context(trainer, epoch, it)`: a context manager wrapped around iteration `it`'s forward
  and backward (e.g. low mode), or None for a normal step;
- `restore(trainer, info)` on resume, before the checkpoint is loaded: build the network the
  checkpoint holds (e.g. the grown target), so that its weights fit.

The hooks read their state from the trainer (its form, size and model), which a resume
restores, so a resumed run makes exactly the decisions of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from ..calibrate import recalibrate_bn
from ..errors import MethodError

__all__ = ["Method", "Compose"]


class Method:
    """The hooks with no effect; a method overrides those it uses.

    Example:
        >>> class Noop(Method):
        ...     pass
        >>> Trainer(model, train, val, schedule=s, methods=[Noop()])
    """

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Called before epoch `epoch` (0-based)."""

    def step_context(self, trainer: Any, epoch: int, it: int) -> ContextManager | None:
        """A context manager for iteration `it` of `epoch`, or None for a normal step."""
        return None

    def restore(self, trainer: Any, info: Any) -> None:
        """On resume: make `trainer` hold the network the checkpoint (`info`) was written from."""


class Compose(Method):
    """Several methods as one: each hook calls theirs in order; step contexts nest.

    Example:
        >>> method = Compose(KernelRescaling(target, target_size=28, switch_epoch=6),
        ...                  LowMode(0.5, form="target"))
    """

    def __init__(self, *methods: Method):
        for method in methods:
            if not all(callable(getattr(method, hook, None)) for hook in ("on_epoch_start", "step_context",
                                                                          "restore")):
                raise MethodError(f"{method!r} is not a method: it needs on_epoch_start, step_context and "
                                  "restore. Hint: pass instances of modelsurgery.methods classes")
        self.methods: Sequence[Method] = methods

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        for method in self.methods:
            method.on_epoch_start(trainer, epoch)

    def step_context(self, trainer: Any, epoch: int, it: int) -> ContextManager | None:
        contexts = [c for c in (m.step_context(trainer, epoch, it) for m in self.methods) if c is not None]
        if len(contexts) <= 1:
            return contexts[0] if contexts else None
        return _nested(contexts)

    def restore(self, trainer: Any, info: Any) -> None:
        for method in self.methods:
            method.restore(trainer, info)


@contextlib.contextmanager
def _nested(contexts: Sequence[ContextManager]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


def recalibrate_from_loader(trainer: Any, epoch: int, images: int) -> None:
    """Re-measure BatchNorm statistics of `trainer.model` on about `images` training images of `epoch`.

    The batches depend on the epoch only, so a resumed run recalibrates as an uninterrupted one.
    """
    loader = trainer.train_loader
    batches = -(-images // loader.batch_size)
    loader.set_epoch(epoch)
    recalibrate_bn(trainer.model, (x.to(trainer.device) for x, _ in itertools.islice(loader, batches)))


def check_int(name: str, value: Any, minimum: int, hint: str) -> int:
    """`value` if it is an integer ≥ `minimum`, else a `MethodError` naming it and the fix."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MethodError(f"{name} must be an integer ≥ {minimum}, got {value!r}. Hint: {hint}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else a `MethodError` listing them."""
    if value not in choices:
        raise MethodError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
