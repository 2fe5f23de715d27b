"""One markdown section per benchmark script: its results envelope in, its lines out.

`SECTIONS` maps a script (the `script` field of a results file, `bench.common.Run`) to its
section's title and formatter; a script without one gets `generic` (its goals only). Every figure
is read from the envelope; `bench.make_readme_table` assembles the sections and the headline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.frontier import range_text

__all__ = ["SECTIONS", "acc_text", "generic", "goal_lines", "md_table", "met", "num", "pct", "saving_text"]


def num(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{format(v, spec)}{suffix}"


def pct(v: float | None, spec: str = ".0%") -> str:
    return "—" if v is None else format(v, spec)


def md_table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(head) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    return ["| " + " | ".join(r) + " |" for r in (head, rule, *rows)]


def met(met: bool) -> str:
    return "met" if met else "**not met**"


def goal_lines(e: dict, shown: Callable[[str, Any], str], notes: dict[str, str] | None = None) -> list[str]:
    """One line per goal: its name, the measured value, the threshold, met or not.

    `shown(name, number)` formats a goal's value and threshold; a value may be a mapping (per model).
    """
    out = []
    for g in e["goals"]:
        v, name = g["value"], g["name"]
        value = ", ".join(f"{k} {shown(name, x)}" for k, x in v.items()) if isinstance(v, dict) else shown(name, v)
        note = (notes or {}).get(name)
        out.append(f"- Goal `{name}`: {value} (threshold {shown(name, g['threshold'])}"
                   f"{'; ' + note if note else ''}) — {met(g['met'])}")
    return out


# --- one function per script: the envelope -> markdown lines -----------------------------------

def pretrain_speedup(e: dict) -> list[str]:
    d, s = e["data"], e["settings"]
    cl = all("cpu_channels_last" in m for m in d["models"])
    prof = any("profile" in m["cpu"] for m in d["models"])
    rows = []
    for m in d["models"]:
        row = [f"`{m['model']}`", f"{m['target_size']} → {m['pretrain_size']}", num(m["predicted_speedup"], ".2f", "×"),
               num(m["cpu"]["target_median_s"], ".3f"), num(m["cpu"]["pretrain_median_s"], ".3f"),
               num(m["cpu"]["speedup"], ".2f", "×"), pct(m["cpu"]["ratio_to_predicted"])]
        if prof:
            pr = m["cpu"].get("profile", {})
            row += [num(pr.get("conv_speedup"), ".2f", "×"), num(pr.get("other_speedup"), ".2f", "×"),
                    pct(pr.get("conv_share_target")), num(pr.get("ceiling"), ".2f", "×")]
        if cl:
            c = m["cpu_channels_last"]
            row += [num(c["target_median_s"], ".3f"), num(c["pretrain_median_s"], ".3f"), num(c["speedup"], ".2f", "×"),
                    pct(c["ratio_to_predicted"])]
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
            *md_table(head, rows), "",
            *goal_lines(e, lambda name, v: num(v, ".2f", "×") if "speedup" in name else pct(v)),
            "", f"GPU path: {d['gpu_path']}." if d.get("gpu_path") else ""]


def even_kernel_pad(e: dict) -> list[str]:
    rows = []
    for name, m in e["data"]["models"].items():
        lt, st = m["layers"], m["step"]
        rows.append([f"`{name}`", str(len(m["padded_convs"])), pct(lt["pad_share"], ".1%"),
                     f"{num(lt['sum_median_s']['fpad+bn'] * 1e3, '.0f')} → "
                     f"{num(lt['sum_median_s']['policy+bn'] * 1e3, '.0f')}",
                     num(lt["speedup_policy_bn"], ".2f", "×"),
                     f"{num(st['median_s']['fpad'], '.3f')} → {num(st['median_s']['policy'], '.3f')}",
                     num(st["speedup_policy"], ".3f", "×"), num(st["speedup_fold"], ".3f", "×")])
    s = e["settings"]
    return [f"F.pad's share of the forward + backward time of the pre-train networks' padded 2×2 convs (batch "
            f"{s['batch']}, pre-train shapes), and those convs (with the BatchNorm after them) and a whole pre-train "
            f"training step with the old F.pad forward → the shipped `PaddedConv.forward` "
            f"(`FOLD_MAX_EXTRA = {s['fold_max_extra']}`). \"fold all\" folds the padding into every conv "
            "(pad + crop).", "",
            *md_table(["pre-train of", "padded convs", "F.pad share", "padded convs + BN (ms)", "speed-up",
                     "train step (s)", "speed-up", "fold all"], rows), "",
            *goal_lines(e, lambda _, v: pct(v, ".1%"), {"pad_share_at_most_10pct": "all shapes, count-weighted"})]


_VERBS = {"shrink": "`msurg shrink`", "grow": "`msurg grow`", "export_pretrain": "`msurg export` (pre-train)",
          "export_target": "`msurg export` (target)"}


def convert_speed(e: dict) -> list[str]:
    d, rows = e["data"], []
    for m in d["models"]:
        for verb, label in _VERBS.items():
            if verb in m:
                p, ip = m[verb]["process"], m[verb]["in_process"]
                ckpt = m.get("target_ckpt_mib") if verb == "export_target" else m.get("pretrain_ckpt_mib")
                rows.append([f"`{m['model']}`", label, num(ckpt, ".0f"), num(p.get("wall_s"), ".1f"),
                             num(p.get("peak_rss_mib"), ".0f"), num(ip.get("import_s"), ".1f"),
                             num(ip.get("call_s"), ".2f")])
    b, notes = d["baselines"], {}
    r50 = next((m for m in d["models"] if m["model"] == "resnet50" and "grow" in m), None)
    if r50 is not None:
        ip, base, ckpt = r50["grow"]["in_process"], b["with_all_imports"]["peak_rss_mib"], r50["pretrain_ckpt_mib"]
        core = ip["call_s"] - ip.get("steps_s", {}).get("_fidelity", 0.0)
        for g in e["goals"]:
            if g["name"].startswith("resnet50_grow_peak_rss"):
                factor = (g["threshold"] - base) / ckpt
                notes[g["name"]] = (f"= baseline {num(base, '.0f')} MiB + {num(factor, '.0f')} × checkpoint "
                                    f"{num(ckpt, '.0f')} MiB")
        notes["resnet50_grow_after_imports_under_2s"] = f"{num(core, '.2f')} s without the post-grow fidelity check"
    return ["Each command as a whole process (wall time, its own peak RSS), and in a fresh interpreter: the imports, "
            "then the same API call (\"our code\"). Checkpoint = the file the command reads (grow, export) or writes "
            "(shrink).", "",
            *md_table(["model", "command", "checkpoint (MiB)", "process (s)", "peak RSS (MiB)", "imports (s)",
                     "our code (s)"], rows), "",
            f"- Baselines (peak RSS): bare `python` {num(b['python_bare']['peak_rss_mib'], '.0f')} MiB; "
            f"`import modelsurgery.cli` {num(b['import_modelsurgery_cli']['peak_rss_mib'], '.0f')} MiB; with every "
            f"import the commands use {num(b['with_all_imports']['peak_rss_mib'], '.0f')} MiB "
            f"({num(b['with_all_imports']['wall_s'], '.1f')} s).",
            *goal_lines(e, lambda name, v: num(v, ".0f", " MiB") if "rss" in name else num(v, ".2f", " s"), notes)]


def shrink_speed(e: dict) -> list[str]:
    d = e["data"]
    return [f"- `{d['command']}`: {num(d['cli_wall_median_s'], '.2f')} s as a process (median), "
            f"{num(d['api_median_s'], '.2f')} s after the imports.", *goal_lines(e, lambda _, v: num(v, ".2f", " s"))]


def lowmode_cost(e: dict) -> list[str]:
    rows = [[f"`{r['model']}`", str(r.get("threads", "?")),
             "paper setting" if r.get("paper_setting") else f"`{r['low_mode_kwargs']}`",
             num(r["full_ms_median"], ".0f"), num(r["low_ms_median"], ".0f"), pct(r["ratio"]),
             pct(r.get("flop_ratio")), met(r["goal_met"])] for r in e["data"]["runs"]]
    return [f"A low-mode training step (Nouri et al. 2019, §2.2) against a full one, same model and process (goal: "
            f"≤ {pct(e['settings'].get('goal'))} of a full step).", "",
            *md_table(["model", "threads", "low mode", "full step (ms)", "low step (ms)", "low / full", "FLOP ratio",
                       "goal"], rows)]


def grow_fidelity(e: dict) -> list[str]:
    d, rows = e["data"], []
    for run in d["runs"]:
        for name, r in run["methods"].items():
            if r.get("valid"):
                rows.append([run["padding"], f"`{name}`", pct(run["pretrain_acc"], ".2%"), pct(r["grown_acc"], ".2%"),
                             pct(r["retention"], ".1%"), pct(r.get("finetuned_acc"), ".2%")])
    s = d["summary"]
    notes = {"default_method_keeps_at_least_90pct": f"`{s['default_method']}`, without calibration images",
             "calibrated_default_keeps_at_least_90pct": f"`{s['calibrated_default']}`, with `--calibrate DATA`"}
    return [f"Fashion-MNIST test accuracy right after the grow ({d['runs'][0]['input_size']} → "
            f"{d['runs'][0]['target_size']} px) and after fine-tuning, against the pre-train's own accuracy.", "",
            *md_table(["even padding", "method", "pre-train", "grown", "kept", "fine-tuned"], rows), "",
            *goal_lines(e, lambda _, v: pct(v, ".1%"), notes),
            f"- Best right after the grow ({s['padding']} padding): `{s['best_method']}` "
            f"{pct(s['best_retention'], '.1%')}."]


def grow_speed(e: dict) -> list[str]:
    d, limit = e["data"], e["goals"][0]["threshold"]
    rows = [[str(r["threads"]), num(r["process"]["median_s"], ".2f"), num(r["process_imports_only"]["median_s"], ".2f"),
             num(r["call"]["median_s"], ".2f"), num(r["call_fidelity_check"]["median_s"], ".2f"),
             num(r["grow"]["median_s"], ".3f"), met(r["process"]["median_s"] < limit)] for r in d["runs"]]
    return [f"`msurg grow` of a {d['model']} pre-train checkpoint ({num(d['checkpoint_mib'], '.0f')} MiB), median of "
            f"{e['settings']['repeats']}: the whole process, a process that only imports the same modules, `grow_file` "
            "in a warm interpreter and its post-grow fidelity check, and the pure `grow()` conversion.", "",
            *md_table(["threads", "process (s)", "imports only (s)", "grow_file (s)", "fidelity check (s)",
                       "grow() (s)", f"process < {num(limit, '.0f')} s"], rows)]


def time_to_accuracy(e: dict) -> list[str]:
    """The frontier layout (baseline and method points), or the older one-schedule comparison."""
    return _frontier(e) if "methods" in e["data"] else _time_to_accuracy_single(e)


def acc_text(p: dict) -> str:
    return f"{pct(p['acc_mean'], '.2%')} ± {pct(p['acc_std'], '.2%')}" if p["acc_std"] is not None else \
        pct(p["acc_mean"], ".2%")


def saving_text(p: dict, suffix: str = "") -> str:
    if p.get(f"saving_at_equal_acc{suffix}") is not None:
        return pct(p[f"saving_at_equal_acc{suffix}"], "+.1%")
    return "above the frontier" if p.get("above_frontier") and not suffix else "—"


def _baseline_rows(points: list[dict]) -> list[list[str]]:
    return [[str(p["epochs"]), str(len(p["seeds"])), acc_text(p), num(p.get("cost_mean"), ".0f"),
             num(p["train_s_mean"], ".0f"), num(p["eval_s_mean"], ".1f")] for p in points]


def _frontier(e: dict) -> list[str]:
    d = e["data"]
    net = d.get("network", {})
    base_head = ["epochs", "seeds", "accuracy", "cost (s)", "train (s)", "eval (s)"]
    out = [(f"FashionResNet-18 at width {net['width']}, batch {net['batch_size']} ({net['description']}). "
            if net.get("description") else "")
           + "Accuracy against cost, mean ± std over seeds. Cost: each run's steps × their cost relative to a full "
           "step, plus its one-off work (grows, fits, recalibration, resizes), in seconds of a full step measured in "
           "the newest sitting; train: training wall time. Methods are read off their baseline's frontier (monotone "
           "interpolation, no extrapolation); the range holds every seed's saving read against the baseline moved up "
           "and down by its seed spread, and decides the verdict: wins when it lies above 0 (every seed saves even "
           "against the better baseline), loses when below, within noise when it holds 0. Headline budget: "
           f"{d['headline_epochs']} epochs."
           + (" Smoke run (`--quick`, fixture data): not a measurement." if d.get("quick") else "")
           + ("" if d.get("complete", True) else _still_to_train(d)), ""]
    resnet = [m for m in d["methods"] if m != "coarse_to_fine"]
    c2f = [m for m in d["methods"] if m == "coarse_to_fine"]
    for title, key, methods in (("FashionResNet-18 baseline", "baseline", resnet),
                                ("C2FNet baseline", "c2f_baseline", c2f)):
        if not d.get(key):
            continue
        out += [f"{title}:", "", *md_table(base_head, _baseline_rows(d[key])), ""]
        rows = [[f"`{m}`", str(p["epochs"]), str(len(p["seeds"])), acc_text(p), num(p.get("cost_mean"), ".0f"),
                 num(p["train_s_mean"], ".0f"), saving_text(p), range_text(p), saving_text(p, "_wall"),
                 pct(p.get("acc_gain_at_equal_cost"), "+.2%"), p.get("verdict", "—")]
                for m in methods for p in d["methods"][m]]
        if rows:
            out += [*md_table(["method", "epochs", "seeds", "accuracy", "cost (s)", "train (s)", "saving at equal acc",
                             "with the baseline ± std", "saving (wall time)", "acc gain at equal cost", "verdict"],
                              rows), ""]
    rows = [[f"`{m}`", name, str(len(p["seeds"])), acc_text(p), num(p.get("cost_mean"), ".0f"), saving_text(p),
             range_text(p), p.get("verdict", "—"), _against_default(p.get("against_default"))]
            for m, ab in (d.get("ablations") or {}).items() if ab.get("variants")
            for name, p in [("default", ab.get("default")), *ab["variants"].items()] if p]
    if rows:
        epochs = next(iter(d["ablations"].values()))["epochs"]
        out += [f"Each method's best shot: variants at {epochs} epochs beside the default (its frontier point), read "
                "off the same baseline:", "",
                *md_table(["method", "variant", "seeds", "accuracy", "cost (s)", "saving at equal acc",
                           "with the baseline ± std", "verdict", "against the default"], rows), ""]
    table = d.get("step_table", {})
    if table.get("relative"):
        out += [f"Step cost relative to a full step ({num(1000 * table['full_step_s'], '.1f')} ms), measured "
                "interleaved: " + ", ".join(f"{k} {num(v, '.2f')}" for k, v in table["relative"].items()) + ".", ""]
    return [*out, *goal_lines(e, lambda _, v: "not read" if v is None else pct(v, "+.1%") if isinstance(v, float)
                          else str(v))]


def _still_to_train(d: dict) -> str:
    """What an incomplete frontier still lacks: the frontier's own runs, or only its ablations."""
    missing = len(d.get("missing", []))
    if d.get("frontier_complete"):
        return f" The frontier is complete; ablation runs still to train: {missing}."
    return f" Incomplete: {missing} runs still to train."


