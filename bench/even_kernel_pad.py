"""What F.pad costs a 2x2 conv, and what folding the padding into the conv saves.

Every even-kernel conv of the pre-train network pads asymmetrically. The layer used to run
F.pad (a padded copy of the input, and a cropped copy of its gradient) and then the unpadded
conv. `PaddedConv` now folds the padding into the conv where that is cheaper (see
`modelsurgery.layers.fold_geometry`): a stride-2 conv with the extra pixel after an even map
needs no padding at all; otherwise a symmetric conv padding plus a crop of the output.

Part 1, per layer: the padded 2x2 convs of the pre-train ResNets at their pre-train input
shapes (batch 32), forward + backward (gradients of input and weight), timed interleaved:
  conv_only  the conv on an already padded input (what the conv itself costs)
  pad_only   F.pad and its backward alone
  fpad       F.pad + conv: the layer before this change ("before")
  fold       padding folded into the conv + crop, for every shape
  policy     the shipped forward (`FOLD_MAX_EXTRA` decides between fold and F.pad) ("after")
and fpad / fold / policy again followed by BatchNorm2d, as in the networks (a cropped output
is a strided view, and the next layer pays for that). Pad share = pad_only / fpad.
Part 2, whole network: one pre-train SGD training step with the old and the new forward.

Usage (from the repository root):
    python -m bench.even_kernel_pad                  # ~3-5 min on 2 idle cores
    python -m bench.even_kernel_pad --models resnet18 --repeats 2 --batch 2 --out /tmp/pad.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.common import RESULTS, Run, goal, interleave, median
from bench.pretrain_speedup import Step
from modelsurgery import layers
from modelsurgery.layers import PaddedConv, set_conv_padding
from modelsurgery.shrink import shrink

MODES = {"fpad": -1.0, "fold": float("inf")}  # FOLD_MAX_EXTRA forcing each path; "policy" = shipped value
THRESHOLD = 0.10  # look for a cheaper way if F.pad costs more than 10 % of the conv's time


@contextlib.contextmanager
def fold_mode(mode: str):
    """Force the F.pad path ("fpad"), the folded path ("fold"), or keep the shipped policy."""
    saved = layers.FOLD_MAX_EXTRA
    layers.FOLD_MAX_EXTRA = MODES.get(mode, saved)
    try:
        yield
    finally:
        layers.FOLD_MAX_EXTRA = saved


def padded_shapes(name: str, batch: int) -> tuple[dict, list[dict]]:
    """(plan info, one record per padded conv: its config and input shape at the pre-train size)."""
    small, plan = shrink(name, num_classes=1000)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: seen.append((n, m, tuple(a[0].shape))))
             for n, m in small.named_modules() if isinstance(m, PaddedConv)]
    with torch.no_grad():
        small.eval()(torch.zeros(1, plan.in_chans, plan.input_size, plan.input_size))
    for h in hooks:
        h.remove()
    convs = [{"name": n, "in_channels": m.in_channels, "out_channels": m.out_channels,
              "kernel": list(m.kernel_size), "stride": list(m.stride), "groups": m.groups, "pad": list(m.pad),
              "input": [batch, *shape[1:]]} for n, m, shape in seen]
    return {"input_size": plan.input_size, "target_size": plan.target_size}, convs


def config_key(c: dict) -> tuple:
    return (c["in_channels"], c["out_channels"], *c["kernel"], *c["stride"], c["groups"], *c["pad"], *c["input"][1:])


class LayerCase:
    """A padded conv (and a BatchNorm after it) at one input shape, with fixed random tensors."""

    def __init__(self, c: dict):
        gen = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(c["in_channels"], c["out_channels"], tuple(c["kernel"]), stride=tuple(c["stride"]),
                         groups=c["groups"], bias=False)
        set_conv_padding(conv, tuple(c["pad"]))
        self.conv, self.bn = conv, nn.BatchNorm2d(c["out_channels"])
        self.x = torch.randn(c["input"], generator=gen).requires_grad_()
        with fold_mode("fpad"), torch.no_grad():
            out = conv(self.x)
        self.g = torch.randn(out.shape, generator=gen)
        self.xp = F.pad(self.x.detach(), conv.pad).requires_grad_()
        self.x_cl = self.x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        self.xp_cl = self.xp.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        self.g_cl = self.g.contiguous(memory_format=torch.channels_last)

    def variants(self) -> dict:
        conv, w = self.conv, self.conv.weight

        def run_layer(mode, bn=False):
            def fn():
                with fold_mode(mode):
                    y = conv(self.x)
                    y = self.bn(y) if bn else y
                    torch.autograd.grad(y, (self.x, w), self.g)
            return fn

        def conv_only(xp, g):
            return lambda: torch.autograd.grad(F.conv2d(xp, w, None, conv.stride, 0, 1, conv.groups), (xp, w), g)

        def pad_only(x, xp):
            return lambda: torch.autograd.grad(F.pad(x, conv.pad), (x,), xp)

        return {"conv_only": conv_only(self.xp, self.g), "pad_only": pad_only(self.x, self.xp),
                "fpad": run_layer("fpad"), "fold": run_layer("fold"), "policy": run_layer("policy"),
                "fpad+bn": run_layer("fpad", True), "fold+bn": run_layer("fold", True),
                "policy+bn": run_layer("policy", True),
                "conv_only_cl": conv_only(self.xp_cl, self.g_cl), "pad_only_cl": pad_only(self.x_cl, self.xp_cl)}


def measure_layers(configs: dict, repeats: int) -> list[dict]:
    rows = []
    for c in configs.values():
        case = LayerCase(c)
        med = {n: median(t) for n, t in interleave(case.variants(), repeats).items()}
        with torch.no_grad():  # which path the shipped policy takes at this shape
            fold = case.conv._fold(*c["input"][-2:])
        rows.append({**{k: c[k] for k in ("in_channels", "out_channels", "kernel", "stride", "groups", "pad", "input")},
                     "count": c["count"], "median_s": med, "policy_path": "fold" if fold else "fpad",
                     "pad_share": med["pad_only"] / med["fpad"],
                     "pad_share_channels_last": med["pad_only_cl"] / (med["pad_only_cl"] + med["conv_only_cl"]),
                     "speedup_policy": med["fpad"] / med["policy"],
                     "speedup_policy_bn": med["fpad+bn"] / med["policy+bn"],
                     "speedup_fold": med["fpad"] / med["fold"], "speedup_fold_bn": med["fpad+bn"] / med["fold+bn"]})
        print(f"  {c['in_channels']:4d}->{c['out_channels']:<4d} {c['input'][-1]:3d}px s{c['stride'][0]} "
              f"pad {tuple(c['pad'])} "
              f"x{c['count']:<2d} F.pad share {rows[-1]['pad_share']:5.1%}  fold {rows[-1]['speedup_fold']:.2f}x "
              f"(+bn {rows[-1]['speedup_fold_bn']:.2f}x)  policy[{rows[-1]['policy_path']}] "
              f"{rows[-1]['speedup_policy']:.2f}x (+bn {rows[-1]['speedup_policy_bn']:.2f}x)", flush=True)
    return rows


def model_totals(rows: list[dict], convs: list[dict]) -> dict:
    """Sum each variant over a network's padded convs (per training step, batch as measured)."""
    by_key = {config_key(r): r for r in rows}
    tot = {}
    for c in convs:
        for n, t in by_key[config_key(c)]["median_s"].items():
            tot[n] = tot.get(n, 0.0) + t
    return {"sum_median_s": tot, "pad_share": tot["pad_only"] / tot["fpad"],
            "speedup_policy": tot["fpad"] / tot["policy"], "speedup_policy_bn": tot["fpad+bn"] / tot["policy+bn"]}


