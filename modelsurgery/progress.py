"""Progress bars for the long steps of `msurg`: on a terminal only, never on a pipe.

`bar` wraps an iterable in a tqdm bar on stderr; `stages` steps one bar through named stages.
`enabled=None` means "if stderr is a terminal", so `msurg grow --calibrate ... | tee log` and
tests (click's CliRunner) stay quiet, while an interactive run shows where the time goes. The
bars are cleared when they finish, so the one-line report on stdout is all that stays.

Example:
    >>> for batch in bar(batches, "BatchNorm", total=10, enabled=True):
    ...     model(batch)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

__all__ = ["bar", "stages", "on_terminal"]

T = TypeVar("T")


def on_terminal(enabled: bool | None = None) -> bool:
    """`enabled`, or (None) whether stderr is a terminal."""
    if enabled is not None:
        return bool(enabled)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _tqdm(enabled: bool | None, **kwargs):
    from tqdm import tqdm

    return tqdm(disable=not on_terminal(enabled), file=sys.stderr, leave=False, dynamic_ncols=True, **kwargs)


def bar(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
        enabled: bool | None = None) -> Iterator[T]:
    """`items`, with a progress bar on stderr when `enabled` (None: when stderr is a terminal).

    Example:
        >>> fitted = [fit(x) for x in bar(layers, "least squares", total=len(layers))]
    """
    with _tqdm(enabled, desc=desc, total=total, unit=unit) as progress:
        for item in items:
            yield item
            progress.update(1)


@contextlib.contextmanager
def stages(names: Sequence[str], desc: str, *, enabled: bool | None = None) -> Iterator[Callable[[str], None]]:
    """A bar over named stages: call `step(name)` as each one starts; the bar advances past the last.

    Example:
        >>> with stages(["export", "check"], "ONNX") as step:
        ...     step("export"); ...; step("check"); ...
    """
    with _tqdm(enabled, desc=desc, total=len(names), unit="stage") as progress:
        started = []

        def step(name: str) -> None:
            if started:
                progress.update(1)
            started.append(name)
            progress.set_postfix_str(name, refresh=True)

        yield step
        if started:
            progress.update(1)
