"""Time to accuracy on the full Fashion-MNIST, as a frontier: every method against the baseline's.

FFCV's recipes train one recipe for several epoch budgets, the schedule stretched to each, and
report accuracy against time; a method's saving is then read off that frontier at its own
accuracy, 1 − t_method / t_baseline(acc) (`bench.frontier`). This benchmark does the same:

- network: FashionResNet-18 at `--width` 16 (`modelsurgery.nets`: 2-2-2-2 basic blocks, 3×3
  stride-1 stem, no max-pool; 28/14/7/4 px maps), the cheapest width whose pre-train step (2×2
  kernels, 19 px) costs clearly less than the same network at 19 px: the premise of kernel
  rescaling. `--step-ratios 8,16,32,64` measures that table (`bench/results/step_ratios.json`);
  at width 8 the two cost the same, an overhead-bound network on which the kernels buy nothing.
- one schedule for every run: batch 256, SGD (momentum 0.9, weight decay 5e-4 on weights), no
  augmentation, warmup-stable-decay (LR 0.1 constant, then linear to 0 over the last half of the
  budget, `train.WarmupStableDecay(decay=0.5)`), so that the baseline's budgets whose cool-down
  starts at a whole epoch branch off one trunk run per seed.
- budgets: the baseline at `--baseline` 2, 4, 6, 8, 12 epochs; the methods at `--budgets` 4 and 8,
  the largest the headline; `--seeds` 2 a point, `--headline-seeds` 3 at the headline.
- methods: `kernel_rescaling` grows at the start of the cool-down (`--switch-fraction` 0.5, the
  schedule's analogue of de Gusmão et al.'s "before the LR drops") with the recipe's grow defaults
  (`recipes/kernel_rescaling.py`); `kernel_rescaling+progressive_resizing` the same with the
  pre-train phase ramped 16 → 19 px; `progressive_resizing` ramps 16 → 28 px, full size in the last
  quarter; `low_mode` runs p = 0.5 (Nouri et al. 2019) with the second conv of every block pooled,
  and full mode in the last quarter;
  `compound` is kernel rescaling whose pre-train network is also half as wide and half as deep
  (Liu et al. 2016, §III-C and §IV-E; grown back with Gaussian new channels and no-effect blocks);
  `coarse_to_fine` (Liu et al. 2016) runs its own `C2FNet` family (8 → 16 → 32 px) against that
  network's own baseline. Then `ABLATIONS`, each method's variants at `--ablation-epochs` 4.
- cost, the x-axis: each run's steps per kind × the kind's cost relative to a full step (measured
  interleaved at the start of each sitting), plus its one-off work (the Trainer's `epoch_start_s`:
  grows, fits, recalibration, resizes) converted at the run's own seconds per full step, in seconds
  of the sitting's full step (`bench.frontier.full_step_equivalents`). Training wall time (the
  Trainer's `wall`) is reported beside it; the final evaluation is timed apart.

Every run's result is cached in `bench/results/time_to_accuracy_runs/<key>.json`, the key a hash
of its full config (family, method, variant, budget, seed, every hyperparameter, the data files,
the torch version and device); a run already there is not trained again, and the summary is
rewritten after every run, so a stop loses at most the run in progress (which resumes from its last
epoch's checkpoint in `runs/time_to_accuracy/`). `--estimate` prints the run list and its time.

Usage (from the repository root):
    python -m bench.time_to_accuracy --estimate          # the run list and the estimated time
    nohup python -m bench.time_to_accuracy > runs/time_to_accuracy.log 2>&1 &     # the frontier
    python -m bench.time_to_accuracy --report            # the summary of the cached runs; trains nothing
    python -m bench.time_to_accuracy --quick             # smoke run on the fixture data (< 1 min)

Writes bench/results/time_to_accuracy.json and .png. The parts live in `bench.tta`: `plan` (settings,
runs, configs and cache keys), `cost` (the step table and each run's cost), `train` (one run),
`summary` (points, verdicts, plot) and `sweep` (train what is not cached, rewrite the summary).
"""

from __future__ import annotations

import argparse
import sys

from bench.tta.cost import estimate, run_cost, step_table
from bench.tta.plan import ABLATIONS, METHODS, QUICK, Settings, Spec, environment, plan_runs, run_config, validate
from bench.tta.summary import plot
from bench.tta.sweep import cached_runs, frontier, step_ratios, wall_check, wall_check_plan
from bench.tta.train import train_one
from modelsurgery.errors import SurgeryError

# The parts' names that scripts and tests reach through this module. `frontier` is looked up here
# (`main` calls it); the sweep looks up `train_one`, `step_table` and `plot` in `bench.tta.sweep`,
# so that is the module to patch.
__all__ = ["ABLATIONS", "METHODS", "Settings", "Spec", "estimate", "frontier", "main", "parse", "plan_runs", "plot",
           "run_config", "run_cost", "step_ratios", "step_table", "train_one", "validate", "wall_check",
           "wall_check_plan"]


