"""The frontier's plan: its settings, its runs, each run's method parameters, config and cache key.

Pure bookkeeping, no torch at import: `validate` rejects settings that make no frontier before
anything trains, `plan_runs` lists every run seed by seed, and `run_config` is the full config whose
hash (`bench.frontier.run_key`) names a cached run in `bench/results/time_to_accuracy_runs/`. Any
change to what `run_config` returns renames every cached run: `tests/test_frontier.py` checks that
a committed one is still found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS, ROOT
from modelsurgery.errors import SurgeryError

__all__ = ["ABLATIONS", "CACHE_VERSION", "GOALS", "KR_FAMILY", "LOW_CONVS", "METHODS", "NETWORKS", "QUICK",
           "FrontierError",
           "Settings", "Spec", "branch_epoch", "environment", "epoch_kinds", "full_tail", "low_kind", "method_params",
           "plan_runs", "run_config", "switch_epoch", "validate"]

CACHE_VERSION = 1
METHODS = ("kernel_rescaling", "low_mode", "progressive_resizing", "kernel_rescaling+progressive_resizing",
           "compound", "coarse_to_fine")
KR_FAMILY = ("kernel_rescaling", "kernel_rescaling+progressive_resizing", "compound")   # the methods that grow
GOALS = {"kernel_rescaling": 0.20, "low_mode": 0.15}   # saving at equal accuracy, headline budget
# Each method's best shot: variants at the ablation budget (`Settings.ablation_epochs`), each a function of
# the budget b that overrides the method's default parameters. The defaults' own runs are the reference.
ABLATIONS: dict[str, dict[str, Callable[[int], dict]]] = {
    "kernel_rescaling": {
        "switch at 1/3": lambda b: {"switch": max(1, round(b / 3))},
        "switch at 2/3": lambda b: {"switch": min(b - 1, round(2 * b / 3))},
        "pinv + BatchNorm only": lambda b: {"lstsq": 0},
        "no re-warm-up": lambda b: {"rewarm": 0.0},
        "re-warm-up 0.5 epoch": lambda b: {"rewarm": 0.5},
    },
    "kernel_rescaling+progressive_resizing": {
        "start 8 px": lambda b: {"start": 8},
        "start 12 px": lambda b: {"start": 12},   # the default until measured
    },
    "progressive_resizing": {
        "start 12 px": lambda b: {"start": 12},
        "start 20 px": lambda b: {"start": 20},
        "late ramp (from half the budget)": lambda b: {"ramp_start": b // 2},
    },
    "low_mode": {
        "p_low 0.3": lambda b: {"p_low": [0.3 if e < b - full_tail(b) else 0.0 for e in range(b)]},
        "p_low 0.7": lambda b: {"p_low": [0.7 if e < b - full_tail(b) else 0.0 for e in range(b)]},
        "both convs of every block": lambda b: {"convs": None},   # the paper's; the default until measured
    },
}
LOW_CONVS = {"low": None, "low-conv2": "layer*.conv2"}   # step kinds of low mode: which convs are pooled
NETWORKS = {8: "overhead-bound network: at width 8 norms, activations and memory traffic set the step's floor, "
               "so smaller kernels save little beyond smaller images",
            16: "conv-bound network: the cheapest width at which smaller kernels save beyond smaller images"}


class FrontierError(SurgeryError, ValueError):
    """Settings that make no frontier (budgets, seeds, methods)."""


@dataclass
class Settings:
    data: str = "/usr/share/datasets/fashion-mnist"
    width: int = 16
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay: float = 0.5
    baseline: tuple[int, ...] = (2, 4, 6, 8, 12)
    budgets: tuple[int, ...] = (4, 8)
    c2f_budgets: tuple[int, ...] = (2, 4)
    c2f_baseline: tuple[int, ...] = (1, 2, 4)   # from 1 epoch: coarse-to-fine at 2 costs what the baseline's 1 does
    methods: tuple[str, ...] = METHODS
    seeds: int = 2
    headline_seeds: int = 3
    ablations: bool = True
    ablation_epochs: int = 4
    switch_fraction: float = 0.5
    pr_start: int = 16
    krpr_start: int = 16   # the pre-train ramp's start: 92.0 % at +3.6 % against 91.8 % at -4.9 % from 12 px (4 ep)
    p_low: float = 0.5
    # Low mode's pooled convs (fnmatch; None: both 3x3 convs of every block, as Nouri et al. 2019, §4 pool them in
    # ResNet-18). The second only measured 91.9 against 90.3 % at the same cost (4 epochs, 2 seeds).
    low_convs: str | None = "layer*.conv2"
    c2f_widths: tuple[int, ...] = (16, 32, 128)
    max_batches: int | None = None
    device: str | None = None
    threads: int | None = None
    speed_steps: int = 6
    epoch_s: float = 90.0   # s per full epoch, width 16, 2-core AMD EPYC (353 ms a step, 235 steps, the loader)
    quick: bool = False
    branch: bool = True   # baselines branch off their seed's trunk; the wall check trains each from scratch
    out: str = str(RESULTS / "time_to_accuracy.json")
    cache: str = str(RESULTS / "time_to_accuracy_runs")
    work: str = str(ROOT / "runs" / "time_to_accuracy")

    @property
    def headline(self) -> int:
        return max(self.budgets)


QUICK = dict(data="fixture", width=4, batch_size=64, max_batches=3, baseline=(1, 2, 4), budgets=(2, 3),
             ablation_epochs=2, c2f_budgets=(2, 4), c2f_baseline=(1, 2, 4), seeds=1, headline_seeds=1,
             c2f_widths=(4, 8, 16), speed_steps=1, threads=1,
             out=str(ROOT / "runs" / "time_to_accuracy-quick" / "time_to_accuracy.json"),
             cache=str(ROOT / "runs" / "time_to_accuracy-quick" / "cache"),
             work=str(ROOT / "runs" / "time_to_accuracy-quick" / "work"))


@dataclass(frozen=True)
class Spec:
    """One run: a network family ("resnet", "c2f"), a method ("baseline" or a name), a budget, a seed."""

    family: str
    method: str
    epochs: int
    seed: int
    variant: str = ""   # an ablation's name (`ABLATIONS`); "" for the method's defaults

    @property
    def name(self) -> str:
        method = f"{self.method}[{self.variant}]" if self.variant else self.method
        return f"{self.family}/{method}/{self.epochs}ep/seed{self.seed}"

def validate(s: Settings) -> None:
    """Raise FrontierError for settings that make no frontier, before anything trains."""
    for name in ("baseline", "budgets") + (("c2f_budgets", "c2f_baseline") if "coarse_to_fine" in s.methods else ()):
        b = list(getattr(s, name))
        if not b or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in b) or b != sorted(set(b)):
            raise FrontierError(f"--{name.replace('_', '-')} {','.join(map(str, b)) or '(empty)'} must be ascending "
                                "positive whole epochs. Hint: e.g. 1,2,4,6")
    if max(s.baseline) <= s.headline:
        raise FrontierError(f"the baseline's largest budget ({max(s.baseline)}) must be above the methods' "
                            f"({s.headline}), so that their accuracy can be read off its frontier. Hint: add "
                            f"{2 * s.headline} to --baseline")
    if "coarse_to_fine" in s.methods and min(s.c2f_budgets) < 2:
        raise FrontierError(f"--c2f-budgets {','.join(map(str, s.c2f_budgets))}: coarse-to-fine needs 2 epochs or "
                            "more to reach its last stage. Hint: e.g. 2,4")
    if min(s.budgets) < 2:
        raise FrontierError(f"--budgets {','.join(map(str, s.budgets))}: kernel rescaling needs 2 epochs or more "
                            "(one before the grow, one after). Hint: e.g. 2,4")
    for name in ("width", "batch_size"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FrontierError(f"--{name.replace('_', '-')} {value} must be a positive whole number. Hint: "
                                f"--{name.replace('_', '-')} {getattr(Settings, name)}")
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown or not s.methods:
        raise FrontierError(f"unknown method(s) {', '.join(unknown) or '(none given)'}. Hint: choose from "
                            f"{', '.join(METHODS)}")
    if s.ablations and s.ablation_epochs not in s.budgets:
        raise FrontierError(f"--ablation-epochs {s.ablation_epochs} must be one of --budgets "
                            f"{','.join(map(str, s.budgets))}, so that each variant meets its method's defaults. "
                            f"Hint: --ablation-epochs {min(s.budgets)}")
    least = 1 if s.quick else 2
    if s.seeds < least or s.headline_seeds < s.seeds:
        raise FrontierError(f"--seeds {s.seeds} / --headline-seeds {s.headline_seeds}: need at least {least} "
                            "seeds per point and at least as many at the headline. Hint: --seeds 2 --headline-seeds 3")
    if not 0 < s.decay <= 1 or not 0 < s.switch_fraction < 1:
        raise FrontierError(f"--decay {s.decay} must be in (0, 1] and --switch-fraction {s.switch_fraction} in "
                            "(0, 1). Hint: 0.5 and 0.5")


def plan_runs(s: Settings) -> list[Spec]:
    """Every run of the frontier, seed by seed, so that a stopped frontier already reads one seed whole.

    Per seed: its baselines, budgets ascending (so its trunk only goes forward), then each method,
    headline budget first; coarse-to-fine and its own baseline come last.
    """
    def has(k: int, b: int) -> bool:
        return k < (s.headline_seeds if b == s.headline else s.seeds)

    resnet = [m for m in s.methods if m != "coarse_to_fine"]
    runs = []
    for k in range(s.headline_seeds):
        runs += [Spec("resnet", "baseline", b, k) for b in s.baseline if has(k, b)]
        runs += [Spec("resnet", m, b, k) for b in sorted(s.budgets, reverse=True) for m in resnet if has(k, b)]
    if "coarse_to_fine" in s.methods:
        for k in range(s.seeds):
            runs += [Spec("c2f", "baseline", b, k) for b in s.c2f_baseline]
            runs += [Spec("c2f", "coarse_to_fine", b, k) for b in s.c2f_budgets]
    if s.ablations:   # each method's best shot, after the frontier itself
        for k in range(s.seeds):
            runs += [Spec("resnet", m, s.ablation_epochs, k, v) for m in resnet for v in ABLATIONS.get(m, {})]
    return runs


def switch_epoch(s: Settings, epochs: int) -> int:
    """Kernel rescaling's grow epoch at `epochs`: `switch_fraction` of the budget, at least one epoch each side."""
    return max(1, min(epochs - 1, round(s.switch_fraction * epochs))) if epochs > 1 else 0


