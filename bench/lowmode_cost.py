"""Cost of a low-mode training step against a full one (Nouri et al. 2019, §2.2 and §4).

A step is zero_grad + forward + cross-entropy + backward + SGD step, timed on the same model in
the same process, full and low steps interleaved (ABBA order) and repeated; we report medians
and their ratio. Goal: a low step costs at most 40 % of a full one (the paper: 37 % for
ResNet-18, 39 % for ResNet-50, on a GPU, §4). Next to the times we count FLOPs (forward +
backward, `torch.utils.flop_counter`), which bound the ratio independently of the machine,
and profile one step of each mode by op category to show where the time goes.

The paper's setting (the default `low_mode`) is measured for every model. For ResNet-50 we also
measure `skip_stem_pool=False` (keep the stem max-pool in low mode), a non-default variant
that shows what the conv2-only selection can reach when the body's maps shrink as well.

Speed is a ratio taken in one process; on a shared machine other jobs still skew it, so the
result records the load average and the OpenMP wait policy, and `--threads 2,1` adds a
single-thread pass, which suffers less when the cores are oversubscribed.

On CUDA (`--device cuda`) both modes run in bf16 autocast with channels_last, every phase is
timed after a device synchronize, and the per-op profile (self CPU time) is skipped.

Usage (from the repository root):
    python -m bench.lowmode_cost [--repeats N] [--threads 2[,1]] [--out PATH] [--device cpu|cuda]
    python -m bench.lowmode_cost --quick --out /tmp/lm.json    # smoke run: ResNet-18, 2 repeats, batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that sleep instead of spinning at barriers: on a shared 2-core machine a
# spinning thread steals the core its partner needs (a ResNet-18 step took 4-7 s instead of
# 1.4 s at load 9). Set before torch loads; an explicit setting wins and is recorded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import timm
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from bench.common import RESULTS, Run, goal, interleave, median
from modelsurgery.lowmode.forward import low_mode
from modelsurgery.recipes_kit.machine import load_average


@dataclass
class Config:
    runs: list = field(default_factory=lambda: [
        ("resnet18", {}),
        ("resnet50", {}),
        ("resnet50", {"skip_stem_pool": False}),
    ])  # (timm model, low_mode keyword arguments)
    input_size: int = 64  # pixels, square
    batch: int = 64  # images per step
    num_classes: int = 1000
    threads: tuple = (2,)  # torch intra-op thread counts, one pass over `runs` each
    warmup: int = 3  # untimed steps per mode
    repeats: int = 15  # timed steps per mode
    lr: float = 0.01  # SGD, momentum 0.9
    goal: float = 0.40  # low/full step-time ratio to reach
    device: str = "cpu"  # cpu, or cuda (bf16 autocast, channels_last)
    out: str = str(RESULTS / "lowmode_cost.json")


def _now(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()   # CUDA runs asynchronously: time finished work only
    return time.perf_counter()


def make_step(model, opt, x, y, low_kwargs, device: str = "cpu"):
    """A training step that returns its (forward, backward, optimizer) times in seconds."""
    cuda = device == "cuda"

    def step(low: bool) -> tuple[float, float, float]:
        t0 = _now(device)
        opt.zero_grad(set_to_none=True)
        with low_mode(model, **low_kwargs) if low else contextlib.nullcontext():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x).float(), y)
        t1 = _now(device)
        loss.backward()
        t2 = _now(device)
        opt.step()
        return t1 - t0, t2 - t1, _now(device) - t2
    return step


def setup(name: str, cfg: Config):
    torch.manual_seed(0)
    fmt = torch.channels_last if cfg.device == "cuda" else torch.contiguous_format
    model = timm.create_model(name, pretrained=False, num_classes=cfg.num_classes).train()
    model = model.to(cfg.device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    x = torch.randn(cfg.batch, 3, cfg.input_size, cfg.input_size).to(cfg.device, memory_format=fmt)
    y = torch.randint(0, cfg.num_classes, (cfg.batch,)).to(cfg.device)
    return model, opt, x, y


def time_steps(step, cfg: Config) -> dict:
    phases = interleave({"full": lambda: step(False), "low": lambda: step(True)}, cfg.repeats, cfg.warmup,
                        self_timed=True)
    full, low = ([sum(p) for p in phases[m]] for m in ("full", "low"))
    pair = sorted(lo / fu for lo, fu in zip(low, full, strict=True))
    split = {m: {name: round(1e3 * median(p[k] for p in phases[m]), 1)
                 for k, name in enumerate(("forward", "backward", "optimizer"))}
             for m in ("full", "low")}
    return {
        "full_ms_median": 1e3 * median(full),
        "low_ms_median": 1e3 * median(low),
        "full_ms_min": 1e3 * min(full),
        "low_ms_min": 1e3 * min(low),
        "ratio": median(low) / median(full),
        "ratio_of_minima": min(low) / min(full),
        "pair_ratio_quartiles": [pair[len(pair) // 4], median(pair), pair[(3 * len(pair)) // 4]],
        "phase_ms_median": split,
    }


def count_flops(model, x, y, low_kwargs) -> dict:
    flops = {}
    for low in (False, True):
        with FlopCounterMode(display=False) as counter:
            with low_mode(model, **low_kwargs) if low else torch.enable_grad():
                loss = F.cross_entropy(model(x), y)
            loss.backward()
        model.zero_grad(set_to_none=True)
        flops["low" if low else "full"] = counter.get_total_flops()
    return {"full_gflop": flops["full"] / 1e9, "low_gflop": flops["low"] / 1e9,
            "flop_ratio": flops["low"] / flops["full"]}


CATEGORIES = [("conv", ("conv",)), ("batch_norm", ("batch_norm",)),
              ("kernel_pool_T", ("aten::sum", "aten::mm", "expand", "avg_pool")),  # + the fc's mm
              ("pool_and_resample", ("pool", "upsample", "pad", "interp")),
              ("elementwise_and_sgd", ("relu", "threshold", "clamp", "add", "mul", "div", "fill", "copy"))]


def profile_breakdown(step) -> dict:
    """Self CPU milliseconds of one step per mode, grouped into op categories."""
    out = {}
    for low in (False, True):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(low)
        cats = {c: 0.0 for c, _ in CATEGORIES} | {"other": 0.0}
        for ev in prof.key_averages():
            if not ev.key.startswith("aten::"):
                continue
            cat = next((c for c, keys in CATEGORIES if any(k in ev.key for k in keys)), "other")
            cats[cat] += ev.self_cpu_time_total / 1e3
        out["low" if low else "full"] = {k: round(v, 1) for k, v in cats.items()}
    return out


def measure(name: str, low_kwargs: dict, threads: int, cfg: Config) -> dict:
    model, opt, x, y = setup(name, cfg)
    step = make_step(model, opt, x, y, low_kwargs, cfg.device)
    run = {"model": name, "low_mode_kwargs": low_kwargs, "paper_setting": not low_kwargs,
           "threads": threads, "device": cfg.device, "loadavg_start": load_average()[0]}
    run |= time_steps(step, cfg)
    run |= count_flops(model, x, y, low_kwargs)
    run["profile_self_ms"] = profile_breakdown(step) if cfg.device == "cpu" else None
    run["goal_met"] = run["ratio"] <= cfg.goal
    print(f"{name:9s} {str(low_kwargs):26s} threads {threads}  full {run['full_ms_median']:8.1f} ms  "
          f"low {run['low_ms_median']:8.1f} ms  ratio {run['ratio']:.3f}  "
          f"flop ratio {run['flop_ratio']:.3f}  load {run['loadavg_start']:.1f}", flush=True)
    return run


def main(cfg: Config) -> dict:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but CUDA is not available. Hint: run on a GPU machine, or --device cpu")
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}
    run = Run("lowmode_cost", {**settings, "timm": timm.__version__,
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")})
    runs = []
    for threads in cfg.threads:
        torch.set_num_threads(threads)
        for name, low_kwargs in cfg.runs:
            runs.append(measure(name, low_kwargs, threads, cfg))
    return run.finish(cfg.out, {"runs": runs}, [goal(goal_name(r, cfg.goal), r["ratio"], cfg.goal, r["goal_met"])
                                                for r in runs])


def goal_name(run: dict, limit: float) -> str:
    """E.g. `resnet50_skip_stem_pool_False_low_step_at_most_40pct_2_threads`."""
    variant = "".join(f"_{k}_{v}" for k, v in run["low_mode_kwargs"].items())
    return f"{run['model']}{variant}_low_step_at_most_{round(limit * 100)}pct_{run['threads']}_threads"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.lowmode_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 2,1")
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--quick", action="store_true", help="smoke run: ResNet-18 only, batch 8, 2 repeats")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: bf16 autocast and channels_last, timed after a synchronize")
    args = parser.parse_args()
    threads = tuple(int(t) for t in args.threads.split(","))
    cfg = Config(repeats=args.repeats, threads=threads, out=args.out, device=args.device)
    if args.quick:
        cfg = dataclasses.replace(cfg, runs=[("resnet18", {})], batch=8, warmup=1, repeats=2)
    main(cfg)
