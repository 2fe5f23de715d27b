"""The time-to-accuracy frontier's arithmetic: reading a baseline frontier, summarising seeds, run keys.

Pure functions, no torch: `bench.time_to_accuracy` trains, this module reads the results.

- The baseline frontier is the upper envelope of its (time, accuracy) points: the best accuracy
  the baseline reaches by a given time. `frontier_time(points, acc)` is the time at which it
  first reaches `acc`, by linear interpolation between the envelope's points (monotone, since
  the envelope rises in both time and accuracy); `frontier_acc(points, t)` the accuracy it
  has at time `t`. Neither extrapolates: outside the measured range they return None, and
  `read_frontier` says which side ("above": more accurate than the best baseline point,
  "below": less accurate than the cheapest one).
- A method's saving at equal accuracy is 1 − t_method / t_baseline(acc) (FFCV-style frontiers;
  Nouri et al. 2019 read time-shifted accuracy curves the same way).

Example:
    >>> base = [(10.0, 0.80), (20.0, 0.90), (40.0, 0.92)]
    >>> frontier_time(base, 0.85), frontier_acc(base, 30.0)
    (15.0, 0.91)
"""

from __future__ import annotations

import hashlib
import json
import statistics
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["envelope", "frontier_time", "frontier_acc", "read_frontier", "point_summary", "method_point",
           "run_key"]

Point = tuple[float, float]   # (seconds, accuracy)


def envelope(points: Iterable[Point]) -> list[Point]:
    """The points, sorted by time, that are more accurate than every earlier one (the upper envelope).

    Example:
        >>> envelope([(20.0, 0.9), (10.0, 0.8), (30.0, 0.85)])
        [(10.0, 0.8), (20.0, 0.9)]
    """
    out: list[Point] = []
    for t, acc in sorted((float(t), float(a)) for t, a in points):
        if not out or acc > out[-1][1]:
            out.append((t, acc))
    return out


def read_frontier(points: Iterable[Point], acc: float) -> tuple[float | None, str]:
    """(time at which the frontier reaches `acc`, "ok") or (None, "above" / "below" / "empty").

    Example:
        >>> read_frontier([(10.0, 0.8), (20.0, 0.9)], 0.95)
        (None, 'above')
    """
    env = envelope(points)
    if not env:
        return None, "empty"
    if acc > env[-1][1]:
        return None, "above"
    if acc < env[0][1]:
        return None, "below"
    for (t0, a0), (t1, a1) in zip(env, env[1:]):
        if a0 <= acc <= a1:
            return t0 + (acc - a0) / (a1 - a0) * (t1 - t0), "ok"
    return env[0][0], "ok"   # a single point, equal to acc


def frontier_time(points: Iterable[Point], acc: float) -> float | None:
    """Seconds the baseline frontier needs to reach `acc` (monotone interpolation), None outside it.

    Example:
        >>> frontier_time([(10.0, 0.80), (20.0, 0.90)], 0.85)
        15.0
    """
    return read_frontier(points, acc)[0]


def frontier_acc(points: Iterable[Point], t: float) -> float | None:
    """The frontier's accuracy at `t` seconds (linear between envelope points), None outside its time range.

    Example:
        >>> frontier_acc([(10.0, 0.80), (20.0, 0.90)], 12.5)
        0.825
    """
    env = envelope(points)
    if not env or not env[0][0] <= t <= env[-1][0]:
        return None
    for (t0, a0), (t1, a1) in zip(env, env[1:]):
        if t0 <= t <= t1:
            return a0 + (t - t0) / (t1 - t0) * (a1 - a0) if t1 > t0 else a1
    return env[0][1]


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def point_summary(epochs: int, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One frontier point from its runs (one per seed): accuracy mean ± std, mean times.

    `acc_std` is the sample standard deviation (None with one seed).

    Example:
        >>> point_summary(4, [{"seed": 0, "acc": 0.9, "train_s": 10.0, "eval_s": 1.0, "cost_s": 9.0},
        ...                   {"seed": 1, "acc": 0.8, "train_s": 12.0, "eval_s": 1.0, "cost_s": 9.0}])["acc_mean"]
        0.85
    """
    accs = [r["acc"] for r in runs]
    return {"epochs": epochs, "seeds": [r["seed"] for r in runs], "acc_mean": round(statistics.fmean(accs), 5),
            "acc_std": round(statistics.stdev(accs), 5) if len(accs) > 1 else None,
            "train_s_mean": round(_mean([r["train_s"] for r in runs]), 2),
            "eval_s_mean": round(_mean([r["eval_s"] for r in runs]), 2),
            "cost_s_mean": _round(_mean([r.get("cost_s") for r in runs]), 2)}


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


NOTES = {"above": "more accurate than the best baseline point: no saving is read (no extrapolation)",
         "below": "less accurate than the cheapest baseline point: no saving is read (no extrapolation)",
         "empty": "no baseline points yet"}


def method_point(point: Mapping[str, Any], baseline: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`point` with its reading against the `baseline` points: saving at equal accuracy, gain at equal time.

    Both with measured time (`train_s_mean`) and with cost-model time (`cost_s_mean`).

    Example:
        >>> method_point({"acc_mean": 0.85, "train_s_mean": 12.0, "cost_s_mean": None},
        ...              [{"acc_mean": 0.8, "train_s_mean": 10.0}, {"acc_mean": 0.9, "train_s_mean": 20.0}])
        ...     ["saving_at_equal_acc"]
        0.2
    """
    out = dict(point)
    for suffix, field in (("", "train_s_mean"), ("_cost_model", "cost_s_mean")):
        frontier = [(b[field], b["acc_mean"]) for b in baseline if b.get(field) is not None]
        t = point.get(field)
        t_base, side = read_frontier(frontier, point["acc_mean"]) if t is not None else (None, "empty")
        acc_then = frontier_acc(frontier, t) if t is not None else None
        out[f"saving_at_equal_acc{suffix}"] = _round(1 - t / t_base, 4) if t_base else None
        out[f"acc_gain_at_equal_time{suffix}"] = _round(point["acc_mean"] - acc_then, 5) if acc_then is not None \
            else None
        if not suffix:
            out["above_frontier"] = side == "above"
            out["saving_note"] = NOTES.get(side)
    return out


def run_key(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of `config` as canonical JSON: a cached run's name.

    Example:
        >>> run_key({"method": "baseline", "epochs": 4}) == run_key({"epochs": 4, "method": "baseline"})
        True
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

