"""msurg: the command-line shell around the modelsurgery API.

Each command parses its options, calls one API function, and prints. Library errors become
a one-line message and exit code 1 here, in `main`, and nowhere else.
"""

from __future__ import annotations

import json
import warnings

import click

from .errors import SurgeryError

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
    f = click.option("--kernel-map", default=None, metavar="K:K',...",
                     help="Override Table 1 (1:1,3:2,5:3,7:5,11:7), e.g. 3:2,5:3. Other sizes use k'=round(2k/3).")(f)
    f = click.option("--target-size", type=click.IntRange(min=1), default=None,
                     help="Target input size in pixels [default: the model's pretrained_cfg size, else 224].")(f)
    f = click.option("--input-size", type=click.IntRange(min=1), default=None,
                     help="Pre-train input size [default: round(target / s1), s1 = first shrunk kernel's k/k'].")(f)
    f = click.option("--in-chans", type=click.IntRange(min=1), default=None, help="Input channels (passed to the model).")(f)
    f = click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Classes (passed to the model).")(f)
    f = click.option("--even-padding", type=click.Choice(["alternate", "bottom-right"]), default="alternate",
                     show_default=True, help="Where even kernels put their extra pixel of padding.")(f)
    return f


def _plan_for(model, num_classes, in_chans, input_size, target_size, kernel_map, even_padding):
    from .shrink import shrink

    return shrink(model, input_size=input_size, target_size=target_size, kernel_map=kernel_map,
                  even_padding=even_padding, num_classes=num_classes, in_chans=in_chans)


@cli.command()
@click.argument("model")
@_model_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan and its cost table as JSON.")
def plan(model, num_classes, in_chans, input_size, target_size, kernel_map, even_padding, as_json):
    """Show what shrink would do to MODEL: kernels, feature maps and Eq. 3 costs per layer.

    The totals count every conv and FC-interface multiplication of both networks at batch 1,
    the predicted speed-up is their ratio, and the Eq. 4 bounds bracket it.
    """
    from .cost import cost_table, format_table

    _, p = _plan_for(model, num_classes, in_chans, input_size, target_size, kernel_map, even_padding)
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
@click.option("--method", type=click.Choice(["pinv", "bilinear"]), default="pinv", show_default=True,
              help="Kernel downscaling for --weights (pinv is the exact inverse of grow's pinv).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def shrink(model, out, num_classes, in_chans, input_size, target_size, kernel_map, even_padding,
           weights, method, force):
    """Build MODEL's pre-train variant and write its weights and plan to --out.

    The weights get the model's own init at the new shapes, or, with --weights, the trained
    target's weights downscaled with their amplitude preserved.
    """
    from .convert import shrink_to_file

    plan_, path = shrink_to_file(model, out, weights=weights, method=method, force=force,
                                 input_size=input_size, target_size=target_size, kernel_map=kernel_map,
                                 even_padding=even_padding, num_classes=num_classes, in_chans=in_chans)
    changed = sum(c.changed for c in plan_.convs)
    click.echo(f"wrote {path}: {plan_.source.spec} pre-train at {plan_.input_size}px "
               f"(target {plan_.target_size}px), {changed}/{len(plan_.convs)} convs shrunk, "
               f"{len(plan_.fcs)} FC interface(s), {len(plan_.resamples)} resample(s)")


@cli.command()
@click.argument("ckpt", type=click.Path())
@click.option("--to", "to", type=click.IntRange(min=1), default=None,
              help="Target input size; sets the FC interface's HxW [default: the plan's target size].")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Output .safetensors [default: CKPT's name with -target.safetensors].")
@click.option("--method", type=click.Choice(["bilinear", "pinv", "replicate", "lsq"]), default=None,
              help="Kernel upscaling; lsq starts from pinv and fits each kernel to its pre-train layer by "
                   "least squares on the --calibrate images [default: lsq with --calibrate, else pinv].")
@click.option("--fc", type=click.Choice(["resize", "gaussian"]), default="resize", show_default=True,
              help="FC interface: resize like a kernel, or keep weights on a grid and Gaussian-pad.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --fc gaussian.")
@click.option("--plan", "plan_file", type=click.Path(), default=None,
              help="Plan for a .pt/.pth CKPT that carries none: a modelsurgery .safetensors or plan .json.")
@click.option("--calibrate", type=click.Path(), default=None,
              help="Training images for calibration at the target size (a Fashion-MNIST/MNIST IDX folder, "
                   "an ImageFolder, or 'fixture'): least-squares kernel fit, then BatchNorm recalibration.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def grow(ckpt, to, out, method, fc, seed, plan_file, calibrate, force):
    """Convert a trained pre-train checkpoint CKPT into the full-size target model.

    Every planned kernel is upscaled with its amplitude preserved, the FC interface is
    converted, and everything else is copied. The result loads with strict=True into the stock
    model (timm.create_model(name) or the torchvision constructor). Afterwards a one-line
    fidelity check compares pre-train and grown logits on fixture images.
    """
    from .convert import grow_file

    report = grow_file(ckpt, out, to=to, method=method, fc=fc, seed=seed, plan_file=plan_file,
                       calibrate=calibrate, force=force)
    click.echo(report)


@cli.command()
@click.argument("ckpt", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .onnx file.")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Export input size [default: the size of the network the checkpoint holds].")
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset [default: the exporter's].")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def export(ckpt, out, input_size, opset, force):
    """Export the model in CKPT (pre-train or target) to ONNX with a dynamic batch axis.

    onnx.checker runs on the result; when onnxruntime is installed the outputs are compared
    with PyTorch's (atol 1e-4) and the maximum error is printed.
    """
    from .export import export_file

    click.echo(export_file(ckpt, out, input_size=input_size, opset=opset, force=force))


def main(argv=None) -> None:
    """Entry point of the `msurg` command."""
    cli.main(args=argv, prog_name="msurg")


if __name__ == "__main__":
    main()
