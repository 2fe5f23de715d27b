"""The frontier's summary: points, readings and verdicts from the finished runs; its plot and its text.

The results file's `data` (`summarise`) is what `bench.make_readme_table` renders; every method
point is read off its baseline's frontier by `bench.frontier.method_point`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import goal
from bench.frontier import against_default, method_point, point_summary, range_text
from bench.tta.cost import FULL_STEP, run_cost
from bench.tta.plan import ABLATIONS, GOALS, NETWORKS, Settings, Spec

__all__ = ["goals_of", "network_choice", "plot", "reading", "summarise"]

def summarise(s: Settings, plan: list[Spec], results: dict[Spec, dict], table: dict) -> tuple[dict, list]:
    """The results file's data (frontier points, readings, verdicts, goals) from the runs finished so far."""
    def points(family: str, method: str, variant: str = "") -> list[dict]:
        out = []
        for b in sorted({sp.epochs for sp in plan if (sp.family, sp.method, sp.variant) == (family, method, variant)}):
            done = [dict(results[sp], seed=sp.seed, cost=run_cost(results[sp], family, table)) for sp in plan
                    if (sp.family, sp.method, sp.epochs, sp.variant) == (family, method, b, variant) and sp in results]
            if done:
                out.append(point_summary(b, done))
        return out

    baseline, c2f_baseline = points("resnet", "baseline"), points("c2f", "baseline")
    methods = {}
    for m in s.methods:
        base = c2f_baseline if m == "coarse_to_fine" else baseline
        methods[m] = [method_point(p, base) for p in points("c2f" if m == "coarse_to_fine" else "resnet", m)]
    ablations = {}
    for m in (m for m in ABLATIONS if m in s.methods and s.ablations):
        variants = {v: {"params": f(s.ablation_epochs), **method_point(pts[0], baseline)}
                    for v, f in ABLATIONS[m].items() if (pts := points("resnet", m, v))}
        default = next((p for p in methods[m] if p["epochs"] == s.ablation_epochs), None)
        for v in variants.values():
            v["against_default"] = against_default(v, default)
        ablations[m] = {"epochs": s.ablation_epochs, "default": default, "variants": variants}
    runs = {results[sp]["key"]: {"name": sp.name, "acc": results[sp]["acc"], "train_s": results[sp]["train_s"],
                                 "eval_s": results[sp]["eval_s"], "one_off_s": results[sp].get("one_off_s"),
                                 "cost": run_cost(results[sp], sp.family, table),
                                 "branched_at": results[sp]["branched_at"], "loss_jump": results[sp]["loss_jump"]}
            for sp in plan if sp in results}
    full = table.get(FULL_STEP["resnet"])
    axes = [{"name": sp.name, "train_s": round(results[sp]["train_s"], 1), "cost": runs[results[sp]["key"]]["cost"],
             "loadavg": results[sp].get("loadavg")} for sp in plan
            if sp in results and sp.family == "resnet" and sp.epochs == s.headline and not sp.variant]
    for a in axes:
        a["wall_over_cost"] = round(a["train_s"] / a["cost"], 3) if a["cost"] else None
    data = {"network": {"model": "fashion-resnet18", "width": s.width, "batch_size": s.batch_size,
                        "description": NETWORKS.get(s.width, "")},
            "baseline": baseline, "methods": methods, "c2f_baseline": c2f_baseline, "headline_epochs": s.headline,
            "ablations": ablations, "network_choice": network_choice(Path(s.out).with_name("step_ratios.json")),
            "step_table": {"seconds": table, "relative": {k: round(v / full, 4) for k, v in table.items()} if full
                           else {}, "full_step_s": full},
            "axis": "cost: each run's steps × their cost relative to a full step, plus its one-off work, in seconds "
                    "of a full step measured in this sitting; train_s: training wall time",
            "wall_vs_cost": {"note": "the headline's runs: training wall time over cost; 1.0 where the run's "
                                     "machine was as quiet as the step table's sitting",
                             "runs": axes},
            "runs": runs, "run_keys": sorted(runs),
            "missing": [sp.name for sp in plan if sp not in results], "complete": len(results) == len(plan),
            "frontier_complete": all(sp in results for sp in plan if not sp.variant),   # ablations aside
            "quick": s.quick}
    return data, goals_of(s, methods)


def network_choice(path: Path) -> dict | None:
    """The step-cost table by width that picked the network (`--step-ratios`), if it was measured."""
    if not path.is_file():
        return None
    e = json.loads(path.read_text())
    return {"source": path.name, "processor": e["machine"].get("processor"), "widths": e["data"]["widths"]}


