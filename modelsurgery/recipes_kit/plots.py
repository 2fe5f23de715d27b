"""Accuracy against wall time and against epoch, method against baseline.

The figures of de Gusmão et al. 2016 (§4-§5.3, Figs 4-10) and Nouri et al. 2019 (§4, Fig. 3):
one line per run, a dotted line at the target accuracy with the tolerance shaded, and a circle where
each run first reached it. matplotlib is imported on first use, with the Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write
from ..train.dist import dist_info
from .accuracy import TOLERANCE

__all__ = ["plot_runs", "plot_panels"]


def plot_runs(path: str | os.PathLike, runs: Mapping[str, Mapping[str, Any]], *, title: str = "",
              target: float | None = None) -> Path | None:
    """Accuracy against wall time and against epoch, one line per run (de Gusmão et al. 2016, Figs 9 and 10).

    A dotted line marks the target accuracy (shaded: the 0.3-point tolerance) and a circle where
    each run first reached it. Rank 0 only; returns the path written (None on other ranks).
    """
    return plot_panels(path, [(title, runs, target)])


def plot_panels(path: str | os.PathLike, panels: Sequence[tuple[str, Mapping[str, Mapping[str, Any]], float | None]]
                ) -> Path | None:
    """`plot_runs` for several groups of runs, one row of two plots per (title, runs, target)."""
    if not dist_info().is_main:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for (title, runs, target), (ax_t, ax_e) in zip(panels, axes, strict=False):
        _plot_group(ax_t, ax_e, runs, target)
        ax_t.set_title(f"{title}: accuracy against wall time" if title else "accuracy against wall time", fontsize=10)
        ax_e.set_title(f"{title}: accuracy against epoch" if title else "accuracy against epoch", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), force=True)
    plt.close(fig)
    return path


def _plot_group(ax_t, ax_e, runs: Mapping[str, Mapping[str, Any]], target: float | None) -> None:
    for name, run in runs.items():
        hist = [r for r in run["history"] if r.get("val_acc") is not None]
        walls, epochs, accs = [r["wall"] for r in hist], [r["epoch"] for r in hist], [r["val_acc"] for r in hist]
        style = dict(ls="--", color="k") if "baseline" in name else {}
        (line,) = ax_t.plot(walls, accs, marker=".", label=name, **style)
        ax_e.plot(epochs, accs, marker=".", label=name, color=line.get_color(), ls=line.get_linestyle())
        hit = next((r for r in hist if r["epoch"] == run.get("epoch_to_target")), None)
        if hit is not None:
            ax_t.plot([hit["wall"]], [hit["val_acc"]], "o", color=line.get_color(), ms=9, mfc="none")
    if target is not None:
        for ax in (ax_t, ax_e):
            ax.axhline(target, color="grey", lw=0.8, ls=":")
            ax.axhspan(target - TOLERANCE, target, color="grey", alpha=0.15, lw=0)
    late = [r["val_acc"] for run in runs.values() for r in run["history"][len(run["history"]) // 3:]
            if r.get("val_acc") is not None]
    for ax, label in ((ax_t, "wall time, training only (s)"), (ax_e, "epoch")):
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        if late:
            ax.set_ylim(max(0.0, min(late) - 0.02), min(1.0, max(late) + 0.01))
    ax_e.legend(loc="lower right", fontsize=8)


