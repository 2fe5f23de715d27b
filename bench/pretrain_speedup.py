"""Measured pre-train speed-up per training step against the Eq. 3 prediction (de Gusmão et al. 2016, §3.1).

For each model, one training step (forward, cross-entropy, backward, SGD step) of the target at
its target size and of its pre-train network at the plan's default pre-train size are timed,
interleaved (target, pre-train, pre-train, target, ...) so that drifting machine load hits both
alike, after warm-up steps. The speed-up is median(target) / median(pre-train); the median of the
per-pair ratios is stored beside it as a check. The prediction is `cost_table(plan).speedup`,
the ratio of Eq. 3 multiplications.

Each model is measured in PyTorch's default memory format (NCHW) and in channels_last (both
networks alike), each format as its own interleaved pair. In NCHW, oneDNN reorders every conv's
activations to its blocked layout and back (forward and backward); that memory traffic scales with
the feature-map area only, not with the kernel, and weighs most on the small-kernel pre-train
network. channels_last convs run without those reorders.

After the timed steps one more step of each network runs under torch.profiler, splitting self
CPU time into convolution kernels and the rest (BatchNorm, ReLU, pooling, pads, the optimizer):
Eq. 3 counts conv multiplications only, while the rest scales with the feature-map area (s1²).

Usage (from the repository root):
    python -m bench.pretrain_speedup                      # all six models, ~10-15 min on 2 cores
    python -m bench.pretrain_speedup --models resnet18 --repeats 3 --batch 4 --out /tmp/x.json

On a machine with CUDA the GPU path (bf16 autocast, channels_last) is measured as well; on the
CPU the output and the JSON say that it was not. `--device cpu` measures the CPU only, `--device
cuda` the GPU only (the models' speed-up and the goals are then the GPU's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.common import RESULTS, Run, goal, interleave, median
from modelsurgery.cost import cost_table
from modelsurgery.shrink import shrink
from modelsurgery.zoo import rebuild

MODELS = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny", "torchvision:vgg16"]
HEAVY = {"torchvision:vgg16": 5}  # repeats cap: a VGG-16 target step at batch 32 takes ~10 s on 2 cores
GOAL_R34 = 4.0  # ResNet-34 pre-train step at least 4x faster
GOAL_FRACTION = 0.85  # every ResNet reaches 85 % of its Eq. 3 speed-up


class Step:
    """One SGD training step of `model` on a fixed random batch, timed with a device sync."""

    def __init__(self, model: nn.Module, size: int, batch: int, device: str, num_classes: int,
                 channels_last: bool = False, bf16: bool = False):
        self.model = model.to(device).train()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, generator=gen).to(device).contiguous(memory_format=fmt)
        self.y = torch.randint(num_classes, (batch,), generator=gen).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.device, self.bf16 = device, bf16

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(self.x)
            loss = F.cross_entropy(out.float(), self.y)
        loss.backward()
        self.opt.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def time_pair(target: Step, pretrain: Step, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Interleaved timings in ABBA order, after `warmup` untimed steps of each."""
    times = interleave({"target": target, "pretrain": pretrain}, repeats, warmup, self_timed=True)
    return times["target"], times["pretrain"]


