"""The time-to-accuracy frontier (bench.time_to_accuracy, bench.frontier): its arithmetic, its cache, its errors.

The interpolation is checked against small hand-computed examples (above and below the
frontier included); the cache against a fake trainer that counts what it is asked to train; bad
settings against their one-line messages, before anything trains; and the whole `--quick`
frontier on the fixture data, end to end (slow).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import time_to_accuracy as tta
from bench.frontier import (
    baseline_band,
    envelope,
    frontier_acc,
    frontier_time,
    full_step_equivalents,
    method_point,
    point_summary,
    read_frontier,
    run_key,
    saving_bounds,
    seed_savings,
    verdict,
)
from bench.tta import sweep
from bench.tta.plan import branch_epoch

ROOT = Path(__file__).resolve().parents[1]
BASE = [(10.0, 0.80), (20.0, 0.90), (15.0, 0.78), (40.0, 0.92)]   # (s, acc); 15 s is below the envelope


# ---- the arithmetic ------------------------------------------------------------------------------

def test_envelope_drops_points_that_are_not_better_than_an_earlier_one():
    assert envelope(BASE) == [(10.0, 0.80), (20.0, 0.90), (40.0, 0.92)]


@pytest.mark.parametrize("acc, expected", [
    (0.80, 10.0),                      # on a point
    (0.85, 15.0),                      # halfway between 10 s (0.80) and 20 s (0.90)
    (0.91, 30.0),                      # halfway between 20 s (0.90) and 40 s (0.92)
    (0.92, 40.0),                      # the best point itself
])
def test_frontier_time_interpolates_the_envelope(acc, expected):
    assert frontier_time(BASE, acc) == pytest.approx(expected, abs=1e-9)


def test_no_extrapolation_above_or_below_the_frontier():
    assert read_frontier(BASE, 0.93) == (None, "above")
    assert read_frontier(BASE, 0.70) == (None, "below")
    assert read_frontier([], 0.5) == (None, "empty")


def test_frontier_acc_at_equal_time():
    assert frontier_acc(BASE, 15.0) == pytest.approx(0.85, abs=1e-12)
    assert frontier_acc(BASE, 30.0) == pytest.approx(0.91, abs=1e-12)
    assert frontier_acc(BASE, 5.0) is None and frontier_acc(BASE, 41.0) is None


def _points(pairs):
    """Baseline points with the same cost and wall time."""
    return [{"acc_mean": a, "cost_mean": t, "train_s_mean": t} for t, a in pairs]


def test_method_point_saving_and_gain_by_hand():
    """Acc 0.85 at cost 12 s: the baseline needs 15 s (saving 1 − 12/15 = 0.2) and has 0.82 at 12 s (gain +0.03).

    Its wall time, 18 s, reads as 1 − 18/15 = −0.2 on the wall-time axis. Its two seeds: 0.84 at 11 s
    (the baseline needs 14 s: saves 3/14) and 0.86 at 13 s (needs 16 s: saves 3/16); both save, so it wins.
    """
    seeds = [{"seed": 0, "acc": 0.84, "cost": 11.0}, {"seed": 1, "acc": 0.86, "cost": 13.0}]
    p = method_point({"acc_mean": 0.85, "cost_mean": 12.0, "train_s_mean": 18.0, "per_seed": seeds}, _points(BASE))
    assert p["saving_by_seed"] == [pytest.approx(3 / 14, abs=1e-4), pytest.approx(3 / 16, abs=1e-4)]
    assert p["saving_at_equal_acc"] == pytest.approx(0.2, abs=1e-4) and p["above_frontier"] is False
    assert p["acc_gain_at_equal_cost"] == pytest.approx(0.03, abs=1e-5) and p["saving_note"] is None
    assert p["saving_at_equal_acc_wall"] == pytest.approx(-0.2, abs=1e-4)
    assert p["verdict"] == "wins"


def test_method_point_above_the_frontier_has_no_saving():
    p = method_point({"acc_mean": 0.95, "cost_mean": 12.0, "train_s_mean": 12.0}, _points(BASE))
    assert p["saving_at_equal_acc"] is None and p["above_frontier"] is True
    assert "more accurate than the best baseline point" in p["saving_note"]
    assert p["acc_gain_at_equal_cost"] == pytest.approx(0.95 - 0.82, abs=1e-5)
    assert p["verdict"] == "above the frontier"
    assert p["saving_at_least"] == pytest.approx(1 - 12 / 40, abs=1e-4)   # the baseline needs more than 40 s


def test_method_point_below_the_frontier_says_why():
    p = method_point({"acc_mean": 0.5, "cost_mean": 50.0, "train_s_mean": 50.0}, _points(BASE))
    assert p["saving_at_equal_acc"] is None and p["above_frontier"] is False
    assert "less accurate than the cheapest baseline point" in p["saving_note"]
    assert p["acc_gain_at_equal_cost"] is None   # 50 s is past the baseline's last point
    assert p["verdict"] == "no reading"


def _spread_points(triples):
    """Baseline points (cost, accuracy mean, accuracy std) with equal cost and wall time."""
    return [{"acc_mean": a, "acc_std": sd, "cost_mean": t, "train_s_mean": t} for t, a, sd in triples]


def test_saving_range_against_the_baselines_seed_spread_by_hand():
    """Baseline 0.80 ± 0.01 at 10 s, 0.90 ± 0.01 at 20 s, 0.92 (one seed: the others' 0.01) at 40 s.

    Moved up: (10, 0.81), (20, 0.91), (40, 0.93); down: (10, 0.79), (20, 0.89), (40, 0.91). Seed A,
    0.85 at 12 s: the better baseline needs 14 s (saves 1 − 12/14), the worse 16 s (1 − 12/16). Seed
    B, 0.86 at 13 s: 15 s and 17 s. Both save even against the better baseline: wins.
    """
    base = _spread_points([(10.0, 0.80, 0.01), (20.0, 0.90, 0.01), (40.0, 0.92, None)])
    better, worse = baseline_band(base)
    assert better == [(10.0, 0.81), (20.0, 0.91), (40.0, 0.93)] and worse == [(10.0, 0.79), (20.0, 0.89), (40.0, 0.91)]
    seeds = [{"seed": 0, "acc": 0.85, "cost": 12.0}, {"seed": 1, "acc": 0.86, "cost": 13.0}]
    p = method_point({"acc_mean": 0.855, "cost_mean": 12.5, "train_s_mean": 12.5, "per_seed": seeds}, base)
    assert p["saving_range_by_seed"] == [[pytest.approx(1 - 12 / 14, abs=1e-4), pytest.approx(1 - 12 / 16, abs=1e-4)],
                                         [pytest.approx(1 - 13 / 15, abs=1e-4), pytest.approx(1 - 13 / 17, abs=1e-4)]]
    # The range over seeds: from seed B's worst to seed A's best.
    assert p["saving_range"] == [pytest.approx(1 - 13 / 15, abs=1e-4), pytest.approx(1 - 12 / 16, abs=1e-4)]
    assert p["verdict"] == "wins"
    # With no seed's cost, the mean point, 0.855 at 12.5 s: 14.5 s against the better baseline, 16.5 s the worse.
    mean = method_point({"acc_mean": 0.855, "cost_mean": 12.5, "train_s_mean": 12.5}, base)
    assert mean["saving_range"] == [pytest.approx(1 - 12.5 / 14.5, abs=1e-4), pytest.approx(1 - 12.5 / 16.5, abs=1e-4)]


def test_a_saturated_baseline_turns_a_win_into_noise():
    """Baseline 0.900, 0.905, 0.906 (± 0.002) at 10, 20, 40 s: a tenth of a percent is worth 20 s.

    Seeds 0.9052 at 18 s and 0.9056 at 19 s save 25 % and 41 % against the mean (it needs 24 s and
    32 s), so each seed alone says "wins"; against the baseline moved up by its spread (0.902, 0.907,
    0.908) the first needs only 16.4 s and loses: within noise.
    """
    base = _spread_points([(10.0, 0.900, 0.002), (20.0, 0.905, 0.002), (40.0, 0.906, 0.002)])
    seeds = [{"seed": 0, "acc": 0.9052, "cost": 18.0}, {"seed": 1, "acc": 0.9056, "cost": 19.0}]
    p = method_point({"acc_mean": 0.9054, "cost_mean": 18.5, "train_s_mean": 18.5, "per_seed": seeds}, base)
    assert p["saving_by_seed"] == [pytest.approx(0.25, abs=1e-4), pytest.approx(1 - 19 / 32, abs=1e-4)]
    assert p["saving_range_by_seed"][0][0] == pytest.approx(1 - 18 / 16.4, abs=1e-4)
    # The second needs 17.2 s there (saves 1 − 19/17.2, the range's low end); against the worse baseline
    # (0.898, 0.903, 0.904) both are above its best point: the range is open upwards.
    assert p["saving_range"] == [pytest.approx(1 - 19 / 17.2, abs=1e-4), None]
    assert p["verdict"] == "within noise"
    # The same seeds against a baseline with no spread measured yet win, as before.
    flat = [{**b, "acc_std": None} for b in base]
    assert method_point(p, flat)["verdict"] == "wins"


def test_a_point_below_the_cheapest_baseline_and_dearer_loses():
    """0.70 at 15 s and 0.72 at 14 s, below the baseline's cheapest point (0.80 ± 0.01 at 10 s): the
    baseline is more accurate for less even moved down by its spread, so the method loses although no
    saving can be read (at most 1 − 15/10 and 1 − 14/10)."""
    base = _spread_points([(10.0, 0.80, 0.01), (20.0, 0.90, 0.01)])
    seeds = [{"seed": 0, "acc": 0.70, "cost": 15.0}, {"seed": 1, "acc": 0.72, "cost": 14.0}]
    p = method_point({"acc_mean": 0.71, "cost_mean": 14.5, "train_s_mean": 14.5, "per_seed": seeds}, base)
    assert p["saving_at_equal_acc"] is None and "less accurate" in p["saving_note"]
    assert p["saving_range_by_seed"] == [[None, pytest.approx(-0.5, abs=1e-4)], [None, pytest.approx(-0.4, abs=1e-4)]]
    assert p["saving_range"] == [None, pytest.approx(-0.4, abs=1e-4)]
    assert p["verdict"] == "loses"
    # Cheaper than the cheapest baseline point and less accurate: nothing to compare with.
    cheap = [{"seed": 0, "acc": 0.70, "cost": 5.0}, {"seed": 1, "acc": 0.72, "cost": 6.0}]
    assert method_point({"acc_mean": 0.71, "cost_mean": 5.5, "train_s_mean": 5.5, "per_seed": cheap},
                        base)["verdict"] == "no reading"
    # One seed below and dearer: it would lose, but one seed judges nothing yet.
    assert method_point({"acc_mean": 0.70, "cost_mean": 14.0, "train_s_mean": 14.0, "per_seed": seeds[:1]},
                        base)["verdict"] == "one seed only"


def test_saving_bounds_outside_the_frontier():
    frontier = [(10.0, 0.80), (20.0, 0.90)]
    assert saving_bounds(0.85, 12.0, frontier) == (pytest.approx(0.2, abs=1e-4), pytest.approx(0.2, abs=1e-4))
    assert saving_bounds(0.95, 15.0, frontier) == (pytest.approx(0.25, abs=1e-4), None)   # needs more than 20 s
    assert saving_bounds(0.95, 30.0, frontier) == (pytest.approx(-0.5, abs=1e-4), None)
    assert saving_bounds(0.70, 15.0, frontier) == (None, pytest.approx(-0.5, abs=1e-4))  # needs less than 10 s
    assert saving_bounds(0.70, 15.0, []) == (None, None)


def test_goals_need_every_seed_to_save_the_threshold_against_the_better_baseline():
    """Kernel rescaling above the frontier: it saves at least 52 %, but one seed's range starts at -3 %: not met.
    Low mode saves 30 %, every seed at least 20 % against the better baseline: met (threshold 15 %).

    Resizing alone above the frontier saves at least 51.7 %, with no upper bound: the combination's
    56.7 % (exactly at the best baseline point, 93.33 %) is not shown to be more, since it is less
    accurate (93.33 % against 93.43 %) for less cost. At 93.45 % for that cost it dominates: met. With
    resizing alone on the frontier (30 %), the combination's 56.7 % is more: met; its 20 % is not."""
    from bench.tta.summary import goals_of

    def head(at_least, low, verdict, saving=None, acc=0.9333, cost=429.5, above=True):
        return [{"epochs": 8, "saving_at_equal_acc": saving, "saving_at_least": at_least, "saving_range": [low, None],
                 "verdict": verdict, "acc_mean": acc, "cost_mean": cost, "above_frontier": above}]

    def read(combined, alone):
        methods = {"kernel_rescaling": head(0.52, -0.03, "above the frontier"),
                   "low_mode": head(0.3, 0.2, "wins", saving=0.3, above=False),
                   "progressive_resizing": alone, "kernel_rescaling+progressive_resizing": combined}
        return {g["name"]: g for g in goals_of(tta.Settings(), methods)}

    pr_above = head(0.5171, 0.26, "above the frontier", acc=0.9343, cost=479.0)
    goals = read(head(0.567, -0.137, "within noise", saving=0.567, above=False), pr_above)
    kr = goals["kernel_rescaling_saves_at_least_20pct_at_equal_acc"]
    lm = goals["low_mode_saves_at_least_15pct_at_equal_acc"]
    assert kr["value"] == 0.52 and not kr["met"] and "in every seed" in kr["threshold"]
    assert lm["value"] == 0.3 and lm["met"]
    name = "kernel_rescaling+progressive_resizing_saves_more_than_progressive_resizing"
    assert goals[name]["value"] == {"combined": 0.567, "alone": 0.5171} and not goals[name]["met"]
    assert read(head(0.5671, 0.055, "above the frontier", acc=0.9345), pr_above)[name]["met"]
    pr_on = head(0.3, 0.1, "wins", saving=0.3, above=False)
    assert read(head(0.567, 0.1, "wins", saving=0.567, above=False), pr_on)[name]["met"]
    assert not read(head(0.2, 0.1, "wins", saving=0.2, above=False), pr_on)[name]["met"]


def test_a_variant_against_its_default_by_hand():
    """Savings 25 / 21 % against 14 / 20 %: every variant seed above every default seed: helps, by 6 points.
    25 / 15 % against 14 / 20 %: 15 < 20, no clear difference. 10 / 12 % against 14 / 20 %: hurts. A seed
    below the cheapest baseline point, known only to lose more than 16.5 %, against 13.6 / 21.4 %: hurts.
    One seed on either side: no reading of noise, so "one seed only"."""
    from bench.frontier import against_default

    def p(savings, ranges=None, acc=0.9):
        known = [s for s in savings if s is not None]
        return {"saving_by_seed": list(savings), "saving_range_by_seed": ranges or [[s, s] for s in savings],
                "saving_at_equal_acc": sum(known) / len(known) if len(known) == len(savings) else None,
                "acc_mean": acc}

    default = p([0.14, 0.20], acc=0.92)
    assert against_default(p([0.25, 0.21], acc=0.925), default) == {
        "saving_diff": 0.06, "acc_diff": 0.005, "reading": "helps", "read_on": "saving at equal accuracy"}
    assert against_default(p([0.25, 0.15]), default)["reading"] == "no clear difference"
    hurts = against_default(p([0.10, 0.12]), default)
    assert hurts["reading"] == "hurts" and hurts["saving_diff"] == pytest.approx(-0.06)
    below = p([None, None], ranges=[[None, -0.165], [None, -0.20]], acc=0.9136)
    assert against_default(below, p([0.136, 0.214], acc=0.9258)) == {
        "saving_diff": None, "acc_diff": -0.0122, "reading": "hurts", "read_on": "saving at equal accuracy"}
    above = p([None, 0.30], ranges=[[0.22, None], [0.30, 0.30]])
    assert against_default(above, default)["reading"] == "helps"
    assert against_default(p([None, 0.30], ranges=[[0.18, None], [0.3, 0.3]]), default)["reading"] == \
        "no clear difference"
    assert against_default(p([0.30]), default) == {"saving_diff": 0.13, "acc_diff": -0.02, "reading": "one seed only",
                                                   "read_on": None}
    unranged = {**p([None, 0.30]), "saving_range_by_seed": [[0.3, 0.3]]}   # a seed without a cost: no range
    assert against_default(unranged, default)["reading"] == "no clear difference"
    assert against_default(above, None)["reading"] == "no default to compare"


def test_a_variant_whose_savings_cannot_be_read_is_read_on_accuracy_at_equal_cost():
    """Baseline (cost, accuracy) 100 s 80 %, 200 s 90 %. The defaults: 84 % at 150 s (the baseline has
    85 % there: -1 point; it reaches 84 % at 140 s: a saving of -7.1 %) and 78 % at 150 s (below the
    cheapest point: a saving of at most 1 - 150/100 = -50 %, open-ended). A cheaper variant: 75 % and
    76 % at 110 s, both below the cheapest point (at most -10 %), so the savings overlap the default's
    open-ended seed and cannot decide. At 110 s the baseline has 81 %: the variant's seeds are 6 and 5
    points under it, the default's 1 and 7 points: still no clear difference. With the default's second
    seed at 83 % (-2 points, -15.4 %), every variant seed is further under the baseline than every
    default seed: hurts, read on accuracy at equal cost."""
    from bench.frontier import against_default, method_point, point_summary

    base = [point_summary(e, [{"seed": k, "acc": a, "train_s": t, "eval_s": 1.0, "cost": t} for k in (0, 1)])
            for e, a, t in ((1, 0.80, 100.0), (2, 0.90, 200.0))]

    def point(accs, cost):
        return method_point(point_summary(2, [{"seed": k, "acc": a, "train_s": cost, "eval_s": 1.0, "cost": cost}
                                              for k, a in enumerate(accs)]), base)

    variant = point([0.75, 0.76], 110.0)
    assert variant["saving_by_seed"] == [None, None] and variant["saving_range_by_seed"] == [[None, -0.1]] * 2
    assert variant["gain_by_seed"] == pytest.approx([-0.06, -0.05])
    split = point([0.84, 0.78], 150.0)
    assert split["saving_by_seed"] == [-0.0714, None] and split["gain_by_seed"] == pytest.approx([-0.01, -0.07])
    assert against_default(variant, split) == {"saving_diff": None, "acc_diff": -0.055,
                                               "reading": "no clear difference", "read_on": "saving at equal accuracy"}
    default = point([0.84, 0.83], 150.0)
    assert default["saving_by_seed"] == [-0.0714, -0.1538]
    assert against_default(variant, default) == {"saving_diff": None, "acc_diff": -0.08, "reading": "hurts",
                                                 "read_on": "accuracy at equal cost"}
    # every saving readable: the saving decides alone, even where the gains would separate
    readable = {**default, "gain_by_seed": [0.5, 0.6]}
    assert against_default(point([0.82, 0.85], 150.0), readable)["read_on"] == "saving at equal accuracy"


def test_full_step_equivalents_by_hand():
    """400 full steps, 600 pre-train steps at 0.4 and 300 low-mode steps at 0.2 make 400 + 240 + 60 = 700.

    The run took 80 s, 10 s of them a grow: 70 s for 700 equivalents is 0.1 s each, so the grow
    counts 100 more: 800. On a sitting whose full step takes 0.25 s, that is a cost of 200 s.
    """
    steps = {"target 28px": 400, "pretrain 19px": 600, "low 28px": 300}
    ratios = {"target 28px": 1.0, "pretrain 19px": 0.4, "low 28px": 0.2, "target 20px": 0.5}
    assert full_step_equivalents(steps, ratios, one_off_s=10.0, train_s=80.0) == pytest.approx(800.0, rel=1e-12)
    assert full_step_equivalents(steps, ratios, one_off_s=0.0, train_s=80.0) == pytest.approx(700.0, rel=1e-12)
    table = {k: 0.25 * v for k, v in ratios.items()}   # seconds: the full step takes 0.25 s in this sitting
    result = {"steps": steps, "one_off_s": 10.0, "train_s": 80.0}
    assert tta.run_cost(result, "resnet", table) == pytest.approx(200.0, abs=0.01)
    # The same run on a machine twice as loaded (every time doubled) costs the same.
    assert full_step_equivalents(steps, ratios, one_off_s=20.0, train_s=160.0) == pytest.approx(800.0, rel=1e-12)
    with pytest.raises(KeyError, match="no step cost for target 24px"):
        full_step_equivalents({"target 24px": 1}, ratios, 0.0, 1.0)
    assert tta.run_cost({**result, "one_off_s": None}, "resnet", table) is None   # cached before one-offs were kept
    assert tta.run_cost({**result, "steps": {"target 24px": 5}}, "resnet", table) is None


def test_seed_savings_and_verdicts_by_hand():
    """Against (10 s, 0.80), (20 s, 0.90): seed A 0.85 at 12 s saves 1 − 12/15 = 0.2; seed B 0.82 at 13 s
    saves 1 − 13/12 < 0."""
    frontier = [(10.0, 0.80), (20.0, 0.90)]
    savings = seed_savings([{"acc": 0.85, "cost": 12.0}, {"acc": 0.82, "cost": 13.0}], frontier)
    assert savings == [pytest.approx(0.2, abs=1e-4), pytest.approx(1 - 13 / 12, abs=1e-4)]
    assert verdict({"saving_at_equal_acc": 0.05, "saving_by_seed": savings}) == "within noise"
    assert verdict({"saving_at_equal_acc": 0.15, "saving_by_seed": [0.1, 0.2]}) == "wins"
    assert verdict({"saving_at_equal_acc": -0.15, "saving_by_seed": [-0.1, -0.2]}) == "loses"
    assert verdict({"saving_at_equal_acc": 0.15, "saving_by_seed": [0.15, None]}) == "one seed only"   # no range
    assert verdict({"above_frontier": True, "saving_at_equal_acc": None}) == "above the frontier"


def test_point_summary_mean_and_sample_std():
    runs = [{"seed": 0, "acc": 0.90, "train_s": 10.0, "eval_s": 1.0, "cost": 8.0},
            {"seed": 1, "acc": 0.92, "train_s": 14.0, "eval_s": 2.0, "cost": 9.0}]
    p = point_summary(4, runs)
    assert p == {"epochs": 4, "seeds": [0, 1], "acc_mean": 0.91, "acc_std": pytest.approx(0.01414, abs=1e-5),
                 "cost_mean": 8.5, "train_s_mean": 12.0, "eval_s_mean": 1.5,
                 "per_seed": [{"seed": 0, "acc": 0.90, "cost": 8.0}, {"seed": 1, "acc": 0.92, "cost": 9.0}]}
    assert point_summary(4, runs[:1])["acc_std"] is None
    assert point_summary(4, [runs[0], {**runs[1], "cost": None}])["cost_mean"] is None   # no mean over part


def test_frontier_module_examples_hold():
    import doctest

    import bench.frontier

    assert doctest.testmod(bench.frontier).failed == 0


def test_run_key_is_canonical_and_changes_with_any_setting():
    a = {"method": "baseline", "epochs": 4, "params": {"lr": 0.1}}
    assert run_key(a) == run_key(dict(reversed(list(a.items()))))
    assert run_key(a) != run_key({**a, "params": {"lr": 0.05}}) and len(run_key(a)) == 16


# ---- the plan and bad input ----------------------------------------------------------------------

def test_default_plan_has_the_seeds_budgets_and_families_asked_for():
    s = tta.Settings()
    plan = tta.plan_runs(s)
    def seeds(fam, m, b):
        return sorted(p.seed for p in plan if (p.family, p.method, p.epochs, p.variant) == (fam, m, b, ""))
    assert s.width == 16 and s.headline == 8 and max(s.baseline) > s.headline and len(s.baseline) >= 5
    assert seeds("resnet", "baseline", 8) == [0, 1, 2] and seeds("resnet", "baseline", 12) == [0, 1]
    for m in ("kernel_rescaling", "low_mode", "progressive_resizing", "kernel_rescaling+progressive_resizing"):
        assert seeds("resnet", m, 4) == [0, 1] and seeds("resnet", m, 8) == [0, 1, 2]
    assert seeds("c2f", "coarse_to_fine", 2) == seeds("c2f", "baseline", 4) == seeds("c2f", "baseline", 1) == [0, 1]
    assert not seeds("c2f", "coarse_to_fine", 1)
    # Seed by seed: all of seed 0 (its baselines, then its methods) before anything of seed 1.
    main = [p for p in plan if p.family == "resnet" and not p.variant]
    assert max(i for i, p in enumerate(main) if p.seed == 0) < min(i for i, p in enumerate(main) if p.seed == 1)
    # The ablations come last: every variant of every method at the ablation budget, 2 seeds each.
    variants = [p for p in plan if p.variant]
    assert plan[-len(variants):] == variants and {p.epochs for p in variants} == {s.ablation_epochs} == {4}
    assert len(variants) == 2 * sum(len(v) for v in tta.ABLATIONS.values())
    assert {"switch at 1/3", "pinv + BatchNorm only", "no re-warm-up", "both convs of every block", "start 12 px",
            "late ramp (from half the budget)"} <= {p.variant for p in variants}
    rows, total = tta.estimate(s, plan)
    assert total < 6 * 3600 and any("trunk" in name for name, _ in rows)


@pytest.mark.parametrize("argv, match", [
    (["--baseline", "4,2,6"], r"--baseline 4,2,6 must be ascending positive whole epochs"),
    (["--baseline", "0,2,6"], r"--baseline 0,2,6 must be ascending"),
    (["--budgets", ""], r"--budgets \(empty\) must be ascending"),
    (["--baseline", "1,2,8"], r"the baseline's largest budget \(8\) must be above the methods' \(8\)"),
    (["--methods", "kernel_rescaling,magic"], r"unknown method\(s\) magic\. Hint: choose from kernel_rescaling"),
    (["--seeds", "1"], r"need at least 2 seeds per point"),
    (["--seeds", "0", "--quick"], r"need at least 1 seeds per point"),
    (["--headline-seeds", "1"], r"at least as many at the headline"),
    (["--ablation-epochs", "6"], r"--ablation-epochs 6 must be one of --budgets 4,8"),
    (["--width", "0"], r"--width 0 must be a positive whole number\. Hint: --width 16"),
    (["--batch-size", "-8"], r"--batch-size -8 must be a positive whole number"),
    (["--step-ratios", "8,0"], r"--step-ratios 8,0: widths must be positive whole numbers"),
])
def test_bad_settings_get_one_line_before_any_training(argv, match, monkeypatch, capsys):
    monkeypatch.setattr(tta, "frontier", lambda *a: pytest.fail("trained despite bad settings"))
    with pytest.raises(SystemExit) as exit_info:
        tta.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(match, err), err


def test_bad_settings_raise_a_value_error_subclass():
    with pytest.raises(ValueError, match=r"--budgets 1,4: kernel rescaling needs 2 epochs"):
        tta.validate(tta.Settings(budgets=(1, 4)))


def test_syntax_errors_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        tta.main(["--seeds", "two"])
    assert exit_info.value.code == 2


def test_estimate_prints_the_run_list_and_trains_nothing(monkeypatch, capsys):
    monkeypatch.setattr(tta, "frontier", lambda *a: pytest.fail("--estimate trained"))
    assert tta.main(["--estimate"]) is None
    out = capsys.readouterr().out
    assert "resnet/kernel_rescaling/8ep/seed2" in out and "resnet/low_mode[p_low 0.3]/4ep/seed1" in out
    resnet = len(tta.METHODS) - 1   # coarse-to-fine runs apart: 2 seeds x (its baseline at 3 budgets, itself at 2)
    runs = 11 + 5 * resnet + 10      # baseline: 4 budgets x 2 seeds + the headline x 3; each method 2 + 3
    assert f"{runs + 2 * sum(len(v) for v in tta.ABLATIONS.values())} runs, estimated" in out
    assert "resnet/compound/8ep/seed2" in out
    # The committed cache: the 2-epoch baseline of seed 0 is there, and the total still to train is printed.
    assert re.search(r"resnet/baseline/2ep/seed0 +\d+ s  \(cached\)", out)
    # Seed 2's one baseline (8 epochs) is the wall check's, cached: its trunk is not listed as still to train.
    assert re.search(r"resnet/trunk/seed2 to epoch 4 +\d+ s  \(not needed\)", out)
    assert re.search(r"\n\d+ cached; \d+ to train, estimated \d+ s \(\d+\.\d\d h\)\n", out)


def test_estimate_with_wall_check_prints_its_runs_and_trains_nothing(monkeypatch, capsys):
    monkeypatch.setattr(tta, "wall_check", lambda *a, **k: pytest.fail("--estimate trained"))
    assert tta.main(["--wall-check", "--estimate"]) is None
    out = capsys.readouterr().out
    assert "resnet/baseline/8ep/seed2" in out and f"{len(tta.METHODS)} runs, estimated" in out


# ---- the cache -----------------------------------------------------------------------------------

def _fake_training(monkeypatch, calls: list):
    """train_one and the step table replaced: a result from the spec alone, every call counted."""
    def train_one(s, spec, ctx):
        calls.append(spec.name)
        key = run_key(tta.run_config(s, spec, ctx["environment"]))
        acc = 0.5 + 0.05 * spec.epochs - (0.02 if spec.method != "baseline" else 0) + 0.001 * spec.seed
        return {"key": key, "name": spec.name, "acc": acc, "train_s": 10.0 * spec.epochs * (0.7 if spec.method !=
                "baseline" else 1), "eval_s": 1.0, "steps": {"target 28px": 3 * spec.epochs}, "one_off_s": 0.0,
                "step_table": ctx["table"], "branched_at": None, "loss_jump": None,
                "finished": f"2026-12-05 00:00:{len(calls):02d}"}

    monkeypatch.setattr(sweep, "train_one", train_one)   # where the sweep looks them up
    monkeypatch.setattr(sweep, "step_table", lambda s, kinds, data: {k: 0.1 for k in kinds})
    monkeypatch.setattr(sweep, "plot", lambda path, data: None)


def test_a_cached_run_is_reused_and_a_changed_config_is_not(tmp_path, monkeypatch):
    calls: list = []
    _fake_training(monkeypatch, calls)
    argv = ["--quick", "--methods", "kernel_rescaling", "--out", str(tmp_path / "tta.json"), "--cache",
            str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    first = tta.main(argv)
    n = len(calls)
    assert n == len(tta.plan_runs(tta.parse(argv)[0])) == len(list((tmp_path / "cache").glob("*.json")))
    again = tta.main(argv)
    assert len(calls) == n, "a cached run was trained again"
    assert again["data"]["baseline"] == first["data"]["baseline"]
    tta.main(argv + ["--lr", "0.05"])
    assert len(calls) == 2 * n, "a changed config reused a cached run"
    data = json.loads((tmp_path / "tta.json").read_text())["data"]
    assert data["complete"] and data["missing"] == [] and len(data["run_keys"]) == n
    # A stopped frontier: with an ablation's run gone it is still complete as a frontier; with a baseline's, not.
    cache = {json.loads(p.read_text())["name"]: p for p in (tmp_path / "cache").glob("*.json")}
    for name, frontier_complete in (("[", True), ("resnet/baseline/", False)):
        next(p for k, p in cache.items() if name in k and p.exists()).unlink()
        data = tta.main(argv + ["--lr", "0.05", "--report"])["data"]
        assert not data["complete"] and data["frontier_complete"] is frontier_complete, name


def test_the_summary_is_written_after_every_run(tmp_path, monkeypatch):
    """Stopped after the third run, the summary holds those three; the rest is trained on the next call."""
    calls: list = []
    _fake_training(monkeypatch, calls)
    real = sweep.train_one

    def stop_after_three(s, spec, ctx):
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(s, spec, ctx)

    monkeypatch.setattr(sweep, "train_one", stop_after_three)
    argv = ["--quick", "--methods", "low_mode", "--out", str(tmp_path / "tta.json"), "--cache",
            str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    with pytest.raises(KeyboardInterrupt):
        tta.main(argv)
    data = json.loads((tmp_path / "tta.json").read_text())["data"]
    assert len(data["runs"]) == 3 and not data["complete"]
    monkeypatch.setattr(sweep, "train_one", real)
    tta.main(argv)
    assert len(calls) == len(tta.plan_runs(tta.parse(argv)[0]))


def test_report_trains_nothing_and_reads_the_newest_step_table(tmp_path, monkeypatch, capsys):
    calls: list = []
    _fake_training(monkeypatch, calls)
    argv = ["--quick", "--methods", "low_mode", "--out", str(tmp_path / "tta.json"), "--cache",
            str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    with pytest.raises(SystemExit):
        tta.main(argv + ["--report"])   # nothing cached yet
    assert "no cached run of this plan carries a step table" in capsys.readouterr().err
    tta.main(argv)
    n = len(calls)
    monkeypatch.setattr(sweep, "step_table", lambda *a: pytest.fail("--report measured a step table"))
    report = tta.main(argv + ["--report"])
    assert len(calls) == n and report["data"]["complete"]
    assert report["data"]["step_table"]["seconds"]["target 28px"] == 0.1
    assert "verdict" in capsys.readouterr().out


CACHED = ROOT / "bench" / "results" / "time_to_accuracy_runs"
ENVIRONMENT = ("data", "torch", "device", "threads")   # what `tta.plan.environment` adds to a run's config


def test_a_committed_cached_run_is_found_under_its_key():
    """The width-16 baseline, 2 epochs, seed 0: its key from the default settings and the environment it records.

    A changed `run_config` (a renamed field, a moved default) would rename every cached run, and a
    running frontier would train them all again.
    """
    cached = json.loads((CACHED / "4ed689105f1bec03.json").read_text())
    env = {k: cached["config"][k] for k in ENVIRONMENT}
    config = tta.run_config(tta.Settings(), tta.Spec("resnet", "baseline", 2, 0), env)
    assert config == cached["config"]
    assert run_key(config) == "4ed689105f1bec03" == cached["key"]


def test_the_wall_checks_runs_are_found_beside_the_cache_wherever_the_summary_goes(tmp_path):
    """The frontier takes the wall check's runs as its last headline seed: found from --cache, not --out."""
    from bench.tta.sweep import cached_runs

    path = next(CACHED.with_name("time_to_accuracy_wallcheck_runs").glob("*.json"))
    c = json.loads(path.read_text())["config"]
    spec = tta.Spec(c["family"], c["method"], c["epochs"], c["seed"], c.get("variant", ""))
    env = {k: c[k] for k in ENVIRONMENT}
    for out in (tta.Settings().out, str(tmp_path / "elsewhere.json")):
        assert spec in cached_runs(tta.Settings(out=out), [spec], env), out
    assert not cached_runs(tta.Settings(cache=str(tmp_path / "time_to_accuracy_runs")), [spec], env)


def test_a_run_is_found_by_what_it_trains_when_a_variant_becomes_the_default(tmp_path):
    """Low mode's p_low 0.7 variant, cached under its label, is the default's run once p_low 0.7 is the default."""
    from bench.tta.sweep import cached_runs

    env = {"data": {}, "torch": "x", "device": "cpu", "threads": None}
    s = tta.Settings(cache=str(tmp_path / "tta_runs"))
    variant, default = tta.Spec("resnet", "low_mode", 4, 0, "p_low 0.7"), tta.Spec("resnet", "low_mode", 4, 0)
    config = tta.run_config(s, variant, env)
    (tmp_path / "tta_runs").mkdir()
    (tmp_path / "tta_runs" / f"{run_key(config)}.json").write_text(
        json.dumps({"key": run_key(config), "name": variant.name, "config": config, "acc": 0.9}))
    assert cached_runs(s, [variant], env)[variant]["name"] == variant.name
    assert not cached_runs(s, [default], env), "the default (p_low 0.5) took the p_low 0.7 run"
    moved = tta.Settings(cache=s.cache, p_low=0.7)
    assert tta.run_config(moved, default, env) != config   # another key: found by what it trains
    found = cached_runs(moved, [default], env)[default]
    assert (found["name"], found["cached_as"], found["acc"]) == (default.name, variant.name, 0.9)
    assert not cached_runs(dataclasses.replace(moved, lr=0.05), [default], env), "a changed setting matched"


def test_every_committed_cached_run_is_found_under_its_key_or_by_what_it_trains():
    """Every cached run, its methods' parameters (the grow's defaults, low mode's p_low) recomputed from settings.

    Its key is the one the plan computes from its settings, or else the default plan finds it by
    what it trains (a variant that became the default, or the old default that became a variant);
    a run the plan no longer asks for is kept under `superseded/`. The wall check's runs too: the
    frontier takes them as its last headline seed, so each must be a run of the default plan.
    """
    from bench.tta.sweep import cached_runs, run_identity

    wall = sorted(CACHED.with_name("time_to_accuracy_wallcheck_runs").glob("*.json"))
    paths = sorted(CACHED.glob("*.json")) + wall
    assert paths
    plan = tta.plan_runs(tta.Settings())
    env = {k: json.loads(paths[-1].read_text())["config"][k] for k in ENVIRONMENT}
    found = cached_runs(tta.Settings(), plan, env)
    for spec, r in found.items():   # found by key or by identity: it trains what the plan asks
        assert run_identity(r["config"]) == run_identity(tta.run_config(tta.Settings(), spec, env)), spec.name
        assert r["name"] == spec.name and ("cached_as" in r) == (r["config"].get("variant", "") != spec.variant)
    used = {r["key"] for r in found.values()}
    for path in wall:
        assert path.stem in used, path.name
    for path in paths:
        c = json.loads(path.read_text())["config"]
        s = tta.Settings(width=c["width"], batch_size=c["batch_size"], lr=c["lr"], momentum=c["momentum"],
                         weight_decay=c["weight_decay"], decay=c["decay"], max_batches=c["max_batches"],
                         low_convs=c["params"].get("convs") if c["method"] == "low_mode" and not c.get("variant") else
                         tta.Settings.low_convs)
        spec = tta.Spec(c["family"], c["method"], c["epochs"], c["seed"], c.get("variant", ""))
        if c["width"] == tta.Settings.width:   # the frontier's network: every run is one the default plan uses
            assert path.stem in used, f"{spec.name} ({path.name}): a run the default plan does not use"
        else:   # another network's runs (width 8, overhead-bound): found by the plan at their own settings
            assert run_key(tta.run_config(s, spec, {k: c[k] for k in ENVIRONMENT})) == path.stem, spec.name


# ---- the whole smoke run -------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_frontier_runs_end_to_end(tmp_path):
    """`--quick` on the fixture data: every method trained, the results file in the documented layout, a PNG."""
    out = tmp_path / "tta.json"
    proc = subprocess.run([sys.executable, "-m", "bench.time_to_accuracy", "--quick", "--out", str(out), "--cache",
                           str(tmp_path / "cache"), "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    data = results["data"]
    assert results["script"] == "time_to_accuracy"
    assert results["machine"]["processor"] and results["machine"]["cpu_count"]
    assert data["headline_epochs"] == 3 and data["complete"]
    assert set(data["methods"]) == set(tta.METHODS)
    assert [p["epochs"] for p in data["baseline"]] == [1, 2, 4]
    assert [p["epochs"] for p in data["c2f_baseline"]] == [1, 2, 4]
    for points in data["methods"].values():
        for p in points:
            assert {"epochs", "seeds", "acc_mean", "acc_std", "train_s_mean", "eval_s_mean", "cost_mean",
                    "saving_at_equal_acc", "above_frontier", "acc_gain_at_equal_cost", "verdict"} <= set(p)
            assert 0 <= p["acc_mean"] <= 1 and p["train_s_mean"] > 0 and p["cost_mean"] > 0
            assert p["verdict"] in ("one seed only", "above the frontier", "no reading")   # --quick: 1 seed
    assert data["network"]["width"] == 4 and data["step_table"]["relative"]["target 28px"] == 1.0
    for m, ab in data["ablations"].items():   # every variant read against the baseline, beside the defaults
        assert ab["epochs"] == 2 and ab["default"]["epochs"] == 2 and set(ab["variants"]) == set(tta.ABLATIONS[m])
        assert all("verdict" in v and "params" in v for v in ab["variants"].values())
    assert "low-conv2 28px" in data["step_table"]["seconds"]   # the second-convs-only variant's own step kind
    assert all(r["one_off_s"] is not None for r in data["runs"].values())
    assert any(r["one_off_s"] > 0 for r in data["runs"].values() if "/kernel_rescaling/" in r["name"])
    kr = [r for r in data["runs"].values() if r["name"].startswith("resnet/kernel_rescaling/")]
    assert kr and all(r["loss_jump"]["steps"] == 3 for r in kr)        # before/after means around the grow
    assert any(r["branched_at"] for r in data["runs"].values())          # the baseline branched off its trunk
    assert {g["name"] for g in results["goals"]} >= {"kernel_rescaling_saves_at_least_20pct_at_equal_acc"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(data["runs"])


# ---- what the README's first command tells a newcomer ---------------------------------------------

def test_frontier_reading_reports_the_headline_point_and_its_verdict(tmp_path):
    from modelsurgery.recipes_kit.results import frontier_reading

    def point(epochs, acc, verdict, saving):
        return {"epochs": epochs, "seeds": [0, 1, 2], "acc_mean": acc, "acc_std": 0.0012,
                "saving_at_equal_acc": saving, "above_frontier": False, "verdict": verdict}

    data = {"network": {"width": 16}, "headline_epochs": 8, "complete": False, "missing": ["a", "b"],
            "methods": {"kernel_rescaling": [point(4, 0.91, "loses", -0.05),
                                             {**point(8, 0.9261, "wins", 0.153), "saving_range": [0.081, None]}],
                        "progressive_resizing": [{**point(8, 0.9345, "above the frontier", None),
                                                  "above_frontier": True, "saving_at_least": 0.519,
                                                  "saving_range": [-0.03, None]}]}}
    path = tmp_path / "time_to_accuracy.json"
    path.write_text(json.dumps({"machine": {"processor": "AMD EPYC"}, "data": data}))
    text = frontier_reading("kernel_rescaling", path)
    assert "Measured (partial: 2 runs still to train): full Fashion-MNIST, FashionResNet-18 width 16, AMD EPYC" in text
    assert "kernel rescaling at 8 epochs, 3 seeds: 92.61% ± 0.12%; it saves +15.3% of the baseline's cost" in text
    assert "at that accuracy (+8.1% to +∞ against the baseline ± its seed spread)" in text
    assert "Verdict: wins." in text and str(tmp_path / "time_to_accuracy.png") in text
    above = frontier_reading("progressive_resizing", path)
    assert ("93.45% ± 0.12%; more accurate than the baseline's best point: it saves at least +51.9% of the "
            "baseline's cost (-3.0% to +∞ against the baseline ± its seed spread). Verdict: above the frontier."
            ) in above
    assert frontier_reading("low_mode", path) == "time_to_accuracy.json has no measured point of low_mode yet."
    data.update(missing=["resnet/low_mode[p_low 0.3]/4ep/seed1"], frontier_complete=True)   # only ablations left
    path.write_text(json.dumps({"machine": {"processor": "AMD EPYC"}, "data": data}))
    assert "Measured (the frontier is complete; 1 ablation run still to train)" in frontier_reading(
        "kernel_rescaling", path)
    assert frontier_reading("kernel_rescaling", tmp_path / "none.json").startswith("No measured frontier at")


# ---- the GPU check script ------------------------------------------------------------------------

def test_gpu_check_without_cuda_says_so_and_writes_nothing(tmp_path):
    import shutil

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = sorted(p.name for p in (ROOT / "bench" / "results").iterdir())
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 1 and proc.stderr.startswith("error: CUDA is not available here. Hint:")
    assert sorted(p.name for p in (ROOT / "bench" / "results").iterdir()) == before


@pytest.mark.slow
def test_gpu_check_runs_its_scripts_on_the_cpu(tmp_path):
    """`gpu_check.sh --cpu`: the same three scripts, tiny settings, each writes its results file."""
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu"], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "PYTHON": sys.executable,
                                            "OUT_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("pretrain_speedup-cpu.json", "lowmode_cost-cpu.json", "time_to_accuracy-cpu.json"):
        assert json.loads((tmp_path / name).read_text())
    assert json.loads((tmp_path / "time_to_accuracy-cpu.json").read_text())["data"]["complete"]


def test_wall_check_trains_the_headline_back_to_back_and_compares_wall_with_cost(tmp_path, monkeypatch):
    """The headline's last seed (0 with --quick), baseline first, from scratch; wall/cost by hand: 1.05 and 1.20,
    worst 0.20 > 0.10."""
    calls: list = []
    _fake_training(monkeypatch, calls)
    slow = {"baseline": 1.05, "kernel_rescaling": 1.20}

    def train_one(s, spec, ctx):
        assert branch_epoch(s, spec) is None   # no trunk: every run from scratch
        calls.append(spec.name)
        steps = {"target 28px": 10 * spec.epochs}
        return {"key": run_key(tta.run_config(s, spec, ctx["environment"])), "name": spec.name, "acc": 0.9,
                "train_s": 10 * spec.epochs * 0.1 * slow[spec.method], "eval_s": 1.0, "steps": steps,
                "one_off_s": 0.0, "step_table": ctx["table"], "branched_at": None, "loss_jump": None,
                "finished": "2026-12-05 00:00:00", "loadavg": {"before": [0.1], "after": [2.0]}}

    monkeypatch.setattr(sweep, "train_one", train_one)
    argv = ["--quick", "--wall-check", "--methods", "kernel_rescaling", "--out", str(tmp_path / "tta.json"),
            "--cache", str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    result = tta.main(argv)
    assert calls == ["resnet/baseline/3ep/seed0", "resnet/kernel_rescaling/3ep/seed0"]
    runs = result["data"]["runs"]
    assert [r["wall_over_cost"] for r in runs] == [pytest.approx(1.05), pytest.approx(1.20)]
    assert [r["cost"] for r in runs] == [pytest.approx(3.0), pytest.approx(3.0)]   # 30 steps × 0.1 s
    assert result["goals"][0]["value"] == pytest.approx(0.20) and not result["goals"][0]["met"]
    # Against the baseline: wall 3.6 / 3.15 s, cost 3 / 3 s; 1.20 / 1.05 = 1.143, 14.3 % off.
    assert [r["relative_wall_over_cost"] for r in runs] == [pytest.approx(1.0), pytest.approx(1.2 / 1.05, abs=1e-4)]
    assert result["goals"][1]["value"] == pytest.approx(1.2 / 1.05 - 1, abs=1e-4) and not result["goals"][1]["met"]
    assert (tmp_path / "tta_wallcheck.json").is_file() and not (tmp_path / "tta.json").exists()
    assert not list((tmp_path / "cache").glob("*.json"))   # the frontier's cache is left alone
    text, _ = __import__("bench.make_readme_table", fromlist=["build"]).build(tmp_path)
    assert "| `kernel_rescaling` | 90.00% | 4 | 3 | 0.0 | 1.200 |" in text
    # The frontier takes the wall check's runs as its last headline seed: same configs, same keys.
    calls.clear()
    _fake_training(monkeypatch, calls)
    frontier = tta.main([a for a in argv if a != "--wall-check"])
    assert calls and not {"resnet/baseline/3ep/seed0", "resnet/kernel_rescaling/3ep/seed0"} & set(calls)
    assert frontier["data"]["complete"]
    assert "resnet/kernel_rescaling/3ep/seed0" in {r["name"] for r in frontier["data"]["runs"].values()}


def test_wall_check_reads_its_sitting_on_the_step_tables_at_both_ends(tmp_path, monkeypatch):
    """Steps measured at 0.1 s before the runs and 0.3 s after: the sitting's step is 0.2 s, so 30 full steps cost
    6 s (not 3 s), and a run of 6 s wall time has wall / cost 1.0; --report reads the same from the cache."""
    calls: list = []
    _fake_training(monkeypatch, calls)
    tables = iter([0.1, 0.3])
    monkeypatch.setattr(sweep, "step_table", lambda s, kinds, data: dict.fromkeys(kinds, next(tables)))

    def train_one(s, spec, ctx):
        return {"key": run_key(tta.run_config(s, spec, ctx["environment"])), "name": spec.name, "acc": 0.9,
                "train_s": 6.0, "eval_s": 1.0, "steps": {"target 28px": 10 * spec.epochs}, "one_off_s": 0.0,
                "step_table": ctx["table"], "branched_at": None, "loss_jump": None,
                "finished": "2026-12-05 00:00:00", "loadavg": None}

    monkeypatch.setattr(sweep, "train_one", train_one)
    argv = ["--quick", "--wall-check", "--methods", "kernel_rescaling", "--out", str(tmp_path / "tta.json"),
            "--cache", str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    result = tta.main(argv)
    assert [r["cost"] for r in result["data"]["runs"]] == [pytest.approx(6.0), pytest.approx(6.0)]
    assert [r["wall_over_cost"] for r in result["data"]["runs"]] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert result["goals"][0]["met"]
    again = tta.main(argv + ["--report"])   # trains and measures nothing: the tables come from the cache
    assert [r["cost"] for r in again["data"]["runs"]] == [pytest.approx(6.0), pytest.approx(6.0)]
    # Each end alone, for the record: 30 steps × 0.1 s = 3 s (wall / cost 2.0), × 0.3 s = 9 s (0.667).
    assert again["data"]["full_step_s"] == {"start": 0.1, "end": 0.3}
    assert [(r["wall_over_cost_start"], r["wall_over_cost_end"]) for r in again["data"]["runs"]] == \
        [(2.0, 0.6667), (2.0, 0.6667)]
    text, _ = __import__("bench.make_readme_table", fromlist=["build"]).build(tmp_path)
    assert ("full step measured 100 ms at its start and 300 ms at its end; costs are read on the mean of the two "
            "tables. Wall / cost on the start's table alone: 2.000-2.000; on the end's alone: 0.667-0.667.") in text


def test_reference_table_takes_each_ratio_from_the_quietest_sitting():
    from bench.tta.sweep import reference_table

    quiet = {"target 28px": 0.4, "pretrain 19px": 0.16}                        # ratio 0.40
    loud = {"target 28px": 1.0, "pretrain 19px": 0.56, "compound 19px": 0.11}  # 0.56; compound only here
    results = {"a": {"step_table": loud}, "b": {"step_table": quiet}, "c": {}}
    table = reference_table(results)
    assert table == {"target 28px": 0.4, "pretrain 19px": 0.16, "compound 19px": pytest.approx(0.044)}
    assert reference_table({"a": {"step_table": loud}}, current=quiet)["pretrain 19px"] == 0.16
    from bench.tta.plan import FrontierError

    with pytest.raises(FrontierError, match="no cached run of this plan carries a step table"):
        reference_table({"c": {}})


def test_compound_pretrain_steps_have_their_own_kind():
    from bench.tta.plan import Spec
    from bench.tta.train import steps_by_kind

    history = [{"step": 10, "form": "pretrain", "size": 19}, {"step": 25, "form": "target", "size": 28}]
    assert steps_by_kind(Spec("resnet", "compound", 2, 0), history) == {"compound 19px": 10, "target 28px": 15}
    assert steps_by_kind(Spec("resnet", "kernel_rescaling", 2, 0), history) == {"pretrain 19px": 10,
                                                                                  "target 28px": 15}