def full_tail(epochs: int) -> int:
    """The last epochs at full size / in full mode: a quarter of the budget, at least one."""
    return max(1, epochs // 4)


def method_params(s: Settings, spec: Spec) -> dict:
    """Everything that defines `spec`'s method beyond the shared settings (part of its key)."""
    from recipes.kernel_rescaling import Config as KR

    if spec.method == "trunk":
        return {}
    b, sw = spec.epochs, switch_epoch(s, spec.epochs)
    kr = {k: getattr(KR, k) for k in ("grow_method", "lstsq", "recalibrate", "carry_momentum", "rewarm")}
    defaults = {"baseline": {},
            "kernel_rescaling": dict(kr, switch=sw),
            "kernel_rescaling+progressive_resizing": dict(kr, switch=sw, start=s.krpr_start, multiple=4),
            "compound": dict(kr, lstsq=0, switch=sw, width=0.5, depth=0.5),
            "progressive_resizing": dict(start=s.pr_start, ramp_end=max(1, b - full_tail(b)), multiple=4),
            "low_mode": dict(p_low=[s.p_low if e < b - full_tail(b) else 0.0 for e in range(b)],   # every conv
                             **({"convs": s.low_convs} if s.low_convs else {})),   # (None) keeps its old keys
            "coarse_to_fine": dict(sizes=(8, 16, 32), stage_epochs=(0, max(1, sw // 2), max(1, sw)))}[spec.method]
    if not spec.variant:
        return defaults
    return {**defaults, **ABLATIONS[spec.method][spec.variant](b)}


def run_config(s: Settings, spec: Spec, environment: dict) -> dict:
    """The full config of a run: its cache key is a hash of this."""
    shared = {k: getattr(s, k) for k in ("width", "batch_size", "lr", "momentum", "weight_decay", "decay",
                                         "max_batches")}
    network = {"resnet": {"model": "fashion-resnet18", "width": s.width},
               "c2f": {"model": "c2f", "widths": list(s.c2f_widths)}}[spec.family]
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k != "variant" or v}   # defaults keep their keys
    return {"cache_version": CACHE_VERSION, **fields, **shared, "network": network,
            "params": method_params(s, spec), **environment}


def environment(s: Settings) -> dict:
    """The data files (names and sizes), torch's version and the device: what else changes a result."""
    import torch

    folder = Path(s.data)
    files = {p.name: p.stat().st_size for p in sorted(folder.glob("*"))} if folder.is_dir() else s.data
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return {"data": files, "torch": torch.__version__, "device": device, "threads": s.threads}


def branch_epoch(s: Settings, spec: Spec) -> int | None:
    """The trunk epoch a baseline run branches off (where its cool-down starts), if it is a whole one."""
    start = spec.epochs * (1 - s.decay)
    whole = start >= 1 and float(start).is_integer()
    return int(start) if s.branch and spec.method == "baseline" and whole else None


def epoch_kinds(s: Settings, spec: Spec, pretrain: int = 19) -> list[tuple[str, float]]:
    """Each epoch's kind of step and its low-mode share: what --estimate costs and the step table measures."""
    from modelsurgery.methods.progressive_resizing import ProgressiveResizing, ramp_size

    b, p = spec.epochs, method_params(s, spec)
    if spec.family == "c2f":
        if spec.method == "baseline":
            return [("c2f 32px", 0.0)] * b
        starts = p["stage_epochs"]
        return [(f"c2f {p['sizes'][max(i for i, st in enumerate(starts) if e >= st)]}px", 0.0) for e in range(b)]
    if spec.method in KR_FAMILY:
        sw, form = p["switch"], "compound" if spec.method == "compound" else "pretrain"
        size = (lambda e: ramp_size(e, p["start"], pretrain, 0, sw, 4)) if "start" in p else (lambda e: pretrain)
        return [(f"{form} {size(e)}px", 0.0) if e < sw else ("target 28px", 0.0) for e in range(b)]
    if spec.method == "progressive_resizing":
        pr = ProgressiveResizing(28, p["start"], regime="gradual", ramp_start=p.get("ramp_start", 0),
                                 ramp_end=p["ramp_end"])
        return [(f"target {pr.size_at(e)}px", 0.0) for e in range(b)]
    if spec.method == "low_mode":
        return [("target 28px", q) for q in p["p_low"]]
    return [("target 28px", 0.0)] * b


def low_kind(params: dict) -> str:
    """The kind of a low-mode step under `params` (which convs are pooled)."""
    form = next(k for k, v in LOW_CONVS.items() if v == params.get("convs"))
    return f"{form} 28px"
