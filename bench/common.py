"""What every benchmark shares: machine info, interleaved timing, medians, one results layout.

Every script in bench/ writes its results through `Run.finish`, as one JSON file:

    {"script": "pretrain_speedup",          # the script's module name in bench/
     "machine": {...},                       # modelsurgery.train.machine.machine_info(), the load
                                             # average at start and end, run time, git revision
     "settings": {...},                      # what the script was asked to measure
     "goals": [{"name": ..., "value": ..., "threshold": ..., "met": ...}, ...],
     "data": {...}}                          # the measurements, in the script's own layout

Timing on a shared CPU drifts with the load, so the variants compared in one table run
interleaved (`interleave`: every round runs each once, in an order rotated by one per round,
which is ABBA for two) and are summarised by their medians.

This module imports nothing heavy: `bench.convert_speed` measures child processes' memory and
keeps torch out of its own process until it writes the results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from modelsurgery.recipes_kit.machine import load_average

__all__ = ["RESULTS", "ROOT", "Run", "goal", "interleave", "median", "summary", "timed", "write_results"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

median = statistics.median


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleave(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1, *,
               self_timed: bool = False) -> dict[str, list]:
    """Run every variant once per round, `repeats` rounds, in an order rotated by one each round.

    Args:
        fns: the variants by name; with two, the rounds run A B, B A, A B, ... (ABBA).
        repeats: timed rounds.
        warmup: untimed rounds first, in the first round's order.
        self_timed: record what each call returns (a function that times itself, e.g. with a
            device sync or split into phases) instead of its wall time.

    Returns:
        The recorded values per variant, in round order.

    Example:
        >>> times = interleave({"a": lambda: None, "b": lambda: None}, repeats=4)
        >>> {k: len(v) for k, v in times.items()}
        {'a': 4, 'b': 4}
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out: dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(fns[name]() if self_timed else timed(fns[name]))
    return out


def summary(times: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """Median, minimum and every run of a list of seconds, rounded to `digits`."""
    times = list(times)
    return {"median_s": round(median(times), digits), "min_s": round(min(times), digits),
            "runs_s": [round(t, digits) for t in times]}


def goal(name: str, value: Any, threshold: Any, met: bool) -> dict[str, Any]:
    """One entry of a results file's `goals`: what was aimed at, what was measured, and whether it holds.

    `name` says the direction (`..._at_least_4x`, `..._under_2s`); `value` is a number, None
    (not measured) or a mapping of numbers (one per model).
    """
    return {"name": name, "value": value, "threshold": threshold, "met": bool(met)}


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write `results` as indented JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


class Run:
    """One benchmark run: the load average when it starts, and its results file when it ends.

    Example:
        >>> run = Run("shrink_speed", {"model": "resnet34", "repeats": 5})
        >>> # ... measure ...
        >>> run.finish(RESULTS / "shrink_speed.json", data, [goal("shrink_under_10s", 4.6, 10.0, True)])
    """

    def __init__(self, script: str, settings: Mapping[str, Any] | Any = None):
        self.script = script
        self.settings = settings if settings is not None else {}
        # torch-free: `bench.convert_speed` must not hold torch while it measures (a child started from a process
        # holding torch reports torch's resident memory as its own peak).
        self.loadavg_start = load_average()
        self._start = time.perf_counter()

    def machine(self) -> dict[str, Any]:
        """`machine_info()` now, with the load average at start and now, run time and git revision."""
        from modelsurgery.recipes_kit.machine import machine_info
        from modelsurgery.recipes_kit.results import git_revision

        info = machine_info()
        info["loadavg_start"], info["loadavg_end"] = self.loadavg_start, info.pop("loadavg")
        info["runtime_s"] = round(time.perf_counter() - self._start, 1)
        info["git_revision"] = git_revision(ROOT)
        return info

    def finish(self, path: str | os.PathLike, data: Mapping[str, Any], goals: Iterable[Mapping[str, Any]] = ()
               ) -> dict[str, Any]:
        """Write the results envelope to `path` and return it."""
        results = {"script": self.script, "machine": self.machine(), "settings": self.settings,
                   "goals": list(goals), "data": data}
        write_results(path, results)
        return json.loads(json.dumps(results, default=_jsonable))
