"""The files a recipe leaves: `results.json`, `results.png`, the git revision; the measured frontier.

`finish` ends every recipe: `results.json` (config, plan, git revision, machine and load,
per-epoch logs, comparison from `accuracy.compare`), `results.png` (`plots.plot_runs`) and the
table on stdout.

Example:
    >>> finish("runs/lm", "low_mode", cfg, {"baseline": base, "low_mode": mine}, plan=plan)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write
from ..plan import Plan
from ..train.dist import dist_info
from .accuracy import compare, format_comparison
from .machine import machine_info
from .plots import plot_runs

__all__ = ["write_results", "git_revision", "finish", "FRONTIER", "frontier_reading"]

FRONTIER = Path(__file__).resolve().parents[2] / "bench" / "results" / "time_to_accuracy.json"   # in a checkout


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
               "comparison": rows, "table": format_comparison(rows), "runs": runs}
    results = _jsonable(results)
    if isinstance(results.get("plan"), str):
        results["plan"] = json.loads(results["plan"])
    write_results(out / "results.json", results)
    plot_runs(out / "results.png", runs, title=method.replace("_", " "), target=mine["target_acc"])
    if not quiet and dist_info().is_main:
        print(results["table"])
        print(f"results: {out / 'results.json'}, plot: {out / 'results.png'}")
    return results


def _spread(bounds: list | None) -> str:
    """" (x to y against the baseline ± its seed spread)", unbounded ends as ∞; "" where none was read."""
    if not bounds or bounds == [None, None]:
        return ""
    lo, hi = ("-∞" if bounds[0] is None else f"{bounds[0]:+.1%}"), ("+∞" if bounds[1] is None else f"{bounds[1]:+.1%}")
    return f" ({lo} to {hi} against the baseline ± its seed spread)"


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
    least = p.get("saving_at_least")
    read = (("more accurate than the baseline's best point" + ("" if least is None else
             f": it saves at least {least:+.1%} of the baseline's cost") + _spread(p.get("saving_range")))
            if p.get("above_frontier") else
            "no saving can be read" if saving is None else f"it saves {saving:+.1%} of the baseline's cost at that "
            f"accuracy{_spread(p.get('saving_range'))}")
    missing = len(data.get("missing", []))
    done = ("" if data.get("complete") else
            f" (the frontier is complete; {missing} ablation run{'s' * (missing != 1)} still to train)"
            if data.get("frontier_complete") else f" (partial: {missing} runs still to train)")
    where = path.parent
    return (f"Measured{done}: full Fashion-MNIST, FashionResNet-18 width {net.get('width', '?')}, "
            f"{results.get('machine', {}).get('processor', 'unknown CPU')}. {method.replace('_', ' ')} at "
            f"{p['epochs']} epochs, {len(p['seeds'])} seed{'s' * (len(p['seeds']) != 1)}: {acc}; {read}. "
            f"Verdict: {p.get('verdict', '—')}.\n"
            f"Frontier plot: {where / 'time_to_accuracy.png'}; every point: {where / 'README.md'}.")

