"""The loss jump at kernel rescaling's grow: which grow keeps training where it was.

A grow that loses what the pre-train network learned shows as a jump of the training loss in
the first iterations after it. The criterion: the mean training loss over the first 50
iterations after the grow is within 10 % of the mean over the last 50 before it.

Setting (the frontier's: `bench.time_to_accuracy`): full Fashion-MNIST (60k), FashionResNet-18
width 8, batch 256, SGD momentum 0.9, weight decay 5e-4, warmup-stable-decay over 4 epochs (LR
0.1, linear cool-down over the second half), the grow at epoch 2. Per seed, the pre-train
phase trains once; every variant then grows the same checkpoint and trains the first 50
iterations of epoch 2 (on the full epoch's LR schedule):

- grow: pinv upscale + BatchNorm recalibration (1,024 images) / the same after a least-squares
  kernel fit on 512 training images (`fit_least_squares`);
- momentum: restarted from zero / carried through the weights' linear map (`carry_momentum`);
- LR: as scheduled / re-warmed from ×0.1 over 0.2 epochs after the grow (`Rewarm`).

Losses, not timing, are measured here, so a busy machine changes nothing but the run time.

Usage:
    python -m bench.grow_loss_jump                 # ~10 min on 2 quiet cores
    python -m bench.grow_loss_jump --quick         # fixture data, a few iterations (smoke run)

Writes bench/results/grow_loss_jump.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import tempfile
from pathlib import Path

# OpenMP threads that sleep at barriers instead of spinning: on a machine shared with other jobs a
# spinning thread steals its partner's core (set before torch loads; an explicit setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.common import RESULTS, Run, goal
from modelsurgery.images import DEFAULT_ROOT, load_dataset
from modelsurgery.methods.kernel_rescaling import KernelRescaling
from modelsurgery.nets import build_model
from modelsurgery.recipes_kit.accuracy import loss_jump
from modelsurgery.recipes_kit.runs import fit_resuming
from modelsurgery.train.dist import seed_everything
from modelsurgery.train.loader import make_loaders
from modelsurgery.train.loop import Trainer
from modelsurgery.train.schedules import Rewarm, WarmupStableDecay

GROWS = {"pinv+bn": 0, "lstsq+bn": 512}        # grow name -> least-squares images (0: off)
VARIANTS = [(g, carry, rewarm) for g in GROWS for carry in (False, True) for rewarm in (0.0, 0.2)]


class Head:
    """The first `k` batches of `loader`'s epoch, while `len()` stays the full epoch's (so the LR follows it)."""

    def __init__(self, loader, k: int):
        self.loader, self.k = loader, k

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.k)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def variant_name(grow: str, carry: bool, rewarm: float) -> str:
    return f"{grow}{' +momentum' if carry else ''}{f' +rewarm {rewarm:g}' if rewarm else ''}"


def trainer_for(args, model, loader, schedule, kr, seed: int, checkpoint: Path) -> Trainer:
    return Trainer(model, loader, None, schedule=schedule, seed=seed, checkpoint_path=checkpoint, progress=False,
                   on_epoch_start=[kr.on_epoch_start], form="pretrain", plan=kr.plan, step_losses=args.steps,
                   device=args.device)


def one_seed(args, data, seed: int, work: Path) -> dict:
    """Pre-train once; each variant grows that checkpoint and trains `args.steps` iterations."""
    def method(lstsq: int = 0, carry: bool = False) -> KernelRescaling:
        seed_everything(seed)
        target = build_model("fashion-resnet18", width=args.width, in_chans=data.in_chans,
                             num_classes=data.num_classes)
        return KernelRescaling(target, target_size=28, switch_epoch=args.switch, lstsq=lstsq, carry_momentum=carry)

    schedule = WarmupStableDecay(args.lr, args.epochs, decay=0.5)
    train, _ = make_loaders(data, batch_size=args.batch_size, seed=seed, max_batches=args.max_batches)
    kr = method()
    pre = trainer_for(args, kr.model, train, schedule, kr, seed, work / "pretrain.safetensors")
    pre.fit(args.switch)
    before = pre.history[-1]["loss_tail"]
    out = {"pretrain_loss_tail_mean": round(statistics.fmean(before), 5), "variants": {}}
    for grow, carry, rewarm in VARIANTS:
        kr = method(GROWS[grow], carry)
        ckpt = work / "variant.safetensors"
        shutil.copyfile(work / "pretrain.safetensors", ckpt)
        sched = Rewarm(schedule, at=args.switch, epochs=rewarm) if rewarm else schedule
        trainer = trainer_for(args, kr.model, Head(train, args.steps), sched, kr, seed, ckpt)
        fit_resuming(trainer, args.switch + 1, resume=True, restore=kr.restore)
        jump = loss_jump(trainer.history, args.switch, args.steps)
        out["variants"][variant_name(grow, carry, rewarm)] = jump
        print(f"seed {seed} {variant_name(grow, carry, rewarm):32s} before {jump['before']:.4f} "
              f"after {jump['after']:.4f} ratio {jump['ratio']:.3f}", flush=True)
    return out


def summarise(per_seed: dict) -> dict:
    """Mean over seeds of before, after and their ratio, per variant."""
    names = list(next(iter(per_seed.values()))["variants"])
    table = {}
    for name in names:
        rows = [s["variants"][name] for s in per_seed.values()]
        table[name] = {k: round(statistics.fmean(r[k] for r in rows), 4) for k in ("before", "after", "ratio")}
    return table


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.grow_loss_jump", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_ROOT, help="IDX folder, or 'fixture'")
    ap.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4, help="the schedule's budget")
    ap.add_argument("--switch", type=int, default=2, help="the epoch at whose start the network grows")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50, help="iterations averaged on each side of the grow")
    ap.add_argument("--max-batches", type=int, default=None, help="batches per epoch (smoke runs)")
    ap.add_argument("--device", default=None, help="cpu or cuda; default the Trainer's choice")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a machine shared with others)")
    ap.add_argument("--quick", action="store_true", help="fixture data, width 4, 1 seed, 6 batches per epoch")
    ap.add_argument("--out", type=Path, default=RESULTS / "grow_loss_jump.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.data, args.width, args.seeds, args.max_batches, args.steps, args.batch_size = "fixture", 4, 1, 6, 3, 64
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = Run("grow_loss_jump", vars(args))
    data = load_dataset(args.data, size=28)
    with tempfile.TemporaryDirectory() as tmp:
        per_seed = {str(seed): one_seed(args, data, seed, Path(tmp)) for seed in range(args.seeds)}
    table = summarise(per_seed)
    best = min(table, key=lambda name: table[name]["ratio"])
    goals = [goal("best_grow_after_within_10pct_of_before", {"variant": best, "ratio": table[best]["ratio"]}, 1.10,
                  table[best]["ratio"] <= 1.10)]
    results = run.finish(args.out, {"mean_over_seeds": table, "best": best, "per_seed": per_seed,
                                    "seeds": list(range(args.seeds))}, goals)
    print(f"best: {best} ({table[best]}); results in {args.out}")
    return results


if __name__ == "__main__":
    main()
