"""The accuracy dip at the grow, measured on full Fashion-MNIST (de Gusmão et al. 2016, §3.3).

A pre-train network is trained briefly at the plan's pre-train size (28 -> 19 px, 3x3 -> 2x2
kernels), once with the even-kernel padding alternating between layers (shrink's default) and
once with every even kernel padded bottom/right. Each is grown back to 28 px with every grow
method, and the target network's test accuracy (full 10k test set) is reported right after the
grow and after 100 fine-tuning steps, beside the pre-train's own accuracy at 19 px.

The network is `modelsurgery.nets.FashionResNet` in the ResNet-18 layout (`fashion-resnet18`:
BasicBlock x [2, 2, 2, 2], strides 1/2/2/2) with a 3x3 stride-1 stem, no max-pool and 1 input
channel, at a quarter of ResNet-18's width (16-32-64-128 channels). That is the regime where the
dip is largest (28 vs 19 px, last feature maps 4 vs 3). timm's resnet18 (7x7/2 stem + max-pool)
would shrink Fashion-MNIST's 28 px to a 1x1 map before the last stage, and full width costs 16x
the compute, which does not fit a ~10 min budget on 2 shared CPU cores. Training runs in
`modelsurgery.train.Trainer` (SGD, Nesterov momentum 0.9, weight decay 5e-4 on the weights, none
on BatchNorm and biases), for a step budget within one epoch.

Methods (see `modelsurgery.grow`): kernels resized with bilinear or pinv (replicate is recorded
as invalid: 3/2 is not an integer factor); "+bn" recalibrates BatchNorm on 1000 training images
at 28 px; "lsq" fits every grown kernel by least squares to its pre-train layer on 256 training
images (starting from pinv); "lsq+bn" does both, which is what `msurg grow --calibrate DATA` does.

Usage (from the repository root):
    python -m bench.grow_fidelity                 # ~10 min on 2 idle cores; writes bench/results/grow_fidelity.json
    python -m bench.grow_fidelity --quick --out /tmp/g.json   # smoke run on the committed subset, a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.common import RESULTS, Run, goal
from modelsurgery.calibrate import fit_least_squares, recalibrate_bn
from modelsurgery.constants import DEFAULT_UPSCALE
from modelsurgery.errors import ConversionError
from modelsurgery.grow import grow
from modelsurgery.images import DEFAULT_ROOT, load_fashion_mnist
from modelsurgery.nets import build_model
from modelsurgery.shrink import shrink
from modelsurgery.train.loader import TensorLoader
from modelsurgery.train.loop import Trainer

GOAL_RETENTION = 0.90  # the default method keeps >= 90 % of the pre-train's accuracy


@dataclass
class Config:
    model: str = "fashion-resnet18"  # modelsurgery.nets.build_model name
    width: int = 16              # channels of the first stage (ResNet-18: 64)
    data: str = DEFAULT_ROOT     # Fashion-MNIST IDX folder, or "fixture" (the committed subset)
    target_size: int = 28        # px; the pre-train size comes from the plan (19)
    pretrain_steps: int = 400    # SGD steps at `batch` (~0.85 epoch of the 60k training images)
    batch: int = 128             # images per pre-train step
    lr: float = 0.05             # peak LR, linear warm-up over 20 steps then linear decay to 0
    finetune_steps: int = 100    # steps at the target size after the grow
    finetune_batch: int = 64     # images per fine-tuning step
    finetune_lr: float = 0.01    # after a 10-step linear warm-up, constant
    calib_images: int = 1000     # BatchNorm recalibration images (training set)
    lsq_images: int = 256        # least-squares images (the first of the calibration images)
    paddings: tuple[str, ...] = ("alternate", "bottom-right")
    test_images: int = 10000     # evaluated images of the test set (all by default)
    seed: int = 0
    threads: int = min(2, os.cpu_count() or 1)


# --- training and evaluation -------------------------------------------------------------------

def trainer(model: nn.Module, loader: TensorLoader, test: TensorLoader, lr: float, warmup: int, decay: bool,
            seed: int) -> Trainer:
    """A CPU `Trainer` for `len(loader)` steps (one epoch): linear warm-up, then linear decay to 0 or constant."""
    steps = len(loader)

    def schedule(t: float) -> float:
        s = round(t * steps)   # the fractional epoch -> the step
        return lr * min(1.0, (s + 1) / warmup) * (max(0.0, 1 - s / steps) if decay else 1.0)

    return Trainer(model, loader, test, schedule=schedule, momentum=0.9, nesterov=True, weight_decay=5e-4,
                   seed=seed, device="cpu", progress=False)


# --- the experiment ----------------------------------------------------------------------------

VARIANTS = [  # (name, kernel method, least squares, BatchNorm recalibration)
    ("bilinear", "bilinear", False, False),
    ("pinv", "pinv", False, False),              # grow()'s default, and msurg grow's without --calibrate
    ("replicate", "replicate", False, False),
    ("bilinear+bn", "bilinear", False, True),
    ("pinv+bn", "pinv", False, True),
    ("lsq", "pinv", True, False),
    ("lsq+bn", "pinv", True, True),              # msurg grow --calibrate DATA (its default --method lsq)
]
CALIBRATED_DEFAULT = "lsq+bn"
SIZE_PROBE = (19, 20, 21, 22, 24, 28)  # px: the pre-train evaluated at neighbouring sizes


class Data:
    """Full Fashion-MNIST in memory, with the loaders every stage uses (one normalisation)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        source, root = ("fixture", None) if cfg.data == "fixture" else ("idx", cfg.data)
        x, y = load_fashion_mnist("train", root, source)
        tx, ty = load_fashion_mnist("test", root, source)
        tx, ty = tx[:cfg.test_images], ty[:cfg.test_images]
        self.train_x, self.train_y = x, y
        self.train = TensorLoader(x, y, cfg.batch, seed=cfg.seed)
        self.stats = {"mean": self.train.mean, "std": self.train.std}
        self.test = TensorLoader(tx, ty, 1000, train=False, **self.stats)
        self.test_x, self.test_y = tx, ty
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed + 1))
        self.calib_idx = order[:cfg.calib_images]

    def loader(self, size: int, steps: int, batch: int | None = None, seed: int = 0) -> TensorLoader:
        """Training batches at `size` for `steps` steps, all within one epoch."""
        loader = TensorLoader(self.train_x, self.train_y, batch or self.cfg.batch, seed=seed, size=size, **self.stats)
        if steps > len(loader):
            raise ValueError(f"{steps} steps need more than one epoch of {len(loader)} batches of "
                             f"{loader.batch_size}; lower the steps or the batch")
        loader.max_batches = steps
        return loader

    def probe(self, size: int, n: int = 128) -> torch.Tensor:
        """The first `n` test images at `size`, for the per-layer errors."""
        loader = TensorLoader(self.test_x[:n], self.test_y[:n], n, train=False, size=size, **self.stats)
        return next(iter(loader))[0]

    def calibration(self, size: int, n: int | None = None) -> torch.Tensor:
        idx = self.calib_idx[:n]
        loader = TensorLoader(self.train_x[idx], self.train_y[idx], len(idx), train=False, size=size, **self.stats)
        return next(iter(loader))[0]


