"""Start-up time of `msurg` as whole processes, before and after the lazy imports, and where it goes.

Commands, each a whole process running the two lines of the `msurg` entry script:
  msurg --help
  msurg grow missing.safetensors     (a file error: exit 1, one line)
  msurg plan resnet34
  msurg shrink resnet34 --out ...
  msurg grow R50 --out ...           (R50: a resnet50 pre-train checkpoint, made once by shrink)
each with this checkout's package ("after") and with the package of the base commit `--before`
("before", extracted with `git archive` into a temporary folder), the only entry on PYTHONPATH.
Every round runs all of them, and the baselines `python -c pass`, `import torch`,
`import torch, torchvision` and `import torch, torchvision, timm`, in an order rotated by one
per round (`bench.common.interleave`); medians over the rounds.

Where the time goes: every "after" command, and "before"'s `--help`, runs once more per round
under `-X importtime`. Each module's self time counts for torch, torchvision or timm when the
module is imported inside that package's first import (numpy under torch counts as torch), else
as "other imports" (modelsurgery, click, safetensors, ...), except the modules that a bare
interpreter imports. torch's own modules count as torch wherever they are imported from (timm and
torchvision pull in more of torch than `import torch` does; the baselines' differences show the
other view). These runs' launcher notes when its first statement runs: interpreter = that time
(the interpreter's start, its own imports included), work = the time of the command's last
output line minus the interpreter and every import, and exit = process end minus that last line
(the interpreter's teardown). Each part is the median over the rounds.

Goals: `msurg --help` and the file error under 500 ms (after, median).

Usage (from the repository root):
    python -m bench.startup                          # ~10 min on 2 busy cores
    python -m bench.startup --repeats 1 --out /tmp/startup.json   # smoke run
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, Run, goal, interleave, median, summary

BEFORE = "83ca250"
GOAL_S = 0.5  # msurg --help and a file error, as processes
HEAVY = ("torch", "torchvision", "timm")
LAUNCH = "import sys; from modelsurgery.cli import main; sys.argv[0] = 'msurg'; main()"  # the msurg entry script
# The same, for the breakdown: it also reports when its first statement ran (wall clock), after main's last line.
TIMED_LAUNCH = """import sys, time
t0 = time.time()
try:
    from modelsurgery.cli import main
    sys.argv[0] = 'msurg'
    main()
finally:
    sys.stderr.write(f"\\nSTARTED {t0!r}\\n")