def goals_of(s: Settings, methods: dict[str, list[dict]]) -> list[dict]:
    """The issue's goals at the headline budget, on the cost axis.

    A saving's value is the mean point's saving, or where it is above the frontier the least it
    can be (`saving_at_least`: the baseline needs more than its best point's cost). A saving goal
    is met only when every seed saves at least the threshold even against the baseline moved up
    by its seed spread (the low end of `saving_range`): where the baseline has saturated, a large
    mean saving can still be noise. Kernel rescaling with progressive resizing saves more than
    resizing alone where its saving is larger, or, where resizing alone is above the frontier (its
    saving then has no upper bound), where it is at least as accurate for less cost.
    """
    def head(m: str) -> dict:
        return next((p for p in methods.get(m, []) if p["epochs"] == s.headline), {})

    def value(m: str) -> float | None:
        return head(m).get("saving_at_least", head(m).get("saving_at_equal_acc"))

    def low(m: str) -> float | None:
        return (head(m).get("saving_range") or [None])[0]

    goals = [goal(f"{m}_saves_at_least_{round(t * 100)}pct_at_equal_acc", value(m),
                  f"{t:.0%} in every seed against the baseline + its std (the low end of its range)",
                  low(m) is not None and low(m) >= t)
             for m, t in GOALS.items() if m in methods]
    combined, alone = "kernel_rescaling+progressive_resizing", "progressive_resizing"
    if {combined, alone} <= set(methods):
        c, a = head(combined), head(alone)
        if a.get("above_frontier"):
            # Resizing alone saves at least its lower bound, by how much more the baseline cannot say: the
            # combination saves more only where it reaches resizing's accuracy for less.
            met = bool(c) and c["acc_mean"] >= a["acc_mean"] and c["cost_mean"] < a["cost_mean"]
        else:
            met = value(combined) is not None and value(alone) is not None and value(combined) > value(alone)
        goals.append(goal(f"{combined}_saves_more_than_{alone}", {"combined": value(combined), "alone": value(alone)},
                          "combined > alone; where resizing alone is above the frontier (its saving only bounded "
                          "below), the combination at its accuracy or more for less cost", met))
    return goals


def plot(path: Path, data: dict) -> None:
    """Accuracy against cost: the baseline frontier as a line with ± std bars, each method its own line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = data.get("network", {}).get("width")
    panels = [(f"FashionResNet-18, width {width}", data["baseline"],
               {m: p for m, p in data["methods"].items() if m != "coarse_to_fine"}),
              ("C2FNet", data["c2f_baseline"], {m: p for m, p in data["methods"].items() if m == "coarse_to_fine"})]
    panels = [p for p in panels if p[1] or p[2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    for ax, (title, base, methods) in zip(axes[0], panels, strict=True):
        for name, pts, style in [("baseline", base, dict(color="k", lw=2))] + [(m, p, {}) for m, p in methods.items()]:
            pts = [p for p in pts if p.get("cost_mean") is not None]
            if pts:
                ax.errorbar([p["cost_mean"] for p in pts], [100 * p["acc_mean"] for p in pts],
                            yerr=[100 * (p["acc_std"] or 0) for p in pts], marker="o", capsize=3, label=name, **style)
                for p in pts:
                    ax.annotate(f"{p['epochs']}", (p["cost_mean"], 100 * p["acc_mean"]), fontsize=7,
                                textcoords="offset points", xytext=(3, -9))
        ax.set(title=f"{title}: accuracy against cost (labels: epochs)",
               xlabel="cost (s of full steps, measured in one sitting)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _signed_pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:+.1f} %"


def _acc(p: dict) -> str:
    return f"{100 * p['acc_mean']:.2f}" + ("" if p["acc_std"] is None else f" ± {100 * p['acc_std']:.2f}") + " %"


def _cost(p: dict) -> str:
    return "—" if p["cost_mean"] is None else f"{p['cost_mean']:.1f}s"


def reading(data: dict) -> str:
    """The frontier as text: the baseline's points, then each method's reading and verdict."""
    lines = [f"{'':40s} {'ep':>3s} {'accuracy':>16s} {'cost':>7s} {'wall':>7s} {'saving':>8s} "
             f"{'with the baseline ± std':>24s}  verdict"]
    for name, key in (("baseline", "baseline"), ("c2f baseline (coarse_to_fine's own)", "c2f_baseline")):
        for p in data.get(key, []):
            lines.append(f"{name:40s} {p['epochs']:3d} {_acc(p):>16s} {_cost(p):>7s} {p['train_s_mean']:6.1f}s")
    for m, pts in data["methods"].items():
        for p in pts:
            lines.append(f"{m:40s} {p['epochs']:3d} {_acc(p):>16s} {_cost(p):>7s} {p['train_s_mean']:6.1f}s "
                         f"{_signed_pct(p['saving_at_equal_acc']):>8s} {range_text(p):>24s}  {p['verdict']}")
    for m, ab in data.get("ablations", {}).items():
        for v, p in ab["variants"].items():
            lines.append(f"{m + ' [' + v + ']':40.40s} {p['epochs']:3d} {_acc(p):>16s} {_cost(p):>7s} "
                         f"{p['train_s_mean']:6.1f}s {_signed_pct(p['saving_at_equal_acc']):>8s} "
                         f"{range_text(p):>24s}  {p['verdict']}; against the default: {_against(p)}")
    return "\n".join(lines)


def _against(p: dict) -> str:
    a = p.get("against_default") or {}
    at_cost = " at equal cost" if a.get("read_on") == "accuracy at equal cost" else ""
    return a.get("reading", "—") + at_cost