def _against_default(a: dict | None) -> str:
    """A variant against its method's defaults (`bench.frontier.against_default`): the reading and its difference."""
    if not a:
        return ""
    if a.get("read_on") == "accuracy at equal cost":   # the savings could not decide (`against_default`)
        return f"{a['reading']} at equal cost ({pct(a['acc_diff'], '+.2%')} accuracy)"
    diff = (f" ({pct(a['saving_diff'], '+.1%')} saving)" if a.get("saving_diff") is not None else
            f" ({pct(a['acc_diff'], '+.2%')} accuracy)" if a.get("acc_diff") is not None else "")
    return a["reading"] + diff


def grow_loss_jump(e: dict) -> list[str]:
    d = e["data"]
    rows = [[f"`{name}`", num(r["before"], ".3f"), num(r["after"], ".3f"), num(r["ratio"], ".3f"),
             "best" if name == d["best"] else ""] for name, r in d["mean_over_seeds"].items()]
    return [f"Mean training loss over the last {e['settings']['steps']} iterations before kernel rescaling's grow and "
            f"the first {e['settings']['steps']} after, mean over seeds {d['seeds']} (FashionResNet-18 width "
            f"{e['settings']['width']}, grow at epoch {e['settings']['switch']} of {e['settings']['epochs']}).", "",
            *md_table(["grow", "before", "after", "after / before", ""], rows), "",
            *goal_lines(e, lambda _, v: num(v, ".3f") if isinstance(v, float) else str(v))]


