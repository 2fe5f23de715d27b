"""Accuracy right after the grow: a compound pre-train network against a kernel-only one.

Three pre-train networks of FashionResNet-18 (width 16) train for the same number of steps on
full Fashion-MNIST, then grow back into the full network (`modelsurgery.grow`, pinv kernels,
Liu et al. 2016's Gaussian new channels), and the full network's test accuracy is read right
after the grow and after BatchNorm recalibration on 1,000 training images:

- "kernels": 3x3 -> 2x2 kernels at 19 px (de Gusmão et al. 2016, Table 1);
- "width and depth": half the channels and half the blocks, kernels and 28 px kept;
- "compound": half width, half depth, 2x2 kernels at 19 px.

New channels and blocks start with no effect, so "width and depth" keeps the pre-train's
function exactly; the kernel grow is the lossy part (its dip is in `grow_fidelity.json`). Mean
± std over seeds; each pre-train also reports its own accuracy at its input size.

Usage (from the repository root):
    python -m bench.grow_compound                  # 3 seeds, ~10 min on 2 idle cores
    python -m bench.grow_compound --quick --out /tmp/g.json   # smoke run on the committed subset

Writes bench/results/grow_compound.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.common import RESULTS, Run
from bench.grow_fidelity import Config, Data, trainer
from modelsurgery.calibrate import recalibrate_bn
from modelsurgery.grow import grow
from modelsurgery.nets import build_model
from modelsurgery.shrink import shrink

KINDS = {"kernels": {}, "width and depth": {"width": 0.5, "depth": 0.5, "kernel_map": "keep"},
         "compound": {"width": 0.5, "depth": 0.5}}


def one(cfg: Config, data: Data, kind: str, seed: int) -> dict:
    torch.manual_seed(seed)
    target = build_model(cfg.model, width=cfg.width).eval()
    small, plan = shrink(target, target_size=cfg.target_size, **KINDS[kind])
    params = sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in target.parameters())
    t0 = time.perf_counter()
    pre = trainer(small, data.loader(plan.input_size, cfg.pretrain_steps, seed=seed), data.test, cfg.lr, warmup=20,
                  decay=True, seed=seed)
    pre.fit(1)
    seconds = time.perf_counter() - t0
    small_acc = pre.evaluate(plan.input_size)
    state, _ = grow(small.state_dict(), plan, model=target)
    net = build_model(cfg.model, width=cfg.width)
    net.load_state_dict(state, strict=True)
    tune = trainer(net.eval(), data.loader(plan.target_size, 1, seed=seed), data.test, cfg.lr, warmup=1, decay=False,
                   seed=seed)
    grown = tune.evaluate(plan.target_size)
    recalibrate_bn(net, data.calibration(plan.target_size).split(100))
    recal = tune.evaluate(plan.target_size)
    row = {"kind": kind, "seed": seed, "input_size": plan.input_size, "params": round(params, 4),
           "pretrain_s": round(seconds, 1), "pretrain_acc": small_acc, "grown_acc": grown, "grown_bn_acc": recal}
    print(f"{kind:16s} seed {seed}: pre-train {small_acc:.4f} at {plan.input_size}px ({seconds:.0f} s, "
          f"{params:.2f} of the params) -> grown {grown:.4f}, +BN {recal:.4f}", flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        out[kind] = {k: {"mean": round(statistics.mean(r[k] for r in mine), 4),
                         "std": round(statistics.stdev(r[k] for r in mine), 4) if len(mine) > 1 else 0.0}
                     for k in ("pretrain_acc", "grown_acc", "grown_bn_acc", "pretrain_s")}
        out[kind]["params"] = mine[0]["params"]
    return out


def main(cfg: Config, seeds: int, out: Path) -> dict:
    run = Run("grow_compound", {**dataclasses.asdict(cfg), "seeds": seeds})
    data = Data(cfg)
    rows = [one(cfg, data, kind, seed) for seed in range(seeds) for kind in KINDS]
    table = summary(rows)
    for kind, s in table.items():
        print(f"{kind:16s} pre-train {100 * s['pretrain_acc']['mean']:.2f} ± {100 * s['pretrain_acc']['std']:.2f} %, "
              f"right after the grow {100 * s['grown_acc']['mean']:.2f} ± {100 * s['grown_acc']['std']:.2f} %, "
              f"+BN {100 * s['grown_bn_acc']['mean']:.2f} ± {100 * s['grown_bn_acc']['std']:.2f} %")
    return run.finish(out, {"rows": rows, "summary": table, "kinds": {k: dict(v) for k, v in KINDS.items()}}, [])


def parse(argv=None) -> tuple[Config, int, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.grow_compound", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: the committed subset, few steps")
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX folder or 'fixture'")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="pre-train SGD steps (default 400, ~0.85 epoch)")
    p.add_argument("--out", type=Path, default=RESULTS / "grow_compound.json")
    args = p.parse_args(argv)
    cfg = Config(data=args.data or ("fixture" if args.quick else Config.data))
    if args.quick:
        cfg = dataclasses.replace(cfg, pretrain_steps=10, test_images=500, calib_images=200)
    if args.steps:
        cfg = dataclasses.replace(cfg, pretrain_steps=args.steps)
    return cfg, (2 if args.quick else args.seeds), args.out


if __name__ == "__main__":
    main(*parse(sys.argv[1:]))
