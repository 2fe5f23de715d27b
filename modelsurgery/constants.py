"""Choices and tables shared by the library and the CLI; no imports, so `msurg --help` stays cheap.

The library and the CLI read every choice from here.
"""

from .deprecation import moved

__all__ = ["TABLE1", "EVEN_PADDINGS", "DEFAULT_EVEN_PADDING", "DOWNSCALE_METHODS", "DEFAULT_DOWNSCALE_METHOD",
           "UPSCALES", "DEFAULT_UPSCALE", "LSQ", "FC_MODES", "DEFAULT_FC", "WIDEN_INITS", "DEFAULT_WIDEN_INIT",
           "DEFAULT_WIDEN_STD"]

# de Gusmão et al. 2016, Table 1: target kernel -> pre-train kernel, per spatial dimension.
TABLE1: dict[int, int] = {1: 1, 3: 2, 5: 3, 7: 5, 11: 7}

# shrink: where an even pre-train kernel puts its extra pixel of padding.
EVEN_PADDINGS = ("alternate", "bottom-right")
DEFAULT_EVEN_PADDING = "alternate"

# shrink --weights: how trained target kernels are downscaled (pinv is the exact inverse of grow's pinv).
DOWNSCALE_METHODS = ("pinv", "bilinear")
DEFAULT_DOWNSCALE_METHOD = "pinv"

# grow: kernel upscaling. pinv and bilinear keep about the same accuracy for 2x2 -> 3x3 kernels
# (bench/grow_fidelity.py, bench/results/grow_fidelity.json); for 5x5 -> 7x7 stems pinv (FlexiViT's
# pseudo-inverse resize) is clearly closer (tests/test_grow.py's amplitude guard), and it is exact
# wherever replication is.
UPSCALES = ("bilinear", "pinv", "replicate")
DEFAULT_UPSCALE = "pinv"
LSQ = "lsq"  # the file layer's extra choice: DEFAULT_UPSCALE, then a least-squares fit of every grown kernel

# grow: the FC interface is resized like a kernel, or keeps its weights on a grid and is Gaussian-padded.
FC_MODES = ("resize", "gaussian")
DEFAULT_FC = "resize"

# grow: the new channels of a plan shrunk in width (Liu et al. 2016, §III-C; §IV-D prefers N(0, 1/100)
# for its simplicity; Chen et al. 2016's Net2WiderNet replicates channels). See `modelsurgery.width`.
WIDEN_INITS = ("gaussian", "zeros", "flip", "net2net")
DEFAULT_WIDEN_INIT = "gaussian"
DEFAULT_WIDEN_STD = 0.01

# grow's kernel upscaling was once called its "method", a word the training methods also use.
__getattr__ = moved(__name__, {"METHODS": "modelsurgery.constants:UPSCALES",
                               "DEFAULT_METHOD": "modelsurgery.constants:DEFAULT_UPSCALE"})
