"""Render every results file in bench/results/ as markdown, so that no figure is typed by hand.

Two outputs, both read only from the JSON files that the scripts in bench/ wrote:

- `bench/results/README.md`: every table of every results file, other machines' included (a
  file `NAME-TAG.json` is benchmark NAME run on machine TAG);
- the headline: a short table of the most telling numbers, each with its source file, which
  `--readme` puts between `<!-- headline:start -->` and `<!-- headline:end -->` in README.md.

Results files come in the shared layout of `bench.common` (script, machine, settings, goals,
data); files written before that layout existed are read through one adapter per script
(`LEGACY`), so committed measurements are rendered as they were recorded. A file whose layout
is not known, or that lacks a field, is skipped with a note on stderr.

Usage (from the repository root):
    python -m bench.make_readme_table              # writes bench/results/README.md
    python -m bench.make_readme_table --readme     # ... and the headline between README.md's markers
    python -m bench.make_readme_table --results DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from bench.common import RESULTS, ROOT

__all__ = ["build", "headline", "load", "splice", "main", "START", "END"]

START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def _x(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{format(v, spec)}{suffix}"


def _pct(v: float | None, spec: str = ".0%") -> str:
    return "—" if v is None else format(v, spec)


def _table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(head) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(rule) + " |", *("| " + " | ".join(r) + " |" for r in rows)]


def _met(met: bool) -> str:
    return "met" if met else "**not met**"


def _source(name: str, e: dict) -> str:
    m, threads = e["machine"], e["settings"].get("threads", e["machine"].get("threads"))
    load = [v[0] if isinstance(v, (list, tuple)) else v for v in (m.get("loadavg_start"), m.get("loadavg_end"))]
    command = COMMANDS.get(e["script"], f"python -m bench.{e['script']}")
    parts = [f"Source: `bench/results/{name}`, written by `{command}`",
             m.get("processor") or m.get("platform", ""), f"{threads} threads" if threads else "",
             "load average not recorded" if load == [None, None] else f"load average {_x(load[0])} → {_x(load[1])}",
             f"runtime {_x(m['runtime_s'], '.0f')} s" if m.get("runtime_s") is not None else ""]
    return "<sub>" + "; ".join(p for p in parts if p) + ".</sub>"


def _goals(e: dict, shown: Callable[[str, Any], str], notes: dict[str, str] | None = None) -> list[str]:
    """One line per goal: its name, the measured value, the threshold, met or not.

    `shown(name, number)` formats a goal's value and threshold; a value may be a mapping (per model).
    """
    out = []
    for g in e["goals"]:
        v, name = g["value"], g["name"]
        value = ", ".join(f"{k} {shown(name, x)}" for k, x in v.items()) if isinstance(v, dict) else shown(name, v)
        note = (notes or {}).get(name)
        out.append(f"- Goal `{name}`: {value} (threshold {shown(name, g['threshold'])}"
                   f"{'; ' + note if note else ''}) — {_met(g['met'])}")
    return out


# --- one function per script: the envelope -> markdown lines -----------------------------------

def pretrain_speedup(e: dict) -> list[str]:
    d, s = e["data"], e["settings"]
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
    head += ["convs alone", "the rest", "conv share", "ceiling"] if prof else []
    head += ["target, CL (s)", "pre-train, CL (s)", "measured, CL", "/ Eq. 3, CL"] if cl else []
    capped = [f"{m['model']}: {m['repeats']}" for m in d["models"] if m["repeats"] != s["repeats"]]
    return [f"One SGD training step (forward, backward, optimizer) at batch {s['batch']}, target vs its pre-train "
            f"network, CPU, interleaved, median of {s['repeats']}{' (' + ', '.join(capped) + ')' if capped else ''}. "
            "Eq. 3 (de Gusmão et al. 2016, §3.1) is the ratio of conv multiplications that `msurg plan` predicts. "
            "Both networks in PyTorch's default NCHW layout" + (", and both in channels_last (CL)." if cl else "."),
            *(["", "One more step of each network ran under torch.profiler (NCHW): \"convs alone\" is the speed-up of "
               "the convolution kernels' self time, \"the rest\" that of everything else (BatchNorm, activations, "
               "pooling, pads, the optimizer), which scales with the feature-map area, not with the kernel; "
               "\"conv share\" is the convs' part of the target step, and \"ceiling\" the step speed-up if the convs "
               "reached exactly Eq. 3 and the rest took what it measured."] if prof else []), "",
            *_table(head, rows), "",
            *_goals(e, lambda name, v: _x(v, ".2f", "×") if "speedup" in name else _pct(v)),
            "", f"GPU path: {d['gpu_path']}." if d.get("gpu_path") else ""]


def even_kernel_pad(e: dict) -> list[str]:
    rows = []
    for name, m in e["data"]["models"].items():
        lt, st = m["layers"], m["step"]
        rows.append([f"`{name}`", str(len(m["padded_convs"])), _pct(lt["pad_share"], ".1%"),
                     f"{_x(lt['sum_median_s']['fpad+bn'] * 1e3, '.0f')} → {_x(lt['sum_median_s']['policy+bn'] * 1e3, '.0f')}",
                     _x(lt["speedup_policy_bn"], ".2f", "×"),
                     f"{_x(st['median_s']['fpad'], '.3f')} → {_x(st['median_s']['policy'], '.3f')}",
                     _x(st["speedup_policy"], ".3f", "×"), _x(st["speedup_fold"], ".3f", "×")])
    s = e["settings"]
    return [f"F.pad's share of the forward + backward time of the pre-train networks' padded 2×2 convs (batch "
            f"{s['batch']}, pre-train shapes), and those convs (with the BatchNorm after them) and a whole pre-train "
            f"training step with the old F.pad forward → the shipped `PaddedConv.forward` "
            f"(`FOLD_MAX_EXTRA = {s['fold_max_extra']}`). \"fold all\" folds the padding into every conv (pad + crop).", "",
            *_table(["pre-train of", "padded convs", "F.pad share", "padded convs + BN (ms)", "speed-up",
                     "train step (s)", "speed-up", "fold all"], rows), "",
            *_goals(e, lambda _, v: _pct(v, ".1%"), {"pad_share_at_most_10pct": "all shapes, count-weighted"})]


_VERBS = {"shrink": "`msurg shrink`", "grow": "`msurg grow`", "export_pretrain": "`msurg export` (pre-train)",
          "export_target": "`msurg export` (target)"}


def convert_speed(e: dict) -> list[str]:
    d, rows = e["data"], []
    for m in d["models"]:
        for verb, label in _VERBS.items():
            if verb in m:
                p, ip = m[verb]["process"], m[verb]["in_process"]
                ckpt = m.get("target_ckpt_mib") if verb == "export_target" else m.get("pretrain_ckpt_mib")
                rows.append([f"`{m['model']}`", label, _x(ckpt, ".0f"), _x(p.get("wall_s"), ".1f"),
                             _x(p.get("peak_rss_mib"), ".0f"), _x(ip.get("import_s"), ".1f"), _x(ip.get("call_s"), ".2f")])
    b, notes = d["baselines"], {}
    r50 = next((m for m in d["models"] if m["model"] == "resnet50" and "grow" in m), None)
    if r50 is not None:
        ip, base, ckpt = r50["grow"]["in_process"], b["with_all_imports"]["peak_rss_mib"], r50["pretrain_ckpt_mib"]
        core = ip["call_s"] - ip.get("steps_s", {}).get("_fidelity", 0.0)
        for g in e["goals"]:
            if g["name"].startswith("resnet50_grow_peak_rss"):
                factor = (g["threshold"] - base) / ckpt
                notes[g["name"]] = f"= baseline {_x(base, '.0f')} MiB + {_x(factor, '.0f')} × checkpoint {_x(ckpt, '.0f')} MiB"
        notes["resnet50_grow_after_imports_under_2s"] = f"{_x(core, '.2f')} s without the post-grow fidelity check"
    return ["Each command as a whole process (wall time, its own peak RSS), and in a fresh interpreter: the imports, "
            "then the same API call (\"our code\"). Checkpoint = the file the command reads (grow, export) or writes "
            "(shrink).", "",
            *_table(["model", "command", "checkpoint (MiB)", "process (s)", "peak RSS (MiB)", "imports (s)",
                     "our code (s)"], rows), "",
            f"- Baselines (peak RSS): bare `python` {_x(b['python_bare']['peak_rss_mib'], '.0f')} MiB; "
            f"`import modelsurgery.cli` {_x(b['import_modelsurgery_cli']['peak_rss_mib'], '.0f')} MiB; with every import "
            f"the commands use {_x(b['with_all_imports']['peak_rss_mib'], '.0f')} MiB "
            f"({_x(b['with_all_imports']['wall_s'], '.1f')} s).",
            *_goals(e, lambda name, v: _x(v, ".0f", " MiB") if "rss" in name else _x(v, ".2f", " s"), notes)]


def shrink_speed(e: dict) -> list[str]:
    d = e["data"]
    return [f"- `{d['command']}`: {_x(d['cli_wall_median_s'], '.2f')} s as a process (median), "
            f"{_x(d['api_median_s'], '.2f')} s after the imports.", *_goals(e, lambda _, v: _x(v, ".2f", " s"))]


def lowmode_cost(e: dict) -> list[str]:
    rows = [[f"`{r['model']}`", str(r.get("threads", "?")),
             "paper setting" if r.get("paper_setting") else f"`{r['low_mode_kwargs']}`",
             _x(r["full_ms_median"], ".0f"), _x(r["low_ms_median"], ".0f"), _pct(r["ratio"]),
             _pct(r.get("flop_ratio")), _met(r["goal_met"])] for r in e["data"]["runs"]]
    return [f"A low-mode training step (Nouri et al. 2019, §2.2) against a full one, same model and process (goal: "
            f"≤ {_pct(e['settings'].get('goal'))} of a full step).", "",
            *_table(["model", "threads", "low mode", "full step (ms)", "low step (ms)", "low / full", "FLOP ratio", "goal"],
                    rows)]


def grow_fidelity(e: dict) -> list[str]:
    d, rows = e["data"], []
    for run in d["runs"]:
        for name, r in run["methods"].items():
            if r.get("valid"):
                rows.append([run["padding"], f"`{name}`", _pct(run["pretrain_acc"], ".2%"), _pct(r["grown_acc"], ".2%"),
                             _pct(r["retention"], ".1%"), _pct(r.get("finetuned_acc"), ".2%")])
    s = d["summary"]
    notes = {"default_method_keeps_at_least_90pct": f"`{s['default_method']}`, without calibration images",
             "calibrated_default_keeps_at_least_90pct": f"`{s['calibrated_default']}`, with `--calibrate DATA`"}
    return [f"Fashion-MNIST test accuracy right after the grow ({d['runs'][0]['input_size']} → "
            f"{d['runs'][0]['target_size']} px) and after fine-tuning, against the pre-train's own accuracy.", "",
            *_table(["even padding", "method", "pre-train", "grown", "kept", "fine-tuned"], rows), "",
            *_goals(e, lambda _, v: _pct(v, ".1%"), notes),
            f"- Best right after the grow ({s['padding']} padding): `{s['best_method']}` "
            f"{_pct(s['best_retention'], '.1%')}."]


def grow_speed(e: dict) -> list[str]:
    d, limit = e["data"], e["goals"][0]["threshold"]
    rows = [[str(r["threads"]), _x(r["process"]["median_s"], ".2f"), _x(r["process_imports_only"]["median_s"], ".2f"),
             _x(r["call"]["median_s"], ".2f"), _x(r["call_fidelity_check"]["median_s"], ".2f"),
             _x(r["grow"]["median_s"], ".3f"), _met(r["process"]["median_s"] < limit)] for r in d["runs"]]
    return [f"`msurg grow` of a {d['model']} pre-train checkpoint ({_x(d['checkpoint_mib'], '.0f')} MiB), median of "
            f"{e['settings']['repeats']}: the whole process, a process that only imports the same modules, `grow_file` "
            "in a warm interpreter and its post-grow fidelity check, and the pure `grow()` conversion.", "",
            *_table(["threads", "process (s)", "imports only (s)", "grow_file (s)", "fidelity check (s)", "grow() (s)",
                     f"process < {_x(limit, '.0f')} s"], rows)]


def time_to_accuracy(e: dict) -> list[str]:
    """The frontier layout (baseline and method points), or the older one-schedule comparison."""
    return _frontier(e) if "methods" in e["data"] else _time_to_accuracy_single(e)


def _acc(p: dict) -> str:
    return f"{_pct(p['acc_mean'], '.2%')} ± {_pct(p['acc_std'], '.2%')}" if p["acc_std"] is not None else \
        _pct(p["acc_mean"], ".2%")


def _saving(p: dict, suffix: str = "") -> str:
    if p.get(f"saving_at_equal_acc{suffix}") is not None:
        return _pct(p[f"saving_at_equal_acc{suffix}"], "+.1%")
    return "above the frontier" if p.get("above_frontier") and not suffix else "—"


def _frontier(e: dict) -> list[str]:
    d = e["data"]
    net = d.get("network", {})
    base_head = ["epochs", "seeds", "accuracy", "cost (s)", "train (s)", "eval (s)"]
    base_rows = lambda pts: [[str(p["epochs"]), str(len(p["seeds"])), _acc(p), _x(p.get("cost_mean"), ".0f"),  # noqa
                              _x(p["train_s_mean"], ".0f"), _x(p["eval_s_mean"], ".1f")] for p in pts]
    out = [(f"FashionResNet-18 at width {net['width']}, batch {net['batch_size']} ({net['description']}). "
            if net.get("description") else "")
           + "Accuracy against cost, mean ± std over seeds. Cost: each run's steps × their cost relative to a full "
           "step, plus its one-off work (grows, fits, recalibration, resizes), in seconds of a full step measured in "
           "the newest sitting; train: training wall time. Methods are read off their baseline's frontier (monotone "
           "interpolation, no extrapolation); the verdict weighs each seed's saving. Headline budget: "
           f"{d['headline_epochs']} epochs."
           + (" Smoke run (`--quick`, fixture data): not a measurement." if d.get("quick") else "")
           + ("" if d.get("complete", True) else f" Incomplete: {len(d.get('missing', []))} runs still to train."), ""]
    for title, key, methods in (("FashionResNet-18 baseline", "baseline", [m for m in d["methods"] if m != "coarse_to_fine"]),
                                ("C2FNet baseline", "c2f_baseline", [m for m in d["methods"] if m == "coarse_to_fine"])):
        if not d.get(key):
            continue
        out += [f"{title}:", "", *_table(base_head, base_rows(d[key])), ""]
        rows = [[f"`{m}`", str(p["epochs"]), str(len(p["seeds"])), _acc(p), _x(p.get("cost_mean"), ".0f"),
                 _x(p["train_s_mean"], ".0f"), _saving(p), _saving(p, "_wall"),
                 _pct(p.get("acc_gain_at_equal_cost"), "+.2%"), p.get("verdict", "—")]
                for m in methods for p in d["methods"][m]]
        if rows:
            out += [*_table(["method", "epochs", "seeds", "accuracy", "cost (s)", "train (s)", "saving at equal acc",
                             "saving (wall time)", "acc gain at equal cost", "verdict"], rows), ""]
    table = d.get("step_table", {})
    if table.get("relative"):
        out += [f"Step cost relative to a full step ({_x(1000 * table['full_step_s'], '.1f')} ms), measured interleaved: "
                + ", ".join(f"{k} {_x(v, '.2f')}" for k, v in table["relative"].items()) + ".", ""]
    return [*out, *_goals(e, lambda _, v: "not read" if v is None else _pct(v, "+.1%") if isinstance(v, float)
                          else str(v))]


def grow_loss_jump(e: dict) -> list[str]:
    d = e["data"]
    rows = [[f"`{name}`", _x(r["before"], ".3f"), _x(r["after"], ".3f"), _x(r["ratio"], ".3f"),
             "best" if name == d["best"] else ""] for name, r in d["mean_over_seeds"].items()]
    return [f"Mean training loss over the last {e['settings']['steps']} iterations before kernel rescaling's grow and "
            f"the first {e['settings']['steps']} after, mean over seeds {d['seeds']} (FashionResNet-18 width "
            f"{e['settings']['width']}, grow at epoch {e['settings']['switch']} of {e['settings']['epochs']}).", "",
            *_table(["grow", "before", "after", "after / before", ""], rows), "",
            *_goals(e, lambda _, v: _x(v, ".3f") if isinstance(v, float) else str(v))]


def _time_to_accuracy_single(e: dict) -> list[str]:
    d, out = e["data"], []
    for title, key in (("FashionResNet-18", "comparison"), ("coarse-to-fine (C2FNet)", "c2f_comparison")):
        runs = d.get(key) or []
        base = next((r["wall"] for r in runs if r.get("saved") == 0.0), None)
        rows = [[f"`{r['method']}`", _pct(r["final_acc"], ".2%"), _x(r["wall"], ".0f"),
                 _pct(None if base is None else 1 - r["wall"] / base, "+.0%"),
                 _x(r["time_to_target"], ".0f") if r.get("time_to_target") is not None else "not reached",
                 "—" if r.get("epoch_to_target") is None else str(r["epoch_to_target"]),
                 _pct(r.get("saved"), "+.1%")] for r in runs]
        if rows:
            target = next((r["target_acc"] for r in runs if r.get("target_acc") is not None), None)
            out += [f"{title}, target {_pct(target, '.2%')} (the baseline's final accuracy):", "",
                    *_table(["method", "final acc", "wall (s)", "wall saved", "time to target (s)", "epoch",
                             "saved to target"], rows), ""]
    if d.get("step_speed"):
        out += ["Per-step cost against a full step, measured at the start of the same run: "
                + ", ".join(f"{name} {_x(v['ratio'], '.2f')}" for name, v in d["step_speed"].items()) + ".", ""]
    return [*out, *_goals(e, lambda _, v: "target not reached" if v is None else _pct(v, ".1%"))]


_PARTS = {"interpreter_s": "interpreter", "torch_s": "torch", "torchvision_s": "torchvision", "timm_s": "timm",
          "other_imports_s": "other imports", "work_s": "work", "exit_s": "exit"}


def startup(e: dict) -> list[str]:
    d, s = e["data"], e["settings"]
    rows = [[f"`{c['argv']}`", str(c["exit_code"]), _x(c["before"]["median_s"]), _x(c["after"]["median_s"]),
             _x(c["speedup"], ".1f", "×"), _x(c["before"]["cpu_median_s"]), _x(c["after"]["cpu_median_s"]),
             _x(c["after"]["exit_median_s"])] for c in d["commands"].values()]
    parts = [[f"`{d['commands'][name]['argv'].split(' --out')[0]}`", variant, _x(p["total_s"]),
              *(_x(p[k]) for k in _PARTS)] for variant in ("after", "before")
             for name, p in d["breakdown"].get(variant, {}).items()]
    b = d["baselines"]
    return [f"`msurg` as whole processes, with this checkout's package (after) and with commit `{s['before']}`'s "
            f"(before), interleaved, median of {s['repeats']}: wall time, and CPU time (user + system of that "
            "process), which a busy machine moves less. Exit = process end minus the last line printed.", "",
            *_table(["command", "exit code", "before (s)", "after (s)", "before / after", "CPU before (s)",
                     "CPU after (s)", "exit, after (s)"], rows), "",
            "Where the time goes (seconds, medians of runs under `-X importtime`): torch, torchvision and timm are "
            "the self time of their modules' imports, other imports are ours, click and safetensors; work is the "
            "command's own, up to its last line.", "",
            *_table(["command", "package", "total", *_PARTS.values()], parts, "ll" + "r" * (len(_PARTS) + 1)), "",
            f"- Baseline processes: `python -c pass` {_x(b['python_bare']['median_s'])} s, `import torch` "
            f"{_x(b['import_torch']['median_s'])} s, `import torch, torchvision` "
            f"{_x(b['import_torchvision']['median_s'])} s, `import torch, torchvision, timm` "
            f"{_x(b['import_timm']['median_s'])} s.",
            *_goals(e, lambda _, v: _x(v, ".2f", " s"))]


COMMANDS = {"step_ratios": "python -m bench.time_to_accuracy --step-ratios 8,16,32,64"}   # scripts run as options


def step_ratios(e: dict) -> list[str]:
    d = e["data"]
    kinds = list(d["kinds"])[1:]
    rows = [[str(w), _x(1000 * r["full_step_s"], ".0f"), *(_x(r["relative"][k], ".2f") for k in kinds)]
            for w, r in d["widths"].items()]
    return [f"FashionResNet-18, one training step of batch {e['settings']['batch_size']} of each kind against a full "
            f"28 px step, interleaved, median of {e['settings']['speed_steps']}: the table that picks the frontier's "
            "width. Kernel rescaling's premise holds where its pre-train step (2×2 kernels, 19 px) costs clearly less "
            "than the same network resized alone (3×3, 19 px).", "",
            *_table(["width", "full step (ms)", *kinds], rows)]


SECTIONS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "pretrain_speedup": ("Pre-train speed-up per training step", pretrain_speedup),
    "even_kernel_pad": ("Even (2×2) kernels: the cost of padding", even_kernel_pad),
    "convert_speed": ("Conversion time and memory", convert_speed),
    "shrink_speed": ("Shrink speed", shrink_speed),
    "lowmode_cost": ("Low-mode step cost", lowmode_cost),
    "grow_fidelity": ("Accuracy kept at the grow", grow_fidelity),
    "grow_speed": ("Grow speed", grow_speed),
    "step_ratios": ("Step cost by width", step_ratios),
    "time_to_accuracy": ("Time to accuracy", time_to_accuracy),
    "grow_loss_jump": ("Loss jump at the grow", grow_loss_jump),
    "startup": ("Start-up time of `msurg`", startup)}


def generic(e: dict) -> list[str]:
    """A script without a dedicated formatter: only its goals."""
    if not e["goals"]:
        raise KeyError("goals")
    return _goals(e, lambda _, v: _x(v, ".3g") if isinstance(v, float) else str(v))


# --- reading: the envelope, or a committed file in its script's older layout ------------------

def _envelope(script: str, machine: dict, settings: Any, goals: list[dict], data: dict) -> dict:
    renamed = {"loadavg_before": "loadavg_start", "loadavg_after": "loadavg_end", "git": "git_revision",
               "seconds": "runtime_s"}
    return {"script": script, "machine": {renamed.get(k, k): v for k, v in machine.items()},
            "settings": settings or {}, "goals": goals, "data": data}


def _g(name: str, value: Any, threshold: Any, met: bool) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "met": met}


def _keep(raw: dict, *drop: str) -> dict:
    return {k: v for k, v in raw.items() if k not in {"benchmark", "machine", "settings", "config", "goals", *drop}}


def _legacy_grow_fidelity(r: dict) -> dict:
    g = r["goal"]
    summary = {k: g[k] for k in ("padding", "default_method", "calibrated_default", "best_method", "best_retention")}
    goals = [_g("default_method_keeps_at_least_90pct", g["default_retention"], g["retention"], g["met_by_default"]),
             _g("calibrated_default_keeps_at_least_90pct", g["calibrated_retention"], g["retention"],
                g["met_with_calibration"])]
    return _envelope("grow_fidelity", r["machine"], r["config"], goals, {**_keep(r, "goal"), "summary": summary})


def _legacy_convert_speed(r: dict) -> dict:
    t, m = r["goals"]["resnet50_grow_after_imports_under_2s"], r["goals"]["resnet50_grow_peak_rss"]
    goals = [_g("resnet50_grow_after_imports_under_2s", t["value_s"], t["goal_s"], t["met"]),
             _g("resnet50_grow_peak_rss_under_baseline_plus_3x_checkpoint", m["process_peak_rss_mib"], m["limit_mib"],
                m["met"])]
    return _envelope("convert_speed", r["machine"], r["settings"], goals, _keep(r))


def _legacy_time_to_accuracy(r: dict) -> dict:
    goals = [_g(f"{k}_saves_at_least_{round(g['saved_at_least'] * 100)}pct_to_target", g["saved"], g["saved_at_least"],
                g["met"]) for k, g in r["goals"].items()]
    machine = {**r["machine"], "loadavg_start": r["loadavg_start"], "loadavg_end": r["loadavg_end"],
               "runtime_s": r["bench_seconds"], "git_revision": r["git_revision"]}
    return _envelope("time_to_accuracy", machine, r["config"], goals,
                     _keep(r, "git_revision", "loadavg_start", "loadavg_end", "bench_seconds"))


def _legacy_lowmode_cost(r: dict) -> dict:
    limit = r["config"]["goal"]
    goals = [_g(f"{x['model']}{''.join(f'_{k}_{v}' for k, v in x['low_mode_kwargs'].items())}_low_step_at_most_"
                f"{round(limit * 100)}pct_{x['threads']}_threads", x["ratio"], limit, x["goal_met"]) for x in r["runs"]]
    return _envelope("lowmode_cost", {**r["machine"], "git_revision": r["git_rev"]}, r["config"], goals,
                     _keep(r, "git_rev"))


LEGACY: dict[str, Callable[[dict], dict]] = {
    "pretrain_speedup": lambda r: _envelope("pretrain_speedup", r["machine"], r["settings"], [
        _g(k, g.get("value", g.get("values")), g["goal"], g["met"]) for k, g in r["goals"].items()], _keep(r)),
    "even_kernel_pad": lambda r: _envelope("even_kernel_pad", r["machine"], r["settings"], [
        _g("pad_share_at_most_10pct", r["pad_share_overall"], r["settings"]["threshold"], not r["above_threshold"])],
        _keep(r)),
    "convert_speed": _legacy_convert_speed,
    "shrink_speed": lambda r: _envelope("shrink_speed", r["machine"], {}, [
        _g("shrink_process_under_10s", r["cli_wall_median_s"], r["goal_s"], r["goal_met"])],
        _keep(r, "goal_s", "goal_met")),
    "lowmode_cost": _legacy_lowmode_cost,
    "grow_fidelity": _legacy_grow_fidelity,
    "grow_speed": lambda r: _envelope("grow_speed", r["machine"], {"model": r["model"], "repeats": r["repeats"]}, [
        _g(f"{r['model']}_grow_process_under_5s_{x['threads']}_threads", x["process"]["median_s"], r["goal_s"],
           x["process"]["median_s"] < r["goal_s"]) for x in r["runs"]], _keep(r, "repeats", "goal_s")),
    "time_to_accuracy": _legacy_time_to_accuracy}


def load(path: Path) -> dict:
    """A results file as the envelope (script, machine, settings, goals, data), whichever layout it has."""
    raw = json.loads(path.read_text())
    if isinstance(raw, dict) and {"script", "data"} <= raw.keys():
        return raw
    return LEGACY[path.stem.split("-")[0]](raw)


def _files(results: Path) -> list[Path]:
    """Every results file: by script (in SECTIONS order, then unknown ones), this machine's first."""
    order = list(SECTIONS)

    def key(path: Path) -> tuple[int, str]:
        script = path.stem.split("-")[0]
        return (order.index(script) if script in order else len(order), path.stem)

    return sorted(results.glob("*.json"), key=key)


