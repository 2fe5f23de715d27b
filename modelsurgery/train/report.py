"""Recipe plumbing: the command line, the data, a Trainer with resume, and what a run measured.

Every recipe in `recipes/` does the same few things around its method; they live here once:

- `parse_config(Config)`: a command line from the recipe's config dataclass; the comment on
  each field (with its units) is the option's help.
- `load_dataset(spec)`: "fixture" (the committed subset), a folder of IDX files (Fashion-MNIST,
  MNIST; the default is Debian's), or an ImageFolder root with `train/` and `val/` (or `test/`);
  `make_loaders` batches it.
- `make_trainer`, `train_baseline`: a `Trainer` with the recipe's optimiser settings, logging
  and checkpointing into the run folder; the same model on the same schedule at full size.
- `fit(trainer, epochs, resume=..., restore=...)`: train, resuming from the trainer's checkpoint
  when asked (`restore(trainer, info)` first rebuilds the form the checkpoint holds, e.g. the
  grown target), and keep the JSON-lines log consistent with the checkpoint.
- `summarize` / `compare` / `format_table`: final accuracy, time to a target accuracy, and the
  saving against a baseline, from the trainer's per-epoch history.
- `finish`: `results.json` (config, plan, git revision, machine and load, per-epoch logs,
  comparison) and `results.png` (accuracy against wall time and against epoch, method against
  baseline, like the papers' Figs 5, 9 and 10), and the table on stdout.

Time to accuracy: a run reaches a target accuracy at the first epoch whose validation accuracy
is at least `target - tolerance` (0.3 points by default); its time is the trainer's `wall`
at the end of that epoch (training time, evaluation excluded). A method's saving is measured
against the baseline's own time to the same target, `1 - t_method / t_baseline`.

Example:
    >>> data = load_dataset("fixture")
    >>> runs = {"baseline": summarize(base_trainer.history), "mine": summarize(trainer.history)}
    >>> rows = compare(runs, baseline="baseline")
    >>> print(format_table(rows))
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..checkpoint import atomic_write
from ..errors import OutputExistsError
from ..plan import Plan
from .data import DEFAULT_ROOT, DatasetError, TensorLoader, load_fashion_mnist, load_idx, load_image_folder
from .dist import dist_info
from .state import CheckpointInfo, read_checkpoint_info

__all__ = ["TOLERANCE", "parse_config", "Dataset", "load_dataset", "make_loaders", "git_revision", "default_out",
           "prepare_out", "make_trainer", "train_baseline", "fit", "time_to_accuracy", "summarize", "compare",
           "format_table", "write_results", "plot_runs", "plot_panels", "machine_info", "finish"]

TOLERANCE = 0.003   # 0.3 accuracy points: "reached" means within this of the target


# ---- command line ----------------------------------------------------------------------------

def _field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # comment` lines of a dataclass's source: the comment is the help."""
    comments = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return comments
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def _parser_type(annotation: str):
    kind = annotation.replace("| None", "").replace("Optional[", "").strip(" ]")
    if kind.startswith("tuple"):
        inner = float if "float" in kind else int if "int" in kind else str
        return lambda text: tuple(inner(v) for v in text.split(",") if v.strip())
    return {"int": int, "float": float, "str": str}.get(kind, str)


def parse_config(cls: type, argv: Sequence[str] | None = None, description: str | None = None):
    """Build a `cls` instance (a recipe's config dataclass) from the command line.

    Every field becomes `--field-name`; its help text is the comment on the field's line, so
    the units written there show in `--help`. Booleans are flags (`--x` / `--no-x`), tuples
    take comma-separated values (`--milestones 6,8`), and `X | None` fields accept `none`.

    Example:
        >>> cfg = parse_config(Config, ["--epochs", "3", "--data", "fixture"])
    """
    comments = _field_comments(cls)
    parser = argparse.ArgumentParser(description=description or (cls.__doc__ or "").strip())
    for f in dataclasses.fields(cls):
        flag, annotation = "--" + f.name.replace("_", "-"), str(f.type)
        help_text = comments.get(f.name, "")
        if f.default not in (None, False) and "default" not in help_text:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            help_text += f" (default: {shown})"
        if annotation == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
            continue
        convert = _parser_type(annotation)
        if "None" in annotation:
            convert = (lambda c: lambda text: None if text.lower() == "none" else c(text))(convert)
        parser.add_argument(flag, dest=f.name, type=convert, default=f.default, help=help_text,
                            metavar=f.name.upper())
    return cls(**vars(parser.parse_args(argv)))