def measure_steps(name: str, batch: int, repeats: int) -> dict:
    """Whole pre-train training steps with the F.pad forward, the folded one, and the shipped policy."""
    small, plan = shrink(name, num_classes=1000)
    step = Step(small, plan.input_size, batch, "cpu", 1000)

    def run(mode):
        def fn():
            with fold_mode(mode):
                step()
        return fn

    times = interleave({m: run(m) for m in ("fpad", "fold", "policy")}, repeats)
    med = {m: median(t) for m, t in times.items()}
    return {"times_s": times, "median_s": med, "speedup_policy": med["fpad"] / med["policy"],
            "speedup_fold": med["fpad"] / med["fold"]}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["data"]["models"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    w = 0.38
    for i, n in enumerate(names):
        tot = result["data"]["models"][n]["layers"]["sum_median_s"]
        first = i == 0
        ax.bar(i - w / 2, tot["fpad+bn"] * 1e3, w, color="#d62728",
               label="F.pad + conv + BN (before)" if first else None)
        ax.bar(i + w / 2, tot["policy+bn"] * 1e3, w, color="#2ca02c",
               label="PaddedConv.forward + BN (after)" if first else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("fwd+bwd of all padded 2x2 convs (ms)")
    ax.set_title(f"Even-kernel convs per pre-train step, batch {result['settings']['batch']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.even_kernel_pad", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,resnet34,resnet50")
    ap.add_argument("--repeats", type=int, default=9, help="timed rounds per layer shape")
    ap.add_argument("--step-repeats", type=int, default=5, help="timed training steps per variant")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "even_kernel_pad.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Run("even_kernel_pad", {
        "models": args.models.split(","), "batch": args.batch, "repeats": args.repeats,
        "step_repeats": args.step_repeats, "threads": args.threads, "fold_max_extra": layers.FOLD_MAX_EXTRA,
        "threshold": THRESHOLD,
        "timing": "forward + backward (grad of input and weight), median of interleaved rounds"})
    models, configs = {}, {}
    for name in args.models.split(","):
        plan_info, convs = padded_shapes(name, args.batch)
        models[name] = {**plan_info, "padded_convs": convs}
        for c in convs:
            configs.setdefault(config_key(c), {**c, "count": 0})["count"] += 1
    print(f"{len(configs)} distinct padded-conv shapes in {', '.join(models)}; "
          f"FOLD_MAX_EXTRA = {layers.FOLD_MAX_EXTRA}")
    rows = measure_layers(configs, args.repeats)
    for name, rec in models.items():
        rec["layers"] = model_totals(rows, rec["padded_convs"])
        rec["step"] = measure_steps(name, args.batch, args.step_repeats)
        lt, st = rec["layers"], rec["step"]
        print(f"{name}: F.pad = {lt['pad_share']:.1%} of the padded convs' time; padded convs (+BN) "
              f"{lt['sum_median_s']['fpad+bn'] * 1e3:.0f} -> {lt['sum_median_s']['policy+bn'] * 1e3:.0f} ms "
              f"({lt['speedup_policy_bn']:.2f}x); whole step {st['median_s']['fpad']:.3f} -> "
              f"{st['median_s']['policy']:.3f} s ({st['speedup_policy']:.3f}x; "
              f"fold everywhere {st['speedup_fold']:.3f}x)",
              flush=True)
    share = (sum(r["median_s"]["pad_only"] * r["count"] for r in rows)
             / sum(r["median_s"]["fpad"] * r["count"] for r in rows))
    data = {"pad_share_overall": share, "above_threshold": share > THRESHOLD, "layers": rows, "models": models}
    result = run.finish(args.out, data, [goal("pad_share_at_most_10pct", share, THRESHOLD, share <= THRESHOLD)])
    plot(result, args.out.with_suffix(".png"))
    m = result["machine"]
    print(f"F.pad share over all shapes (count-weighted): {share:.1%}; wrote {args.out} "
          f"in {m['runtime_s']:.0f} s (load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f})")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