def conv_breakdown(step: Step) -> dict:
    """Self CPU time of one profiled step: convolution kernels (forward and backward) vs the rest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::") and "conv" in e.key) / 1e6
    return {"total_s": total, "conv_s": conv, "other_s": total - conv}


def profile_pair(target: Step, pretrain: Step, predicted: float) -> dict:
    """Where the speed-up goes: convs alone vs everything else (BN, ReLU, pooling, pads, optimizer).

    `ceiling` is the step speed-up if the pre-train's convs took exactly 1/Eq.3 of the target's
    conv time and everything else took what it measured.
    """
    t, p = conv_breakdown(target), conv_breakdown(pretrain)
    return {"target": t, "pretrain": p, "conv_speedup": t["conv_s"] / p["conv_s"],
            "conv_ratio_to_predicted": t["conv_s"] / p["conv_s"] / predicted,
            "other_speedup": t["other_s"] / p["other_s"], "conv_share_target": t["conv_s"] / t["total_s"],
            "conv_share_pretrain": p["conv_s"] / p["total_s"],
            "ceiling": t["total_s"] / (t["conv_s"] / predicted + p["other_s"])}


def summarize(t_times: list[float], p_times: list[float]) -> dict:
    t_med, p_med = median(t_times), median(p_times)
    return {"target_s": t_times, "pretrain_s": p_times, "target_median_s": t_med, "pretrain_median_s": p_med,
            "speedup": t_med / p_med,
            "speedup_paired_median": median(a / b for a, b in zip(t_times, p_times, strict=True))}


def measure_model(name: str, args) -> dict:
    small, plan = shrink(name, num_classes=args.num_classes)
    table = cost_table(plan)
    rec = {"model": name, "target_size": plan.target_size, "pretrain_size": plan.input_size,
           "batch": args.batch, "predicted_speedup": table.speedup, "eq4_bounds": list(table.bounds),
           "target_mults": table.total, "pretrain_mults": table.small_total}
    repeats = min(args.repeats, HEAVY.get(name, args.repeats))
    rec["repeats"], rec["warmup"] = repeats, args.warmup
    target = rebuild(plan.source)
    for fmt in args.memory_formats.split(",") if args.device != "cuda" else ():
        # One pair per memory format, interleaved within the pair; the models move to the
        # format in place (a pair's optimizer state is its own).
        start = time.perf_counter()
        cl = fmt == "channels_last"
        t_step = Step(target, plan.target_size, args.batch, "cpu", args.num_classes, channels_last=cl)
        p_step = Step(small, plan.input_size, args.batch, "cpu", args.num_classes, channels_last=cl)
        key = "cpu" if fmt == "contiguous" else f"cpu_{fmt}"
        rec[key] = summarize(*time_pair(t_step, p_step, repeats, args.warmup))
        rec[key]["wall_s"] = time.perf_counter() - start
        rec[key]["ratio_to_predicted"] = rec[key]["speedup"] / table.speedup
        if args.profile:
            rec[key]["profile"] = profile_pair(t_step, p_step, table.speedup)
        del t_step, p_step
    if args.device != "cuda":
        primary = rec.get("cpu") or rec[f"cpu_{args.memory_formats.split(',')[0]}"]
        rec["measured_speedup"] = primary["speedup"]
        rec["ratio_to_predicted"] = rec["measured_speedup"] / table.speedup
    if torch.cuda.is_available() and args.device != "cpu":
        t_step = Step(target, plan.target_size, args.batch, "cuda", args.num_classes, channels_last=True, bf16=True)
        p_step = Step(small, plan.input_size, args.batch, "cuda", args.num_classes, channels_last=True, bf16=True)
        rec["gpu"] = summarize(*time_pair(t_step, p_step, max(repeats, 20), max(args.warmup, 5)))
        rec["gpu"]["ratio_to_predicted"] = rec["gpu"]["speedup"] / table.speedup
        if args.device == "cuda":
            rec["measured_speedup"], rec["ratio_to_predicted"] = rec["gpu"]["speedup"], rec["gpu"]["ratio_to_predicted"]
    else:
        rec["gpu"] = None
    return rec


def cpu_keys(rec: dict) -> list[str]:
    return [k for k in rec if k == "cpu" or k.startswith("cpu_")]


def goals(records: list[dict]) -> list[dict]:
    """The goals, evaluated for every measured CPU memory format."""
    by_name = {r["model"]: r for r in records}
    out = []
    for key in [*cpu_keys(records[0]), *(["gpu"] if records[0].get("gpu") else [])] if records else []:
        fmt = "" if key == "cpu" else "_" + key.removeprefix("cpu_")
        if "resnet34" in by_name:
            value = by_name["resnet34"][key]["speedup"]
            out.append(goal(f"resnet34_speedup_at_least_4x{fmt}", value, GOAL_R34, value >= GOAL_R34))
        resnets = [r for r in records if r["model"].startswith("resnet")]
        if resnets:
            values = {r["model"]: r[key]["ratio_to_predicted"] for r in resnets}
            out.append(goal(f"resnets_at_least_85pct_of_eq3{fmt}", values, GOAL_FRACTION,
                            all(v >= GOAL_FRACTION for v in values.values())))
    return out


def plot(records: list[dict], path: Path, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"].replace("torchvision:", "tv:") for r in records]
    xs = range(len(records))
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    keys = cpu_keys(records[0])
    w = 0.8 / (len(keys) + 1)
    pred = [r["predicted_speedup"] for r in records]
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    top = max(pred)
    for j, key in enumerate(keys):
        meas = [r[key]["speedup"] for r in records]
        top = max(top, *meas)
        label = "measured, " + ("contiguous (NCHW)" if key == "cpu" else key.removeprefix("cpu_").replace("_", " "))
        offs = [x + (j - len(keys) / 2) * w for x in xs]
        ax.bar(offs, meas, w, label=label, color=colors[j % 3])
        for x, m, p in zip(offs, meas, pred, strict=True):
            ax.text(x, m, f"{m:.2f}x\n{m / p:.0%}", ha="center", va="bottom", fontsize=6)
    offs = [x + len(keys) / 2 * w for x in xs]
    ax.bar(offs, pred, w, label="predicted (Eq. 3 multiplications)", color="#bbbbbb")
    for x, p in zip(offs, pred, strict=True):
        ax.text(x, p, f"{p:.2f}x", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel("pre-train speed-up per step (x)")
    ax.set_ylim(0, top * 1.25)
    load = (info.get("loadavg_start") or [float("nan")])[0]
    ax.set_title(f"Pre-train vs target SGD step on the CPU, batch {records[0]['batch']}, {info['threads']} threads, "
                 f"{info['processor'][:28]}, load {load:.1f}", fontsize=8)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.pretrain_speedup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model specs")
    ap.add_argument("--repeats", type=int, default=9, help="timed steps per network (VGG-16 capped at 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per network first")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the profiled step per network that splits the time into convs and the rest")
    ap.add_argument("--memory-formats", default="contiguous,channels_last",
                    help="CPU memory formats to measure, each as its own interleaved pair; the first is the headline")
    ap.add_argument("--out", type=Path, default=RESULTS / "pretrain_speedup.json")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: the CPU, and the GPU when there is one; cpu or cuda: that one only")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but CUDA is not available. Hint: run on a GPU machine, or --device cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run = Run("pretrain_speedup", {
        "models": args.models.split(","), "batch": args.batch, "repeats": args.repeats, "repeats_cap": HEAVY,
        "warmup": args.warmup, "threads": args.threads, "device": args.device, "num_classes": args.num_classes,
        "optimizer": "SGD(lr=1e-3, momentum=0.9, wd=1e-4)", "order": "interleaved ABBA",
        "speedup": "median(target) / median(pre-train)", "memory_formats": args.memory_formats.split(","),
        "keys": "cpu = contiguous (NCHW, PyTorch's default); cpu_channels_last = both networks "
                "in channels_last; measured_speedup / ratio_to_predicted = the first format"})
    if not torch.cuda.is_available():
        print("GPU path (bf16 autocast, channels_last): not measured, CUDA is not available")
    records = []
    for name in args.models.split(","):
        rec = measure_model(name.strip(), args)
        records.append(rec)
        report(name, rec)
    gpu = ("measured" if torch.cuda.is_available() and args.device != "cpu"
           else "not measured: CUDA is not available on this machine (bf16 autocast, channels_last)")
    result = run.finish(args.out, {"gpu_path": gpu, "models": records}, goals(records))
    if args.device != "cuda":
        plot(records, args.out.with_suffix(".png"), result["machine"])
    for g in result["goals"]:
        print(f"goal {g['name']}: {'met' if g['met'] else 'NOT met'}")
    m = result["machine"]
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {m['runtime_s']:.0f} s "
          f"(load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f})")
    return result


def report(name: str, rec: dict) -> None:
    """Print one model's timings as they come in."""
    for key in cpu_keys(rec):
        c = rec[key]
        print(f"{name:18s} {key:17s} {rec['target_size']}px {c['target_median_s']:7.3f} s  vs  "
              f"{rec['pretrain_size']}px {c['pretrain_median_s']:7.3f} s   measured {c['speedup']:.2f}x (paired "
              f"{c['speedup_paired_median']:.2f}x)   Eq. 3 {rec['predicted_speedup']:.2f}x   "
              f"ratio {c['ratio_to_predicted']:.0%}   [{rec['repeats']} repeats, {c['wall_s']:.0f} s]", flush=True)
        if "profile" in c:
            pr = c["profile"]
            print(f"{'':36s} profiled: convs alone {pr['conv_speedup']:.2f}x ({pr['conv_ratio_to_predicted']:.0%} of "
                  f"Eq. 3, {pr['conv_share_target']:.0%} of the target step), the rest {pr['other_speedup']:.2f}x; "
                  f"ceiling with Eq. 3 convs {pr['ceiling']:.2f}x", flush=True)
    if rec["gpu"] is not None:
        print(f"{'':18s} GPU bf16 channels_last: {rec['gpu']['speedup']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
