"""Property tests for modelsurgery.resize: random shapes, leading dims, sizes and dtypes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from modelsurgery.resize.channels import widen
from modelsurgery.resize.fc import pad_fc_gaussian, resize_fc
from modelsurgery.resize.kernels import downscale, resize_kernel, upscale_bilinear, upscale_pinv, upscale_replicate

SETTINGS = settings(max_examples=40, deadline=None)
EXACT = {torch.float32: 1e-6, torch.float64: 1e-12}

leading = st.lists(st.integers(1, 4), min_size=0, max_size=3)
side = st.integers(1, 5)
factor = st.integers(1, 3)
float_dtype = st.sampled_from([torch.float32, torch.float64])
any_dtype = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])
seed = st.integers(0, 2**31 - 1)


def _randn(shape, dtype, seed):
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.to(dtype)


@SETTINGS
@given(leading, side, side, factor, factor, float_dtype, seed)
def test_replicate_shape_and_values_match_kron(lead, kh, kw, fh, fw, dtype, s):
    w = _randn([*lead, kh, kw], dtype, s)
    out = upscale_replicate(w, (fh, fw))
    assert out.shape == (*lead, kh * fh, kw * fw) and out.dtype == dtype
    expected = np.kron(w.double().numpy(), np.ones((fh, fw))) / (fh * fw)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=EXACT[dtype], atol=0)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), side, side, factor, factor, float_dtype, seed)
def test_replication_conv_identity(groups, cpg, kh, kw, fh, fw, dtype, s):
    x = _randn([1, groups * cpg, kh + 3, kw + 2], dtype, s)
    w = _randn([2 * groups, cpg, kh, kw], dtype, s + 1)
    small = F.conv2d(x, w, groups=groups)
    big = F.conv2d(F.interpolate(x, scale_factor=(fh, fw), mode="nearest"),
                   upscale_replicate(w, (fh, fw)), groups=groups)
    # Exact up to rounding, which scales with Σ|w|·|x| (the dot products' condition).
    scale = F.conv2d(x.abs(), w.abs(), groups=groups).max().item()
    torch.testing.assert_close(big[..., ::fh, ::fw], small, atol=EXACT[dtype] * scale, rtol=0)


@SETTINGS
@given(leading, side, side, factor, factor, float_dtype, seed)
def test_pinv_nearest_equals_replicate(lead, kh, kw, fh, fw, dtype, s):
    w = _randn([*lead, kh, kw], dtype, s)
    got = upscale_pinv(w, (kh * fh, kw * fw), interpolation="nearest")
    torch.testing.assert_close(got, upscale_replicate(w, (fh, fw)), atol=EXACT[dtype], rtol=0)


@SETTINGS
@given(leading, side, side, st.integers(0, 6), st.integers(0, 6),
       st.sampled_from(["bilinear", "bicubic", "nearest", "nearest-exact"]), float_dtype, seed)
def test_downscale_pinv_inverts_upscale_pinv(lead, kh, kw, dh, dw, interpolation, dtype, s):
    w = _randn([*lead, kh, kw], dtype, s)
    big = upscale_pinv(w, (kh + dh, kw + dw), interpolation)
    assert big.shape == (*lead, kh + dh, kw + dw) and big.dtype == dtype
    back = downscale(big, (kh, kw), "pinv", interpolation=interpolation)
    # B is well conditioned (smallest singular value ≥ 0.53 up to 12 taps), so float32 keeps ~1e-5.
    tol = {torch.float32: 2e-5, torch.float64: 1e-11}[dtype]
    torch.testing.assert_close(back, w, atol=tol, rtol=0)
    torch.testing.assert_close(big.sum((-2, -1)), w.sum((-2, -1)), atol=tol * kh * kw, rtol=0)


@SETTINGS
@given(leading, side, side, st.integers(0, 6), st.integers(0, 6), seed)
def test_bilinear_shape_and_constant_kernels(lead, kh, kw, dh, dw, s):
    value = float(_randn([1], torch.float64, s))
    w = torch.full((*lead, kh, kw), value, dtype=torch.float64)
    out = upscale_bilinear(w, (kh + dh, kw + dw))
    assert out.shape == (*lead, kh + dh, kw + dw)
    # ÷s²: a constant kernel stays constant at value·(k'_h·k'_w)/(k_h·k_w), so its sum is kept.
    expected = value * kh * kw / ((kh + dh) * (kw + dw))
    torch.testing.assert_close(out, torch.full_like(out, expected), atol=1e-12, rtol=0)


@SETTINGS
@given(leading, side, side, side, side, st.sampled_from(["bilinear", "pinv"]), any_dtype, seed)
def test_resize_kernel_any_direction_keeps_shape_and_dtype(lead, kh, kw, th, tw, method, dtype, s):
    w = _randn([*lead, kh, kw], dtype, s)
    out = resize_kernel(w, (th, tw), method)
    assert out.shape == (*lead, th, tw) and out.dtype == dtype
    assert torch.isfinite(out.float()).all()
    if dtype in (torch.float16, torch.bfloat16):  # computed in float32 and rounded once
        ref = resize_kernel(w.float(), (th, tw), method).to(dtype)
        assert torch.equal(out, ref)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), factor, factor, any_dtype, seed)
def test_low_precision_round_trip_dtypes(out_f, c, h, w, fh, fw, dtype, s):
    weight = _randn([out_f, c * h * w], dtype, s)
    for method in ("bilinear", "pinv", "replicate"):
        got = resize_fc(weight, (c, h, w), (h * fh, w * fw), method)
        assert got.shape == (out_f, c * h * fh * w * fw) and got.dtype == dtype
    padded = pad_fc_gaussian(weight, (c, h, w), (h * fh, w * fw), generator=torch.Generator().manual_seed(s))
    assert padded.dtype == dtype
    grid = padded.reshape(out_f, c, h * fh, w * fw)[..., ::fh, ::fw]
    assert torch.equal(grid, weight.reshape(out_f, c, h, w))


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3), st.integers(0, 6),
       st.sampled_from(["gaussian", "zero", "flip-h", "flip-v", "flip-d", "flip-c"]), float_dtype, seed)
def test_widen_shapes_and_zero_columns(o, i, k, new, init, dtype, s):
    w = _randn([o, i, k, k], dtype, s)
    nxt = _randn([3, o, 1, 1], dtype, s + 1)
    bias = _randn([o], dtype, s + 2)
    nw, nb, nn = widen(w, bias, nxt, new, init=init, generator=torch.Generator().manual_seed(s))
    assert nw.shape == (o + new, i, k, k) and nb.shape == (o + new,) and nn.shape == (3, o + new, 1, 1)
    assert nw.dtype == nb.dtype == nn.dtype == dtype
    assert torch.equal(nw[:o], w) and torch.equal(nb[:o], bias) and torch.equal(nn[:, :o], nxt)
    assert (nn[:, o:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_widen_keeps_low_precision_dtype(dtype):
    w, b, n = widen(torch.ones(2, 1, 3, 3, dtype=dtype), torch.ones(2, dtype=dtype),
                    torch.ones(4, 2, dtype=dtype), 3, generator=torch.Generator().manual_seed(0))
    assert w.dtype == b.dtype == n.dtype == dtype