# ---- data ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8 N×C×S×S) with int64 labels, and what the model needs."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    in_chans: int
    num_classes: int
    source: str


def load_dataset(spec: str | os.PathLike | None = None, *, size: int = 28, channels: int = 3) -> Dataset:
    """The data a recipe's `--data` names.

    Args:
        spec: "fixture" (3,000 + 1,000 committed Fashion-MNIST images), a folder with
            MNIST-style IDX files (default Debian's Fashion-MNIST), or an ImageFolder root
            holding `train/` and `val/` (or `test/`) with one sub-folder per class.
        size: decode ImageFolder images at this size (the largest the recipe trains at).
        channels: ImageFolder channels (1 or 3). IDX data is always 1 channel.

    Raises:
        DatasetError: the folder holds neither IDX files nor train/val class folders.

    Example:
        >>> data = load_dataset("fixture")
        >>> data.train_images.shape, data.in_chans, data.num_classes
        (torch.Size([3000, 1, 28, 28]), 1, 10)
    """
    spec = os.fspath(spec) if spec is not None else DEFAULT_ROOT
    if spec == "fixture":
        (x, y), (vx, vy) = load_fashion_mnist("train", source="fixture"), load_fashion_mnist("test", source="fixture")
        return Dataset(x[:, None], y, vx[:, None], vy, 1, 10, "fixture")
    root = Path(spec)
    if not root.is_dir():
        raise DatasetError(f"--data {spec!r} is not a folder. Hint: pass 'fixture', a folder of IDX files "
                           f"(e.g. {DEFAULT_ROOT}) or an ImageFolder root with train/ and val/")
    if any(root.glob("train-images*")):
        (x, y), (vx, vy) = load_idx(root, "train"), load_idx(root, "test")
        return Dataset(x[:, None], y, vx[:, None], vy, 1, int(y.max()) + 1, str(root))
    val = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or val is None:
        raise DatasetError(f"{root} holds neither IDX files (train-images-idx3-ubyte[.gz]) nor train/ and val/ "
                           "class folders. Hint: lay an ImageFolder out as root/train/CLASS/img.png and "
                           "root/val/CLASS/img.png")
    x, y, classes = load_image_folder(root / "train", size, channels)
    vx, vy, val_classes = load_image_folder(val, size, channels)
    if classes != val_classes:
        raise DatasetError(f"{root}: train classes {classes} differ from {val.name} classes {val_classes}")
    return Dataset(x, y, vx, vy, channels, len(classes), str(root))


def make_loaders(data: Dataset, *, batch_size: int, seed: int = 0, max_batches: int | None = None,
                 eval_batch_size: int = 1000, device: str | torch.device = "cpu"):
    """(train, val) `TensorLoader`s; the validation set is normalised with the training statistics."""
    train = TensorLoader(data.train_images, data.train_labels, batch_size, seed=seed, max_batches=max_batches,
                         device=device)
    val = TensorLoader(data.test_images, data.test_labels, eval_batch_size, train=False, mean=train.mean,
                       std=train.std, device=device)
    return train, val


# ---- run folders, git ------------------------------------------------------------------------