"""
BASELINES = {"python_bare": "pass", "import_torch": "import torch", "import_torchvision": "import torch, torchvision",
             "import_timm": "import torch, torchvision, timm"}
EXPECTED_EXIT = {"help": 0, "missing_file": 1, "plan": 0, "shrink": 0, "grow": 0}


def commands(work: Path | None = None, variant: str = "") -> dict[str, list[str]]:
    """The msurg arguments of each command, writing into `work` files of this variant's own
    (without `work`: the names the results file shows)."""
    def path(name: str) -> str:
        return str(work / f"{name}-{variant}.safetensors") if work else f"{name}.safetensors"

    ckpt = str(work / "resnet50-pretrain.safetensors") if work else "resnet50-pretrain.safetensors"
    return {"help": ["--help"],
            "missing_file": ["grow", "missing.safetensors"],
            "plan": ["plan", "resnet34"],
            "shrink": ["shrink", "resnet34", "--out", path("small"), "--force"],
            "grow": ["grow", ckpt, "--out", path("big"), "--force"]}


def run_process(argv: list[str], cwd: Path, env: dict) -> dict:
    """One child to completion: wall and CPU time, time of its last output (stdout or stderr), exit code, stderr.

    CPU time (user + system, from os.wait4 for that child alone) moves less than wall time with
    the load of a shared machine.

    With TIMED_LAUNCH, also `started_s`: when the child's first statement ran.
    """
    epoch, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last, err, sel = None, [], selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    while sel.get_map():
        for key, _ in sel.select():
            chunk = os.read(key.fileobj.fileno(), 1 << 16)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            last = time.perf_counter() - start
            if key.fileobj is proc.stderr:
                err.append(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    sel.close()
    stderr = b"".join(err).decode(errors="replace")
    started = [float(ln.split()[1]) - epoch for ln in stderr.splitlines() if ln.startswith("STARTED ")]
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "output_s": last,
            "started_s": started[-1] if started else None, "exit_code": code, "stderr": stderr}


def import_times(stderr: str, startup: frozenset[str] = frozenset()) -> dict[str, float]:
    """Seconds of `-X importtime` self time per heavy package (innermost one wins) and "other".

    Modules in `startup` (what a bare interpreter imports) are left out: they are the interpreter's.
    """
    rows = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].split(":")[1].strip().isdigit():
            name = parts[2].rstrip()
            rows.append((len(name) - len(name.lstrip()), name.strip(), int(parts[0].split(":")[1])))
    out = dict.fromkeys([*HEAVY, "other"], 0.0)
    stack: list[tuple[int, str | None]] = []  # (depth, package) of the ancestors, read in pre-order
    for depth, name, self_us in reversed(rows):  # importtime prints in post-order
        while stack and stack[-1][0] >= depth:
            stack.pop()
        top = name.split(".")[0]
        owner = top if top in HEAVY else (stack[-1][1] if stack else None)
        stack.append((depth, owner))
        if owner or name not in startup:
            out[owner or "other"] += self_us / 1e6
    return out


def imported_names(stderr: str) -> frozenset[str]:
    """The modules an `-X importtime` run lists."""
    return frozenset(ln.split("|")[2].strip() for ln in stderr.splitlines()
                     if ln.startswith("import time:") and ln.count("|") == 2)


def breakdown(runs: list[dict], startup: frozenset[str]) -> dict[str, float]:
    """The median of each part over `runs` (TIMED_LAUNCH importtime runs of one command); see the module docstring."""
    parts = []
    for r in runs:
        imports = import_times(r["stderr"], startup)
        output, interpreter = r["output_s"], r["started_s"]
        parts.append({"interpreter_s": interpreter, **{f"{k}_s": v for k, v in imports.items() if k in HEAVY},
                      "other_imports_s": imports["other"], "work_s": output - interpreter - sum(imports.values()),
                      "exit_s": r["wall_s"] - output, "total_s": r["wall_s"]})
    return {k: round(median(p[k] for p in parts), 3) for k in parts[0]}


def extract(rev: str, dest: Path) -> Path:
    """The package `modelsurgery/` of commit `rev`, as files under `dest` (no worktree, no checkout)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "modelsurgery"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest)], check=True)  # as the checkout's are
    return dest


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed rounds first")
    ap.add_argument("--before", default=BEFORE, help="the commit to compare with")
    ap.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    args = ap.parse_args(argv)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True,
                         capture_output=True, text=True).stdout.strip()
    run = Run("startup", {"repeats": args.repeats, "warmup": args.warmup, "before": rev, "after": "this checkout",
                          "statistic": "median over interleaved rounds", "launcher": LAUNCH,
                          "goal_s": GOAL_S})
    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    try:
        data = measure(tmp, extract(rev, tmp / "before"), args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = data["commands"]
    goals = [goal(f"msurg_{name}_under_500ms", after[name]["after"]["median_s"], GOAL_S,
                  after[name]["after"]["median_s"] < GOAL_S) for name in ("help", "missing_file")]
    result = run.finish(args.out, data, goals)
    report(result)
    return result


def measure(tmp: Path, before: Path, args) -> dict:
    work = tmp / "work"
    work.mkdir()
    trees = {"after": ROOT, "before": before}
    envs = {k: {**os.environ, "PYTHONPATH": str(v), "HF_HUB_OFFLINE": "1"} for k, v in trees.items()}
    envs["before"]["MODELSURGERY_FIXTURES"] = str(ROOT / "fixtures")  # grow's fidelity check reads them
    py = sys.executable
    startup = imported_names(run_process([py, "-X", "importtime", "-c", "pass"], work, envs["after"])["stderr"])
    where = {k: subprocess.run([py, "-c", "import modelsurgery; print(modelsurgery.__file__)"], cwd=work, env=e,
                               capture_output=True, text=True, check=True).stdout.strip() for k, e in envs.items()}
    for variant, path in where.items():
        if not path.startswith(str(trees[variant])):
            raise SystemExit(f"the {variant} package is imported from {path}, not from {trees[variant]}")
    made = run_process([py, "-c", LAUNCH, "shrink", "resnet50", "--out", str(work / "resnet50-pretrain.safetensors")],
                       work, envs["after"])
    if made["exit_code"] != 0:
        raise SystemExit(f"could not make the resnet50 checkpoint: {made['stderr'][-800:]}")
    fns = {}
    for variant in ("after", "before"):
        for name, cmd in commands(work, variant).items():
            env = envs[variant]
            fns[f"{variant}/{name}"] = lambda c=cmd, e=env: run_process([py, "-c", LAUNCH, *c], work, e)
            if variant == "after" or name == "help":
                timed = [py, "-X", "importtime", "-c", TIMED_LAUNCH, *cmd]
                fns[f"importtime/{variant}/{name}"] = lambda c=timed, e=env: run_process(c, work, e)
    for name, code in BASELINES.items():
        fns[f"baseline/{name}"] = lambda c=code: run_process([py, "-c", c], work, envs["after"])
    runs = interleave(fns, args.repeats, args.warmup, self_timed=True)
    return collect(runs, where, startup)


def collect(runs: dict[str, list[dict]], where: dict[str, str], startup: frozenset[str]) -> dict:
    """The results file's `data`: per command before/after, the baselines, the breakdowns."""
    def stats(key: str, expected: int = 0) -> dict:
        rs = runs[key]
        bad = [r for r in rs if r["exit_code"] != expected]
        exits = [r["wall_s"] - r["output_s"] for r in rs if r["output_s"] is not None]
        return {**summary(r["wall_s"] for r in rs), "cpu_median_s": round(median(r["cpu_s"] for r in rs), 3),
                "exit_median_s": round(median(exits), 3) if exits else None,
                "ok": not bad,
                **({"stderr": bad[0]["stderr"][-600:]} if bad else {})}

    baselines = {name: {**summary(r["wall_s"] for r in runs[f"baseline/{name}"]),
                        "cpu_median_s": round(median(r["cpu_s"] for r in runs[f"baseline/{name}"]), 3)}
                 for name in BASELINES}
    cmds = {}
    for name, expected in EXPECTED_EXIT.items():
        rec = {"argv": f"msurg {' '.join(commands()[name])}", "exit_code": expected,
               "before": stats(f"before/{name}", expected), "after": stats(f"after/{name}", expected)}
        rec["speedup"] = round(rec["before"]["median_s"] / rec["after"]["median_s"], 2)
        rec["cpu_speedup"] = round(rec["before"]["cpu_median_s"] / rec["after"]["cpu_median_s"], 2)
        cmds[name] = rec
    parts: dict[str, dict] = {"after": {}, "before": {}}
    for key, rs in runs.items():
        if key.startswith("importtime/"):
            _, variant, name = key.split("/")
            parts[variant][name] = breakdown(rs, startup)
    return {"commands": cmds, "baselines": baselines, "breakdown": parts, "package": where}


def report(result: dict) -> None:
    d = result["data"]
    for rec in d["commands"].values():
        b, a = rec["before"], rec["after"]
        flag = "" if a["ok"] and b["ok"] else "  FAILED: " + (a.get("stderr") or b.get("stderr", ""))[-300:]
        print(f"{rec['argv'][:60]:60s} before {b['median_s']:6.2f} s  after {a['median_s']:6.2f} s"
              f"  ({rec['speedup']:.1f}x; CPU {b['cpu_median_s']:.2f} -> {a['cpu_median_s']:.2f} s){flag}")
    for name, b in d["baselines"].items():
        print(f"baseline {name:20s} {b['median_s']:6.2f} s")
    for variant, cmds in d["breakdown"].items():
        for name, p in cmds.items():
            print(f"{variant:6s} {name:12s} " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in p.items()))
    for g in result["goals"]:
        print(f"goal {g['name']}: {'met' if g['met'] else 'NOT met'} (value {g['value']}, threshold {g['threshold']})")
    m = result["machine"]
    print(f"{m.get('processor')}, load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}, "
          f"{m['runtime_s']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
