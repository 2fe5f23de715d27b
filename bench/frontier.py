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
- Where the baseline saturates, a tenth of a percent of accuracy is worth a third of the cost, so
  a saving is also read against the baseline moved up and down by its own seed spread
  (`saving_bounds`): a method wins only if every seed saves even against the better baseline,
  and loses only if every seed loses even against the worse one.

Example:
    >>> base = [(10.0, 0.80), (20.0, 0.90), (40.0, 0.92)]
    >>> round(frontier_time(base, 0.85), 9), round(frontier_acc(base, 30.0), 9)
    (15.0, 0.91)
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

__all__ = ["against_default", "envelope", "frontier_time", "frontier_acc", "read_frontier", "full_step_equivalents",
           "point_summary", "method_point", "seed_savings", "saving_bounds", "baseline_band", "range_text", "verdict",
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
    for (t0, a0), (t1, a1) in pairwise(env):
        if a0 <= acc <= a1:
            return t0 + (acc - a0) / (a1 - a0) * (t1 - t0), "ok"
    return env[0][0], "ok"   # a single point, equal to acc


def frontier_time(points: Iterable[Point], acc: float) -> float | None:
    """Seconds the baseline frontier needs to reach `acc` (monotone interpolation), None outside it.

    Example:
        >>> round(frontier_time([(10.0, 0.80), (20.0, 0.90)], 0.85), 9)
        15.0
    """
    return read_frontier(points, acc)[0]


def frontier_acc(points: Iterable[Point], t: float) -> float | None:
    """The frontier's accuracy at `t` seconds (linear between envelope points), None outside its time range.

    Example:
        >>> round(frontier_acc([(10.0, 0.80), (20.0, 0.90)], 12.5), 9)
        0.825
    """
    env = envelope(points)
    if not env or not env[0][0] <= t <= env[-1][0]:
        return None
    for (t0, a0), (t1, a1) in pairwise(env):
        if t0 <= t <= t1:
            return a0 + (t - t0) / (t1 - t0) * (a1 - a0) if t1 > t0 else a1
    return env[0][1]


def full_step_equivalents(steps: Mapping[str, float], ratios: Mapping[str, float], one_off_s: float,
                          train_s: float) -> float:
    """A run's cost in full-step equivalents: what its training cost, whatever the machine's load.

    Each kind of step counts its cost relative to a full step (`ratios`, measured interleaved in
    one sitting). One-off work (a grow, its least-squares fit and BatchNorm recalibration, a
    dataset resize: `one_off_s`) is converted at the run's own seconds per full-step equivalent,
    (train_s − one_off_s) / Σ steps × ratio: both ran under the same load, so the conversion
    holds on a machine shared with other work too. Times the full step's seconds measured in a
    sitting, this is the run's cost on that sitting's time axis.

    Raises:
        KeyError: a kind of step that `ratios` does not have.

    Example:
        >>> full_step_equivalents({"full": 100, "small": 200}, {"full": 1.0, "small": 0.25},
        ...                       one_off_s=3.0, train_s=33.0)   # 150 step equivalents at 0.2 s, 3 s = 15 more
        165.0
    """
    missing = sorted(set(steps) - set(ratios))
    if missing:
        raise KeyError(f"no step cost for {', '.join(missing)}: measure those kinds in the step table")
    equivalents = sum(n * ratios[k] for k, n in steps.items())
    if not one_off_s:
        return equivalents
    return equivalents * train_s / (train_s - one_off_s)


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def point_summary(epochs: int, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One frontier point from its runs (one per seed): accuracy mean ± std, mean cost and times.

    `acc_std` is the sample standard deviation (None with one seed). `cost` is a run's cost in
    seconds of a full step (`full_step_equivalents` × the sitting's full step), `train_s` its
    training wall time; `per_seed` keeps each seed's (accuracy, cost) for the verdict.

    Example:
        >>> point_summary(4, [{"seed": 0, "acc": 0.9, "train_s": 10.0, "eval_s": 1.0, "cost": 9.0},
        ...                   {"seed": 1, "acc": 0.8, "train_s": 12.0, "eval_s": 1.0, "cost": 9.0}])["acc_mean"]
        0.85
    """
    accs = [r["acc"] for r in runs]
    costs = [r.get("cost") for r in runs]
    return {"epochs": epochs, "seeds": [r["seed"] for r in runs], "acc_mean": round(statistics.fmean(accs), 5),
            "acc_std": round(statistics.stdev(accs), 5) if len(accs) > 1 else None,
            "cost_mean": _round(_mean(costs), 2) if None not in costs else None,
            "train_s_mean": round(_mean([r["train_s"] for r in runs]), 2),
            "eval_s_mean": round(_mean([r["eval_s"] for r in runs]), 2),
            "per_seed": [{"seed": r["seed"], "acc": r["acc"], "cost": r.get("cost")} for r in runs]}


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


NOTES = {"above": "more accurate than the best baseline point: no saving is read (no extrapolation)",
         "below": "less accurate than the cheapest baseline point: no saving is read (no extrapolation)",
         "empty": "no baseline points yet"}


def method_point(point: Mapping[str, Any], baseline: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`point` read against the `baseline` points: saving at equal accuracy, gain at equal cost, verdict.

    The saving and the gain are read on the cost axis (`cost_mean`); the same readings on
    training wall time carry the suffix `_wall`. `saving_range_by_seed` is each seed's saving
    against the baseline moved up and down by its seed spread (`baseline_band`), and
    `saving_range` the smallest range that holds them all (the mean point's, where no seed
    carries a cost): the verdict is "wins" exactly when it lies above 0 and "loses" when below.
    `gain_by_seed` is each seed's accuracy above the baseline at its own cost (None outside the
    baseline's cost range), which `against_default` reads where a saving cannot be read.

    Example:
        >>> method_point({"acc_mean": 0.85, "cost_mean": 12.0, "train_s_mean": 12.0},
        ...              [{"acc_mean": 0.8, "cost_mean": 10.0, "train_s_mean": 10.0},
        ...               {"acc_mean": 0.9, "cost_mean": 20.0, "train_s_mean": 20.0}])["saving_at_equal_acc"]
        0.2
    """
    out = dict(point)
    for suffix, field in (("", "cost_mean"), ("_wall", "train_s_mean")):
        frontier = [(b[field], b["acc_mean"]) for b in baseline if b.get(field) is not None]
        t = point.get(field)
        t_base, side = read_frontier(frontier, point["acc_mean"]) if t is not None else (None, "empty")
        acc_then = frontier_acc(frontier, t) if t is not None else None
        out[f"saving_at_equal_acc{suffix}"] = _round(1 - t / t_base, 4) if t_base else None
        out[f"acc_gain_at_equal_cost{suffix}"] = _round(point["acc_mean"] - acc_then, 5) if acc_then is not None \
            else None
        if not suffix:
            out["above_frontier"] = side == "above"
            # Above the best baseline point the baseline needs more than that point's cost: a lower bound.
            out["saving_at_least"] = (saving_bounds(point["acc_mean"], t, frontier)[0] if side == "above"
                                      else out["saving_at_equal_acc"])
            out["saving_note"] = NOTES.get(side)
            out["saving_by_seed"] = seed_savings(point.get("per_seed", []), frontier)
            out["gain_by_seed"] = [_round(r["acc"] - a, 5) if (a := frontier_acc(frontier, r["cost"])) is not None
                                   else None for r in point.get("per_seed", []) if r.get("cost") is not None]
            better, worse = baseline_band(baseline)
            by_seed = [list(_band_bounds(r["acc"], r["cost"], better, worse))
                       for r in point.get("per_seed", []) if r.get("cost") is not None]
            out["saving_range_by_seed"] = by_seed
            out["saving_range"] = (_union(by_seed) if by_seed else
                                   list(_band_bounds(point["acc_mean"], t, better, worse)) if t is not None
                                   else [None, None])
            out["verdict"] = verdict(out)
    return out


def seed_savings(per_seed: Sequence[Mapping[str, Any]], frontier: Sequence[Point]) -> list[float | None]:
    """Each seed's own saving at its own accuracy against the baseline frontier (None outside it).

    Example:
        >>> seed_savings([{"acc": 0.85, "cost": 12.0}, {"acc": 0.95, "cost": 12.0}], [(10.0, 0.8), (20.0, 0.9)])
        [0.2, None]
    """
    out: list[float | None] = []
    for r in per_seed:
        t_base = read_frontier(frontier, r["acc"])[0] if r.get("cost") is not None else None
        out.append(_round(1 - r["cost"] / t_base, 4) if t_base else None)
    return out


def baseline_band(baseline: Sequence[Mapping[str, Any]], field: str = "cost_mean") -> tuple[list[Point], list[Point]]:
    """The baseline frontier's points moved up and down by their accuracy's seed spread: (better, worse).

    Each point moves by its own `acc_std`; a point with one seed so far moves by the mean of the
    others' (none measured: it stays put).

    Example:
        >>> baseline_band([{"acc_mean": 0.8, "acc_std": 0.01, "cost_mean": 10.0},
        ...                {"acc_mean": 0.9, "acc_std": None, "cost_mean": 20.0}])
        ([(10.0, 0.81), (20.0, 0.91)], [(10.0, 0.79), (20.0, 0.89)])
    """
    pts = [b for b in baseline if b.get(field) is not None]
    spread = _mean([b.get("acc_std") for b in pts]) or 0.0
    std = [b["acc_std"] if b.get("acc_std") is not None else spread for b in pts]
    return ([(b[field], round(b["acc_mean"] + d, 6)) for b, d in zip(pts, std, strict=True)],
            [(b[field], round(b["acc_mean"] - d, 6)) for b, d in zip(pts, std, strict=True)])


def saving_bounds(acc: float, cost: float, frontier: Sequence[Point]) -> tuple[float | None, float | None]:
    """(lowest, highest) saving that `acc` at `cost` can have against `frontier`; None: unbounded that way.

    Inside the frontier both are the saving. Above its best point the baseline needs more than
    that point's time, so the saving is at least 1 − cost / t_best and has no upper bound; below
    its cheapest point it needs less than that point's time, so the saving is at most
    1 − cost / t_cheapest.

    Example:
        >>> saving_bounds(0.95, 15.0, [(10.0, 0.8), (20.0, 0.9)])   # more accurate, cheaper than 20 s
        (0.25, None)
    """
    t, side = read_frontier(frontier, acc)
    env = envelope(frontier)
    if side == "ok":
        return _round(1 - cost / t, 4), _round(1 - cost / t, 4)
    if side == "above":
        return _round(1 - cost / env[-1][0], 4), None
    if side == "below":
        return None, _round(1 - cost / env[0][0], 4)
    return None, None


def _band_bounds(acc: float, cost: float, better: Sequence[Point], worse: Sequence[Point]) -> tuple:
    return saving_bounds(acc, cost, better)[0], saving_bounds(acc, cost, worse)[1]


def _union(ranges: Sequence[Sequence[float | None]]) -> list[float | None]:
    """The smallest range holding every seed's (None: unbounded): exactly what `verdict` judges."""
    los, his = [r[0] for r in ranges], [r[1] for r in ranges]
    return [None if None in los else min(los), None if None in his else max(his)]


def range_text(point: Mapping[str, Any]) -> str:
    """A point's `saving_range` (over its seeds) as text, "-∞"/"+∞" where unbounded, "—" where none is read.

    Example:
        >>> range_text({"saving_range": [-0.031, None]})
        '-3.1% to +∞'
    """
    lo, hi = point.get("saving_range") or (None, None)
    if lo is None and hi is None:
        return "—"
    return f"{'-∞' if lo is None else f'{100 * lo:+.1f}%'} to {'+∞' if hi is None else f'{100 * hi:+.1f}%'}"


def verdict(point: Mapping[str, Any]) -> str:
    """"wins", "loses", "within noise", "one seed only", "above the frontier" or "no reading".

    A point more accurate than the best baseline point is "above the frontier": no saving is read
    from it. Otherwise the seeds decide, each read against the baseline moved by its seed spread
    (`saving_range_by_seed`: [against the better baseline, against the worse]): every seed saving
    even against the better baseline wins; every seed losing even against the worse one loses;
    anything between is within noise, including seeds that split around 0 (`saving_by_seed`).
    With fewer than two seeds there is no range to judge: "one seed only" (the frontier is still
    being built). A point less accurate than the cheapest baseline point that still cannot be
    judged has "no reading".

    Example:
        >>> verdict({"above_frontier": False, "saving_at_equal_acc": 0.1, "saving_by_seed": [0.15, -0.02]})
        'within noise'
    """
    if point.get("above_frontier"):
        return "above the frontier"
    mean = point.get("saving_at_equal_acc")
    ranges = point.get("saving_range_by_seed")
    if ranges is None:   # a point read before the band: each seed's own saving is its range
        ranges = [[v, v] for v in point.get("saving_by_seed", []) if v is not None]
    if len(ranges) < 2:
        return "no reading" if mean is None and not ranges else "one seed only"
    if all(lo is not None and lo > 0 for lo, _ in ranges):
        return "wins"
    if all(hi is not None and hi < 0 for _, hi in ranges):
        return "loses"
    return "no reading" if mean is None else "within noise"


def against_default(variant: Mapping[str, Any], default: Mapping[str, Any] | None) -> dict[str, Any]:
    """How an ablation's variant compares with its method's defaults at the same budget.

    Seed by seed, on the saving at equal accuracy: "helps" where every seed of the variant saves
    more than every seed of the defaults, "hurts" where every one saves less, and otherwise "no
    clear difference"; with fewer than two seeds on either side, "one seed only". A seed whose
    saving cannot be read (less accurate than the cheapest baseline point, or more than the best)
    counts as the range it is known to lie in (`saving_range_by_seed`, open-ended). Where such a
    seed leaves the saving undecided, the seeds are read again on their accuracy above the
    baseline at their own cost (`gain_by_seed`), which can be read wherever the cost lies within
    the baseline's: a cheaper, much less accurate variant then reads as what it is. `read_on` says
    which reading decided. Beside it: the difference of the mean savings (where both can be read)
    and of the mean accuracies.

    Example:
        >>> against_default({"saving_by_seed": [0.25, 0.21], "saving_at_equal_acc": 0.23, "acc_mean": 0.925},
        ...                 {"saving_by_seed": [0.14, 0.20], "saving_at_equal_acc": 0.17, "acc_mean": 0.92})
        {'saving_diff': 0.06, 'acc_diff': 0.005, 'reading': 'helps', 'read_on': 'saving at equal accuracy'}
    """
    if not default:
        return {"saving_diff": None, "acc_diff": None, "reading": "no default to compare", "read_on": None}

    def ranges(p: Mapping[str, Any]) -> list[tuple[float, float]]:
        savings, bounds = p.get("saving_by_seed") or [], p.get("saving_range_by_seed") or []
        if len(bounds) != len(savings):   # a seed without a cost has no range: only its own saving, if any
            bounds = [[None, None]] * len(savings)
        return [(v, v) if v is not None else (-math.inf if lo is None else lo, math.inf if hi is None else hi)
                for v, (lo, hi) in zip(savings, bounds, strict=True)]

    def compare(v: Sequence[tuple[float, float]], d: Sequence[tuple[float, float]]) -> str:
        if min(lo for lo, _ in v) > max(hi for _, hi in d):
            return "helps"
        return "hurts" if max(hi for _, hi in v) < min(lo for lo, _ in d) else "no clear difference"

    rv, rd = ranges(variant), ranges(default)
    read_on = "saving at equal accuracy"
    if len(rv) < 2 or len(rd) < 2:
        reading, read_on = "one seed only", None
    else:
        reading = compare(rv, rd)
        gv, gd = variant.get("gain_by_seed") or [], default.get("gain_by_seed") or []
        unread = None in (variant.get("saving_by_seed") or []) + (default.get("saving_by_seed") or [])
        if (reading == "no clear difference" and unread and len(gv) == len(rv) and len(gd) == len(rd)
                and None not in gv + gd):
            on_gain = compare([(g, g) for g in gv], [(g, g) for g in gd])
            if on_gain != reading:
                reading, read_on = on_gain, "accuracy at equal cost"
    sv, sd = variant.get("saving_at_equal_acc"), default.get("saving_at_equal_acc")
    av, ad = variant.get("acc_mean"), default.get("acc_mean")
    return {"saving_diff": _round(sv - sd, 4) if sv is not None and sd is not None else None,
            "acc_diff": _round(av - ad, 5) if av is not None and ad is not None else None, "reading": reading,
            "read_on": read_on}


def run_key(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of `config` as canonical JSON: a cached run's name.

    Example:
        >>> run_key({"method": "baseline", "epochs": 4}) == run_key({"epochs": 4, "method": "baseline"})
        True
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