def git_revision(path: str | os.PathLike | None = None) -> str:
    """`git describe --always --dirty` of the checkout holding `path` (default: this package), or "unknown"."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def default_out(method: str) -> Path:
    """`runs/<method>-<YYYYmmdd-HHMMSS>`: a fresh folder per run, so nothing is overwritten."""
    return Path("runs") / f"{method}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def prepare_out(out: str | os.PathLike, *, resume: bool = False, force: bool = False) -> Path:
    """Create the run folder; refuse to reuse one that holds results unless resuming or forced."""
    out = Path(out)
    if (out / "results.json").exists() and not (resume or force):
        raise OutputExistsError(f"{out} already holds a finished run (results.json). Hint: pass --resume "
                                "to continue it, --force to start over in it, or another --out")
    if dist_info().is_main:
        out.mkdir(parents=True, exist_ok=True)
    return out


# ---- training --------------------------------------------------------------------------------

def fit(trainer, epochs: int, *, resume: bool = False,
        restore: Callable[[Any, CheckpointInfo], None] | None = None) -> list[dict[str, Any]]:
    """Train `trainer` to `epochs` epochs in total, resuming from its checkpoint if asked.

    On resume the checkpoint's metadata is read first and `restore(trainer, info)` may switch
    the trainer to the form the checkpoint holds (e.g. build the grown target and call
    `trainer.replace_model`); then weights, optimizer, RNG and history are loaded. The
    JSON-lines log is rewritten from the checkpoint's history, so it never holds epochs the
    checkpoint does not. A fresh run starts a fresh log.

    Returns:
        The trainer's per-epoch history.
    """
    ckpt, log = trainer.checkpoint_path, trainer.log_path
    resuming = resume and ckpt is not None and ckpt.is_file()
    if resuming:
        info = read_checkpoint_info(ckpt)
        if restore is not None:
            restore(trainer, info)
        trainer.load_checkpoint(ckpt)
    if log is not None and trainer.dist.is_main:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(json.dumps(r) + "\n" for r in trainer.history) if resuming else "")
    return trainer.fit(epochs)


def make_trainer(cfg: Any, model, loaders, schedule, run_dir: str | os.PathLike, **hooks):
    """A `Trainer` with a recipe config's optimiser settings, logging to and checkpointing in `run_dir`.

    `cfg` needs `momentum`, `weight_decay` and `seed`; `hooks` are further Trainer arguments
    (`on_epoch_start`, `step_context`, `eval_size`, `form`, `plan`).
    """
    from .loop import Trainer

    train, val = loaders
    run_dir = Path(run_dir)
    return Trainer(model, train, val, schedule=schedule, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   seed=cfg.seed, log_path=run_dir / "log.jsonl", checkpoint_path=run_dir / "last.safetensors",
                   **hooks)


def train_baseline(cfg: Any, model, data: Dataset, schedule, run_dir: str | os.PathLike,
                   size: int | None = None) -> dict[str, Any]:
    """The comparison every recipe offers: `model` trained at full size on `schedule` for `cfg.epochs`.

    `cfg` needs `size` (unless `size` is given), `epochs`, `batch_size`, `seed`, `max_batches`,
    `momentum`, `weight_decay` and `resume`. The size is set in the first epoch's callback, so
    the one-off resize counts as training time, as it does for every method.
    """
    size = size or cfg.size
    loaders = make_loaders(data, batch_size=cfg.batch_size, seed=cfg.seed, max_batches=cfg.max_batches)

    def full_size(trainer, epoch):
        if trainer.size != size:
            trainer.set_input_size(size)

    trainer = make_trainer(cfg, model, loaders, schedule, run_dir, on_epoch_start=[full_size])
    return summarize(fit(trainer, cfg.epochs, resume=cfg.resume))


# ---- measuring -------------------------------------------------------------------------------

def time_to_accuracy(history: Sequence[Mapping[str, Any]], target: float | None,
                     tolerance: float = TOLERANCE) -> tuple[float | None, int | None]:
    """(wall seconds, epoch) at the first epoch with val_acc ≥ target − tolerance, or (None, None)."""
    if target is None:
        return None, None
    for record in history:
        acc = record.get("val_acc")
        if acc is not None and acc >= target - tolerance - 1e-12:
            return float(record["wall"]), int(record["epoch"])
    return None, None


def summarize(history: Sequence[Mapping[str, Any]], *, plan: Plan | str | None = None,
              **extra: Any) -> dict[str, Any]:
    """One run's measurements: final and best accuracy, total wall time, and its per-epoch log."""
    history = [dict(r) for r in history]
    accs = [r["val_acc"] for r in history if r.get("val_acc") is not None]
    plan_dict = json.loads(plan) if isinstance(plan, str) else plan.to_dict() if plan is not None else None
    return {"final_acc": accs[-1] if accs else None, "best_acc": max(accs) if accs else None,
            "wall": history[-1]["wall"] if history else 0.0, "epochs": len(history),
            "sizes": [r["size"] for r in history], "forms": [r["form"] for r in history],
            "plan": plan_dict, **extra, "history": history}