def _time_to_accuracy_single(e: dict) -> list[str]:
    d, out = e["data"], []
    for title, key in (("FashionResNet-18", "comparison"), ("coarse-to-fine (C2FNet)", "c2f_comparison")):
        runs = d.get(key) or []
        base = next((r["wall"] for r in runs if r.get("saved") == 0.0), None)
        rows = [[f"`{r['method']}`", pct(r["final_acc"], ".2%"), num(r["wall"], ".0f"),
                 pct(None if base is None else 1 - r["wall"] / base, "+.0%"),
                 num(r["time_to_target"], ".0f") if r.get("time_to_target") is not None else "not reached",
                 "—" if r.get("epoch_to_target") is None else str(r["epoch_to_target"]),
                 pct(r.get("saved"), "+.1%")] for r in runs]
        if rows:
            target = next((r["target_acc"] for r in runs if r.get("target_acc") is not None), None)
            out += [f"{title}, target {pct(target, '.2%')} (the baseline's final accuracy):", "",
                    *md_table(["method", "final acc", "wall (s)", "wall saved", "time to target (s)", "epoch",
                             "saved to target"], rows), ""]
    if d.get("step_speed"):
        out += ["Per-step cost against a full step, measured at the start of the same run: "
                + ", ".join(f"{name} {num(v['ratio'], '.2f')}" for name, v in d["step_speed"].items()) + ".", ""]
    return [*out, *goal_lines(e, lambda _, v: "target not reached" if v is None else pct(v, ".1%"))]


