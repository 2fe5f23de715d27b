"""ONNX export with a dynamic batch axis, onnx.checker, and an onnxruntime parity check.

The exporter is chosen per call. The default is `torch.onnx.export(dynamo=True)` (torch.export
plus onnxscript), the supported path: it exports every model the tests cover, including
pre-train AlexNet, whose padded convs leave the TorchScript exporter unable to size the
adaptive pool. The TorchScript exporter (`dynamo=False`) is used for `opset < 18`, which the
dynamo exporter cannot produce (it silently keeps 18), when onnxscript is missing, and as a
fallback when the dynamo exporter fails. The model is exported and checked in memory, and only
then written, atomically, so a failed export or parity check leaves no file behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any

import torch
import torch.nn as nn

from .deprecation import moved
from .errors import ExportError as _ExportError
from .errors import InputSizeError, first_line
from .progress import stages

__all__ = ["ATOL", "RTOL", "DYNAMO_MIN_OPSET", "export_onnx"]

ATOL = 1e-4  # onnxruntime vs PyTorch, absolute, on the parity batch ...
RTOL = 1e-4  # ... plus this fraction of the largest |output|. float32 alone is off by up to
# ~8e-6 of it (PyTorch float32 vs float64 on a BN-calibrated efficientnet_b0 with logits near
# 100), so large logits can't agree to 1e-4 absolute; a real export bug is off by percents.
DYNAMO_MIN_OPSET = 18  # the dynamo exporter has no implementations below this
_EXPORT_BATCH = 2  # example batch for tracing; the batch axis is declared dynamic anyway
_PARITY_BATCH = 3  # a different batch than the trace's, so the dynamic axis is exercised
_SEED = 0


def export_onnx(model: nn.Module, path, *, input_size: int, in_chans: int = 3, opset: int | None = None,
                check: bool = True, force: bool = False, progress: bool | None = False) -> dict[str, Any]:
    """Export `model` to ONNX at `path`, with a dynamic batch axis, checked before it is written.

    `onnx.checker` always runs. With `check=True` and onnxruntime installed, the ONNX outputs
    on a fixed random batch (seed 0, batch 3, N(0, 1) pixels) are compared with PyTorch's; a
    maximum absolute error above `ATOL + RTOL * max|output|` (1e-4 + 1e-4 of the largest PyTorch
    output; just 1e-4 for logits up to 1) is an error and nothing is written.

    Args:
        model: the network (put in eval mode for the export; its mode is restored).
        path: output .onnx file; refused if it exists and `force` is False.
        input_size: height and width of the exported input, pixels.
        in_chans: input channels.
        opset: ONNX opset; default the dynamo exporter's. Below 18 the TorchScript exporter is used.
        check: compare with PyTorch under onnxruntime.
        force: overwrite `path`.
        progress: a bar over the stages (forward, export, checker, parity, write) on stderr; None:
            when stderr is a terminal.

    Returns:
        A dict: path, exporter ("dynamo" or "torchscript"), opset, input_size, in_chans,
        onnxruntime (bool: was the comparison run), max_abs_error and output_max_abs
        (None without the comparison), tolerance (what max_abs_error was held to), atol, rtol, and
        fallback (why the TorchScript exporter
        was used, or None).

    Raises:
        OutputExistsError, CheckpointError: `path` exists without `force`, or can't be written.
        InputSizeError: the model cannot run at `input_size`.
        _ExportError: both exporters failed, onnx.checker failed, or the outputs differ.

    Example:
        >>> small, plan = modelsurgery.load("small.safetensors")
        >>> export_onnx(small, "small.onnx", input_size=plan.input_size)["max_abs_error"] < 1e-4
        True
    """
    from .checkpoint import warn_nonfinite
    from .paths import check_output

    check_output(path, force)  # fail before the slow part, and again at the atomic rename
    warn_nonfinite(model.state_dict(), f"{type(model).__name__} weights")
    return export_checked(model, path, input_size=input_size, in_chans=in_chans, opset=opset, check=check,
                          force=force, progress=progress)


def export_checked(model, path, *, input_size, in_chans, opset, check, force, progress=False) -> dict[str, Any]:
    """`export_onnx` after its checks: the caller has checked `path` and warned about the weights.

    The file layer (`convert.export_file`) calls it after `checkpoint.load`, which has already
    named the file in its warning about non-finite weights.
    """
    names = ["forward", "export", "onnx.checker", *(["onnxruntime"] if check else []), "write"]
    with stages(names, "ONNX export", enabled=progress) as step:
        return _export_checked(model, path, input_size, in_chans, opset, check, force, step)


def _export_checked(model, path, input_size, in_chans, opset, check, force, step) -> dict[str, Any]:
    import onnx

    from .checkpoint import atomic_write

    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(_SEED)
        example = torch.randn(_EXPORT_BATCH, in_chans, input_size, input_size, generator=gen)
        batch = torch.randn(_PARITY_BATCH, in_chans, input_size, input_size, generator=gen)
        step("forward")
        reference = _forward(model, batch, input_size)
        step("export")
        proto, exporter, fallback = _export(model, example, opset)
    finally:
        model.train(was_training)
    step("onnx.checker")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:  # onnx raises ValidationError and InferenceError
        raise _ExportError(f"the exported model fails onnx.checker ({first_line(err)}). "
                          "Hint: try another --opset") from None
    version = _opset_of(proto)
    if opset is not None and version != opset:
        raise _ExportError(f"the exporter produced opset {version}, not the requested {opset}. "
                          f"Hint: use --opset {version}, or leave --opset out")
    report = {"path": None, "exporter": exporter, "opset": version, "input_size": int(input_size),
              "in_chans": int(in_chans), "onnxruntime": False, "max_abs_error": None,
              "output_max_abs": None, "tolerance": None, "atol": ATOL, "rtol": RTOL,
              "fallback": fallback}
    if check:
        step("onnxruntime")
        report.update(_compare(proto, batch, reference))
    step("write")
    report["path"] = atomic_write(path, lambda tmp: onnx.save_model(proto, tmp), force=force)
    return report


def _forward(model: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError) as err:
        raise InputSizeError(f"the model cannot run at input size {size} ({first_line(err)}). "
                             "Hint: pass a larger --input-size") from None
    if not isinstance(out, torch.Tensor):
        raise _ExportError(f"the model returns {type(out).__name__}, not one tensor; "
                          "modelsurgery exports single-output classifiers")
    return out


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, deprecation warnings and log lines."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=False):
            lg.setLevel(level)


def _export(model: nn.Module, example: torch.Tensor, opset: int | None):
    """(ModelProto, exporter name, why the TorchScript exporter was used or None)."""
    reason = None
    if opset is not None and opset < DYNAMO_MIN_OPSET:
        reason = f"opset {opset} < {DYNAMO_MIN_OPSET}"
    else:
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ImportError:
            reason = "onnxscript is not installed"
    dynamo_error = None
    if reason is None:
        try:
            return _export_dynamo(model, example, opset), "dynamo", None
        except Exception as err:  # torch.export raises many types; the fallback decides
            dynamo_error = first_line(err)
            reason = f"the dynamo exporter failed: {dynamo_error}"
    try:
        return _export_torchscript(model, example, opset), "torchscript", reason
    except Exception as err:
        first = f"dynamo exporter: {dynamo_error}; " if dynamo_error else ""
        hint = (f"pass --opset {DYNAMO_MIN_OPSET} or higher" if opset is not None and opset < DYNAMO_MIN_OPSET
                else "report this model")
        raise _ExportError(f"ONNX export failed ({first}TorchScript exporter: {first_line(err)}). "
                          f"Hint: {hint}") from None


def _export_dynamo(model: nn.Module, example: torch.Tensor, opset: int | None):
    with _quiet():
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, verbose=False, opset_version=opset, external_data=False,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    return program.model_proto


def _export_torchscript(model: nn.Module, example: torch.Tensor, opset: int | None):
    import onnx

    buf = io.BytesIO()
    with _quiet():
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_model_from_string(buf.getvalue())


def _opset_of(proto) -> int:
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _compare(proto, batch: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """Run the ONNX model under onnxruntime and compare with PyTorch's outputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnxruntime": False}
    import numpy as np

    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise _ExportError(f"onnxruntime cannot run the exported model ({first_line(err)}). "
                          "Hint: try another --opset") from None
    ref = reference.detach().float().numpy()
    if got.shape != ref.shape:
        raise _ExportError(f"ONNX output shape {tuple(got.shape)} != PyTorch's {tuple(ref.shape)} "
                          f"at batch {batch.shape[0]}: the batch axis is not dynamic")
    finite = np.isfinite(got) & np.isfinite(ref)
    same_nonfinite = ~finite & ((got == ref) | (np.isnan(got) & np.isnan(ref)))
    diff = np.abs(got[finite].astype(np.float64) - ref[finite])
    error = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref[np.isfinite(ref)]).max()) if np.isfinite(ref).any() else 0.0
    tolerance = ATOL + RTOL * scale
    if not bool((finite | same_nonfinite).all()) or not error <= tolerance:
        shown = "non-finite mismatch" if math.isfinite(error) and error <= tolerance else f"{error:.3g}"
        raise _ExportError(f"ONNX outputs differ from PyTorch's: max |error| {shown} > {tolerance:.3g} "
                          f"(atol {ATOL:g} + rtol {RTOL:g} x max |output| {scale:.3g}). "
                          "Hint: try another --opset; nothing was written")
    return {"onnxruntime": True, "max_abs_error": error, "output_max_abs": scale, "tolerance": tolerance}



# `export_file` moved to the file layer (`modelsurgery.files`), which imports this module; the error to `errors`.
__getattr__ = moved(__name__, {"ExportError": "modelsurgery.errors", "export_file": "modelsurgery.files"})
