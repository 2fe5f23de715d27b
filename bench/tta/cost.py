"""The cost model: seconds per kind of training step, measured interleaved, and each run's cost from them.

A run's cost is its steps per kind × the kind's cost relative to a full step, plus its one-off
work at the run's own seconds per full step, in seconds of the sitting's full step
(`bench.frontier.full_step_equivalents`). `width_table` is the step-cost table by width that picks
the frontier's network (`bench/results/step_ratios.json`); `estimate` prices a plan before it runs.
"""

from __future__ import annotations

import dataclasses
import time

from bench.common import interleave, median
from bench.frontier import full_step_equivalents
from bench.tta.plan import LOW_CONVS, Settings, Spec, branch_epoch, epoch_kinds

__all__ = ["FULL_STEP", "RATIOS", "RATIO_KINDS", "estimate", "now", "run_cost", "step_table", "width_table"]

# Step cost relative to a full 28 px step of FashionResNet-18 at width 16, 2-core AMD EPYC (measured
# interleaved): what --estimate assumes; a run measures its own table. Sizes not listed scale with the pixels.
RATIOS = {"target 28px": 1.0, "target 24px": 0.75, "target 20px": 0.52, "target 16px": 0.36,
          "pretrain 19px": 0.38, "compound 19px": 0.12,   # bench/results/compound_step.json
          "low 28px": 0.17, "c2f 32px": 0.28, "c2f 16px": 0.04, "c2f 8px": 0.01}

FULL_STEP = {"resnet": "target 28px", "c2f": "c2f 32px"}   # each family's full step: its cost axis's unit


RATIO_KINDS = ("target 28px", "pretrain 19px", "target 19px", "target 14px", "low 28px")


def now(device) -> float:
    """`time.perf_counter()` once the device's queued work is done (a CUDA sync; nothing on the CPU)."""
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()

def step_table(s: Settings, kinds: set[str], data) -> dict[str, float]:
    """Seconds of one training step of each kind, measured interleaved (median of `speed_steps` rounds)."""
    import contextlib

    import torch

    from modelsurgery.lowmode.forward import low_mode
    from modelsurgery.methods.coarse_to_fine import CoarseToFine
    from modelsurgery.nets import build_model
    from modelsurgery.shrink import shrink

    device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    target = build_model("fashion-resnet18", width=s.width, in_chans=data.in_chans, num_classes=data.num_classes)
    small = shrink(target, target_size=28)[0]
    compound = shrink(target, target_size=28, width=0.5, depth=0.5)[0] if any(k.startswith("compound") for k in kinds) \
        else None
    c2f = CoarseToFine((8, 16, 32), (0, 1, 2), s.c2f_widths, in_chans=data.in_chans, num_classes=data.num_classes)
    nets = {"target": target, "pretrain": small, "low": target, **{f"c2f{c2f.sizes[i]}": c2f.net(i) for i in range(3)},
            **({"compound": compound} if compound is not None else {})}
    nets = {k: v.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
            for k, v in nets.items()}

    def timer(kind: str):
        form, size = kind.split()[0], int(kind.split()[1][:-2])
        net = nets[f"c2f{size}" if form == "c2f" else "target" if form in LOW_CONVS else form]
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(s.batch_size, data.in_chans, size, size, device=device)
        y = torch.randint(0, data.num_classes, (s.batch_size,), device=device)

        def step() -> float:
            start = now(device)
            with low_mode(net, 2, convs=LOW_CONVS[form]) if form in LOW_CONVS else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
            opt.step()
            return now(device) - start

        return step

    times = interleave({k: timer(k) for k in sorted(kinds)}, s.speed_steps, warmup=2, self_timed=True)
    return {k: round(median(v), 5) for k, v in times.items()}


def width_table(s: Settings, widths: tuple[int, ...]) -> dict:
    """Step cost relative to a full step at each width: the table that picks the frontier's network.

    The kinds: kernel rescaling's pre-train step (2×2 kernels, 19 px), the same network resized
    alone (3×3 at 19 and 14 px) and a low-mode step, each against a full 28 px step, interleaved.
    """
    from modelsurgery.images import load_dataset

    data = load_dataset("fixture" if s.data == "fixture" else s.data, size=28)
    rows = {}
    for w in widths:
        print(f"width {w}: {len(RATIO_KINDS)} kinds, interleaved ...", flush=True)
        t = step_table(dataclasses.replace(s, width=w), set(RATIO_KINDS), data)
        rows[w] = {"full_step_s": t["target 28px"], "relative": {k: round(t[k] / t["target 28px"], 3)
                                                                  for k in RATIO_KINDS[1:]}}
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in rows[w]["relative"].items())
              + f" (full step {1000 * t['target 28px']:.0f} ms)", flush=True)
    return rows


def run_cost(result: dict, family: str, table: dict[str, float]) -> float | None:
    """A run's cost in seconds of this sitting's full step (`bench.frontier.full_step_equivalents`).

    None for a run that did not record its one-off work (cached before it was), or whose kinds of
    step the table lacks.
    """
    full = table.get(FULL_STEP[family])
    if not full or result.get("one_off_s") is None:
        return None
    try:
        steps = full_step_equivalents(result["steps"], {k: v / full for k, v in table.items()}, result["one_off_s"],
                                      result["train_s"])
    except KeyError:
        return None
    return round(steps * full, 2)

def estimate(s: Settings, plan: list[Spec]) -> tuple[list[tuple[str, float]], float]:
    """(run name, estimated seconds) per run, trunks included, and the total; from RATIOS and --epoch-s."""
    def ratio(kind: str) -> float:
        if kind in RATIOS:
            return RATIOS[kind]
        form, size = kind.split()[0], int(kind.split()[1][:-2])
        return RATIOS.get(f"{form} 19px" if form == "pretrain" else "target 28px", 1.0) * \
            (size / (19 if form == "pretrain" else 28)) ** 2

    def cost(kinds: list[tuple[str, float]]) -> float:
        return sum((1 - q) * ratio(k) + q * RATIOS["low 28px"] for k, q in kinds) * s.epoch_s

    rows, trunks = [], {}
    for sp in plan:
        kinds, b = epoch_kinds(s, sp), branch_epoch(s, sp)
        if b is not None and b < sp.epochs:
            key = (sp.family, sp.seed)
            if b > trunks.get(key, 0):
                rows.append((f"{sp.family}/trunk/seed{sp.seed} to epoch {b}", cost(kinds[trunks.get(key, 0):b])))
                trunks[key] = b
            kinds = kinds[b:]
        rows.append((sp.name, cost(kinds) + 5.0))   # + the final evaluation
    return rows, sum(t for _, t in rows)
