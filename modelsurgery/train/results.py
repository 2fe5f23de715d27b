"""What a run measured: accuracy, time to a target accuracy, the saving; and the files that keep it.

Time to accuracy: a run reaches a target accuracy at the first epoch whose validation accuracy
is at least `target - tolerance` (0.3 points by default); its time is the trainer's `wall`
at the end of that epoch (training time, evaluation excluded). A method's saving is measured
against the baseline's own time to the same target, `1 - t_method / t_baseline`: how Nouri
et al. 2019 (§4, Fig. 3) read their time-shifted accuracy curves.

`finish` ends every recipe: `results.json` (config, plan, git revision, machine and load,
per-epoch logs, comparison), `results.png` (`plots.plot_runs`) and the table on stdout.

Example:
    >>> runs = {"baseline": summarize(base_trainer.history), "mine": summarize(trainer.history)}
    >>> rows = compare(runs, baseline="baseline")
    >>> print(format_table(rows))
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..checkpoint import atomic_write
from ..plan import Plan
from .dist import dist_info
from .machine import machine_info

__all__ = ["TOLERANCE", "time_to_accuracy", "loss_jump", "summarize", "compare", "format_table", "write_results",
           "git_revision", "machine_info", "finish", "FRONTIER", "frontier_reading"]

TOLERANCE = 0.003   # 0.3 accuracy points: "reached" means within this of the target
FRONTIER = Path(__file__).resolve().parents[2] / "bench" / "results" / "time_to_accuracy.json"   # in a checkout


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


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text side-by-side table of `compare` rows."""
    target = next((r["target_acc"] for r in rows if r.get("target_acc") is not None), None)
    head = ["method", "final acc", "wall s", f"time to {_fmt(target, '.2%')} (±0.3) s", "epoch", "saved"]
    body = [[r["method"], _fmt(r["final_acc"], ".2%"), _fmt(r["wall"], ".1f"),
             _fmt(r["time_to_target"], ".1f", "not reached"), _fmt(r["epoch_to_target"], "d"),
             _fmt(r["saved"], "+.1%")] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


# ---- files ------------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Plan):
        return obj.to_dict()
    return obj


def write_results(path: str | os.PathLike, results: Mapping[str, Any], *, force: bool = True) -> Path:
    """Write `results` (config, plans, runs, ...) as indented JSON, atomically; rank 0 only."""
    path = Path(path)
    if dist_info().is_main:
        text = json.dumps(_jsonable(results), indent=1, sort_keys=False)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"), force=force)
    return path


def git_revision(path: str | os.PathLike | None = None) -> str:
    """`git describe --always --dirty` of the checkout holding `path` (default: this package), or "unknown".

    By default only a package that sits at the top of a checkout (`<repo>/modelsurgery`, as in an
    editable install) has a revision: a pip-installed copy in a virtual environment inside some
    repository would otherwise report that repository's.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    if path is None and not (where / ".git").exists():
        return "unknown"
    try:
        out = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def finish(out: str | os.PathLike, method: str, config: Any, runs: dict[str, dict[str, Any]], *,
           plan: Plan | str | None = None, baseline: str = "baseline", target: float | None = None,
           extra: Mapping[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Compare the runs, write `results.json` and `results.png` into `out`, print the table.

    Returns:
        The results: method, config, plan, git revision, machine, every run (per-epoch log,
        final accuracy, time to target), the comparison rows, and the method's own final
        accuracy and time to target at the top level.
    """
    out = Path(out)
    rows = compare(runs, baseline if baseline in runs else None, target=target)
    mine = runs[method]
    results = {"method": method, "final_acc": mine["final_acc"], "time_to_target": mine["time_to_target"],
               "target_acc": mine["target_acc"], "saved": mine.get("saved"), "config": config,
               "plan": plan, "git_revision": git_revision(), "created": datetime.datetime.now().isoformat(
                   timespec="seconds"), "machine": machine_info(), **(extra or {}),
               "comparison": rows, "table": format_table(rows), "runs": runs}
    results = _jsonable(results)
    if isinstance(results.get("plan"), str):
        results["plan"] = json.loads(results["plan"])
    write_results(out / "results.json", results)
    from .plots import plot_runs   # here, not at the top: plots imports TOLERANCE from this module

    plot_runs(out / "results.png", runs, title=method.replace("_", " "), target=mine["target_acc"])
    if not quiet and dist_info().is_main:
        print(results["table"])
        print(f"results: {out / 'results.json'}, plot: {out / 'results.png'}")
    return results


def frontier_reading(method: str, path: str | os.PathLike | None = None) -> str:
    """`method`'s measured verdict on the time-to-accuracy frontier, in a few lines for a newcomer.

    Reads `bench/results/time_to_accuracy.json` (`python -m bench.time_to_accuracy`): the
    method's point at the headline budget (else its largest measured one), its accuracy over
    seeds, its saving at equal accuracy read off the baseline's frontier, and the verdict.

    Example:
        >>> print(frontier_reading("kernel_rescaling"))
    """
    path = Path(path) if path is not None else FRONTIER
    if not path.is_file():
        return f"No measured frontier at {path} (it ships with a checkout: python -m bench.time_to_accuracy)."
    results = json.loads(path.read_text())
    data = results["data"]
    points = data.get("methods", {}).get(method) or []
    if not points:
        return f"{path.name} has no measured point of {method} yet."
    head = data.get("headline_epochs")
    p = next((q for q in points if q["epochs"] == head), max(points, key=lambda q: q["epochs"]))
    net = data.get("network", {})
    acc = f"{p['acc_mean']:.2%}" + (f" ± {p['acc_std']:.2%}" if p.get("acc_std") is not None else "")
    saving = p.get("saving_at_equal_acc")
    read = ("more accurate than the baseline's best point" if p.get("above_frontier") else
            "no saving can be read" if saving is None else f"it saves {saving:+.1%} of the baseline's cost at that "
            "accuracy")
    done = "" if data.get("complete") else f" (partial: {len(data.get('missing', []))} runs still to train)"
    where = path.parent
    return (f"Measured{done}: full Fashion-MNIST, FashionResNet-18 width {net.get('width', '?')}, "
            f"{results.get('machine', {}).get('processor', 'unknown CPU')}. {method.replace('_', ' ')} at "
            f"{p['epochs']} epochs, {len(p['seeds'])} seeds: {acc}; {read}. Verdict: {p.get('verdict', '—')}.\n"
            f"Frontier plot: {where / 'time_to_accuracy.png'}; every point: {where / 'README.md'}.")