def _ints(text: str) -> tuple[int, ...]:
    """'2,4,8' -> (2, 4, 8); an empty text gives ()."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse(argv=None) -> tuple[Settings, bool, bool | str, tuple[int, ...] | None]:
    """(settings, --estimate, --report, --step-ratios widths or None) from the command line.

    With --wall-check the third is "wall-check" ("wall-check report" with --report too).
    """
    ap = argparse.ArgumentParser(prog="python -m bench.time_to_accuracy", description=__doc__.split("\n\n")[0])
    d = Settings()
    ap.add_argument("--data", default=d.data, help="IDX folder with Fashion-MNIST, or 'fixture'")
    ap.add_argument("--baseline", type=_ints, default=d.baseline, help="the baseline's epoch budgets")
    ap.add_argument("--budgets", type=_ints, default=d.budgets,
                    help="the methods' budgets; the largest is the headline")
    ap.add_argument("--c2f-budgets", type=_ints, default=d.c2f_budgets, help="coarse-to-fine's budgets")
    ap.add_argument("--c2f-baseline", type=_ints, default=d.c2f_baseline, help="its own baseline's budgets")
    ap.add_argument("--methods", type=lambda t: tuple(t.split(",")), default=d.methods, help=",".join(METHODS))
    for name, kind in (("seeds", int), ("headline_seeds", int), ("width", int), ("batch_size", int), ("lr", float),
                       ("decay", float), ("switch_fraction", float), ("max_batches", int), ("speed_steps", int),
                       ("epoch_s", float), ("threads", int)):
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, name))
    ap.add_argument("--device", default=None, help="cpu or cuda (default: CUDA if available; bf16, channels_last)")
    ap.add_argument("--out", default=None, help="the summary JSON (the PNG goes beside it)")
    ap.add_argument("--cache", default=None, help="folder of the cached runs' results")
    ap.add_argument("--work", default=None, help="folder for checkpoints of runs in progress")
    ap.add_argument("--quick", action="store_true", help="smoke run: fixture data, tiny budgets, 3 batches per epoch")
    ap.add_argument("--ablation-epochs", type=int, default=d.ablation_epochs,
                    help="the budget of the ablations (one of --budgets)")
    ap.add_argument("--no-ablations", dest="ablations", action="store_false", default=True,
                    help="skip the ablations (each method's variants) after the frontier")
    ap.add_argument("--step-ratios", type=_ints, default=None, metavar="WIDTHS",
                    help="train nothing: measure each kind of step against a full one at these widths "
                         "(e.g. 8,16,32,64) and write bench/results/step_ratios.json")
    ap.add_argument("--estimate", action="store_true", help="print the run list and the estimated time; train nothing")
    ap.add_argument("--wall-check", action="store_true",
                    help="time the headline's last seed (the baseline, then each method) back to back from "
                         "scratch, and compare each one's wall time with its cost; run it on a quiet machine. The "
                         "frontier takes these runs as that seed's instead of training them again")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: summarise the cached runs (on the newest step table they carry) and plot")
    args = vars(ap.parse_args(argv))
    dry, report, widths = args.pop("estimate"), args.pop("report"), args.pop("step_ratios")
    if args.pop("wall_check"):
        report = "wall-check" if not report else "wall-check report"
    given = {k: v for k, v in args.items() if v is not None and v != getattr(d, k, None)}
    s = Settings(**{**(QUICK if args["quick"] else {}), **given})
    return s, dry, report, widths


def main(argv=None) -> dict | None:
    try:
        s, dry, report, widths = parse(argv)
        if widths is not None:
            return step_ratios(s, widths)
        validate(s)
        if isinstance(report, str) and not dry:
            return wall_check(s, report=report.endswith("report"))
        if isinstance(report, str):   # --wall-check --estimate: the wall check's own runs
            s, plan = wall_check_plan(s)
        else:
            plan = plan_runs(s)
        rows, total = estimate(s, plan)
        if dry:
            done = {sp.name for sp in cached_runs(s, plan, environment(s))}
            # A trunk trains only for a baseline still to train: one whose baselines are all cached is not needed.
            needed = {f"{sp.family}/trunk/seed{sp.seed}" for sp in plan
                      if sp.method == "baseline" and sp.name not in done}
            for name, sec in rows:
                idle = "/trunk/" in name and name.split(" ")[0] not in needed
                mark = "  (cached)" if name in done else "  (not needed)" if idle else ""
                print(f"  {name:48s} {sec:7.0f} s{mark}")
            print(f"{len(plan)} runs, estimated {total:.0f} s ({total / 3600:.2f} h) at {s.epoch_s:g} s per full epoch")
            _, left = estimate(s, [sp for sp in plan if sp.name not in done])
            print(f"{len(done)} cached; {len(plan) - len(done)} to train, estimated {left:.0f} s ({left / 3600:.2f} h)")
            return None
        return frontier(s, plan, report)
    except SurgeryError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
