"""Training one run of the frontier: its network and method, the Trainer, the baseline's shared trunk.

A baseline run whose cool-down starts at a whole epoch branches off one constant-LR trunk run per
seed (`grow_trunk`); every other run trains from scratch, resuming its own checkpoint after a stop.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from bench.frontier import run_key
from bench.tta.cost import now
from bench.tta.plan import Settings, Spec, branch_epoch, low_kind, method_params, run_config
from modelsurgery.recipes_kit.machine import load_average

__all__ = ["build", "grow_trunk", "steps_by_kind", "train_one", "trainer_for"]

def build(s: Settings, spec: Spec, data):
    """(network, method object, form, plan, schedule) of `spec`."""
    from modelsurgery.methods.base import Compose
    from modelsurgery.methods.coarse_to_fine import CoarseToFine
    from modelsurgery.methods.kernel_rescaling import KernelRescaling
    from modelsurgery.methods.low_mode import LowMode
    from modelsurgery.methods.progressive_resizing import ProgressiveResizing
    from modelsurgery.nets import C2FNet, build_model
    from modelsurgery.train.dist import seed_everything
    from modelsurgery.train.schedules import Rewarm, WarmupStableDecay

    b, p = spec.epochs, method_params(s, spec)
    schedule = WarmupStableDecay(s.lr, b, decay=s.decay)
    seed_everything(spec.seed)
    if spec.family == "c2f":
        if spec.method == "baseline":
            net = C2FNet(32, s.c2f_widths, data.in_chans, data.num_classes)
            return net, ProgressiveResizing(32, 32, regime="fixed"), "target", None, schedule
        cf = CoarseToFine(p["sizes"], p["stage_epochs"], s.c2f_widths, seed=spec.seed, in_chans=data.in_chans,
                          num_classes=data.num_classes)
        return cf.model, cf, cf.form, None, schedule
    net = build_model("fashion-resnet18", width=s.width, in_chans=data.in_chans, num_classes=data.num_classes)
    hold = ProgressiveResizing(28, 28, regime="fixed")
    if spec.method == "baseline":
        return net, hold, "target", None, schedule
    if spec.method == "low_mode":
        return net, Compose(hold, LowMode(p["p_low"], full_epochs=0, seed=spec.seed,
                                                  convs=p.get("convs"))), "target", None, schedule
    if spec.method == "progressive_resizing":
        pr = ProgressiveResizing(28, p["start"], regime="gradual", ramp_start=p.get("ramp_start", 0),
                                 ramp_end=p["ramp_end"],
                                 multiple=p["multiple"])
        return net, pr, "target", None, schedule
    kr = KernelRescaling(net, target_size=28, switch_epoch=p["switch"], grow_method=p["grow_method"],
                         lstsq=p["lstsq"], recalibrate=p["recalibrate"], carry_momentum=p["carry_momentum"],
                         width=p.get("width", 1.0), depth=p.get("depth", 1.0))
    if p["rewarm"]:
        schedule = Rewarm(schedule, at=p["switch"], epochs=p["rewarm"])
    method = kr
    if "start" in p:
        method = Compose(kr, ProgressiveResizing(kr.plan.input_size, p["start"], regime="gradual", ramp_start=0,
                                                 ramp_end=p["switch"], multiple=p["multiple"], form="pretrain"))
    return kr.model, method, kr.form, kr.plan, schedule


def trainer_for(s: Settings, ctx: dict, model, method, form, plan, schedule, checkpoint: Path):
    """The Trainer of one run (or trunk), `method`'s hooks wired in, checkpointing to `checkpoint`."""
    from modelsurgery.train.loop import Trainer

    return Trainer(model, ctx["train"], None, schedule=schedule, momentum=s.momentum, weight_decay=s.weight_decay,
                   seed=ctx["seed"], checkpoint_path=checkpoint, progress=False, on_epoch_start=[method.on_epoch_start],
                   step_context=method.step_context, form=form, plan=plan, device=s.device)


