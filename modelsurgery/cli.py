"""msurg: the command-line shell around the modelsurgery API.

Each command parses its options, calls one API function, and prints. Library errors become
a one-line message and exit code 1 here, in `main`, and nowhere else.
"""

from __future__ import annotations

import json
import warnings

import click

from .constants import (
    DEFAULT_DOWNSCALE_METHOD,
    DEFAULT_EVEN_PADDING,
    DEFAULT_FC,
    DEFAULT_UPSCALE,
    DEFAULT_WIDEN_INIT,
    DEFAULT_WIDEN_STD,
    DOWNSCALE_METHODS,
    EVEN_PADDINGS,
    FC_MODES,
    LSQ,
    TABLE1,
    UPSCALES,
    WIDEN_INITS,
)
from .errors import SurgeryError
from .paths import check_paths, target_path

EXIT_CODES = """\b
Exit codes (every command):
  0  success
  1  user or library error (bad model name, file, size, plan); one line on stderr
  2  usage error (unknown option, missing argument)"""


def _warn(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


class _Failure(click.ClickException):
    """A library error as the CLI reports it: one line, exit code 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Group(click.Group):
    """The one place where library errors become messages and exit codes."""

    def invoke(self, ctx: click.Context):
        warnings.showwarning = _warn
        try:
            return super().invoke(ctx)
        except SurgeryError as err:
            raise _Failure(str(err)) from None


@click.group(cls=_Group, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelsurgery", prog_name="msurg")
def cli() -> None:
    """Shrink a CNN's kernels and images for fast pre-training, then grow it back.

    \b
    Typical session:
      msurg plan resnet34                         # what shrink would do, and the predicted speed-up
      msurg shrink resnet34 --out small.safetensors
      ... train the pre-train model at 160 px ...
      msurg grow small.safetensors --out big.safetensors   # loads strictly into timm's resnet34

    MODEL is a timm name (resnet34) or torchvision:NAME (torchvision:alexnet). Weights are never
    downloaded; start from a local checkpoint with --weights.
    """


def _model_options(f):
    table = ",".join(f"{k}:{v}" for k, v in TABLE1.items())
    f = click.option("--depth", default="1", metavar="FACTOR", show_default=True,
                     help="Keep this fraction of each stage's repeated residual blocks (at least one per stage); "
                          "grow brings the others back with no effect.")(f)
    f = click.option("--width", default="1", metavar="FACTOR", show_default=True,
                     help="Keep this fraction of every group of channels (residual streams, concatenations, "
                          "depthwise and grouped convs move together; the input and the classes stay).")(f)
    f = click.option("--kernel-map", default=None, metavar="K:K',...|keep",
                     help=f"Override Table 1 ({table}), e.g. 3:2,5:3. Other sizes use k'=round(2k/3). 'keep' keeps "
                          "every kernel and the input size, to shrink width and depth alone.")(f)
    f = click.option("--target-size", type=click.IntRange(min=1), default=None,
                     help="Target input size in pixels [default: the model's pretrained_cfg size, else 224].")(f)
    f = click.option("--input-size", type=click.IntRange(min=1), default=None,
                     help="Pre-train input size [default: round(target / s1), s1 = first shrunk kernel's k/k'].")(f)
    f = click.option("--in-chans", type=click.IntRange(min=1), default=None,
                     help="Input channels (passed to the model).")(f)
    f = click.option("--num-classes", type=click.IntRange(min=1), default=None,
                     help="Classes (passed to the model).")(f)
    f = click.option("--even-padding", type=click.Choice(EVEN_PADDINGS), default=DEFAULT_EVEN_PADDING,
                     show_default=True, help="Where even kernels put their extra pixel of padding.")(f)
    return f


def _plan_for(model, num_classes, in_chans, input_size, target_size, kernel_map, even_padding, width, depth):
    from .shrink import shrink

    return shrink(model, input_size=input_size, target_size=target_size, kernel_map=kernel_map,
                  even_padding=even_padding, num_classes=num_classes, in_chans=in_chans, width=width, depth=depth)


@cli.command()
@click.argument("model")
@_model_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan and its cost table as JSON.")
def plan(model, num_classes, in_chans, input_size, target_size, kernel_map, width, depth, even_padding, as_json):
    """Show what shrink would do to MODEL: kernels, feature maps and Eq. 3 costs per layer.

    The totals count every conv and FC-interface multiplication of both networks at batch 1,
    the predicted speed-up is their ratio, and the Eq. 4 bounds bracket it.
    """
    from .cost import cost_table, format_table

    _, p = _plan_for(model, num_classes, in_chans, input_size, target_size, kernel_map, even_padding, width, depth)
    if as_json:
        click.echo(json.dumps({"plan": p.to_dict(), "cost": cost_table(p).to_dict()}, indent=1))
    else:
        click.echo(format_table(p))


@cli.command()
@click.argument("model")
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .safetensors file.")
@_model_options
@click.option("--weights", type=click.Path(), default=None,
              help="Trained target checkpoint (.safetensors/.pt/.pth) to downscale instead of a fresh init.")
@click.option("--method", type=click.Choice(DOWNSCALE_METHODS), default=DEFAULT_DOWNSCALE_METHOD, show_default=True,
              help="Kernel downscaling for --weights (pinv is the exact inverse of grow's pinv).")
@click.option("--ema", is_flag=True,
              help="Read the EMA weights of --weights (timm's state_dict_ema, torchvision's model_ema).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def shrink(model, out, num_classes, in_chans, input_size, target_size, kernel_map, width, depth, even_padding,
           weights, method, ema, force):
    """Build MODEL's pre-train variant and write its weights and plan to --out.

    The weights get the model's own init at the new shapes, or, with --weights, the trained
    target's weights downscaled with their amplitude preserved. --weights takes a .safetensors or
    a .pt/.pth/.ckpt as timm's train.py, torchvision's reference scripts or Lightning write it; a
    DDP/torch.compile/LightningModule prefix is removed where that makes the keys match MODEL.

    --width and --depth shrink the network in channels and blocks as well (Liu et al. 2016,
    §III-C/E); --kernel-map keep shrinks them alone. The plan records which channels and blocks
    were kept, so that `msurg grow` needs nothing but the file.
    """
    check_paths(out, force, weights)  # file errors at once, before the file layer imports torch
    from .files import shrink_to_file

    click.echo(format_report(shrink_to_file(
        model, out, weights=weights, method=method, ema=ema, force=force, input_size=input_size,
        target_size=target_size, kernel_map=kernel_map, even_padding=even_padding, num_classes=num_classes,
        in_chans=in_chans, width=width, depth=depth)))


@cli.command()
@click.argument("ckpt", type=click.Path())
@click.option("--to", "to", type=click.IntRange(min=1), default=None,
              help="Target input size; sets the FC interface's HxW [default: the plan's target size].")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Output .safetensors [default: CKPT's name with -target.safetensors].")
@click.option("--upscale", "--method", "upscale", type=click.Choice([*UPSCALES, LSQ]), default=None,
              help=f"Kernel upscaling (--method is its old name); {LSQ} starts from {DEFAULT_UPSCALE} and fits "
                   f"each kernel to its pre-train layer by least squares on the --calibrate images [default: {LSQ} "
                   f"with --calibrate, else {DEFAULT_UPSCALE}].")
@click.option("--fc", type=click.Choice(FC_MODES), default=DEFAULT_FC, show_default=True,
              help="FC interface: resize like a kernel, or keep weights on a grid and Gaussian-pad.")
@click.option("--widen-init", default=DEFAULT_WIDEN_INIT, show_default=True, metavar="|".join(WIDEN_INITS),
              help="New channels of a plan shrunk in width: gaussian N(0, std) filters, zeros, flipped copies "
                   "(Liu et al. 2016, III-C; consumers' weights on them start at zero, or N(0, std) for zeros), "
                   "or net2net copies with the consumers' weights split. All keep the function where norms are "
                   "per channel; only net2net at width 1/2 keeps it through LayerNorm.")
@click.option("--widen-std", type=float, default=DEFAULT_WIDEN_STD, show_default=True,
              help="Standard deviation of --widen-init's Gaussian draws.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --fc gaussian and --widen-init.")
@click.option("--plan", "plan_file", type=click.Path(), default=None,
              help="Plan for a .pt/.pth CKPT that carries none: a modelsurgery .safetensors or plan .json.")
@click.option("--calibrate", type=click.Path(), default=None,
              help="Training images for calibration at the target size (a Fashion-MNIST/MNIST IDX folder, "
                   "an ImageFolder, or 'fixture'): least-squares kernel fit, then BatchNorm recalibration.")
@click.option("--ema", is_flag=True,
              help="Read the EMA weights of CKPT (timm's state_dict_ema, torchvision's model_ema).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def grow(ckpt, to, out, upscale, fc, widen_init, widen_std, seed, plan_file, calibrate, ema, force):
    """Convert a trained pre-train checkpoint CKPT into the full-size target model.

    Every planned kernel is upscaled with its amplitude preserved, the FC interface is
    converted, and everything else is copied. The result loads with strict=True into the stock
    model (timm.create_model(name) or the torchvision constructor). Afterwards a one-line
    fidelity check compares pre-train and grown logits on fixture images.
    """
    check_paths(target_path(ckpt) if out is None else out, force, ckpt)  # before the file layer imports torch
    from .files import grow_file

    click.echo(format_report(grow_file(ckpt, out, to=to, upscale=upscale, fc=fc, seed=seed, plan_file=plan_file,
                                       calibrate=calibrate, ema=ema, force=force, widen_init=widen_init,
                                       widen_std=widen_std)))


@cli.command()
@click.argument("ckpt", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .onnx file.")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Export input size [default: the size of the network the checkpoint holds].")
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset [default: the exporter's].")
@click.option("--plan", "plan_file", type=click.Path(), default=None,
              help="Plan for a .pt/.pth CKPT that carries none: a modelsurgery .safetensors or plan .json.")
@click.option("--ema", is_flag=True,
              help="Read the EMA weights of CKPT (timm's state_dict_ema, torchvision's model_ema).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def export(ckpt, out, input_size, opset, plan_file, ema, force):
    """Export the model in CKPT (pre-train or target) to ONNX with a dynamic batch axis.

    onnx.checker runs on the result; when onnxruntime is installed the outputs are compared
    with PyTorch's (atol 1e-4) and the maximum error is printed.
    """
    check_paths(out, force, ckpt)  # before the file layer imports torch
    from .files import export_file

    click.echo(format_report(export_file(ckpt, out, input_size=input_size, opset=opset, plan_file=plan_file, ema=ema,
                                         force=force)))


@cli.command()
@click.argument("ckpt", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON (the whole plan included).")
def info(ckpt, as_json):
    """Show what the checkpoint CKPT holds, without building its model.

    The form (pre-train, target, or a plain state_dict), the model, its input and target sizes,
    the convs shrunk and FC interfaces from the plan, the tensor and parameter counts; for a
    .pt/.pth/.ckpt also the top-level key and prefix the commands would read, where the EMA
    weights are, and the keys they ignore.
    """
    from .describe import describe_file

    report = describe_file(ckpt)
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else format_info(report))


# --- what the file operations print ------------------------------------------------------------

def format_report(report) -> str:
    """The text `msurg` prints for a `convert.FileReport` (one line; two for grow), after a line
    that says which weights of a .pt/.pth/.ckpt input were read."""
    text = {"shrink": _shrink_text, "grow": _grow_text, "export": _export_text}[report.verb](report)
    return text if report.read is None or report.read.format != "torch" else f"{_read_text(report.read)}\n{text}"


def _keys(keys, n: int = 3) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def _read_text(r) -> str:
    """Which weights of a .pt file were read: `torchfile.WeightsRead`."""
    what = f"[{r.key!r}]" if r.key else " (a bare state_dict)"
    ema = " (EMA weights)" if r.ema else ""
    prefix = f", prefix {r.prefix!r} removed" if r.prefix else ", no prefix"
    left = f", {len(r.left_out)} key(s) outside it left out ({_keys(r.left_out)})" if r.left_out else ""
    return f"read {r.path}{what}{ema}{prefix}{left}"


def format_info(r) -> str:
    """The text `msurg info` prints for a `describe.CheckpointInfo`."""
    plan = r.plan
    lines = [f"{r.path}: {'PyTorch checkpoint' if r.format == 'torch' else 'safetensors'}, "
             f"{'pre-train' if r.form == 'pretrain' else r.form}"]
    if plan is not None:
        kwargs = ", ".join(f"{k}={v}" for k, v in plan.source.kwargs)
        changed = sum(c.changed for c in plan.convs)
        fcs = ", ".join(f.name for f in plan.fcs) or "none"
        lines += [f"model: {plan.source.spec}" + (f" ({kwargs})" if kwargs else ""),
                  f"sizes: input {plan.input_size}px, target {plan.target_size}px, {plan.in_chans} channel(s)",
                  f"convs shrunk: {changed}/{len(plan.convs)}; FC interfaces: {fcs}"]
        if plan.channels or plan.blocks:
            lines.append(f"width {plan.width:g} ({len(plan.channels)} tensor dimension(s) narrowed), depth "
                         f"{plan.depth:g} ({len(plan.blocks)} block(s) dropped)")
    else:
        lines.append("plan: none (shrink --weights, or grow/export with --plan FILE, read it)")
    lines.append(f"tensors: {r.tensors}, {r.parameters:,} parameters (floating-point tensors, buffers included)")
    if r.format == "torch":
        prefix = f"prefix {r.prefix!r}" if r.prefix else "no prefix"
        lines.append(f"weights: {f'[{r.key!r}]' if r.key else 'a bare state_dict'}, {prefix}; "
                     f"EMA weights: {f'[{r.ema_key!r}]' if r.ema_key else 'none'}")
        lines.append(f"ignored: {', '.join(map(repr, r.ignored)) or 'nothing'}")
    return "\n".join(lines)


def _shrink_text(r) -> str:
    plan = r.plan
    changed = sum(c.changed for c in plan.convs)
    return (f"wrote {r.path}: {plan.source.spec} pre-train at {plan.input_size}px (target {plan.target_size}px), "
            f"{changed}/{len(plan.convs)} convs shrunk, {len(plan.fcs)} FC interface(s), "
            f"{len(plan.resamples)} resample(s){_slim_text(plan)}")


def _slim_text(plan, init: str | None = None) -> str:
    """What a plan did to width and depth, for the shrink and grow lines ("" when nothing)."""
    parts = []
    if plan.channels:
        parts.append(f"width {plan.width:g}: {len(plan.channels)} tensor dimension(s) " +
                     (f"widened back ({init})" if init else "narrowed"))
    if plan.blocks:
        parts.append(f"depth {plan.depth:g}: {len(plan.blocks)} block(s) " +
                     ("back with no effect" if init else "dropped"))
    return "".join(f", {p}" for p in parts)


def _grow_text(r) -> str:
    plan, fid = r.plan, r.fidelity
    changed = sum(site.changed for site in plan.convs)
    note = "" if r.fitted is None else f", {r.fitted} kernel(s) fitted by least squares on {r.fit_images} images"
    if r.bn_images:
        note += f", BatchNorm recalibrated on {r.bn_images} images"
    hint = "" if r.bn_images is not None else (". Hint: --calibrate DATA (training images) fits the kernels and "
                                               "BatchNorm at the target size, which closes most of the accuracy dip")
    check = ("fidelity check skipped: its test images (modelsurgery/data/fidelity.safetensors) are not installed"
             if fid is None else
             f"fidelity on {fid.images} fixture images: logit cosine {fid.cosine:.3f}, top-1 agreement "
             f"{fid.agree}/{fid.images} (pre-train at {plan.input_size}px vs grown at {plan.target_size}px)")
    return (f"wrote {r.path}: {plan.source.spec} at {plan.target_size}px (pre-train {plan.input_size}px), "
            f"{changed} kernel(s) grown with {r.method}, {len(plan.fcs)} FC interface(s) ({r.fc})"
            f"{_slim_text(plan, r.widen_init or '-')}{note}\n"
            f"{check}{hint}")


def _export_text(r) -> str:
    rep, plan = r.onnx, r.plan
    how = f"opset {rep['opset']}, {rep['exporter']} exporter"
    if rep["fallback"]:
        how += f" ({rep['fallback'][:120]})"
    if rep["onnxruntime"]:
        parity = (f"onnxruntime max |error| {rep['max_abs_error']:.2g} <= {rep['tolerance']:.2g} "
                  f"(atol {rep['atol']:g} + rtol {rep['rtol']:g} x max |output| {rep['output_max_abs']:.3g})")
    else:
        parity = "onnxruntime is not installed, outputs not compared (pip install 'modelsurgery[onnx]')"
    form = "pre-train" if plan.form == "pretrain" else plan.form
    return (f"wrote {r.path}: {plan.source.spec} {form} at {rep['input_size']}px, {how}, dynamic batch; "
            f"onnx.checker passed; {parity}")


def main(argv=None) -> None:
    """Entry point of the `msurg` command."""
    cli.main(args=argv, prog_name="msurg")


if __name__ == "__main__":
    main()
