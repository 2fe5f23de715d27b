"""What a step of a compound pre-train network costs: narrower and shallower as well as smaller.

Liu et al. 2016 (§III-C, §IV-E) grow a network in width and depth as well as in resolution. On
FashionResNet-18 the narrower and shallower networks exist already (`width`, and
`fashion-resnet10`, one block a stage instead of two), so the step cost of a pre-train network
that is half as wide, optionally half as deep, with 2×2 kernels at 19 px (kernel rescaling's
shrink, de Gusmão et al. 2016, Table 1) can be measured before any width or depth grow is built.

Each kind is one training step (forward, cross-entropy, backward, SGD with momentum) of batch
`--batch` random images, all kinds interleaved round by round (`bench.common.interleave`), the
median of `--repeats` rounds, reported relative to the full network's 28 px step at the same
width.

Usage (from the repository root):
    python -m bench.compound_step                      # widths 16 and 32, ~4 min on 2 cores
    python -m bench.compound_step --widths 8 --repeats 2 --batch 32 --out /tmp/c.json   # smoke run

Writes bench/results/compound_step.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from bench.common import RESULTS, Run, interleave, median
from modelsurgery.nets import build_model
from modelsurgery.shrink import shrink

# kind -> (model, width divisor, kernels shrunk by Table 1, input px)
KINDS = {
    "full (28 px)": ("fashion-resnet18", 1, False, 28),
    "kernels 2x2, 19 px": ("fashion-resnet18", 1, True, 19),
    "half width": ("fashion-resnet18", 2, False, 28),
    "half width, kernels 2x2, 19 px": ("fashion-resnet18", 2, True, 19),
    "half width and depth": ("fashion-resnet10", 2, False, 28),
    "half width and depth, kernels 2x2, 19 px": ("fashion-resnet10", 2, True, 19),
}


def step_fn(kind: str, width: int, batch: int):
    """A function that runs (and times) one training step of `kind` at `width`."""
    name, divisor, kernels, size = KINDS[kind]
    net = build_model(name, width=width // divisor, in_chans=1, num_classes=10)
    if kernels:
        net = shrink(net, target_size=28)[0]
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))

    def step() -> float:
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def measure(width: int, batch: int, repeats: int) -> dict:
    """Median seconds per kind at `width`, and each relative to the full step."""
    times = interleave({k: step_fn(k, width, batch) for k in KINDS}, repeats, warmup=2, self_timed=True)
    seconds = {k: median(v) for k, v in times.items()}
    full = seconds["full (28 px)"]
    return {"full_step_s": round(full, 5), "relative": {k: round(v / full, 3) for k, v in seconds.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.compound_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", default="16,32", help="first-stage widths of the full network, e.g. 16,32")
    ap.add_argument("--batch", type=int, default=256, help="images per step")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (the median is kept)")
    ap.add_argument("--out", type=Path, default=RESULTS / "compound_step.json")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    if not widths or any(w < 2 or w % 2 for w in widths) or args.batch < 1 or args.repeats < 1:
        ap.error(f"--widths {args.widths}: even widths of at least 2 (each is halved), with --batch and "
                 "--repeats at least 1. Hint: --widths 16,32")
    run = Run("compound_step", {"widths": widths, "batch": args.batch, "repeats": args.repeats,
                                "threads": torch.get_num_threads()})
    rows = {}
    for w in widths:
        print(f"width {w}: {len(KINDS)} kinds, interleaved ...", flush=True)
        rows[w] = measure(w, args.batch, args.repeats)
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in rows[w]["relative"].items()), flush=True)
    return run.finish(args.out, {"kinds": {k: list(v) for k, v in KINDS.items()}, "widths": rows}, [])


if __name__ == "__main__":
    main()
