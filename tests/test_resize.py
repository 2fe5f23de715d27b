"""Tests for modelsurgery.resize against independent numpy/scipy references.

Exact identities are held to 1e-6 (float32) and 1e-12 (float64). Approximate properties use
tolerances measured on this code and stated next to each assertion.
"""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from modelsurgery.errors import ConversionError
from modelsurgery.resize.channels import widen, widen_norm
from modelsurgery.resize.fc import pad_fc_gaussian, resize_fc
from modelsurgery.resize.kernels import downscale, resize_kernel, upscale_bilinear, upscale_pinv, upscale_replicate

EXACT = {torch.float32: 1e-6, torch.float64: 1e-12}
PAPER_PAIRS = [(2, 3), (3, 5), (5, 7), (7, 11)]  # de Gusmão et al. 2016, Table 1 (pre-train k', target k)


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _close(actual, expected, tol, rtol=0.0):
    torch.testing.assert_close(actual, expected, atol=tol, rtol=rtol)


def _zoom(kernel: np.ndarray, dst) -> np.ndarray:
    """scipy's half-pixel bilinear resize of the last two dims (the independent reference)."""
    src = kernel.shape[-2:]
    factors = (1,) * (kernel.ndim - 2) + (dst[0] / src[0], dst[1] / src[1])
    out = ndi.zoom(kernel, factors, order=1, grid_mode=True, mode="nearest")
    assert out.shape[-2:] == tuple(dst)
    return out


def _zoom_matrix(src, dst) -> np.ndarray:
    """B (dst_h·dst_w, src_h·src_w) built from scipy, independent of torch.F.interpolate."""
    cols = [_zoom(np.eye(src[0] * src[1])[i].reshape(src), dst).ravel() for i in range(src[0] * src[1])]
    return np.stack(cols, 1)