def _each(results: Path) -> list[tuple[str, str, dict]]:
    """(file name, machine tag or "", envelope) of every results file that reads."""
    out = []
    for path in _files(results):
        try:
            out.append((path.name, path.stem.partition("-")[2], load(path)))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            print(f"skipped {path.name}: unexpected layout ({type(err).__name__}: {err})", file=sys.stderr)
    return out


def build(results: Path = RESULTS) -> tuple[str, list[str]]:
    """The markdown of every results file in `results`, and the files it was built from."""
    parts = ["# Benchmark results", "",
             "Generated by `python -m bench.make_readme_table` from the JSON files in this folder; rerun a script "
             "with `python -m bench.NAME` to refresh its file, then the generator. Speeds are ratios measured side "
             "by side in one run on the machine named under each table. A file `NAME-TAG.json` holds benchmark NAME "
             "run on another machine, TAG; the ratios move with the CPU, so measure on your own hardware before you "
             "plan around them.", ""]
    used = []
    for name, tag, e in _each(results):
        title, fmt = SECTIONS.get(e["script"], (e["script"].replace("_", " ").capitalize(), generic))
        try:
            lines = fmt(e)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            print(f"skipped {name}: unexpected layout ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        heading = f"## {title}" + (f", machine `{tag}`" if tag else "")
        parts += [heading, "", *lines, "", _source(name, e), ""]
        used.append(name)
    text = "\n".join(parts)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n", used


# --- the headline ----------------------------------------------------------------------------

def _headline_rows(name: str, tag: str, e: dict) -> list[list[str]]:
    """The rows one results file gives the headline: [what, measured, source]."""
    d, src = e["data"], f"`bench/results/{name}`"
    where = f", {e['machine'].get('processor') or 'machine ' + tag}" if tag else ""
    if e["script"] == "pretrain_speedup":
        return [[f"Pre-train step speed-up, `{m['model']}` ({m['target_size']} → {m['pretrain_size']} px){where}",
                 f"{_x(m['cpu']['speedup'], '.2f', '×')} (Eq. 3 predicts {_x(m['predicted_speedup'], '.2f', '×')})",
                 src] for m in d["models"] if m["model"] in ("resnet34", "resnet50")]
    if e["script"] == "convert_speed" and not tag:
        g = next(m["grow"] for m in d["models"] if m["model"] == "resnet50")
        return [["`msurg grow` of a resnet50 checkpoint", f"{_x(g['in_process']['call_s'], '.2f')} s after the imports "
                 f"({_x(g['process']['wall_s'], '.1f')} s as a process)", src]]
    if e["script"] == "lowmode_cost" and not tag:
        r = next(r for r in d["runs"] if r["model"] == "resnet18" and r.get("paper_setting"))
        return [[f"Low-mode step, `resnet18`, {r['threads']} threads", f"{_pct(r['ratio'])} of a full step (FLOP ratio "
                 f"{_pct(r['flop_ratio'])})", src]]
    if e["script"] == "grow_fidelity" and not tag:
        s, methods = d["summary"], d["runs"][0]["methods"]
        return [["Accuracy kept right after the grow (Fashion-MNIST)",
                 f"{_pct(methods[s['calibrated_default']]['retention'], '.1%')} with `--calibrate`, "
                 f"{_pct(methods[s['default_method']]['retention'], '.1%')} without", src]]
    if e["script"] == "time_to_accuracy" and not tag and "methods" in d:
        width = d.get("network", {}).get("width")
        return [[f"Time to accuracy, {m.replace('_', ' ')}, {p['epochs']} epochs, {len(p['seeds'])} seeds"
                 + (f", width {width}" if width else ""),
                 f"{_acc(p)}, saving {_saving(p)} of the baseline's cost at equal accuracy: {p.get('verdict', '—')}", src]
                for m, pts in d["methods"].items() for p in pts if p["epochs"] == d["headline_epochs"]]
    if e["script"] == "time_to_accuracy" and not tag:
        runs = {r["method"]: r for r in d["comparison"]}
        kr, base = runs["kernel_rescaling"], runs["baseline"]
        return [["Time to accuracy, kernel rescaling vs the baseline", f"{_pct(kr['final_acc'], '.2%')} vs "
                 f"{_pct(base['final_acc'], '.2%')} final accuracy, in {_pct(kr['wall'] / base['wall'])} of its wall "
                 "time", src]]
    return []


def headline(results: Path = RESULTS) -> str:
    """A short table of the most telling numbers, each with its source file (and its machine if not this one's)."""
    rows = []
    for name, tag, e in _each(results):
        try:
            rows += _headline_rows(name, tag, e)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, StopIteration) as err:
            print(f"no headline from {name}: {type(err).__name__}: {err}", file=sys.stderr)
    return "\n".join(_table(["", "measured", "source"], rows, "lrl")) + "\n"


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


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(prog="python -m bench.make_readme_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of results files (default bench/results)")
    ap.add_argument("--out", type=Path, default=None, help="default: RESULTS/README.md")
    ap.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", default=None,
                    help=f"also replace the headline between {START} and {END} in this README (default README.md)")
    args = ap.parse_args(argv)
    text, used = build(args.results)
    out = args.out or args.results / "README.md"
    _write(out, text)
    print(f"wrote {out} from {', '.join(used) or 'no results files'}")
    if args.readme is not None:
        readme = args.readme.read_text()
        if START in readme:
            _write(args.readme, splice(readme, headline(args.results)))
            print(f"updated the headline in {args.readme}")
        else:
            print(f"{args.readme} has no {START} ... {END} markers; headline not written", file=sys.stderr)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