_PARTS = {"interpreter_s": "interpreter", "torch_s": "torch", "torchvision_s": "torchvision", "timm_s": "timm",
          "other_imports_s": "other imports", "work_s": "work", "exit_s": "exit"}


def startup(e: dict) -> list[str]:
    d, s = e["data"], e["settings"]
    rows = [[f"`{c['argv']}`", str(c["exit_code"]), num(c["before"]["median_s"]), num(c["after"]["median_s"]),
             num(c["speedup"], ".1f", "×"), num(c["before"]["cpu_median_s"]), num(c["after"]["cpu_median_s"]),
             num(c["after"]["exit_median_s"])] for c in d["commands"].values()]
    parts = [[f"`{d['commands'][name]['argv'].split(' --out')[0]}`", variant, num(p["total_s"]),
              *(num(p[k]) for k in _PARTS)] for variant in ("after", "before")
             for name, p in d["breakdown"].get(variant, {}).items()]
    b = d["baselines"]
    return [f"`msurg` as whole processes, with this checkout's package (after) and with commit `{s['before']}`'s "
            f"(before), interleaved, median of {s['repeats']}: wall time, and CPU time (user + system of that "
            "process), which a busy machine moves less. Exit = process end minus the last line printed.", "",
            *md_table(["command", "exit code", "before (s)", "after (s)", "before / after", "CPU before (s)",
                     "CPU after (s)", "exit, after (s)"], rows), "",
            "Where the time goes (seconds, medians of runs under `-X importtime`): torch, torchvision and timm are "
            "the self time of their modules' imports, other imports are ours, click and safetensors; work is the "
            "command's own, up to its last line.", "",
            *md_table(["command", "package", "total", *_PARTS.values()], parts, "ll" + "r" * (len(_PARTS) + 1)), "",
            f"- Baseline processes: `python -c pass` {num(b['python_bare']['median_s'])} s, `import torch` "
            f"{num(b['import_torch']['median_s'])} s, `import torch, torchvision` "
            f"{num(b['import_torchvision']['median_s'])} s, `import torch, torchvision, timm` "
            f"{num(b['import_timm']['median_s'])} s.",
            *goal_lines(e, lambda _, v: num(v, ".2f", " s"))]