# --- pixel replication ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factor,groups", [(2, 1), (3, 2), ((2, 3), 1), ((3, 2), 3)])
def test_replication_is_exact_on_nearest_upsampled_input(dtype, factor, groups):
    fh, fw = (factor, factor) if isinstance(factor, int) else factor
    x = _randn(2, 6, 9, 8, dtype=dtype, seed=1)
    w = _randn(4 * groups, 6 // groups, 3, 2, dtype=dtype, seed=2)
    small = F.conv2d(x, w, groups=groups)
    x_up = F.interpolate(x, scale_factor=(fh, fw), mode="nearest")
    big = F.conv2d(x_up, upscale_replicate(w, factor), groups=groups)
    # The window starting at row i·f covers exactly the f·k upsampled rows of small rows i..i+k-1.
    # Exact up to rounding, which scales with Σ|w|·|x| (the dot products' condition).
    scale = F.conv2d(x.abs(), w.abs(), groups=groups).max().item()
    _close(big[..., ::fh, ::fw], small, EXACT[dtype] * scale)
    # Other offsets straddle two source pixels, so offset 0 is the identity and not any offset.
    assert (big[..., 1::fh, 1::fw][..., : small.shape[-2] - 1, : small.shape[-1] - 1]
            - small[..., :-1, :-1]).abs().max() > 1e-2


def test_replicate_matches_numpy_kron():
    w = _randn(3, 2, 2, 3)
    expected = np.kron(w.numpy(), np.ones((1, 1, 2, 3))) / 6.0
    _close(upscale_replicate(w, (2, 3)), torch.from_numpy(expected), 1e-15)


@pytest.mark.parametrize("factor", [1.5, 0, (2, 0), (2, 2, 2), "2"])
def test_replicate_rejects_uneven_factor(factor):
    with pytest.raises(ConversionError, match=r"replicate factor .* is not a positive integer"):
        upscale_replicate(torch.ones(2, 2), factor)


def test_replicate_method_rejects_non_multiple_size():
    with pytest.raises(ConversionError, match=r"\(3, 3\) is not an integer multiple of \(2, 2\)"):
        resize_kernel(torch.ones(4, 2, 2), 3, "replicate")


# --- pinv ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("src,factor", [((2, 2), (2, 2)), ((3, 3), (3, 3)), ((1, 3), (2, 3)), ((3, 2), (2, 1))])
def test_pinv_nearest_at_integer_factor_is_replication(dtype, src, factor):
    w = _randn(5, 4, *src, dtype=dtype, seed=3)
    dst = (src[0] * factor[0], src[1] * factor[1])
    _close(upscale_pinv(w, dst, interpolation="nearest"), upscale_replicate(w, factor), EXACT[dtype])


@pytest.mark.parametrize("src,dst", PAPER_PAIRS + [((3, 5), (5, 7)), ((1, 5), (1, 7))])
def test_pinv_keeps_inner_products_with_scipy_upsampled_patches(src, dst):
    src = (src, src) if isinstance(src, int) else src
    dst = (dst, dst) if isinstance(dst, int) else dst
    w_small = _randn(6, *src, seed=4)
    w_big = upscale_pinv(w_small, dst)
    x = _randn(50, *src, seed=5).numpy()
    bx = np.stack([_zoom(p, dst) for p in x])  # B·x by scipy
    lhs = np.einsum("phw,ohw->po", bx, w_big.numpy())
    rhs = np.einsum("phw,ohw->po", x, w_small.numpy())
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_pinv_is_independent_pinv_of_scipy_matrix(src, dst):
    w = _randn(3, src, src, seed=6)
    b = _zoom_matrix((src, src), (dst, dst))
    expected = np.einsum("ij,oj->oi", np.linalg.pinv(b.T), w.reshape(3, -1).numpy()).reshape(3, dst, dst)
    np.testing.assert_allclose(upscale_pinv(w, dst).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_pinv_keeps_sum(interpolation, src, dst):
    w = _randn(20, src, src, seed=7)
    out = upscale_pinv(w, dst, interpolation=interpolation)
    _close(out.sum((-2, -1)), w.sum((-2, -1)), 1e-12)


# --- bilinear --------------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", PAPER_PAIRS + [((1, 7), (1, 11)), ((3, 2), (5, 3)), ((2, 2), (4, 6))])
def test_bilinear_matches_scipy_zoom(src, dst):
    src = (src, src) if isinstance(src, int) else src
    dst = (dst, dst) if isinstance(dst, int) else dst
    w = _randn(2, 3, *src, seed=8)
    # The amplitude factor is (k'_h·k'_w)/(k_h·k_w): dividing by s², not multiplying.
    expected = _zoom(w.numpy(), dst) * (src[0] * src[1]) / (dst[0] * dst[1])
    np.testing.assert_allclose(upscale_bilinear(w, dst).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_bilinear_amplitude_divides_by_s_squared(src, dst):
    out = upscale_bilinear(torch.ones(1, src, src, dtype=torch.float64), dst)
    # ÷s² gives (k'/k)² everywhere (4/9 for 2→3); ×s² would give (k/k')² (2.25 for 2→3).
    _close(out, torch.full_like(out, (src / dst) ** 2), 1e-15)


@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_bilinear_grown_conv_keeps_output_scale_on_smooth_images(src, dst):
    # A layer's output scale (de Gusmão et al. 2016, §3.3.1): the same smooth scene at both sizes, conv with the small
    # kernel and with its upscale. ×s² instead of ÷s² would put the ratio near s⁴ (5 for 2→3).
    w = _randn(8, 1, src, src, seed=9).abs()
    n = 12 * src
    def grid(m):
        return (torch.arange(m, dtype=torch.float64) + 0.5) / m

    def scene(m):
        return (torch.sin(3 * grid(m))[:, None] * torch.cos(2 * grid(m))[None, :] + 1.5)[None, None]
    small = F.conv2d(scene(n), w)
    big = F.conv2d(scene(n * dst // src), upscale_bilinear(w, dst))
    ratio = big.mean((-2, -1)) / small.mean((-2, -1))
    _close(ratio, torch.ones_like(ratio), 0.1)  # measured |ratio - 1| ≤ 0.03


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("src,dst", [(1, 3), (2, 3), (2, 4), (2, 5), (3, 6), (4, 6), (3, 9)])
def test_bilinear_keeps_sum_exactly_where_tap_gains_are_one(dtype, src, dst):
    w = _randn(16, 4, src, src, dtype=dtype, seed=10)
    out = upscale_bilinear(w, dst)
    _close(out.sum((-2, -1)), w.sum((-2, -1)), EXACT[dtype] * 10, rtol=EXACT[dtype])


@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_bilinear_keeps_sum_of_constant_kernels_exactly(src, dst):
    w = torch.full((3, src, src), -0.7, dtype=torch.float64)
    _close(upscale_bilinear(w, dst).sum((-2, -1)), w.sum((-2, -1)), 1e-12)


# Per-dim tap gains (measured on F.interpolate, see upscale_bilinear's docstring); the 2D bound
# on |Δsum| / Σ|w| is max(g_max² − 1, 1 − g_min²).
SUM_BOUNDS = {(3, 5): 0.1665, (5, 7): 0.26, (7, 11): 0.209}


@pytest.mark.parametrize("src,dst", list(SUM_BOUNDS))
def test_bilinear_sum_is_approximate_within_stated_bound(src, dst):
    w = _randn(2000, src, src, seed=11)
    dev = (upscale_bilinear(w, dst).sum((-2, -1)) - w.sum((-2, -1))).abs() / w.abs().sum((-2, -1))
    assert dev.max() <= SUM_BOUNDS[(src, dst)]  # measured max: 0.106, 0.090, 0.054
    assert dev.max() > 1e-3  # really approximate here; the docstring must keep saying so


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("src,dst", PAPER_PAIRS + [((3, 5), (5, 7))])
def test_bilinear_preserve_sum_is_exact(dtype, src, dst):
    src = (src, src) if isinstance(src, int) else src
    w = _randn(16, *src, dtype=dtype, seed=12)
    out = upscale_bilinear(w, dst, preserve_sum=True)
    _close(out.sum((-2, -1)), w.sum((-2, -1)), EXACT[dtype] * 10, rtol=EXACT[dtype])


# --- downscale -------------------------------------------------------------------------------

@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("src,dst", PAPER_PAIRS + [((1, 5), (3, 7)), ((2, 3), (3, 5))])
def test_downscale_pinv_inverts_upscale_pinv(interpolation, src, dst):
    src = (src, src) if isinstance(src, int) else src
    w = _randn(4, 3, *src, seed=13)
    back = downscale(upscale_pinv(w, dst, interpolation), src, "pinv", interpolation=interpolation)
    _close(back, w, 1e-12)


@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_downscale_pinv_is_adjoint_of_scipy_upsampling(src, dst):
    w_big = _randn(5, dst, dst, seed=14)
    w_small = downscale(w_big, src, "pinv")
    x = _randn(40, src, src, seed=15).numpy()
    bx = np.stack([_zoom(p, (dst, dst)) for p in x])
    np.testing.assert_allclose(np.einsum("phw,ohw->po", x, w_small.numpy()),
                               np.einsum("phw,ohw->po", bx, w_big.numpy()), rtol=0, atol=1e-12)
    _close(w_small.sum((-2, -1)), w_big.sum((-2, -1)), 1e-12)


def _antialias_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) antialiased linear downsampling, written out as PIL's triangle filter."""
    scale = src / dst
    support = scale  # the triangle's support widens by the scale when shrinking
    out = np.zeros((dst, src))
    for i in range(dst):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), src)
        taps = np.array([max(0.0, 1 - abs((j - center + 0.5) / scale)) for j in range(lo, hi)])
        out[i, lo:hi] = taps / taps.sum()
    return out


@pytest.mark.parametrize("src,dst", [(3, 2), (5, 3), (7, 5), (11, 7), ((5, 7), (3, 7)), ((7, 1), (4, 1))])
def test_downscale_bilinear_is_antialiased_linear_times_area_ratio(src, dst):
    src = (src, src) if isinstance(src, int) else src
    dst = (dst, dst) if isinstance(dst, int) else dst
    w = _randn(2, 3, *src, seed=31)
    a_h, a_w = _antialias_matrix(src[0], dst[0]), _antialias_matrix(src[1], dst[1])
    expected = np.einsum("ih,...hw,jw->...ij", a_h, w.numpy(), a_w) * (src[0] * src[1]) / (dst[0] * dst[1])
    np.testing.assert_allclose(downscale(w, dst, "bilinear").numpy(), expected, rtol=0, atol=1e-12)


# Measured relative Frobenius error of downscale(upscale_bilinear(w)) (antialiased down) on
# N(0, 1) kernels: 0.40, 0.42, 0.52, 0.54; on smooth kernels (Gaussian bump + ramp) 0.37, 0.19,
# 0.10, 0.05. Bilinear there and back is a low-pass, so only smooth kernels come back closely.
BILINEAR_ROUNDTRIP = {(2, 3): (0.45, 0.42), (3, 5): (0.47, 0.23), (5, 7): (0.57, 0.12), (7, 11): (0.59, 0.07)}


def _smooth_kernels(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    i = torch.linspace(-1, 1, k, dtype=torch.float64)
    a, b, c = torch.randn(3, n, 1, 1, generator=g, dtype=torch.float64)
    s = torch.rand(n, 1, 1, generator=g, dtype=torch.float64) + 0.5
    return a * torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / s) + b * i[:, None] + c * i[None, :]


@pytest.mark.parametrize("src,dst", PAPER_PAIRS)
def test_downscale_bilinear_roundtrip_within_measured_tolerance(src, dst):
    tol_random, tol_smooth = BILINEAR_ROUNDTRIP[(src, dst)]
    for w, tol in [(_randn(2000, src, src, seed=16), tol_random), (_smooth_kernels(2000, src, 17), tol_smooth)]:
        back = downscale(upscale_bilinear(w, dst), src, "bilinear")
        assert ((back - w).norm() / w.norm()).item() <= tol
    const = torch.full((2, src, src), 1.3, dtype=torch.float64)
    _close(downscale(upscale_bilinear(const, dst), src, "bilinear"), const, 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_downscale_area_and_replicate_method_invert_replication(dtype):
    w = _randn(3, 4, 2, 3, dtype=dtype, seed=18)
    big = upscale_replicate(w, (3, 2))
    _close(downscale(big, (2, 3), "area"), w, EXACT[dtype])
    _close(resize_kernel(big, (2, 3), "replicate"), w, EXACT[dtype])


def test_downscale_rejects_larger_size_and_unknown_method():
    with pytest.raises(ConversionError, match=r"size \(5, 5\) is larger than the kernel \(3, 3\)"):
        downscale(torch.ones(3, 3), 5)
    with pytest.raises(ConversionError, match=r"unknown downscale method 'cubic'"):
        downscale(torch.ones(3, 3), 2, "cubic")


def test_upscale_rejects_smaller_size_and_non_float_input():
    with pytest.raises(ConversionError, match=r"size \(2, 3\) is smaller than the kernel \(3, 3\)"):
        upscale_bilinear(torch.ones(3, 3), (2, 3))
    with pytest.raises(ConversionError, match=r"expected a floating-point tensor.*torch.int64"):
        upscale_pinv(torch.ones(3, 3, dtype=torch.int64), 5)
    with pytest.raises(ConversionError, match=r"size 0 is not a positive int"):
        upscale_pinv(torch.ones(3, 3), 0)


# --- resize_kernel ---------------------------------------------------------------------------

def test_resize_kernel_dispatches_up_and_down():
    w = _randn(4, 2, 3, 3, seed=19)
    assert torch.equal(resize_kernel(w, 5, "bilinear"), upscale_bilinear(w, 5))
    assert torch.equal(resize_kernel(w, 5, "pinv"), upscale_pinv(w, 5))
    assert torch.equal(resize_kernel(w, 6, "replicate"), upscale_replicate(w, 2))
    assert torch.equal(resize_kernel(w, 2, "bilinear"), downscale(w, 2, "bilinear"))
    assert torch.equal(resize_kernel(w, 2, "pinv"), downscale(w, 2, "pinv"))
    same = resize_kernel(w, 3, "pinv")
    assert torch.equal(same, w) and same.data_ptr() != w.data_ptr()


@pytest.mark.parametrize("method", ["bilinear", "pinv"])
def test_resize_kernel_mixed_direction_is_separable(method):
    w = _randn(3, 3, 5, seed=20)
    out = resize_kernel(w, (5, 3), method)
    assert out.shape == (3, 5, 3)
    if method == "pinv":  # pinv of a Kronecker product is the Kronecker product of pinvs
        h = upscale_pinv(w.transpose(-1, -2).reshape(-1, 1, 3), (1, 5)).reshape(3, 5, 5)
        expected = downscale(h.transpose(-1, -2).reshape(-1, 1, 5), (1, 3)).reshape(3, 5, 3)
        _close(out, expected, 1e-12)
    else:
        b_h = _zoom_matrix((3, 1), (5, 1)) * 3 / 5  # up along H with amplitude 3/5
        expected = np.einsum("ij,ojw->oiw", b_h, w.numpy())
        expected = downscale(torch.from_numpy(expected), (5, 3), "bilinear")
        _close(out, expected, 1e-12)


def test_resize_kernel_rejects_unknown_method():
    with pytest.raises(ConversionError, match=r"unknown method 'cubic'.*bilinear, pinv, replicate"):
        resize_kernel(torch.ones(2, 2), 3, "cubic")


# --- FC interface ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["bilinear", "pinv", "replicate"])
def test_resize_fc_shapes_and_equivalence_with_kernel_resize(method):
    c, h, w, out = 6, 3, 4, 5
    weight = _randn(out, c * h * w, seed=21)
    got = resize_fc(weight, (c, h, w), (6, 8), method)
    assert got.shape == (out, c * 6 * 8)
    expected = resize_kernel(weight.reshape(out, c, h, w), (6, 8), method).reshape(out, -1)
    assert torch.equal(got, expected)
    conv_fc = resize_fc(weight.reshape(out, c, h, w), (c, h, w), (6, 8), method)
    assert conv_fc.shape == (out, c, 6, 8)
    assert torch.equal(conv_fc.reshape(out, -1), got)
    assert torch.equal(resize_fc(weight.reshape(out, c, h, w), None, (6, 8), method), conv_fc)
    # Down again (shrink uses the same function).
    assert resize_fc(weight, (c, h, w), (2, 2), "pinv").shape == (out, c * 4)


def _feature_maps(n, c, h, w, seed):
    return _randn(n, c, h, w, seed=seed)


@pytest.mark.parametrize("method,mode,size", [("replicate", "nearest", (8, 10)),
                                               ("pinv", "bilinear", (8, 10)),
                                               ("pinv", "bilinear", (7, 7))])
def test_big_linear_on_upsampled_map_reproduces_small_linear(method, mode, size):
    c, h, w = 4, 4, 5
    x = _feature_maps(16, c, h, w, seed=22)
    small = torch.nn.Linear(c * h * w, 10).double()
    big = torch.nn.Linear(c * size[0] * size[1], 10).double()
    with torch.no_grad():
        big.weight.copy_(resize_fc(small.weight, (c, h, w), size, method))
        big.bias.copy_(small.bias)
    x_big = F.interpolate(x, size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    _close(big(x_big.flatten(1)), small(x.flatten(1)), 1e-12)


def test_pinv_nearest_fc_equals_replicate_fc():
    weight = _randn(3, 2 * 5 * 5, seed=23)
    _close(resize_fc(weight, (2, 5, 5), 10, "pinv", interpolation="nearest"),
           resize_fc(weight, (2, 5, 5), 10, "replicate"), 1e-12)


def test_resize_fc_rejects_wrong_chw():
    with pytest.raises(ConversionError, match=r"weight of shape \(5, 48\) does not take a 3x4x5 input"):
        resize_fc(torch.ones(5, 48), (3, 4, 5), 6)


@pytest.mark.parametrize("hw_from,hw_to,rows,cols", [((2, 2), (4, 4), [0, 2], [0, 2]),
                                                     ((5, 3), (7, 6), [0, 1, 2, 4, 5], [0, 2, 4]),
                                                     ((3, 3), (3, 4), [0, 1, 2], [0, 1, 2])])
def test_pad_fc_gaussian_keeps_old_weights_on_the_grid(hw_from, hw_to, rows, cols):
    c, out = 3, 4
    weight = _randn(out, c * hw_from[0] * hw_from[1], dtype=torch.float32, seed=24)
    got = pad_fc_gaussian(weight, (c, *hw_from), hw_to, generator=torch.Generator().manual_seed(0))
    assert got.shape == (out, c * hw_to[0] * hw_to[1]) and got.dtype == torch.float32
    grid = got.reshape(out, c, *hw_to)[..., rows, :][..., cols]
    assert torch.equal(grid, weight.reshape(out, c, *hw_from))


def test_pad_fc_gaussian_new_positions_are_seeded_gaussian_noise():
    weight = torch.full((64, 8 * 4 * 4), 5.0)
    def g(s):
        return torch.Generator().manual_seed(s)
    got = pad_fc_gaussian(weight, (8, 4, 4), 8, std=0.02, generator=g(1)).reshape(64, 8, 8, 8)
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[::2, ::2] = False  # integer factor 2: old weights at the [::2, ::2] grid
    assert (got[..., ~mask] == 5.0).all()
    new = got[..., mask]  # 64·8·48 = 24576 samples: std of the sample std ≈ 0.45 %
    assert abs(new.std().item() - 0.02) < 0.02 * 0.03
    assert abs(new.mean().item()) < 0.02 * 0.03
    assert torch.equal(pad_fc_gaussian(weight, (8, 4, 4), 8, std=0.02, generator=g(1)), got.reshape(64, -1))
    assert not torch.equal(pad_fc_gaussian(weight, (8, 4, 4), 8, std=0.02, generator=g(2)), got.reshape(64, -1))


def test_pad_fc_gaussian_conv_fc_and_errors():
    weight = _randn(3, 2, 7, 7, seed=25)
    assert pad_fc_gaussian(weight, (2, 7, 7), 9, generator=torch.Generator().manual_seed(0)).shape == (3, 2, 9, 9)
    with pytest.raises(ConversionError, match=r"hw_to \(5, 5\) is smaller than the source map \(7, 7\)"):
        pad_fc_gaussian(weight, (2, 7, 7), 5)


# --- widen -----------------------------------------------------------------------------------

INITS = ["gaussian", "zero", "flip-h", "flip-v", "flip-d", "flip-c"]


def _widen_pair(conv1, conv2, new, init):
    w, b, nw = widen(conv1.weight.detach(), conv1.bias.detach(), conv2.weight.detach(), new, init=init,
                     std=0.5, generator=torch.Generator().manual_seed(0))
    wide1 = torch.nn.Conv2d(conv1.in_channels, conv1.out_channels + new, conv1.kernel_size, padding=1).double()
    wide2 = torch.nn.Conv2d(conv1.out_channels + new, conv2.out_channels, conv2.kernel_size).double()
    with torch.no_grad():
        wide1.weight.copy_(w), wide1.bias.copy_(b), wide2.weight.copy_(nw), wide2.bias.copy_(conv2.bias)
    return wide1, wide2


@pytest.mark.parametrize("init", INITS)
def test_widen_preserves_conv_relu_conv_exactly(init):
    torch.manual_seed(0)
    conv1 = torch.nn.Conv2d(3, 5, 3, padding=1).double()
    conv2 = torch.nn.Conv2d(5, 4, 3).double()
    x = _randn(2, 3, 9, 9, seed=26)
    wide1, wide2 = _widen_pair(conv1, conv2, 7, init)
    assert wide1.weight.shape == (12, 3, 3, 3) and wide2.weight.shape == (4, 12, 3, 3)
    hidden = F.relu(wide1(x))
    assert init == "zero" or hidden[:, 5:].abs().max() > 0  # the new maps are really alive
    _close(wide2(hidden), conv2(F.relu(conv1(x))), 1e-6)


@pytest.mark.parametrize("init", INITS)
def test_widen_preserves_conv_bn_relu_pool_linear_exactly(init):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3).double()
    bn = torch.nn.BatchNorm2d(4).double().eval()
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    fc = torch.nn.Linear(4, 6).double()
    x = _randn(3, 3, 8, 8, seed=27)
    before = fc(F.relu(bn(conv(x))).mean((-2, -1)))
    w, b, nw = widen(conv.weight.detach(), conv.bias.detach(), fc.weight.detach(), 3, init=init,
                     generator=torch.Generator().manual_seed(0))
    bn2 = torch.nn.BatchNorm2d(7).double().eval()
    bn2.load_state_dict(widen_norm(bn.state_dict(), 3))
    after = F.linear(F.relu(bn2(F.conv2d(x, w, b))).mean((-2, -1)), nw, fc.bias)
    assert nw.shape == (6, 7) and (nw[:, 4:] == 0).all()
    _close(after, before, 1e-6)


def test_widen_flips_are_real_flips_of_existing_filters():
    w = _randn(3, 2, 3, 3, seed=28)
    b = torch.arange(3, dtype=torch.float64)
    nxt = _randn(4, 3, seed=29)
    ref = {"flip-h": lambda k: np.fliplr(k), "flip-v": lambda k: np.flipud(k),
           "flip-d": lambda k: k.T, "flip-c": lambda k: np.rot90(k, 2)}
    for init, fn in ref.items():
        new_w, new_b, _ = widen(w, b, nxt, 5, init=init)
        for j in range(5):  # new filter j copies filter j mod 3
            for i in range(2):
                np.testing.assert_array_equal(new_w[3 + j, i].numpy(), fn(w[j % 3, i].numpy()))
        assert new_b.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
        assert not torch.equal(new_w[3:6], w)  # a random kernel is not symmetric


def test_widen_gaussian_std_zero_bias_and_none_bias():
    w, b, nw = widen(torch.zeros(4, 2, 3, 3), None, torch.ones(8, 4, 1, 1), 400, std=0.01,
                     generator=torch.Generator().manual_seed(0))
    assert b is None and w.shape == (404, 2, 3, 3) and nw.shape == (8, 404, 1, 1)
    assert abs(w[4:].std().item() - 0.01) < 0.0005  # 7200 samples: std of the std ≈ 0.8 %
    assert torch.equal(nw[:, :4], torch.ones(8, 4, 1, 1)) and (nw[:, 4:] == 0).all()
    _, b, _ = widen(torch.zeros(4, 2, 3, 3), torch.ones(4), torch.ones(8, 4), 2, init="gaussian")
    assert b.tolist() == [1, 1, 1, 1, 0, 0]


def test_widen_errors():
    with pytest.raises(ConversionError, match=r"next_weight \(8, 5\) has 5 inputs but weight has 4 outputs"):
        widen(torch.zeros(4, 2, 3, 3), None, torch.ones(8, 5), 2)
    with pytest.raises(ConversionError, match=r"init 'flip-d' needs .* square kernel"):
        widen(torch.zeros(4, 2, 1, 3), None, torch.ones(8, 4), 2, init="flip-d")
    with pytest.raises(ConversionError, match=r"unknown init 'mirror'"):
        widen(torch.zeros(4, 2, 3, 3), None, torch.ones(8, 4), 2, init="mirror")


def test_widen_norm_fills_identity_statistics():
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5), bn.running_var.fill_(2.0), bn.num_batches_tracked.fill_(7)
    state = {f"layer1.bn.{k}": v for k, v in bn.state_dict().items()}
    out = widen_norm(state, 2)
    assert out["layer1.bn.weight"].tolist() == [1.0] * 5
    assert out["layer1.bn.bias"].tolist() == [0.0] * 5
    assert out["layer1.bn.running_mean"].tolist() == [0.5] * 3 + [0.0] * 2
    assert out["layer1.bn.running_var"].tolist() == [2.0] * 3 + [1.0] * 2
    assert out["layer1.bn.num_batches_tracked"].item() == 7
    assert state["layer1.bn.running_var"].shape == (3,)  # input untouched


# --- dtypes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_in_same_dtype_out(dtype):
    w = _randn(4, 2, 3, 3, dtype=torch.float32, seed=30)
    low = w.to(dtype)
    for fn in (lambda t: upscale_bilinear(t, 5), lambda t: upscale_pinv(t, 5), lambda t: upscale_replicate(t, 2),
               lambda t: downscale(t, 2), lambda t: resize_kernel(t, (2, 5), "pinv")):
        got, ref = fn(low), fn(low.float())
        assert got.dtype == dtype
        _close(got.float(), ref.to(dtype).float(), 0.0)  # computed in float32, rounded once
    assert resize_fc(low.reshape(4, -1), (2, 3, 3), 5).dtype == dtype
    assert pad_fc_gaussian(low.reshape(4, -1), (2, 3, 3), 5).dtype == dtype
    assert math.isfinite(upscale_pinv(low, 7).float().abs().max().item())
