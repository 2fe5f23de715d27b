"""Wall time of growing a resnet50 checkpoint (goal: under 5 s wall).

Three views, each repeated and reported as the median (and min):
  process   `msurg grow CKPT --out OUT --force` as a whole process: interpreter start, imports,
            reading, verifying, growing, the strict load, the atomic save and the fidelity check;
            beside it, a process that only imports the same modules (start-up share).
  call      `files.grow_file(...)` in a warm interpreter (the same work without start-up and
            imports), with the fidelity check's share measured separately.
  grow      `modelsurgery.grow.grow(state_dict, plan)` alone: the pure dict -> dict conversion.

The checkpoint is `msurg shrink resnet50` (1000 classes, 224 -> 160 px; not timed), written to a
temporary folder. CPU timings on a shared machine are noisy: the load average is stored with the
results, the views are interleaved, and both 1 and 2 torch threads are measured (with another
process busy on one of the 2 cores, 2 OpenMP threads are slower than 1).

Usage (from the repository root):
    python -m bench.grow_speed                    # 1 and 2 threads, ~2-4 min -> bench/results/grow_speed.json
    python -m bench.grow_speed --threads 1        # one thread count only
    python -m bench.grow_speed --model resnet18 --repeats 2 --out /tmp/gs.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from bench.common import RESULTS, Run, goal, interleave, median, summary
from modelsurgery.cli import format_report
from modelsurgery.recipes_kit.machine import load_average

MSURG = str(Path(sys.executable).with_name("msurg"))
GOAL_S = 5.0  # growing a resnet50 checkpoint takes under 5 s wall

def time_process(ckpt: Path, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    start = time.perf_counter()
    proc = subprocess.run([MSURG, "grow", str(ckpt), "--out", str(out), "--force"], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"msurg grow failed: {proc.stderr.strip()}")
    return wall


def time_imports() -> float:
    """A process that only imports what `msurg grow` imports: the start-up share of the process view."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    code = "import modelsurgery.cli, modelsurgery.files, modelsurgery.grow, modelsurgery.images, timm"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def time_call(ckpt: Path, out: Path) -> tuple[float, float, str]:
    """grow_file in this interpreter; also the time spent in its fidelity check."""
    import modelsurgery.files as files

    original, spent = files._fidelity, []

    def fidelity(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    files._fidelity = fidelity
    try:
        start = time.perf_counter()
        report = files.grow_file(ckpt, out, force=True)
        return time.perf_counter() - start, spent[0], report
    finally:
        files._fidelity = original


def time_grow(ckpt: Path) -> float:
    from modelsurgery.checkpoint import read_plan, read_state_dict
    from modelsurgery.grow import grow

    state, meta = read_state_dict(ckpt)
    plan = read_plan(meta, ckpt)
    start = time.perf_counter()
    grow(state, plan)
    return time.perf_counter() - start


def measure(ckpt: Path, out: Path, repeats: int) -> dict:
    """The views at the current torch thread count, interleaved so drifting load hits all alike."""
    time_call(ckpt, out)  # warm-up: first-call costs (timm's registry, oneDNN kernels)
    views = {"process": lambda: time_process(ckpt, out), "imports": time_imports,
             "call": lambda: time_call(ckpt, out), "grow": lambda: time_grow(ckpt)}
    runs = interleave(views, repeats, warmup=0, self_timed=True)
    process, imports, pure = runs["process"], runs["imports"], runs["grow"]
    call, fidelity, reports = zip(*runs["call"], strict=True)
    return {"threads": torch.get_num_threads(), "loadavg_before": load_average(),
            "process": summary(process), "process_imports_only": summary(imports), "call": summary(call),
            "call_fidelity_check": summary(fidelity),
            "call_without_fidelity_check": summary([c - f for c, f in zip(call, fidelity, strict=True)]),
            "grow": summary(pure), "report": format_report(reports[-1]),
            "goal_met": {"process": median(process) < GOAL_S, "call": median(call) < GOAL_S,
                         "grow": median(pure) < GOAL_S}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.grow_speed", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default="1,2",
                   help="torch thread counts to measure (OMP_NUM_THREADS for msurg); 1 wins on a loaded machine")
    p.add_argument("--out", type=Path, default=RESULTS / "grow_speed.json")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    run = Run("grow_speed", {"model": args.model, "repeats": args.repeats, "threads": threads, "goal_s": GOAL_S})
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, out = Path(tmp) / "small.safetensors", Path(tmp) / "big.safetensors"
        subprocess.run([MSURG, "shrink", args.model, "--out", str(ckpt)], check=True, capture_output=True)
        size_mb = ckpt.stat().st_size / 2**20
        for n in threads:
            torch.set_num_threads(n)
            runs.append(measure(ckpt, out, args.repeats))
            r = runs[-1]
            print(f"{args.model}, {n} thread(s): msurg grow process {r['process']['median_s']} s (start-up and imports "
                  f"{r['process_imports_only']['median_s']} s), grow_file {r['call']['median_s']} s (fidelity check "
                  f"{r['call_fidelity_check']['median_s']} s), grow() {r['grow']['median_s']} s; goal < {GOAL_S} s",
                  flush=True)
    goals = [goal(f"{args.model}_grow_process_under_5s_{r['threads']}_threads", r["process"]["median_s"], GOAL_S,
                  r["goal_met"]["process"]) for r in runs]
    data = {"model": args.model, "checkpoint_mib": round(size_mb, 1), "runs": runs}
    result = run.finish(args.out, data, goals)
    m = result["machine"]
    print(f"load {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f} -> {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