def compare(runs: Mapping[str, dict[str, Any]], baseline: str | None = "baseline", *,
            target: float | None = None, tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """Time-to-accuracy rows; adds `target_acc`, `time_to_target`, `epoch_to_target` to each run.

    The target is `target` if given, else the baseline's final accuracy, else each run's own
    final accuracy. `saved` is 1 − t_run / t_baseline, both times to the same target.
    """
    base = runs.get(baseline) if baseline else None
    goal = target if target is not None else base["final_acc"] if base else None
    source = "given" if target is not None else f"{baseline} final" if base else "own final"
    t_base = time_to_accuracy(base["history"], goal, tolerance)[0] if base else None
    rows = []
    for name, run in runs.items():
        run_goal = goal if goal is not None else run["final_acc"]
        t, epoch = time_to_accuracy(run["history"], run_goal, tolerance)
        run.update(target_acc=run_goal, target_source=source, tolerance=tolerance,
                   time_to_target=t, epoch_to_target=epoch)
        saved = None if t is None or not t_base else 1.0 - t / t_base
        saved_total = None if t is None or not base or not base["wall"] else 1.0 - t / base["wall"]
        run.update(saved=saved, saved_vs_baseline_total=saved_total)
        rows.append({"method": name, "final_acc": run["final_acc"], "wall": run["wall"],
                     "time_to_target": t, "epoch_to_target": epoch, "saved": saved,
                     "saved_vs_baseline_total": saved_total, "target_acc": run_goal})
    return rows


def _fmt(value, spec: str, none: str = "—") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text side-by-side table of `compare` rows."""
    target = next((r["target_acc"] for r in rows if r.get("target_acc") is not None), None)
    head = ["method", "final acc", "wall s", f"time to {_fmt(target, '.2%')} (±0.3) s", "epoch", "saved"]
    body = [[r["method"], _fmt(r["final_acc"], ".2%"), _fmt(r["wall"], ".1f"),
             _fmt(r["time_to_target"], ".1f", "not reached"), _fmt(r["epoch_to_target"], "d"),
             _fmt(r["saved"], "+.1%")] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


# ---- files -----------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Plan):
        return obj.to_dict()
    return obj


def write_results(path: str | os.PathLike, results: Mapping[str, Any], *, force: bool = True) -> Path:
    """Write `results` (config, plans, runs, ...) as indented JSON, atomically; rank 0 only."""
    path = Path(path)
    if dist_info().is_main:
        text = json.dumps(_jsonable(results), indent=1, sort_keys=False)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"), force=force)
    return path


def plot_runs(path: str | os.PathLike, runs: Mapping[str, Mapping[str, Any]], *, title: str = "",
              target: float | None = None) -> Path | None:
    """Accuracy against wall time and against epoch, one line per run (like the papers' Figs 5, 9, 10).

    A dotted line marks the target accuracy (shaded: the 0.3-point tolerance) and a circle where
    each run first reached it. Rank 0 only; returns the path written (None on other ranks).
    """
    return plot_panels(path, [(title, runs, target)])


def plot_panels(path: str | os.PathLike, panels: Sequence[tuple[str, Mapping[str, Mapping[str, Any]], float | None]]
                ) -> Path | None:
    """`plot_runs` for several groups of runs, one row of two plots per (title, runs, target)."""
    if not dist_info().is_main:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for (title, runs, target), (ax_t, ax_e) in zip(panels, axes):
        _plot_group(ax_t, ax_e, runs, target)
        ax_t.set_title(f"{title}: accuracy against wall time" if title else "accuracy against wall time", fontsize=10)
        ax_e.set_title(f"{title}: accuracy against epoch" if title else "accuracy against epoch", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), force=True)
    plt.close(fig)
    return path


def _plot_group(ax_t, ax_e, runs: Mapping[str, Mapping[str, Any]], target: float | None) -> None:
    for name, run in runs.items():
        hist = [r for r in run["history"] if r.get("val_acc") is not None]
        walls, epochs, accs = [r["wall"] for r in hist], [r["epoch"] for r in hist], [r["val_acc"] for r in hist]
        style = dict(ls="--", color="k") if "baseline" in name else {}
        (line,) = ax_t.plot(walls, accs, marker=".", label=name, **style)
        ax_e.plot(epochs, accs, marker=".", label=name, color=line.get_color(), ls=line.get_linestyle())
        hit = next((r for r in hist if r["epoch"] == run.get("epoch_to_target")), None)
        if hit is not None:
            ax_t.plot([hit["wall"]], [hit["val_acc"]], "o", color=line.get_color(), ms=9, mfc="none")
    if target is not None:
        for ax in (ax_t, ax_e):
            ax.axhline(target, color="grey", lw=0.8, ls=":")
            ax.axhspan(target - TOLERANCE, target, color="grey", alpha=0.15, lw=0)
    late = [r["val_acc"] for run in runs.values() for r in run["history"][len(run["history"]) // 3:]
            if r.get("val_acc") is not None]
    for ax, label in ((ax_t, "wall time, training only (s)"), (ax_e, "epoch")):
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        if late:
            ax.set_ylim(max(0.0, min(late) - 0.02), min(1.0, max(late) + 0.01))
    ax_e.legend(loc="lower right", fontsize=8)


# ---- the end of a recipe ---------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    """What the timings depend on: torch version and threads, CPU count, load averages now."""
    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        info["loadavg"] = None
    return info


def finish(out: str | os.PathLike, method: str, config: Any, runs: dict[str, dict[str, Any]], *,
           plan: Plan | str | None = None, baseline: str = "baseline", target: float | None = None,
           extra: Mapping[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Compare the runs, write `results.json` and `results.png` into `out`, print the table.

    Returns:
        The results: method, config, plan, git revision, machine, every run (per-epoch log,
        final accuracy, time to target), the comparison rows, and the method's own final
        accuracy and time to target at the top level.
    """
    out = Path(out)
    rows = compare(runs, baseline if baseline in runs else None, target=target)
    mine = runs[method]
    results = {"method": method, "final_acc": mine["final_acc"], "time_to_target": mine["time_to_target"],
               "target_acc": mine["target_acc"], "saved": mine.get("saved"), "config": config,
               "plan": plan, "git_revision": git_revision(), "created": datetime.datetime.now().isoformat(
                   timespec="seconds"), "machine": machine_info(), **(extra or {}),
               "comparison": rows, "table": format_table(rows), "runs": runs}
    results = _jsonable(results)
    if isinstance(results.get("plan"), str):
        results["plan"] = json.loads(results["plan"])
    write_results(out / "results.json", results)
    plot_runs(out / "results.png", runs, title=method.replace("_", " "), target=mine["target_acc"])
    if not quiet and dist_info().is_main:
        print(results["table"])
        print(f"results: {out / 'results.json'}, plot: {out / 'results.png'}")
    return results
