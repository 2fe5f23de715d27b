"""Wall time and peak memory of `msurg shrink`, `msurg grow` and `msurg export`.

Two views of each command, for resnet50, convnext_tiny and efficientnet_b0:
  process   the CLI as a whole process (`msurg ...`): wall time and peak RSS, read with
            os.wait4 for that child alone (ru_maxrss).
  in-process a fresh interpreter that first imports everything the command needs (timed), then
            calls the same API function (`files.shrink_to_file`, `files.grow_file`,
            `export.export_file`) and times that: the work in our code after the imports.
            Grow is split into its steps (read, rebuild target, verify, grow, save, fidelity check).
Baselines: the peak RSS of `python -c "import modelsurgery.cli"` (what the CLI loads up front)
and of an interpreter with every import the commands use (torch, timm, torchvision, onnx, ...).

Goal: growing a resnet50 checkpoint takes < 2 s after the imports, and its peak RSS is
below the interpreter-with-imports baseline + 3x the checkpoint size.

Usage (from the repository root):
    python -m bench.convert_speed                     # ~10-20 min on 2 cores
    python -m bench.convert_speed --models resnet18 --repeats 1 --no-export --out /tmp/cs.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, Run, goal, median

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = ["resnet50", "convnext_tiny", "efficientnet_b0"]
MSURG = str(Path(sys.executable).with_name("msurg"))
GOAL_GROW_S = 2.0  # resnet50 grow, work after the imports
GOAL_RSS_FACTOR = 3.0  # peak RSS < baseline + 3x checkpoint size
# Everything the three commands import, for the in-process runs and the "with imports" baseline.
IMPORTS = ("import torch, timm, torchvision, safetensors.torch, click, scipy, onnx\n"
           "import modelsurgery.cli, modelsurgery.files, modelsurgery.grow, modelsurgery.shrink, modelsurgery.zoo\n"
           "import modelsurgery.checkpoint, modelsurgery.export, modelsurgery.images, modelsurgery.train.loader\n"
           "import modelsurgery.cost\n"
           "import torch.onnx\n"
           "try:\n    import onnxscript, onnxruntime\nexcept ImportError:\n    pass\n")


def run_process(argv: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run one child to completion: its wall time, own peak RSS (MiB), exit code and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    rec = {"argv": [Path(argv[0]).name, *argv[1:]], "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
           "exit_code": proc.returncode, "stdout": stdout.strip()[-600:]}
    if proc.returncode != 0:
        rec["stderr"] = stderr.strip()[-1500:]
    return rec


# --- the in-process worker (a fresh interpreter: `python -m bench.convert_speed --worker ...`) ----

def _timed(module, name: str, log: dict):
    """Wrap module.name so that its calls add to log[name] (seconds)."""
    fn = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            log[name] = log.get(name, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapper)


def worker(verb: str, args: list[str]) -> None:
    start = time.perf_counter()
    exec(IMPORTS, {})
    import torch

    import modelsurgery.export as export
    import modelsurgery.files as files
    import modelsurgery.zoo as zoo

    grow = importlib.import_module("modelsurgery.grow")  # the module: the package attribute `grow` is the function

    import_s = time.perf_counter() - start
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    steps: dict[str, float] = {}
    if verb == "grow":
        for name in ("open_weights", "_grow_plan", "pick_weights", "_pretrain_net", "verify_state_dict", "save",
                     "_fidelity"):
            _timed(files, name, steps)
        _timed(zoo, "rebuild", steps)
        _timed(grow, "grow", steps)
    start = time.perf_counter()
    if verb == "shrink":
        files.shrink_to_file(args[0], args[1], force=True)
    elif verb == "grow":
        files.grow_file(args[0], args[1], force=True)
    else:
        export.export_file(args[0], args[1], force=True)
    call_s = time.perf_counter() - start
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"import_s": import_s, "call_s": call_s, "rss_after_imports_mib": rss_imports,
                                  "peak_rss_mib": rss_end, "steps_s": steps}))


def run_worker(verb: str, args: list[str], cwd: Path) -> dict:
    # The child runs in the scratch folder, so it finds `bench` through PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = run_process([sys.executable, "-m", "bench.convert_speed", "--worker", verb, *args], cwd, env)
    lines = [ln for ln in proc["stdout"].splitlines() if ln.startswith("RESULT ")]
    if proc["exit_code"] != 0 or not lines:
        return {"error": proc.get("stderr", proc["stdout"])[-800:]}
    return {**json.loads(lines[-1][len("RESULT "):]), "process_wall_s": proc["wall_s"]}


# --- the driver -----------------------------------------------------------------------------------

def best(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if key in r and r.get("exit_code", 0) == 0]
    return median(vals) if vals else None


def measure_command(verb: str, cli_args: list[str], api_args: list[str], cwd: Path, repeats: int) -> dict:
    procs = [run_process([MSURG, verb, *cli_args, "--force"], cwd) for _ in range(repeats)]
    workers = [run_worker(verb, api_args, cwd) for _ in range(repeats)]
    ok = [w for w in workers if "error" not in w]
    rec = {"process": {"runs": procs, "wall_s": best(procs, "wall_s"), "peak_rss_mib": best(procs, "peak_rss_mib"),
                       "ok": all(p["exit_code"] == 0 for p in procs)},
           "in_process": {"runs": workers, "ok": bool(ok) and len(ok) == len(workers)}}
    if ok:
        rec["in_process"].update({k: median(w[k] for w in ok)
                                  for k in ("import_s", "call_s", "rss_after_imports_mib", "peak_rss_mib")})
        if ok[0].get("steps_s"):
            rec["in_process"]["steps_s"] = {k: median(w["steps_s"].get(k, 0.0) for w in ok)
                                            for k in ok[0]["steps_s"]}
    return rec


def measure_model(name: str, work: Path, repeats: int, export_repeats: int, do_export: bool) -> dict:
    tag = name.replace(":", "_")
    small, big = f"{tag}-pretrain.safetensors", f"{tag}-target.safetensors"
    rec = {"model": name}
    rec["shrink"] = measure_command("shrink", [name, "--out", small], [name, small], work, repeats)
    if not (work / small).exists():
        rec["missing"] = "shrink wrote no checkpoint; grow and export not measured"
        return rec
    rec["pretrain_ckpt_mib"] = (work / small).stat().st_size / 2**20
    rec["grow"] = measure_command("grow", [small, "--out", big], [small, big], work, repeats)
    if (work / big).exists():
        rec["target_ckpt_mib"] = (work / big).stat().st_size / 2**20
    if do_export:
        for form, ckpt in (("pretrain", small), ("target", big)):
            if (work / ckpt).exists():
                onnx = f"{tag}-{form}.onnx"
                rec[f"export_{form}"] = measure_command("export", [ckpt, "--out", onnx], [ckpt, onnx], work,
                                                        export_repeats)
    return rec


def baselines(work: Path, repeats: int) -> dict:
    out = {}
    for key, code in (("python_bare", "pass"), ("import_modelsurgery_cli", "import modelsurgery.cli"),
                      ("with_all_imports", IMPORTS)):
        runs = [run_process([sys.executable, "-c", code], work) for _ in range(repeats)]
        out[key] = {"wall_s": best(runs, "wall_s"), "peak_rss_mib": best(runs, "peak_rss_mib"), "code": code}
    return out


def goals(data: dict) -> list[dict]:
    """Resnet50's grow: under 2 s after the imports; peak RSS under the baseline + 3x the checkpoint."""
    rec = next((m for m in data["models"] if m["model"] == "resnet50"), None)
    if rec is None or "grow" not in rec:
        return []
    call, rss = rec["grow"]["in_process"].get("call_s"), rec["grow"]["process"]["peak_rss_mib"]
    limit = data["baselines"]["with_all_imports"]["peak_rss_mib"] + GOAL_RSS_FACTOR * rec["pretrain_ckpt_mib"]
    return [goal("resnet50_grow_after_imports_under_2s", call, GOAL_GROW_S, call is not None and call < GOAL_GROW_S),
            goal("resnet50_grow_peak_rss_under_baseline_plus_3x_checkpoint", rss, limit,
                 rss is not None and rss < limit)]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result["data"]
    verbs = [v for v in ("shrink", "grow", "export_pretrain", "export_target") if any(v in m for m in data["models"])]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    w = 0.8 / len(verbs)
    for j, v in enumerate(verbs):
        xs = [i + (j - (len(verbs) - 1) / 2) * w for i in range(len(data["models"]))]
        walls = [m.get(v, {}).get("process", {}).get("wall_s") or 0 for m in data["models"]]
        calls = [m.get(v, {}).get("in_process", {}).get("call_s") or 0 for m in data["models"]]
        rss = [m.get(v, {}).get("process", {}).get("peak_rss_mib") or 0 for m in data["models"]]
        bars = ax1.bar(xs, walls, w, label=f"{v} (process)", alpha=0.45)
        ax1.bar(xs, calls, w * 0.5, color=bars.patches[0].get_facecolor()[:3], label=f"{v} (after imports)")
        ax2.bar(xs, rss, w, label=v)
    names = [m["model"] for m in data["models"]]
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(names)), names, fontsize=8)
    base = data["baselines"]["with_all_imports"]["peak_rss_mib"]
    ax2.axhline(base, color="k", ls="--", lw=1, label="python + imports")
    ax1.set_ylabel("wall time (s)")
    ax2.set_ylabel("peak RSS (MiB)")
    ax1.legend(fontsize=6, ncol=2)
    ax2.legend(fontsize=6)
    fig.suptitle(f"msurg conversions, {result['settings']['threads']} threads, "
                 f"load {result['machine']['loadavg_start'][0]:.1f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.convert_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3, help="runs of shrink and grow (median)")
    ap.add_argument("--export-repeats", type=int, default=1, help="runs of each export")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "convert_speed.json")
    args = ap.parse_args(argv)
    # No torch in this process until the end: a child's ru_maxrss includes the RSS it had as a
    # fork of this process before exec, so the driver stays a bare interpreter while it measures.
    os.environ["BENCH_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    run = Run("convert_speed", {"models": args.models.split(","), "repeats": args.repeats,
                                "export_repeats": args.export_repeats, "export": not args.no_export,
                                "threads": args.threads, "statistic": "median over repeats",
                                "rss": "ru_maxrss of that child (os.wait4)"})
    work = Path(tempfile.mkdtemp(prefix="convert_speed-"))
    try:
        data = {"baselines": baselines(work, args.repeats), "models": []}
        for k, b in data["baselines"].items():
            print(f"baseline {k}: {b['wall_s']:.2f} s, {b['peak_rss_mib']:.0f} MiB", flush=True)
        for name in args.models.split(","):
            rec = measure_model(name.strip(), work, args.repeats, args.export_repeats, not args.no_export)
            data["models"].append(rec)
            report(name, rec)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = run.finish(args.out, data, goals(data))
    plot(result, args.out.with_suffix(".png"))
    for g in result["goals"]:
        print(f"goal {g['name']}: {'met' if g['met'] else 'NOT met'} (value {g['value']}, threshold {g['threshold']})")
    m = result["machine"]
    print(f"wrote {args.out} in {m['runtime_s']:.0f} s (load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f})")
    return result


def report(name: str, rec: dict) -> None:
    """Print one model's commands as they come in."""
    for verb in ("shrink", "grow", "export_pretrain", "export_target"):
        if verb in rec:
            p, ip = rec[verb]["process"], rec[verb]["in_process"]
            status = "" if p["ok"] and ip["ok"] else "  FAILED: " + (
                next((r.get("stderr", "") for r in p["runs"] if r["exit_code"]), "")
                or next((r.get("error", "") for r in ip["runs"] if "error" in r), ""))[-300:]
            print(f"{name:16s} {verb:16s} process {p['wall_s'] or 0:6.2f} s {p['peak_rss_mib'] or 0:6.0f} MiB | "
                  f"imports {ip.get('import_s', 0):5.2f} s, our code {ip.get('call_s', 0):6.2f} s{status}", flush=True)
    if "missing" in rec:
        print(f"{name}: {rec['missing']}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1:])
