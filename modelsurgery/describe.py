"""`msurg info`: what a checkpoint holds, read without building its model.

Part of the file layer (`modelsurgery.files`): `describe_file` returns a `CheckpointInfo`, which
`msurg info` formats as text or JSON (`cli.format_info`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import META_PLAN, open_weights, read_plan
from .plan import Plan
from .torchfile import wrapper_prefix

__all__ = ["CheckpointInfo", "describe_file"]


@dataclass(frozen=True)
class CheckpointInfo:
    """What one checkpoint file holds.

    Attributes:
        path: the file.
        format: "safetensors" or "torch" (.pt/.pth/.ckpt).
        plan: the modelsurgery plan in its metadata (None: a plain state_dict).
        tensors: how many tensors the weights have.
        parameters: their elements, floating-point tensors only (parameters and float buffers
            such as BatchNorm statistics; not `num_batches_tracked`).
        key: torch, the top-level key the commands read (None: a bare state_dict).
        prefix: torch, the prefix every key shares that wrappers put there (DDP's `module.`,
            torch.compile's `_orig_mod.`, a LightningModule's attribute); the commands remove it
            where that makes the keys match the model.
        ema_key: torch, the top-level key of the EMA weights that `--ema` reads (None: none).
        ignored: torch, the other top-level keys (optimizer, args, epoch, ...), not read.
    """

    path: Path
    format: str
    plan: Plan | None
    tensors: int
    parameters: int
    key: str | None = None
    prefix: str = ""
    ema_key: str | None = None
    ignored: tuple[str, ...] = ()

    @property
    def form(self) -> str:
        """"pretrain", "target", or "plain state_dict" (no plan)."""
        return self.plan.form if self.plan is not None else "plain state_dict"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, the plan's summary and the whole plan."""
        plan = self.plan
        summary = {} if plan is None else {
            "model": plan.source.spec, "model_kwargs": plan.source.kwargs_dict(), "input_size": plan.input_size,
            "target_size": plan.target_size, "in_chans": plan.in_chans,
            "convs_shrunk": sum(c.changed for c in plan.convs), "convs": len(plan.convs),
            "fc_interfaces": [f.name for f in plan.fcs]}
        return {"path": str(self.path), "format": self.format, "form": self.form, **summary,
                "tensors": self.tensors, "parameters": self.parameters, "key": self.key, "prefix": self.prefix,
                "ema_key": self.ema_key, "ignored": list(self.ignored),
                "plan": None if plan is None else plan.to_dict()}


def describe_file(path) -> CheckpointInfo:
    """`msurg info`: read a checkpoint (safetensors or .pt/.pth/.ckpt) and say what it holds.

    Loads the tensors (a .pt with `weights_only=True`, refusing code) but builds no model.

    Example:
        >>> info = describe_file("small.safetensors")
        >>> info.form, info.plan.input_size
        ('pretrain', 160)
        >>> describe_file("checkpoint.pth.tar").ema_key   # timm's train.py
        'state_dict_ema'
    """
    stored, meta = open_weights(path)
    plan = read_plan(meta, path) if META_PLAN in meta else None
    weights = stored.weights if stored.weights is not None else stored.ema
    floats = [v.numel() for v in weights.values() if v.is_floating_point()]
    prefix = wrapper_prefix(weights, stored.lightning) if stored.format == "torch" else ""
    return CheckpointInfo(stored.path, stored.format, plan, len(weights), sum(floats), stored.key, prefix,
                          stored.ema_key, stored.ignored)
