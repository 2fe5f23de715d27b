"""Replacement layers: the padded even-kernel conv against F.pad + conv2d."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.signal import correlate2d
from timm.layers import StdConv2d

from modelsurgery import layers
from modelsurgery.layers import PaddedConv, fold_geometry, set_conv_padding

PADS = [(0, 1, 0, 1), (1, 0, 1, 0), (0, 1, 1, 0), (1, 0, 0, 1), (0, 2, 1, 0)]


def _padded(cin, cout, k, stride, pad, groups=1, dilation=1, bias=True, base=nn.Conv2d, mode="zeros"):
    extra = {"padding_mode": mode} if mode != "zeros" else {}
    conv = base(cin, cout, k, stride=stride, dilation=dilation, groups=groups, bias=bias, **extra)
    set_conv_padding(conv, pad)
    return conv.double()


def _reference(conv, x):
    """The definition: F.pad, then the unpadded convolution (standardised weights for StdConv2d)."""
    weight = conv.weight
    if isinstance(conv, StdConv2d):
        weight = F.batch_norm(weight.reshape(1, conv.out_channels, -1), None, None, training=True,
                              momentum=0.0, eps=conv.eps).reshape_as(weight)
    xp = F.pad(x, conv.pad, mode=conv.pad_mode)
    return F.conv2d(xp, weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def _check_equal(conv, size, batch=2):
    """Forward and both gradients of `conv` equal the reference's, in float64."""
    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(batch, conv.in_channels, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    y, ref = conv(x), _reference(conv, x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad(y, (x, conv.weight), g)
    want = torch.autograd.grad(ref, (x, conv.weight), g)
    for a, b in zip(got, want, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.fixture(params=["policy", "always_fold", "never_fold"])
def fold_mode(request, monkeypatch):
    """Run each case with the shipped policy and with each path forced."""
    if request.param == "always_fold":
        monkeypatch.setattr(layers, "FOLD_MAX_EXTRA", float("inf"))
    elif request.param == "never_fold":
        monkeypatch.setattr(layers, "FOLD_MAX_EXTRA", -1.0)
    return request.param


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("size", [(8, 8), (7, 7), (8, 7), (2, 3)])
def test_padded_conv_equals_fpad_conv(fold_mode, stride, pad, size):
    _check_equal(_padded(4, 6, 2, stride, pad), size)


@pytest.mark.parametrize("groups,cout", [(2, 6), (4, 4)])  # grouped and depthwise
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(10, 10), (9, 9)])
def test_padded_grouped_conv(fold_mode, groups, cout, stride, size):
    for pad in PADS[:2]:
        _check_equal(_padded(4, cout, 2, stride, pad, groups=groups), size)


@pytest.mark.parametrize("k,dilation,pad", [(4, 1, (1, 2, 2, 1)), (2, 2, (1, 0, 1, 0)), ((2, 4), 1, (2, 1, 0, 1))])
def test_padded_conv_other_kernels(fold_mode, k, dilation, pad):
    for stride, size in itertools.product((1, 2), ((11, 11), (12, 9))):
        _check_equal(_padded(3, 5, k, stride, pad, dilation=dilation, bias=False), size)


def test_reflect_and_weight_standardised_bases_pad_explicitly():
    """Bases that pad by reflection or override forward keep F.pad + the base forward."""
    reflect = _padded(3, 4, 2, 1, (0, 1, 0, 1), mode="reflect")
    assert reflect.pad_mode == "reflect" and reflect._foldable
    _check_equal(reflect, (9, 9))
    std = _padded(3, 4, 2, 2, (1, 0, 1, 0), base=StdConv2d)
    assert isinstance(std, PaddedConv) and not std._foldable
    _check_equal(std, (9, 8))


def test_against_scipy_correlate2d():
    """One channel, one filter: the top-left padded 2x2 conv is scipy's zero-filled 'full' correlation."""
    conv = _padded(1, 1, 2, 1, (1, 0, 1, 0), bias=False)
    x = torch.randn(1, 1, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        y = conv(x)[0, 0].numpy()
    full = correlate2d(x[0, 0].numpy(), conv.weight[0, 0].detach().numpy(), mode="full")
    np.testing.assert_allclose(y, full[:7, :6], rtol=1e-13, atol=1e-13)
    with torch.no_grad():  # stride 2, extra pixel after: 'valid' correlation on the padded map, every other
        conv2 = _padded(1, 1, 2, 2, (0, 1, 0, 1), bias=False)
        conv2.weight.copy_(conv.weight)
        y2 = conv2(x)[0, 0].numpy()
    ref2 = correlate2d(np.pad(x[0, 0].numpy(), ((0, 1), (0, 1))), conv.weight[0, 0].detach().numpy(), mode="valid")
    np.testing.assert_allclose(y2, ref2[::2, ::2], rtol=1e-13, atol=1e-13)


def test_fold_geometry_brute_force():
    """Every (size, kernel, stride, dilation, before, after): the folded grid holds the wanted windows."""
    for n, k, s, d, a, b in itertools.product(range(1, 12), (1, 2, 3, 4), (1, 2, 3), (1, 2), range(3), range(3)):
        geo = fold_geometry(n, k, s, d, a, b)
        reach = d * (k - 1)
        wanted = [i * s - a for i in range(max(0, (n + a + b - reach - 1) // s + 1))] if n + a + b > reach else []
        if not wanted:
            assert geo is None
            continue
        p, off, m, full = geo
        starts = [j * s - p for j in range(full)]
        assert starts[off:off + m] == wanted and m == len(wanted)
        assert p >= a and (p - a) % s == 0
        if p - s >= a:  # the smallest such padding: one stride less does not hold them
            smaller = [j * s - (p - s) for j in range((n + 2 * (p - s) - reach - 1) // s + 1)]
            assert smaller[off - 1:off - 1 + m] != wanted


def test_fold_geometry_cases():
    assert fold_geometry(40, 2, 2, 1, 0, 1) == (0, 0, 20, 20)  # no pad, no crop
    assert fold_geometry(40, 2, 2, 1, 1, 0) == (1, 0, 20, 21)  # pad 1, drop the last output
    assert fold_geometry(40, 2, 1, 1, 0, 1) == (1, 1, 40, 41)  # pad 1, drop the first
    assert fold_geometry(40, 2, 1, 1, 1, 0) == (1, 0, 40, 41)  # pad 1, drop the last
    assert fold_geometry(5, 2, 2, 1, 0, 1) == (2, 1, 3, 4)  # odd size: the last window needs the pad
    assert fold_geometry(1, 3, 1, 1, 0, 1) is None  # smaller than the kernel


@pytest.mark.parametrize("stride,pad", [(1, (0, 1, 0, 1)), (2, (0, 1, 0, 1)), (2, (1, 0, 1, 0))])
def test_policy_folds_only_within_the_extra_area_budget(stride, pad):
    conv = _padded(2, 2, 2, stride, pad)
    for n in range(2, 60):
        _, _, want, full = fold_geometry(n, 2, stride, 1, pad[2], pad[3])
        folds = conv._fold(n, n) is not None
        assert folds == (full * full <= (1 + layers.FOLD_MAX_EXTRA) * want * want), n
    if stride == 2 and pad[0] == 0:  # even map, extra pixel after: the last window fits, no pad, no crop
        assert conv._fold(40, 40) == ((0, 0, 20, 20), (0, 0, 20, 20))


def test_state_dict_keys_and_pad_attribute_unchanged():
    conv = _padded(3, 4, 2, 1, (0, 1, 0, 1))
    assert type(conv).__name__ == "PaddedConv2d" and conv.pad == (0, 1, 0, 1)
    assert list(conv.state_dict()) == ["weight", "bias"] and conv.padding == (0, 0)