def step_ratios(e: dict) -> list[str]:
    d = e["data"]
    kinds = list(d["kinds"])[1:]
    rows = [[str(w), num(1000 * r["full_step_s"], ".0f"), *(num(r["relative"][k], ".2f") for k in kinds)]
            for w, r in d["widths"].items()]
    return [f"FashionResNet-18, one training step of batch {e['settings']['batch_size']} of each kind against a full "
            f"28 px step, interleaved, median of {e['settings']['speed_steps']}: the table that picks the frontier's "
            "width. Kernel rescaling's premise holds where its pre-train step (2×2 kernels, 19 px) costs clearly less "
            "than the same network resized alone (3×3, 19 px).", "",
            *md_table(["width", "full step (ms)", *kinds], rows)]


def compound_step(e: dict) -> list[str]:
    d = e["data"]
    kinds = list(d["kinds"])
    rows = [[str(w), num(1000 * r["full_step_s"], ".0f"), *(num(r["relative"][k], ".2f") for k in kinds[1:])]
            for w, r in d["widths"].items()]
    return [f"FashionResNet-18, one training step of batch {e['settings']['batch']} of each pre-train network against "
            f"the full network's 28 px step, interleaved, median of {e['settings']['repeats']}: half width is the "
            "network at half the first-stage width, half depth `fashion-resnet10` (one block a stage), kernels 2x2 "
            "at 19 px kernel rescaling's shrink.", "",
            *md_table(["width", "full step (ms)", *kinds[1:]], rows)]


