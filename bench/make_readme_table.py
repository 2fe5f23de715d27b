"""Generate the README "Performance" section from the JSON files in bench/results/ (issue 7).

Every number in the output is read from a results file written by a script in bench/; nothing
is typed in by hand. A results file that is missing is skipped; one whose layout this script
does not know (or that lacks a field) is skipped with a note on stderr, so one colleague's
format change never breaks the others' tables.

Usage:
    python bench/make_readme_table.py                 # writes bench/results/performance.md and README's section
    python bench/make_readme_table.py --results DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent


def _x(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{format(v, spec)}{suffix}"


def _pct(v: float | None, spec: str = ".0%") -> str:
    return "—" if v is None else format(v, spec)


def _load(machine: dict, start: str = "loadavg_start", end: str = "loadavg_end") -> str:
    a, b = machine.get(start), machine.get(end)
    first = lambda v: v[0] if isinstance(v, (list, tuple)) else v  # noqa: E731
    if a is None and b is None:
        return "load average not recorded"
    return f"load average {_x(first(a))} → {_x(first(b))}"


def _table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(head) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(rule) + " |", *("| " + " | ".join(r) + " |" for r in rows)]


def _source(name: str, script: str, machine: dict, extra: str = "") -> str:
    cpu = machine.get("processor") or machine.get("platform", "")
    parts = [f"Source: `bench/results/{name}`, written by `bench/{script}`", cpu,
             f"{machine.get('threads', '?')} threads" if machine.get("threads") else "", extra]
    return "<sub>" + "; ".join(p for p in parts if p) + ".</sub>"


def _goal(met: bool) -> str:
    return "met" if met else "**not met**"


# --- one function per results file ------------------------------------------------------------------

def pretrain_speedup(d: dict) -> list[str]:
    cl = all("cpu_channels_last" in m for m in d["models"])
    prof = any("profile" in m["cpu"] for m in d["models"])
    rows = []
    for m in d["models"]:
        row = [f"`{m['model']}`", f"{m['target_size']} → {m['pretrain_size']}", _x(m["predicted_speedup"], ".2f", "×"),
               _x(m["cpu"]["target_median_s"], ".3f"), _x(m["cpu"]["pretrain_median_s"], ".3f"),
               _x(m["cpu"]["speedup"], ".2f", "×"), _pct(m["cpu"]["ratio_to_predicted"])]
        if prof:
            pr = m["cpu"].get("profile", {})
            row += [_x(pr.get("conv_speedup"), ".2f", "×"), _x(pr.get("other_speedup"), ".2f", "×"),
                    _pct(pr.get("conv_share_target")), _x(pr.get("ceiling"), ".2f", "×")]
        if cl:
            c = m["cpu_channels_last"]
            row += [_x(c["target_median_s"], ".3f"), _x(c["pretrain_median_s"], ".3f"), _x(c["speedup"], ".2f", "×"),
                    _pct(c["ratio_to_predicted"])]
        rows.append(row)
    head = ["model", "px", "Eq. 3", "target step (s)", "pre-train step (s)", "measured", "/ Eq. 3"]
    if prof:
        head += ["convs alone", "the rest", "conv share", "ceiling"]
    if cl:
        head += ["target, CL (s)", "pre-train, CL (s)", "measured, CL", "/ Eq. 3, CL"]
    s = d["settings"]
    capped = [f"{m['model']}: {m['repeats']}" for m in d["models"] if m["repeats"] != s["repeats"]]
    out = ["### Pre-train speed-up per training step", "",
           f"One SGD training step (forward, backward, optimizer) at batch {s['batch']}, target vs its pre-train "
           f"network, CPU, interleaved, median of {s['repeats']}{' (' + ', '.join(capped) + ')' if capped else ''}. "
           "Eq. 3 is the ratio of conv multiplications that `msurg plan` predicts. Both networks in PyTorch's "
           "default NCHW layout" + (", and both in channels_last (CL)." if cl else "."),
           *(["", "One more step of each network ran under torch.profiler (NCHW): \"convs alone\" is the speed-up of "
              "the convolution kernels' self time, \"the rest\" that of everything else (BatchNorm, activations, "
              "pooling, pads, the optimizer), which scales with the feature-map area, not with the kernel; "
              "\"conv share\" is the convs' part of the target step, and \"ceiling\" the step speed-up if the convs "
              "reached exactly Eq. 3 and the rest took what it measured."] if prof else []), "",
           *_table(head, rows), ""]
    for key, g in d.get("goals", {}).items():
        val = g.get("value")
        shown = _x(val, ".2f", "×") if val is not None else ", ".join(f"{k} {_pct(v)}" for k, v in g["values"].items())
        out.append(f"- Goal `{key}` (≥ {g['goal']}): {shown} — {_goal(g['met'])}")
    gpu = d.get("gpu_path", "")
    out += ["", f"GPU path: {gpu}." if gpu else "",
            _source("pretrain_speedup.json", "pretrain_speedup.py", d["machine"],
                    f"{_load(d['machine'])}; runtime {_x(d['machine'].get('runtime_s'), '.0f')} s")]
    return out


def even_kernel_pad(d: dict) -> list[str]:
    rows = []
    for name, m in d["models"].items():
        lt, st = m["layers"], m["step"]
        rows.append([f"`{name}`", str(len(m["padded_convs"])), _pct(lt["pad_share"], ".1%"),
                     f"{_x(lt['sum_median_s']['fpad+bn'] * 1e3, '.0f')} → {_x(lt['sum_median_s']['policy+bn'] * 1e3, '.0f')}",
                     _x(lt["speedup_policy_bn"], ".2f", "×"),
                     f"{_x(st['median_s']['fpad'], '.3f')} → {_x(st['median_s']['policy'], '.3f')}",
                     _x(st["speedup_policy"], ".3f", "×"), _x(st["speedup_fold"], ".3f", "×")])
    s = d["settings"]
    return ["### Even (2×2) kernels: the cost of padding", "",
            f"F.pad's share of the forward + backward time of the pre-train networks' padded 2×2 convs (batch "
            f"{s['batch']}, pre-train shapes), and those convs (with the BatchNorm after them) and a whole pre-train "
            f"training step with the old F.pad forward → the shipped `PaddedConv.forward` "
            f"(`FOLD_MAX_EXTRA = {s['fold_max_extra']}`). \"fold all\" folds the padding into every conv (pad + crop).", "",
            *_table(["pre-train of", "padded convs", "F.pad share", "padded convs + BN (ms)", "speed-up",
                     "train step (s)", "speed-up", "fold all"], rows), "",
            f"- F.pad share over all shapes, count-weighted: {_pct(d['pad_share_overall'], '.1%')} "
            f"(issue threshold {_pct(s['threshold'])}).",
            "", _source("even_kernel_pad.json", "even_kernel_pad.py", d["machine"], _load(d["machine"]))]


_VERBS = {"shrink": "`msurg shrink`", "grow": "`msurg grow`", "export_pretrain": "`msurg export` (pre-train)",
          "export_target": "`msurg export` (target)"}


def convert_speed(d: dict) -> list[str]:
    rows = []
    for m in d["models"]:
        for verb, label in _VERBS.items():
            if verb not in m:
                continue
            p, ip = m[verb]["process"], m[verb]["in_process"]
            ckpt = m.get("target_ckpt_mib") if verb == "export_target" else m.get("pretrain_ckpt_mib")
            rows.append([f"`{m['model']}`", label, _x(ckpt, ".0f"), _x(p.get("wall_s"), ".1f"),
                         _x(p.get("peak_rss_mib"), ".0f"), _x(ip.get("import_s"), ".1f"), _x(ip.get("call_s"), ".2f")])
    b = d["baselines"]
    out = ["### Conversion time and memory", "",
           "Each command as a whole process (wall time, its own peak RSS), and in a fresh interpreter: the imports, "
           "then the same API call (\"our code\"). Checkpoint = the file the command reads (grow, export) or writes "
           "(shrink).", "",
           *_table(["model", "command", "checkpoint (MiB)", "process (s)", "peak RSS (MiB)", "imports (s)",
                    "our code (s)"], rows), "",
           f"- Baselines (peak RSS): bare `python` {_x(b['python_bare']['peak_rss_mib'], '.0f')} MiB; "
           f"`import modelsurgery.cli` {_x(b['import_modelsurgery_cli']['peak_rss_mib'], '.0f')} MiB; with every import "
           f"the commands use {_x(b['with_all_imports']['peak_rss_mib'], '.0f')} MiB "
           f"({_x(b['with_all_imports']['wall_s'], '.1f')} s)."]
    g = d.get("goals", {})
    if "resnet50_grow_after_imports_under_2s" in g:
        t = g["resnet50_grow_after_imports_under_2s"]
        out.append(f"- Goal: resnet50 grow after the imports < {_x(t['goal_s'], '.0f')} s: {_x(t['value_s'], '.2f')} s "
                   f"({_x(t.get('without_fidelity_check_s'), '.2f')} s without the post-grow fidelity check) — {_goal(t['met'])}")
    if "resnet50_grow_peak_rss" in g:
        r = g["resnet50_grow_peak_rss"]
        out.append(f"- Goal: resnet50 grow peak RSS < baseline + 3 × checkpoint = {_x(r['baseline_mib'], '.0f')} + 3 × "
                   f"{_x(r['checkpoint_mib'], '.0f')} = {_x(r['limit_mib'], '.0f')} MiB: {_x(r['process_peak_rss_mib'], '.0f')} MiB "
                   f"— {_goal(r['met'])}")
    out += ["", _source("convert_speed.json", "convert_speed.py", d["machine"], _load(d["machine"]))]
    return out


def lowmode_cost(d: dict) -> list[str]:
    rows = [[f"`{r['model']}`", str(r.get("threads", "?")),
             "paper setting" if r.get("paper_setting") else f"`{r['low_mode_kwargs']}`",
             _x(r["full_ms_median"], ".0f"), _x(r["low_ms_median"], ".0f"), _pct(r["ratio"]),
             _pct(r.get("flop_ratio")), _goal(r["goal_met"])] for r in d["runs"]]
    goal = d.get("config", {}).get("goal")
    m = d["machine"]
    return ["### Low-mode step cost", "",
            f"A low-mode training step against a full one, same model and process (goal: ≤ {_pct(goal)} of a full step).", "",
            *_table(["model", "threads", "low mode", "full step (ms)", "low step (ms)", "low / full", "FLOP ratio", "goal"], rows), "",
            _source("lowmode_cost.json", "lowmode_cost.py", m, _load(m, "loadavg_before", "loadavg_after"))]


def grow_fidelity(d: dict) -> list[str]:
    rows = []
    for run in d["runs"]:
        for name, r in run["methods"].items():
            if r.get("valid"):
                rows.append([run["padding"], f"`{name}`", _pct(run["pretrain_acc"], ".2%"), _pct(r["grown_acc"], ".2%"),
                             _pct(r["retention"], ".1%"), _pct(r.get("finetuned_acc"), ".2%")])
    g = d.get("goal", {})
    out = ["### Accuracy kept at the grow", "",
           f"Fashion-MNIST test accuracy right after the grow ({d['runs'][0]['input_size']} → "
           f"{d['runs'][0]['target_size']} px) and after fine-tuning, against the pre-train's own accuracy.", "",
           *_table(["even padding", "method", "pre-train", "grown", "kept", "fine-tuned"], rows), ""]
    if g:
        out.append(f"- Goal: keep ≥ {_pct(g['retention'])} right after the grow ({g['padding']} padding). Without "
                   f"calibration images the default is `{g['default_method']}`: {_pct(g['default_retention'], '.1%')} "
                   f"— {_goal(g['met_by_default'])}. With `--calibrate DATA` the default is `{g['calibrated_default']}`: "
                   f"{_pct(g['calibrated_retention'], '.1%')} — {_goal(g['met_with_calibration'])}. Best: "
                   f"`{g['best_method']}` {_pct(g['best_retention'], '.1%')}.")
    m = d["machine"]
    return [*out, "", _source("grow_fidelity.json", "grow_fidelity.py", m, _load(m))]


def time_to_accuracy(d: dict) -> list[str]:
    out = ["### Time to accuracy", ""]
    for title, key in (("FashionResNet-18", "comparison"), ("coarse-to-fine (C2FNet)", "c2f_comparison")):
        runs = d.get(key) or []
        base = next((r["wall"] for r in runs if r.get("saved") == 0.0), None)
        rows = [[f"`{r['method']}`", _pct(r["final_acc"], ".2%"), _x(r["wall"], ".0f"),
                 _pct(None if base is None else 1 - r["wall"] / base, "+.0%"),
                 _x(r["time_to_target"], ".0f") if r.get("time_to_target") is not None else "not reached",
                 "—" if r.get("epoch_to_target") is None else str(r["epoch_to_target"]),
                 _pct(r.get("saved"), "+.1%")] for r in runs]
        if rows:
            target = next((r["target_acc"] for r in d[key] if r.get("target_acc") is not None), None)
            out += [f"{title}, target {_pct(target, '.2%')} (the baseline's final accuracy):", "",
                    *_table(["method", "final acc", "wall (s)", "wall saved", "time to target (s)", "epoch",
                             "saved to target"], rows), ""]
    speed = d.get("step_speed") or {}
    if speed:
        out += ["Per-step cost against a full step, measured at the start of the same run: "
                + ", ".join(f"{name} {_x(v['ratio'], '.2f')}" for name, v in speed.items()) + ".", ""]
    for name, g in d.get("goals", {}).items():
        saved = "target not reached" if g.get("saved") is None else _pct(g["saved"], ".1%")
        out.append(f"- Goal: `{name}` reaches the target with ≥ {_pct(g['saved_at_least'])} less wall time: {saved} "
                   f"— {_goal(g['met'])}")
    m = {**d.get("machine", {}), "loadavg_start": d.get("loadavg_start"), "loadavg_end": d.get("loadavg_end")}
    return [*out, "", _source("time_to_accuracy.json", "time_to_accuracy.py", m, _load(m))]


def grow_speed(d: dict) -> list[str]:
    rows = [[str(r["threads"]), _x(r["process"]["median_s"], ".2f"), _x(r["process_imports_only"]["median_s"], ".2f"),
             _x(r["call"]["median_s"], ".2f"), _x(r["call_fidelity_check"]["median_s"], ".2f"),
             _x(r["grow"]["median_s"], ".3f"), _goal(r["process"]["median_s"] < d["goal_s"])] for r in d["runs"]]
    m = d["machine"]
    return ["### Grow speed", "",
            f"`msurg grow` of a {d['model']} pre-train checkpoint ({_x(d['checkpoint_mib'], '.0f')} MiB), median of "
            f"{d['repeats']}: the whole process, a process that only imports the same modules, `grow_file` in a warm "
            "interpreter and its post-grow fidelity check, and the pure `grow()` conversion.", "",
            *_table(["threads", "process (s)", "imports only (s)", "grow_file (s)", "fidelity check (s)", "grow() (s)",
                     f"process < {_x(d['goal_s'], '.0f')} s"], rows), "",
            _source("grow_speed.json", "grow_speed.py", m, _load(m))]


def shrink_speed(d: dict) -> list[str]:
    m = d["machine"]
    return ["### Shrink speed", "",
            f"- `{d['command']}`: {_x(d['cli_wall_median_s'], '.2f')} s as a process (median), "
            f"{_x(d['api_median_s'], '.2f')} s after the imports (goal < {_x(d['goal_s'], '.0f')} s: {_goal(d['goal_met'])}).",
            "", _source("shrink_speed.json", "shrink_speed.py", m, _load(m, "loadavg_before", "loadavg_after"))]


def generic(name: str, d: dict) -> list[str]:
    """A results file without a dedicated formatter: only its `goals`, if it has them."""
    goals = d.get("goals") if isinstance(d, dict) else None
    if not isinstance(goals, dict) or not goals:
        raise KeyError("goals")
    rows = []
    for key, g in goals.items():
        g = g if isinstance(g, dict) else {"met": g}
        shown = {k: v for k, v in g.items() if k != "met" and isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        rows.append([f"`{key}`", ", ".join(f"{k} {_x(v, '.3g') if isinstance(v, float) else v}" for k, v in shown.items()),
                     _goal(bool(g.get("met")))])
    return [f"### {name.removesuffix('.json').replace('_', ' ').capitalize()}", "",
            *_table(["goal", "values", ""], rows, "lll"), "", f"<sub>Source: `bench/results/{name}`.</sub>"]


SECTIONS: list[tuple[str, Callable[[dict], list[str]]]] = [
    ("pretrain_speedup.json", pretrain_speedup), ("even_kernel_pad.json", even_kernel_pad),
    ("convert_speed.json", convert_speed), ("shrink_speed.json", shrink_speed), ("lowmode_cost.json", lowmode_cost),
    ("grow_fidelity.json", grow_fidelity), ("grow_speed.json", grow_speed), ("time_to_accuracy.json", time_to_accuracy)]


def build(results: Path) -> tuple[str, list[str]]:
    """The markdown, and the files it was built from."""
    parts, used = ["## Performance", "",
                   "Generated by `python bench/make_readme_table.py` from the JSON files in `bench/results/`; "
                   "rerun the scripts in `bench/` to refresh them. Speeds are ratios measured side by side in one "
                   "run on the machine named under each table.", ""], []
    for name, fmt in SECTIONS:
        path = results / name
        if not path.exists():
            print(f"skipped {name}: not present", file=sys.stderr)
            continue
        try:
            data: Any = json.loads(path.read_text())
            lines = fmt(data) if fmt is not None else generic(name, data)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            print(f"skipped {name}: unexpected layout ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        parts += [ln for ln in lines if ln is not None] + [""]
        used.append(name)
    return "\n".join(parts).rstrip() + "\n", used


START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def splice(readme: str, text: str) -> str:
    """`readme` with the text between the START and END markers replaced by `text`."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise ValueError(f"the README needs exactly one {START} ... {END} pair")
    head, rest = readme.split(START)
    return f"{head}{START}\n{text}{END}{rest.split(END, 1)[1]}"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    ap.add_argument("--out", type=Path, default=None, help="default: RESULTS/performance.md")
    ap.add_argument("--readme", type=Path, default=BENCH.parent / "README.md",
                    help=f"README whose {START} ... {END} section is replaced (--readme '' to skip)")
    args = ap.parse_args(argv)
    text, used = build(args.results)
    out = args.out or args.results / "performance.md"
    _write(out, text)
    print(f"wrote {out} from {', '.join(used) or 'no results files'}")
    if str(args.readme) not in ("", "."):
        _write(args.readme, splice(args.readme.read_text(), text))
        print(f"updated the Performance section of {args.readme}")
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
