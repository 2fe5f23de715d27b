"""Incremental coarse-to-fine training (Liu et al. 2016, §III): 8 → 16 → 32 px, growing the net.

A tiny `C2FNet` trains on 8×8 images; at each stage start it is grown to the next size and the
next width, and training continues on larger images (`grow_c2f`, the functional core):

- conv1, the layer that sees pixels, has a kernel proportional to the image (3, 6, 12 px); it
  grows by pixel replication, each weight a 2×2 block of w/4 (`resize.upscale_replicate`), so on
  a 2× nearest-upsampled image its output equals the small layer's at every other position
  (Liu et al. 2016, Fig. 2). A non-integer step (e.g. 16 → 28) uses the amplitude-preserving
  pinv resize instead (de Gusmão et al. 2016, §3.3.1);
- fc1, the flatten→Linear behind the last map, keeps its weights on the [::2] grid of the
  larger map and gets N(0, 0.01²) elsewhere (`resize.pad_fc_gaussian`);
- conv1, conv2 and fc1 are widened (×2 per stage by default): new filters N(0, 0.01²), their
  consumers' new inputs zero, BatchNorm weight 1 / bias 0 (`resize.widen`, `resize.widen_norm`;
  Liu et al. 2016, Fig. 3), so the new units change nothing until they train;
- BatchNorm statistics are re-measured at the new size on training images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..calibrate import recalibrate_bn
from ..errors import MethodError
from ..nets import C2FNet
from ..resize.channels import widen, widen_norm
from ..resize.fc import pad_fc_gaussian
from ..resize.kernels import resize_kernel, upscale_replicate
from .base import Method, check_int, recalibrate_from_loader

__all__ = ["CoarseToFine", "grow_c2f", "check_stages"]


def grow_c2f(small: C2FNet, size: int, widths: Sequence[int], *, init_std: float = 0.01,
             generator: torch.Generator | None = None) -> C2FNet:
    """`small` grown to input `size` and `widths`: replicate conv1, Gaussian-pad fc1, widen.

    Example:
        >>> big = grow_c2f(C2FNet(8, (4, 8, 16)), 16, (8, 16, 32), generator=torch.Generator().manual_seed(0))
    """
    s = {k: v.detach().cpu() for k, v in small.state_dict().items()}
    big = C2FNet(size, widths, in_chans=small.conv1.in_channels, num_classes=small.fc2.out_features)
    factor = size / small.size
    if factor.is_integer() and big.kernel == small.kernel * factor:
        s["conv1.weight"] = upscale_replicate(s["conv1.weight"], int(factor))
    else:
        s["conv1.weight"] = resize_kernel(s["conv1.weight"], big.kernel, "pinv")
    (c2, h, w), hw = small.fc_map, (size // 4, size // 4)
    s["fc1.weight"] = pad_fc_gaussian(s["fc1.weight"], (c2, h, w), hw, std=init_std, generator=generator)
    (c1_new, c2_new, hidden_new), (c1, _, hidden) = widths, small.widths
    new = dict(generator=generator, std=init_std)
    s["conv1.weight"], _, s["conv2.weight"] = widen(s["conv1.weight"], None, s["conv2.weight"], c1_new - c1, **new)
    fc1 = s["fc1.weight"].reshape(hidden, c2, *hw)
    s["conv2.weight"], _, fc1 = widen(s["conv2.weight"], None, fc1, c2_new - c2, **new)
    s["fc1.weight"], s["fc1.bias"], s["fc2.weight"] = widen(fc1.reshape(hidden, -1), s["fc1.bias"], s["fc2.weight"],
                                                            hidden_new - hidden, **new)
    for norm, extra in (("bn1", c1_new - c1), ("bn2", c2_new - c2)):
        keys = [k for k in s if k.startswith(norm + ".")]
        s.update(widen_norm({k: s[k] for k in keys}, extra))
    big.load_state_dict(s, strict=True)
    return big


def check_stages(sizes: Sequence[int], stage_epochs: Sequence[int]) -> None:
    """Raise `MethodError` unless there is one ascending start epoch per size, from 0, and sizes ascend by 4s."""
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 4 or s % 4 for s in sizes):
        raise MethodError(f"sizes {tuple(sizes)} must be positive multiples of 4 px (C2FNet pools twice). "
                          "Hint: e.g. 8,16,32")
    if list(sizes) != sorted(set(sizes)):
        raise MethodError(f"sizes {tuple(sizes)} must ascend: each stage grows the input. Hint: e.g. 8,16,32")
    starts = list(stage_epochs)
    if len(starts) != len(sizes) or starts != sorted(starts) or starts[0] != 0:
        raise MethodError(f"stage_epochs {tuple(starts)} needs one ascending start per size in {tuple(sizes)}, "
                          "from 0. Hint: e.g. 0,2,4")


class CoarseToFine(Method):
    """Train `C2FNet`s of rising size and width, each grown from the last (Liu et al. 2016).

    Args:
        sizes: px, the input size of each stage (ascending multiples of 4).
        stage_epochs: the epoch at which each stage starts (ascending, from 0).
        widths: (conv1, conv2, fc1) channels of the last stage.
        widen: width factor between stages (1: no new filters).
        init_std: std of the new filters and of the new fc1 weights (Liu et al.: 0.01).
        recalibrate: images for the BatchNorm recalibration after each grow (0: none).
        seed: seeds the new weights (one generator per stage).
        in_chans, num_classes: of the data.

    Attributes:
        model: the first stage's network.
        stage: the stage of the current network; `form` is "target" at the last, else "pretrain".

    Raises:
        MethodError: sizes, stages or widths that do not fit together.

    Example:
        >>> cf = CoarseToFine((8, 16, 32), stage_epochs=(0, 2, 4), widths=(16, 32, 128))
        >>> model = cf.model
        >>> model = cf.grow(model, epoch)        # no-op until a stage starts
    """

    def __init__(self, sizes: Sequence[int] = (8, 16, 32), stage_epochs: Sequence[int] = (0, 2, 4),
                 widths: Sequence[int] = (16, 32, 128), *, widen: int = 2, init_std: float = 0.01,
                 recalibrate: int = 1024, seed: int = 0, in_chans: int = 1, num_classes: int = 10):
        check_stages(sizes, stage_epochs)
        if len(widths) != 3:
            raise MethodError(f"widths {tuple(widths)} must be three channel counts. Hint: conv1,conv2,fc1, "
                              "e.g. 16,32,128")
        for w in widths:
            check_int("widths", w, 1, "pass three channel counts: conv1,conv2,fc1")
        self.widen = check_int("widen", widen, 1, "pass 1 for no new filters, 2 to double per stage")
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or init_std < 0:
            raise MethodError(f"init_std must be a number ≥ 0, got {init_std!r}. Hint: Liu et al. use 0.01")
        self.recalibrate = check_int("recalibrate", recalibrate, 0, "pass a number of images, or 0 for none")
        self.sizes, self.stage_epochs, self.widths = tuple(sizes), tuple(stage_epochs), tuple(widths)
        self.init_std, self.seed, self.in_chans, self.num_classes = float(init_std), seed, in_chans, num_classes
        self.last = len(self.sizes) - 1
        self.stage = 0
        self.model = self.net(0)

    @property
    def form(self) -> str:
        return "target" if self.stage == self.last else "pretrain"

    def stage_widths(self, stage: int) -> tuple[int, ...]:
        """Widths of `stage`: the last stage's divided by `widen` once per stage still to come."""
        factor = self.widen ** (self.last - stage)
        return tuple(max(1, round(w / factor)) for w in self.widths)

    def stage_at(self, epoch: int) -> int:
        """The stage that trains in `epoch`."""
        return max(i for i, start in enumerate(self.stage_epochs) if epoch >= start)

    def net(self, stage: int) -> C2FNet:
        """A fresh network of `stage` (random weights)."""
        return C2FNet(self.sizes[stage], self.stage_widths(stage), self.in_chans, self.num_classes)

    def grow_stage(self, model: C2FNet, calibration: Iterable[torch.Tensor] | None = None) -> C2FNet:
        """`model` grown by one stage; BatchNorm recalibrated on `calibration` (new-size batches) if given."""
        stage = self.sizes.index(model.size) + 1
        if stage > self.last:
            raise MethodError(f"a {model.size} px network is the last stage already; nothing to grow into")
        gen = torch.Generator().manual_seed(self.seed * 1009 + stage)
        grown = grow_c2f(model.cpu(), self.sizes[stage], self.stage_widths(stage), init_std=self.init_std,
                         generator=gen)
        if calibration is not None:
            recalibrate_bn(grown, calibration)
        self.stage = stage
        return grown.train(model.training)

    def grow(self, model: C2FNet, epoch: int, calibration=None) -> C2FNet:
        """`model` grown through every stage that starts by `epoch` (none: `model` itself).

        `calibration(size)`, if given, returns normalised batches at `size` for the recalibration.
        """
        while self.sizes.index(model.size) < self.stage_at(epoch):
            size = self.sizes[self.sizes.index(model.size) + 1]
            model = self.grow_stage(model, calibration(size) if calibration is not None else None)
        return model

    # ---- the Trainer's hooks ------------------------------------------------------------------
    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.stage = self.sizes.index(trainer.model.size)   # the trainer's model is what a resume restores
        while self.stage < self.stage_at(epoch):
            grown = self.grow_stage(trainer.model)
            trainer.replace_model(grown, form=self.form)
            trainer.set_input_size(self.sizes[self.stage])
            if self.recalibrate:
                recalibrate_from_loader(trainer, epoch, self.recalibrate)
        if trainer.size != self.sizes[self.stage]:
            trainer.set_input_size(self.sizes[self.stage])

    def restore(self, trainer: Any, info: Any) -> None:
        """Build the stage the checkpoint holds before its weights are loaded."""
        self.stage = self.sizes.index(info.train["size"])
        trainer.replace_model(self.net(self.stage), form=info.form)