def grow_compound(e: dict) -> list[str]:
    d = e["data"]
    rows = [[f"{kind}", num(s["params"], ".2f"), *(f"{pct(s[k]['mean'], '.2%')} ± {pct(s[k]['std'], '.2%')}"
                                                   for k in ("pretrain_acc", "grown_acc", "grown_bn_acc"))]
            for kind, s in d["summary"].items()]
    return [f"FashionResNet-18 (width {e['settings']['width']}), each pre-train network trained for "
            f"{e['settings']['pretrain_steps']} steps on Fashion-MNIST, then grown into the full network (pinv "
            "kernels, Gaussian new channels, new blocks with no effect); test accuracy of the full network right "
            "after the grow and after BatchNorm recalibration, mean ± std over "
            f"{e['settings']['seeds']} seeds.", "",
            *md_table(["pre-train network", "params (of full)", "pre-train acc", "right after the grow", "+ BatchNorm"],
                      rows)]


def wall_check(e: dict) -> list[str]:
    d = e["data"]
    rows = [[f"`{r['name'].split('/')[1]}`", pct(r["acc"], ".2%"), num(r["train_s"], ".0f"), num(r["cost"], ".0f"),
             num(r["one_off_s"], ".1f"), num(r["wall_over_cost"], ".3f"), num(r.get("relative_wall"), ".3f"),
             num(r.get("relative_cost"), ".3f"), num(r.get("relative_wall_over_cost"), ".3f")] for r in d["runs"]]
    seed = d.get("seed", 0)
    return [f"Seed {seed} at the headline budget ({d['headline_epochs']} epochs, width {d['network']['width']}): the "
            "baseline and each method trained from scratch, back to back in one sitting, each run's training wall "
            "time against its cost (steps × their relative cost + one-off work, in seconds of the sitting's full "
            "step). On a quiet machine the two agree. What a saving reads is each run against the baseline's: "
            "relative wall time against relative cost.", "",
            *md_table(["run", "accuracy", "wall (s)", "cost (s)", "one-off (s)", "wall / cost", "wall / baseline's",
                       "cost / baseline's", "ratio of the two"], rows), "", *_sitting_ends(d),
            *goal_lines(e, lambda _, v: "—" if v is None else num(v, ".3f"))]


def _sitting_ends(d: dict) -> list[str]:
    """The full step measured at each end of the wall check's sitting, and wall / cost read on each alone."""
    full = d.get("full_step_s") or {}
    if not (full.get("start") and full.get("end")):
        return []

    def spread(key: str) -> str:
        v = [r[key] for r in d["runs"] if r.get(key)]
        return f"{min(v):.3f}-{max(v):.3f}" if v else "—"

    return [f"The sitting's full step measured {1000 * full['start']:.0f} ms at its start and "
            f"{1000 * full['end']:.0f} ms at its end; costs are read on the mean of the two tables. Wall / cost on "
            f"the start's table alone: {spread('wall_over_cost_start')}; on the end's alone: "
            f"{spread('wall_over_cost_end')}.", ""]


SECTIONS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "pretrain_speedup": ("Pre-train speed-up per training step", pretrain_speedup),
    "even_kernel_pad": ("Even (2×2) kernels: the cost of padding", even_kernel_pad),
    "convert_speed": ("Conversion time and memory", convert_speed),
    "shrink_speed": ("Shrink speed", shrink_speed),
    "lowmode_cost": ("Low-mode step cost", lowmode_cost),
    "grow_fidelity": ("Accuracy kept at the grow", grow_fidelity),
    "grow_speed": ("Grow speed", grow_speed),
    "step_ratios": ("Step cost by width", step_ratios),
    "compound_step": ("Step cost of compound pre-train networks", compound_step),
    "grow_compound": ("Accuracy right after a compound grow", grow_compound),
    "time_to_accuracy": ("Time to accuracy", time_to_accuracy),
    "time_to_accuracy_wallcheck": ("Time to accuracy: wall time against cost", wall_check),
    "grow_loss_jump": ("Loss jump at the grow", grow_loss_jump),
    "startup": ("Start-up time of `msurg`", startup)}


def generic(e: dict) -> list[str]:
    """A script without a dedicated formatter: only its goals."""
    if not e["goals"]:
        raise KeyError("goals")
    return goal_lines(e, lambda _, v: num(v, ".3g") if isinstance(v, float) else str(v))