def grow_variant(cfg: Config, data: Data, small: nn.Module, plan, method: str, lsq: bool, bn: bool) -> nn.Module:
    state, _ = grow(small.state_dict(), plan, method=method)
    net = build_model(cfg.model, width=cfg.width)
    net.load_state_dict(state, strict=True)
    net.eval()
    if lsq:
        fit_least_squares(small, net, plan, data.calibration(plan.input_size, cfg.lsq_images),
                          data.calibration(plan.target_size, cfg.lsq_images), seed=cfg.seed)
    if bn:
        recalibrate_bn(net, data.calibration(plan.target_size).split(100))
    return net


def run_padding(cfg: Config, data: Data, padding: str) -> dict:
    torch.manual_seed(cfg.seed)
    small, plan = shrink(build_model(cfg.model, width=cfg.width), target_size=cfg.target_size, even_padding=padding)
    t0 = time.perf_counter()
    pre = trainer(small, data.loader(plan.input_size, cfg.pretrain_steps, seed=cfg.seed), data.test, cfg.lr,
                  warmup=20, decay=True, seed=cfg.seed)
    pre.fit(1)
    seconds = round(time.perf_counter() - t0, 1)
    # How tied the pre-train is to its input size: the same network on other sizes (its padded
    # 2x2 convs run at any size). Even a perfect grow cannot beat what resizing buys.
    by_size = {size: pre.evaluate(size) for size in SIZE_PROBE if size >= plan.input_size}
    out = {"padding": padding, "input_size": plan.input_size, "target_size": plan.target_size,
           "pretrain_seconds": seconds, "pretrain_acc": by_size[plan.input_size],
           "pretrain_acc_by_input_size": by_size, "methods": {}}
    print(f"[{padding}] pre-train {out['pretrain_acc']:.4f} at {plan.input_size}px ({seconds} s); the same "
          f"net at other sizes: {', '.join(f'{k}px {v:.4f}' for k, v in by_size.items())}", flush=True)
    probe = (data.probe(plan.input_size), data.probe(plan.target_size))
    for name, method, lsq, bn in VARIANTS:
        t0 = time.perf_counter()
        try:
            net = grow_variant(cfg, data, small, plan, method, lsq, bn)
        except ConversionError as err:
            out["methods"][name] = {"valid": False, "error": str(err)}
            print(f"[{padding}] {name}: not valid ({err})", flush=True)
            continue
        seconds = time.perf_counter() - t0
        errors = layer_errors(small, net, plan, *probe)
        tune = trainer(net, data.loader(plan.target_size, cfg.finetune_steps, cfg.finetune_batch, seed=cfg.seed + 7),
                       data.test, cfg.finetune_lr, warmup=10, decay=False, seed=cfg.seed)
        grown = tune.evaluate(plan.target_size)
        tune.fit(1)
        tuned = tune.evaluate(plan.target_size)
        out["methods"][name] = {"valid": True, "grown_acc": grown, "retention": grown / out["pretrain_acc"],
                                "finetuned_acc": tuned, "grow_seconds": round(seconds, 2),
                                "layer_errors": errors}
        print(f"[{padding}] {name:12s} grown {grown:.4f} ({grown / out['pretrain_acc']:.1%} of the pre-train), "
              f"after {cfg.finetune_steps} steps {tuned:.4f}  [{seconds:.1f} s]", flush=True)
    return out


