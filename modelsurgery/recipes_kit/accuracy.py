"""What a run measured: accuracy, time to a target accuracy, the saving against a baseline.

Time to accuracy: a run reaches a target accuracy at the first epoch whose validation accuracy
is at least `target - tolerance` (0.3 points by default); its time is the trainer's `wall`
at the end of that epoch (training time, evaluation excluded). A method's saving is measured
against the baseline's own time to the same target, `1 - t_method / t_baseline`: how Nouri
et al. 2019 (§4, Fig. 3) read their time-shifted accuracy curves.

Example:
    >>> runs = {"baseline": summarize(base_trainer.history), "mine": summarize(trainer.history)}
    >>> rows = compare(runs, baseline="baseline")
    >>> print(format_comparison(rows))
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..plan import Plan

__all__ = ["TOLERANCE", "time_to_accuracy", "loss_jump", "summarize", "compare", "format_comparison"]

TOLERANCE = 0.003   # 0.3 accuracy points: "reached" means within this of the target


def time_to_accuracy(history: Sequence[Mapping[str, Any]], target: float | None,
                     tolerance: float = TOLERANCE) -> tuple[float | None, int | None]:
    """(wall seconds, epoch) at the first epoch with val_acc ≥ target − tolerance, or (None, None)."""
    if target is None:
        return None, None
    for record in history:
        acc = record.get("val_acc")
        if acc is not None and acc >= target - tolerance - 1e-12:
            return float(record["wall"]), int(record["epoch"])
    return None, None


def loss_jump(history: Sequence[Mapping[str, Any]], epoch: int, steps: int = 50) -> dict[str, Any] | None:
    """The mean training loss over the last `steps` iterations before epoch `epoch` (0-based) and the first after.

    Read from the records' per-iteration `loss_head` / `loss_tail` (the Trainer's `step_losses`),
    e.g. around a grow at the start of `epoch`. None when the history does not reach both sides.

    Example:
        >>> loss_jump(trainer.history, epoch=4)
        {'before': 0.256, 'after': 0.262, 'ratio': 1.023, 'steps': 50}
    """
    if not 0 < epoch < len(history) or "loss_tail" not in history[epoch - 1] or "loss_head" not in history[epoch]:
        return None
    before, after = history[epoch - 1]["loss_tail"][-steps:], history[epoch]["loss_head"][:steps]
    if not before or not after:
        return None
    b, a = sum(before) / len(before), sum(after) / len(after)
    return {"before": round(b, 5), "after": round(a, 5), "ratio": round(a / b, 4) if b else None,
            "steps": min(len(before), len(after))}


def summarize(history: Sequence[Mapping[str, Any]], *, plan: Plan | str | None = None,
              **extra: Any) -> dict[str, Any]:
    """One run's measurements: final and best accuracy, total wall time, and its per-epoch log."""
    history = [dict(r) for r in history]
    accs = [r["val_acc"] for r in history if r.get("val_acc") is not None]
    plan_dict = json.loads(plan) if isinstance(plan, str) else plan.to_dict() if plan is not None else None
    return {"final_acc": accs[-1] if accs else None, "best_acc": max(accs) if accs else None,
            "wall": history[-1]["wall"] if history else 0.0, "epochs": len(history),
            "sizes": [r["size"] for r in history], "forms": [r["form"] for r in history],
            "plan": plan_dict, **extra, "history": history}


def compare(runs: Mapping[str, dict[str, Any]], baseline: str | None = "baseline", *,
            target: float | None = None, tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """Time-to-accuracy rows; adds `target_acc`, `time_to_target`, `epoch_to_target` to each run.

    The target is `target` if given, else the baseline's final accuracy, else each run's own
    final accuracy. `saved` is 1 − t_run / t_baseline, both times to the same target.
    """
    base = runs.get(baseline) if baseline else None
    goal = target if target is not None else base["final_acc"] if base else None
    source = "given" if target is not None else f"{baseline} final" if base else "own final"
    t_base = time_to_accuracy(base["history"], goal, tolerance)[0] if base else None
    rows = []
    for name, run in runs.items():
        run_goal = goal if goal is not None else run["final_acc"]
        t, epoch = time_to_accuracy(run["history"], run_goal, tolerance)
        run.update(target_acc=run_goal, target_source=source, tolerance=tolerance,
                   time_to_target=t, epoch_to_target=epoch)
        saved = None if t is None or not t_base else 1.0 - t / t_base
        saved_total = None if t is None or not base or not base["wall"] else 1.0 - t / base["wall"]
        run.update(saved=saved, saved_vs_baseline_total=saved_total)
        rows.append({"method": name, "final_acc": run["final_acc"], "wall": run["wall"],
                     "time_to_target": t, "epoch_to_target": epoch, "saved": saved,
                     "saved_vs_baseline_total": saved_total, "target_acc": run_goal})
    return rows


def _fmt(value, spec: str, none: str = "—") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_comparison(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text side-by-side table of `compare` rows (`cost.format_table` is the plan's cost table).

    Example:
        >>> print(format_comparison(compare(runs)))
    """
    target = next((r["target_acc"] for r in rows if r.get("target_acc") is not None), None)
    head = ["method", "final acc", "wall s", f"time to {_fmt(target, '.2%')} (±0.3) s", "epoch", "saved"]
    body = [[r["method"], _fmt(r["final_acc"], ".2%"), _fmt(r["wall"], ".1f"),
             _fmt(r["time_to_target"], ".1f", "not reached"), _fmt(r["epoch_to_target"], "d"),
             _fmt(r["saved"], "+.1%")] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    def line(cells):
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])
