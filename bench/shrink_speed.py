"""Wall time of `msurg shrink resnet34 --out small.safetensors` as a whole process (issue 2: < 10 s).

Also times the shrink call alone, after the imports, in this process. Writes
bench/results/shrink_speed.json with machine info and the load average before and after.

    python bench/shrink_speed.py [--repeats 5] [--model resnet34]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "loadavg": os.getloadavg()}


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

    modelsurgery.shrink  # noqa: B018  (resolve the lazy import: timm, torchvision)
    imports = time.perf_counter() - start
    calls = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            start = time.perf_counter()
            small, plan = modelsurgery.shrink(model)
            modelsurgery.save(Path(tmp) / f"s{i}.safetensors", small, plan)
            calls.append(time.perf_counter() - start)
    return imports, calls


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet34")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = os.getloadavg()
    cli = time_cli(args.model, args.repeats)
    imports, api = time_api(args.model, args.repeats)
    result = {
        "command": f"msurg shrink {args.model} --out small.safetensors",
        "cli_wall_s": cli, "cli_wall_median_s": statistics.median(cli),
        "api_imports_s": imports, "api_shrink_and_save_s": api, "api_median_s": statistics.median(api),
        "goal_s": 10.0, "goal_met": statistics.median(cli) < 10.0,
        "machine": {**machine(), "loadavg_before": before, "loadavg_after": os.getloadavg()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shrink_speed.json").write_text(json.dumps(result, indent=1))
    print(f"msurg shrink {args.model}: median {result['cli_wall_median_s']:.2f} s wall as a process "
          f"(goal < 10 s: {'met' if result['goal_met'] else 'NOT met'}); after imports "
          f"{result['api_median_s']:.2f} s; load {before[0]:.2f}")
    return result


if __name__ == "__main__":
    main()