@torch.no_grad()
def layer_errors(small: nn.Module, net: nn.Module, plan, x_small: torch.Tensor, x_big: torch.Tensor) -> dict:
    """Per conv: ‖grown output − upsampled pre-train output‖ / ‖upsampled pre-train output‖."""
    outputs: dict = {}
    hooks = [model.get_submodule(site.name).register_forward_hook(
        lambda mod, inp, out, key=(tag, site.name): outputs.__setitem__(key, out))
        for tag, model in (("small", small), ("big", net)) for site in plan.convs]
    small.eval()(x_small)
    net.eval()(x_big)
    for h in hooks:
        h.remove()
    errors = {}
    for site in plan.convs:
        big = outputs["big", site.name]
        ref = F.interpolate(outputs["small", site.name], size=big.shape[-2:], mode="bilinear", align_corners=False)
        errors[site.name] = round(((big - ref).norm() / ref.norm()).item(), 3)
    return errors


def scratch_baseline(cfg: Config, data: Data) -> float:
    """The target trained from its random init for the fine-tuning budget alone."""
    torch.manual_seed(cfg.seed)
    loader = data.loader(cfg.target_size, cfg.finetune_steps, cfg.finetune_batch, seed=cfg.seed + 7)
    scratch = trainer(build_model(cfg.model, width=cfg.width), loader, data.test, cfg.finetune_lr, warmup=10,
                      decay=False, seed=cfg.seed)
    scratch.fit(1)
    return scratch.evaluate(cfg.target_size)


def main(cfg: Config, out: Path) -> dict:
    torch.set_num_threads(cfg.threads)
    run = Run("grow_fidelity", cfg)
    data = Data(cfg)
    runs = [run_padding(cfg, data, padding) for padding in cfg.paddings]
    scratch = scratch_baseline(cfg, data)
    print(f"target from scratch, {cfg.finetune_steps} steps: {scratch:.4f}")
    default = runs[0]["methods"][DEFAULT_UPSCALE]
    calibrated = runs[0]["methods"][CALIBRATED_DEFAULT]
    best = max(((k, v) for k, v in runs[0]["methods"].items() if v["valid"]), key=lambda kv: kv[1]["grown_acc"])
    summary = {"padding": runs[0]["padding"], "default_method": DEFAULT_UPSCALE,
               "calibrated_default": CALIBRATED_DEFAULT, "best_method": best[0],
               "best_retention": best[1]["retention"], "cpu_seconds": round(time.process_time(), 1)}
    goals = [goal("default_method_keeps_at_least_90pct", default["retention"], GOAL_RETENTION,
                  default["retention"] >= GOAL_RETENTION),
             goal("calibrated_default_keeps_at_least_90pct", calibrated["retention"], GOAL_RETENTION,
                  calibrated["retention"] >= GOAL_RETENTION)]
    result = run.finish(out, {"runs": runs, "scratch_finetune_acc": scratch, "summary": summary}, goals)
    print(f"default ({DEFAULT_UPSCALE}) keeps {default['retention']:.1%}, with --calibrate ({CALIBRATED_DEFAULT}) "
          f"{calibrated['retention']:.1%}, best ({best[0]}) {best[1]['retention']:.1%} of the pre-train's "
          f"accuracy; {result['machine']['runtime_s']} s ({summary['cpu_seconds']} s CPU) -> {out}")
    return result


def parse(argv=None) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.grow_fidelity", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the committed subset (unless --data), few steps, 1000 test images")
    p.add_argument("--data", default=None, help=f"Fashion-MNIST IDX folder or 'fixture' (default {DEFAULT_ROOT})")
    p.add_argument("--threads", type=int, default=Config.threads)
    p.add_argument("--out", type=Path, default=RESULTS / "grow_fidelity.json")
    args = p.parse_args(argv)
    cfg = Config(threads=args.threads, data=args.data or ("fixture" if args.quick else DEFAULT_ROOT))
    if args.quick:
        cfg = dataclasses.replace(cfg, pretrain_steps=20, finetune_steps=10, test_images=1000, calib_images=300,
                                  lsq_images=64)
    return cfg, args.out


if __name__ == "__main__":
    main(*parse(sys.argv[1:]))
