"""Wall time of `msurg shrink resnet34 --out small.safetensors` as a whole process (goal: < 10 s).

Also times the shrink call alone, after the imports, in this process. Writes
bench/results/shrink_speed.json with machine info and the load average at start and end.

Usage (from the repository root):
    python -m bench.shrink_speed [--repeats 5] [--model resnet34] [--out PATH]
    python -m bench.shrink_speed --model resnet18 --repeats 1 --out /tmp/ss.json   # smoke run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, Run, goal, median

GOAL_S = 10.0


def time_cli(model: str, repeats: int) -> list[float]:
    times = []
    msurg = Path(sys.executable).with_name("msurg")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out = Path(tmp) / f"small{i}.safetensors"
            start = time.perf_counter()
            subprocess.run([str(msurg), "shrink", model, "--out", str(out)], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return times


def time_api(model: str, repeats: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    import modelsurgery

    shrink = modelsurgery.shrink   # resolves the lazy import (timm, torchvision) inside the timed imports
    imports = time.perf_counter() - start
    calls = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            start = time.perf_counter()
            small, plan = shrink(model)
            modelsurgery.save(Path(tmp) / f"s{i}.safetensors", small, plan)
            calls.append(time.perf_counter() - start)
    return imports, calls


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.shrink_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet34")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "shrink_speed.json")
    args = parser.parse_args(argv)
    run = Run("shrink_speed", {"model": args.model, "repeats": args.repeats})
    cli = time_cli(args.model, args.repeats)
    imports, api = time_api(args.model, args.repeats)
    data = {"command": f"msurg shrink {args.model} --out small.safetensors",
            "cli_wall_s": cli, "cli_wall_median_s": median(cli),
            "api_imports_s": imports, "api_shrink_and_save_s": api, "api_median_s": median(api)}
    result = run.finish(args.out, data, [goal("shrink_process_under_10s", median(cli), GOAL_S, median(cli) < GOAL_S)])
    met = result["goals"][0]["met"]
    print(f"msurg shrink {args.model}: median {data['cli_wall_median_s']:.2f} s wall as a process "
          f"(goal < 10 s: {'met' if met else 'NOT met'}); after imports {data['api_median_s']:.2f} s; "
          f"load {result['machine']['loadavg_start'][0]:.2f}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
