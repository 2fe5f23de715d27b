"""The frontier's sweep: train what is not cached yet, rewriting the summary after every run.

`frontier` measures the sitting's step table, trains each missing run of the plan (`train_one`),
caches its result under its key and rewrites the results file and its plot; with `report` it
trains nothing. Either way the frontier is read on `reference_table`: each kind of step's cost
from the quietest sitting that measured it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.common import Run, goal, write_results
from bench.frontier import run_key
from bench.tta.cost import FULL_STEP, RATIO_KINDS, run_cost, step_table, width_table
from bench.tta.plan import FrontierError, Settings, Spec, environment, epoch_kinds, low_kind, method_params, run_config
from bench.tta.summary import plot, reading, summarise
from bench.tta.train import train_one
from modelsurgery.recipes_kit.machine import load_average

__all__ = ["cached_runs", "frontier", "newest_table", "reference_table", "run_identity", "sitting_table", "step_ratios",
           "wall_check", "wall_check_plan"]

AGREE = 0.10   # the wall check: each run's wall time within 10 % of its cost

def step_ratios(s: Settings, widths: tuple[int, ...]) -> dict:
    """Measure `width_table` and write it beside the frontier (`step_ratios.json`)."""
    if not widths or any(w < 1 for w in widths):
        raise FrontierError(f"--step-ratios {','.join(map(str, widths)) or '(empty)'}: widths must be positive "
                            "whole numbers. Hint: 8,16,32,64")
    run = Run("step_ratios", {"widths": widths, "batch_size": s.batch_size, "speed_steps": s.speed_steps})
    rows = width_table(s, widths)
    return run.finish(Path(s.out).with_name("step_ratios.json"), {"widths": rows, "kinds": RATIO_KINDS}, [])


def wall_check_plan(s: Settings) -> tuple[Settings, list[Spec]]:
    """The wall check's settings and runs: the headline's last seed, the baseline then each method.

    Each run trains from scratch (no trunk), into its own cache and results file, so that it
    neither reuses nor disturbs the frontier's runs. Its runs have the frontier's configs (a
    branched baseline computes what a run from scratch does), so the frontier takes them as
    its last headline seed (`cached_runs`) instead of training them again.
    """
    out = Path(s.out).with_name(Path(s.out).stem + "_wallcheck.json")
    s = dataclasses.replace(s, branch=False, ablations=False, out=str(out), cache=str(_wall_cache(s)),
                            work=str(Path(s.work).with_name(Path(s.work).name + "-wallcheck")))
    methods = [m for m in s.methods if m != "coarse_to_fine"]
    return s, [Spec("resnet", m, s.headline, s.headline_seeds - 1) for m in ("baseline", *methods)]


def _wall_cache(s: Settings) -> Path:
    """The wall check's cached runs, beside the frontier's (`time_to_accuracy_runs` → `..._wallcheck_runs`).

    Found from the cache folder, not from --out: a frontier written elsewhere still takes them.
    """
    cache = Path(s.cache)
    name = cache.name[:-len("_runs")] + "_wallcheck_runs" if cache.name.endswith("_runs") else cache.name + "-wallcheck"
    return cache.with_name(name)


def wall_check(s: Settings, report: bool = False) -> dict:
    """Time the headline's runs back to back in one sitting: does each one's wall time match its cost?

    Run it on a quiet machine: then wall time and cost (steps × their relative cost + one-off work,
    in seconds of this sitting's full step, measured before and after its runs: `sitting_table`)
    agree within `AGREE`; a run that differs more says where the cost model misses time (its
    `wall_over_cost`).
    """
    s, plan = wall_check_plan(s)
    return _frontier(s, plan, report, summary=_wall_summary, script="time_to_accuracy_wallcheck")


def _wall_over(wall: float, cost: float | None) -> float | None:
    return round(wall / cost, 4) if cost else None


def _wall_summary(s: Settings, plan: list[Spec], results: dict[Spec, dict], table: dict) -> tuple[dict, list]:
    rows = []
    for sp in plan:
        if sp in results:
            r = results[sp]
            cost = run_cost(r, sp.family, table)
            rows.append({"name": sp.name, "acc": r["acc"], "train_s": round(r["train_s"], 1), "cost": cost,
                         "one_off_s": r.get("one_off_s"), "wall_over_cost": _wall_over(r["train_s"], cost),
                         "loadavg": r.get("loadavg"),   # and on each end of the sitting alone, for the record
                         **{f"wall_over_cost_{end}": _wall_over(r["train_s"], run_cost(r, sp.family, r[field]))
                            if r.get(field) else None
                            for end, field in (("start", "step_table"), ("end", "step_table_end"))}})
    worst = max((abs(r["wall_over_cost"] - 1) for r in rows if r["wall_over_cost"]), default=None)
    # What a saving reads: each method against the baseline, on either axis (a step table that is off by the
    # same factor for every kind moves wall / cost, not these).
    wall = {sp.name: results[sp]["train_s"] for sp in plan if sp in results}   # unrounded
    base = next((r for r in rows if r["name"].split("/")[1] == "baseline" and r["cost"]), None)
    for r in rows:
        r["relative_wall"] = round(wall[r["name"]] / wall[base["name"]], 4) if base and r["cost"] else None
        r["relative_cost"] = round(r["cost"] / base["cost"], 4) if base and r["cost"] else None
        r["relative_wall_over_cost"] = (round(r["relative_wall"] / r["relative_cost"], 4) if r["relative_cost"]
                                        else None)
    worst_rel = max((abs(r["relative_wall_over_cost"] - 1) for r in rows if r["relative_wall_over_cost"]),
                    default=None)
    last = results[max((sp for sp in plan if sp in results), key=lambda sp: results[sp]["finished"])] if rows else {}
    full = FULL_STEP["resnet"]
    data = {"runs": rows, "step_table": table, "headline_epochs": s.headline, "network": {"width": s.width},
            "full_step_s": {"start": (last.get("step_table") or {}).get(full),
                            "end": (last.get("step_table_end") or {}).get(full)},
            "seed": plan[0].seed if plan else None,
            "complete": len(rows) == len(plan), "missing": [sp.name for sp in plan if sp not in results]}
    return data, [goal(f"wall_time_within_{round(AGREE * 100)}pct_of_cost", worst, AGREE,
                       worst is not None and worst <= AGREE),
                  goal(f"wall_time_relative_to_the_baseline_within_{round(AGREE * 100)}pct_of_cost_relative_to_it",
                       worst_rel, AGREE, worst_rel is not None and worst_rel <= AGREE)]


def frontier(s: Settings, plan: list[Spec], report: bool = False) -> dict:
    """Train what is not cached yet, rewriting the summary after every run; returns the summary.

    With `report`, train nothing: summarise the cached runs on `reference_table`.
    """
    import torch

    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)   # 1 where other processes share the cores: OpenMP threads then spin
    try:
        return _frontier(s, plan, report)
    finally:
        torch.set_num_threads(threads)


def run_identity(config: dict) -> str:
    """What a run trains, whatever it is called: its config without the ablation's label, and without
    parameters left at None (a default that names no value, such as low mode's "every conv")."""
    same = {k: v for k, v in config.items() if k != "variant"}
    same["params"] = {k: v for k, v in (config.get("params") or {}).items() if v is not None}
    return json.dumps(same, sort_keys=True)


def cached_runs(s: Settings, plan: list[Spec], env: dict) -> dict[Spec, dict]:
    """The plan's runs already in the cache (or, for the frontier, in its wall check's), by spec.

    A run is found by its key, or else by what it trains (`run_identity`): when an ablation's
    variant becomes the method's default, the variant's cached runs are the default's, and the
    old default's runs are the new variant's. Such a run keeps its file and key; its name
    becomes the plan's and `cached_as` records the one it was trained under.
    """
    wall = Path(s.out).stem.endswith("_wallcheck")
    folders = [Path(s.cache)] + ([] if wall else [_wall_cache(s)])
    known: dict[str, Path] | None = None
    out = {}
    for sp in plan:
        config = run_config(s, sp, env)
        name = f"{run_key(config)}.json"
        path = next((f / name for f in folders if (f / name).is_file()), None)
        if path is None:
            if known is None:   # read the cache's configs once, on the first miss
                known = {}
                for f in reversed(folders):   # the frontier's own cache wins over the wall check's
                    for p in sorted(f.glob("*.json")) if f.is_dir() else ():
                        cfg = json.loads(p.read_text()).get("config")
                        if isinstance(cfg, dict):
                            known[run_identity(cfg)] = p
            path = known.get(run_identity(config))
        if path is not None:
            r = json.loads(path.read_text())
            if r.get("name") != sp.name:
                r["cached_as"], r["name"] = r.get("name"), sp.name
            out[sp] = r
    for sp, r in out.items():   # the first compound run counted its pre-train steps as kernel rescaling's kind
        if sp.method == "compound" and any(k.startswith("pretrain ") for k in r.get("steps", {})):
            r["steps"] = {k.replace("pretrain ", "compound ", 1): v for k, v in r["steps"].items()}
    return out


def newest_table(results: dict[Spec, dict]) -> dict[str, float]:
    """The step table of the most recent sitting among `results` (for a report that trains nothing).

    Where that sitting measured its steps again at its end (the wall check does), each kind's
    seconds are the mean of the two (`sitting_table`).
    """
    tables = sorted((r["finished"], sitting_table(r)) for r in results.values() if r.get("step_table"))
    if not tables:
        raise FrontierError(f"no cached run of this plan carries a step table ({len(results)} cached). Hint: run "
                            "without --report to train and measure one")
    return tables[-1][1]


def sitting_table(run: dict) -> dict[str, float]:
    """A run's step table: the one measured at its sitting's start, averaged with the one at its end if any.

    Between two quiet sittings an hour apart the full step measured 771 ms and 542 ms while the
    training between them ran at 612 ms a step: the machine's speed drifts, and one table taken
    at the start of an hour-long sitting can be off by a fifth.
    """
    start, end = run["step_table"], run.get("step_table_end")
    if not end:
        return start
    return {k: round((v + end[k]) / 2, 5) if k in end else v for k, v in start.items()}


def reference_table(results: dict[Spec, dict], current: dict[str, float] | None = None) -> dict[str, float]:
    """The step table the frontier is read on, from every sitting's table (the cached runs' and `current`).

    Each kind's cost relative to a full step comes from the quietest sitting that measured it, the
    one whose full step was fastest: heavy contention distorts even interleaved ratios (a pre-train
    step measured 0.43 of a full one on a quiet machine and 0.56 beside three other processes).
    The result is in seconds of that quietest sitting's full step.
    """
    full = FULL_STEP["resnet"]
    tables = [r["step_table"] for r in results.values() if r.get("step_table")] + ([current] if current else [])
    tables = sorted((t for t in tables if t.get(full)), key=lambda t: t[full])
    if not tables:
        raise FrontierError(f"no cached run of this plan carries a step table ({len(results)} cached). Hint: run "
                            "without --report to train and measure one")
    base = tables[0][full]
    out: dict[str, float] = {}
    for t in tables:   # quietest first: a kind keeps the ratio of the quietest sitting that measured it
        for kind, sec in t.items():
            out.setdefault(kind, round(sec / t[full] * base, 5))
    return out


def _frontier(s: Settings, plan: list[Spec], report: bool, summary=None, script: str = "time_to_accuracy") -> dict:
    from modelsurgery.images import load_dataset
    from modelsurgery.train.loader import make_loaders

    run = Run(script, s)
    env = environment(s)
    results, out = cached_runs(s, plan, env), Path(s.out)
    wall = summary is not None   # the wall check compares one sitting's wall time with that sitting's costs
    if report:
        table = newest_table(results) if wall else reference_table(results)
    else:
        data = load_dataset(s.data, size=28)
        train, val = make_loaders(data, batch_size=s.batch_size, seed=0, max_batches=s.max_batches)
        ctx = {"data": data, "train": train, "val": val, "environment": env}
        kinds = {k for sp in plan for k, _ in epoch_kinds(s, sp)} | \
            {low_kind(method_params(s, sp)) for sp in plan if sp.method == "low_mode"}
        print(f"step times ({len(kinds)} kinds, interleaved) ...", flush=True)
        ctx["table"] = step_table(s, kinds, data)
        print("  " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in ctx["table"].items()), flush=True)
        table = ctx["table"] if wall else reference_table(results, ctx["table"])

    def write() -> dict:
        data, goals = (summary or summarise)(s, plan, results, table)
        return run.finish(out, data, goals)

    trained = []
    for i, sp in enumerate(plan):
        if sp in results or report:
            continue
        print(f"[{i + 1}/{len(plan)}] {sp.name} (load {load_average()})", flush=True)
        ctx["train"].seed = sp.seed   # each seed its own data order
        results[sp] = train_one(s, sp, ctx)
        write_results(Path(s.cache) / f"{results[sp]['key']}.json", results[sp])
        trained.append(sp)
        r = results[sp]
        print(f"    acc {r['acc']:.4f}  train {r['train_s']:.1f} s  eval {r['eval_s']:.1f} s", flush=True)
        write()
    if wall and trained:   # the wall check's sitting is read on its step tables at both ends
        print("step times again, at the end of the sitting ...", flush=True)
        end = step_table(s, kinds, ctx["data"])
        for sp in trained:
            results[sp]["step_table_end"] = end
            write_results(Path(s.cache) / f"{results[sp]['key']}.json", results[sp])
        table = sitting_table(results[trained[-1]])
    final = write()
    if summary is not None:   # the wall check: a list of runs, no frontier to plot
        for r in final["data"]["runs"]:
            print(f"{r['name']:48s} wall {r['train_s']:7.1f} s  cost {r['cost']} s  wall/cost {r['wall_over_cost']}")
        return final
    plot(out.with_suffix(".png"), final["data"])
    print(reading(final["data"]))
    print(f"goals: {[(g['name'], g['value'], g['met']) for g in final['goals']]}\nresults in {out}")
    return final