def grow_trunk(s: Settings, spec: Spec, ctx: dict, epoch: int) -> Path | None:
    """The baseline trunk's checkpoint at `epoch` (trained on, from its last checkpoint, if needed)."""
    from modelsurgery.recipes_kit.runs import fit_resuming
    from modelsurgery.train.schedules import WarmupStableDecay

    trunk = Spec(spec.family, "trunk", 0, spec.seed)
    folder = Path(s.work) / f"trunk-{run_key(run_config(s, trunk, ctx['environment']))}"
    at = folder / f"epoch-{epoch}.safetensors"
    if at.is_file():
        return at
    model, method, form, plan, _ = build(s, dataclasses.replace(spec, epochs=epoch), ctx["data"])
    flat = WarmupStableDecay(s.lr, epoch / (1 - s.decay), decay=s.decay)   # constant up to `epoch`, as every branch
    trainer = trainer_for(s, ctx, model, method, form, plan, flat, folder / "last.safetensors")
    if trainer.checkpoint_path.is_file():
        from modelsurgery.train.state import read_checkpoint_info

        if read_checkpoint_info(trainer.checkpoint_path).train["epoch"] > epoch:
            return None   # the trunk is past this branch point (a budget added later): train from scratch
    fit_resuming(trainer, epoch, resume=True)
    shutil.copyfile(trainer.checkpoint_path, at)
    return at


def train_one(s: Settings, spec: Spec, ctx: dict) -> dict:
    """Train `spec` (resuming its own checkpoint, or branching off the trunk), evaluate, return its result."""
    from modelsurgery.recipes_kit.accuracy import loss_jump
    from modelsurgery.recipes_kit.runs import fit_resuming

    ctx["seed"] = spec.seed
    config = run_config(s, spec, ctx["environment"])
    folder = Path(s.work) / run_key(config)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt, branched = folder / "last.safetensors", None
    b = branch_epoch(s, spec)
    if b is not None and b < spec.epochs and not ckpt.is_file():
        trunk = grow_trunk(s, spec, ctx, b)
        if trunk is not None:
            shutil.copyfile(trunk, ckpt)
            branched = b
    model, method, form, plan, schedule = build(s, spec, ctx["data"])
    trainer = trainer_for(s, ctx, model, method, form, plan, schedule, ckpt)
    load = load_average()
    fit_resuming(trainer, spec.epochs, resume=True, restore=method.restore)
    trainer.val_loader = ctx["val"]
    start = now(trainer.device)
    acc = trainer.evaluate(32 if spec.family == "c2f" else 28)
    eval_s = now(trainer.device) - start
    history = trainer.history
    one_off = sum(r.get("epoch_start_s", 0.0) for r in history)
    params = method_params(s, spec)
    jump = loss_jump(history, params["switch"]) if "switch" in params else None
    result = {"key": run_key(config), "name": spec.name, "config": config, "acc": acc, "train_s": trainer.wall,
              "eval_s": round(eval_s, 3), "steps": steps_by_kind(spec, history, low_kind(params)),
              "one_off_s": round(one_off, 3), "step_table": ctx.get("table"), "branched_at": branched,
              "loss_jump": jump, "loadavg": {"before": load, "after": load_average()},
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "history": [{k: v for k, v in r.items() if k not in ("loss_head", "loss_tail")} for r in history]}
    shutil.rmtree(folder, ignore_errors=True)   # the result holds what is kept; the checkpoint is not needed
    return result

def steps_by_kind(spec: Spec, history: list[dict], low_kind: str = "low 28px") -> dict[str, int]:
    """Iterations per kind of step ("target 28px", "pretrain 19px", "compound 19px", "low 28px", "c2f 16px")."""
    counts: dict[str, float] = {}
    previous = 0
    for r in history:
        n = r["step"] - previous
        previous = r["step"]
        form = "compound" if spec.method == "compound" and r["form"] == "pretrain" else r["form"]
        kind = f"c2f {r['size']}px" if spec.family == "c2f" else f"{form} {r['size']}px"
        low = r.get("low_fraction") or 0.0
        counts[kind] = counts.get(kind, 0) + n * (1 - low)
        if low:
            counts[low_kind] = counts.get(low_kind, 0) + n * low
    return {k: round(v) for k, v in counts.items()}
