"""Width and depth: shrink narrows channel groups and drops blocks; grow brings both back.

The inits are checked against references written here from the papers' rules (Liu et al. 2016,
§III-C; Chen et al. 2016's Net2WiderNet, with loops over channels), not from the library's code;
the function is checked by running both networks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from modelsurgery.errors import ConversionError, FactorError, UnsupportedLayerError
from modelsurgery.grow import downscale_state_dict, grow, momentum_map
from modelsurgery.momentum import carry_momentum
from modelsurgery.plan import Plan
from modelsurgery.shrink import apply_plan, shrink

C = 8   # the tiny network's width; half of it is kept


class Tiny(nn.Module):
    """stem -> two residual blocks -> pool -> fc: one residual stream, one inner group per block."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(C)
        self.blocks = nn.Sequential(Block(), Block())
        self.fc = nn.Linear(C, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(C, C, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(C)
        self.conv2 = nn.Conv2d(C, C, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(C)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def _trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every norm non-trivial statistics and affine terms, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5), (m.weight, 0.5, 1.5),
                                  (m.bias, -0.2, 0.2)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


@pytest.fixture(scope="module")
def narrow():
    torch.manual_seed(0)
    small, plan = shrink(Tiny().eval(), width=0.5, kernel_map="keep", target_size=16)
    return _trained_like(small), plan


def test_plan_records_first_half_of_every_group(narrow):
    small, plan = narrow
    assert plan.width == 0.5 and plan.input_size == plan.target_size == 16
    dims = {(r.key, r.dim): r for r in plan.channels}
    assert dims[("stem.weight", 0)].kept == ((0, C // 2),) and dims[("stem.weight", 0)].role == "out"
    assert dims[("blocks.0.conv2.weight", 1)].role == "in"
    assert dims[("bn.running_var", 0)].role == "scale" and dims[("bn.bias", 0)].role == "shift"
    assert dims[("blocks.0.conv1.bias", 0)].role == "bias"
    assert ("fc.weight", 0) not in dims and dims[("fc.weight", 1)].kept == ((0, C // 2),)   # classes stay
    assert ("stem.weight", 1) not in dims   # the input's channels stay
    assert small.stem.weight.shape == (C // 2, 3, 3, 3) and small.fc.weight.shape == (10, C // 2)
    assert Plan.from_json(plan.to_json()) == plan


def _grown(narrow, init, **kw):
    small, plan = narrow
    state, _ = grow(small.state_dict(), plan, widen_init=init, model=Tiny(), **kw)
    big = Tiny()
    big.load_state_dict(state, strict=True)
    return small, big.eval(), state


@pytest.mark.parametrize("init", ["gaussian", "zeros", "flip", "net2net"])
def test_every_init_keeps_the_function(narrow, init):
    small, big, _ = _grown(narrow, init)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = small(x), big(x)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    assert not torch.equal(big.stem.weight[C // 2:], torch.zeros_like(big.stem.weight[C // 2:])) or init == "zeros"


K = C // 2   # kept channels: 0..K-1, new: K..C-1


def test_gaussian_is_liu_new_filters_noise_consumers_zero(narrow):
    small, big, s = _grown(narrow, "gaussian", widen_std=0.05)
    ref = small.state_dict()
    assert torch.equal(s["stem.weight"][:K], ref["stem.weight"])
    new = s["stem.weight"][K:]
    assert 0.03 < float(new.std()) < 0.07 and abs(float(new.mean())) < 0.02   # N(0, 0.05²), 108 draws
    for key in ("blocks.0.conv1.weight", "blocks.1.conv1.weight", "blocks.0.conv2.weight"):
        assert torch.equal(s[key][:K, :K], ref[key])
        assert torch.equal(s[key][:K, K:], torch.zeros(K, K, 3, 3))        # consumers' weights on new channels
    assert torch.equal(s["fc.weight"][:, K:], torch.zeros(10, K))
    assert torch.equal(s["blocks.0.conv1.bias"][K:], torch.zeros(K))
    assert torch.equal(s["bn.weight"][K:], torch.ones(K)) and torch.equal(s["bn.running_var"][K:], torch.ones(K))
    assert torch.equal(s["bn.bias"][K:], torch.zeros(K)) and torch.equal(s["bn.running_mean"][K:], torch.zeros(K))


def test_zeros_is_liu_new_filters_zero_consumers_noise(narrow):
    small, big, s = _grown(narrow, "zeros", widen_std=0.05)
    assert torch.equal(s["stem.weight"][K:], torch.zeros(K, 3, 3, 3))
    assert torch.equal(s["blocks.0.conv1.weight"][K:], torch.zeros(K, C, 3, 3))   # new filters: all zero
    noise = s["blocks.0.conv1.weight"][:K, K:]                                      # consumers: N(0, σ²)
    assert 0.03 < float(noise.std()) < 0.07
    assert float(s["fc.weight"][:, K:].abs().min()) > 0


def test_flip_is_liu_rotated_copies(narrow):
    small, big, s = _grown(narrow, "flip")
    for j in range(K, C):
        src = j - K   # new filter j copies filter j mod K
        assert torch.equal(s["stem.weight"][j], s["stem.weight"][src].flip(-1).flip(-2))
        assert torch.equal(s["blocks.0.conv1.bias"][j], s["blocks.0.conv1.bias"][src])
    assert torch.equal(s["blocks.0.conv2.weight"][:K, K:], torch.zeros(K, K, 3, 3))


def _net2wider(w_in: torch.Tensor, w_out: torch.Tensor, g: list[int], in_dim_new: bool):
    """Chen et al. 2016, Net2WiderNet (Eq. 6): unit j copies unit g(j); outgoing weights ÷ |g⁻¹(g(j))|."""
    count = {u: sum(1 for v in g if v == u) for u in set(g)}
    big_in = torch.stack([w_in[g[j]] for j in range(len(g))])
    big_out = torch.stack([w_out[:, g[j]] / count[g[j]] for j in range(len(g))], 1)
    return big_in, big_out


def test_net2net_is_chen_net2widernet(narrow):
    small, big, s = _grown(narrow, "net2net")
    ref = small.state_dict()
    g = [j % K for j in range(C)]   # the first K units are kept; unit j copies unit j mod K
    # the inner group of block 0: conv1's filters (and its bias, bn1) -> conv2's inputs
    w1, w2 = ref["blocks.0.conv1.weight"], ref["blocks.0.conv2.weight"]
    # conv1's inputs are the residual stream, itself widened: split its columns by the stream's copies
    w1_cols = torch.stack([w1[:, g[j]] / 2 for j in range(C)], 1)
    want_in, want_out = _net2wider(w1_cols, w2, g, True)
    assert torch.allclose(s["blocks.0.conv1.weight"], want_in, atol=0, rtol=1e-6)
    want_w2 = torch.stack([want_out[g[j]] for j in range(C)])   # conv2's own filters copy (the stream)
    assert torch.allclose(s["blocks.0.conv2.weight"], want_w2, atol=0, rtol=1e-6)
    for key in ("blocks.0.conv1.bias", "blocks.0.bn1.running_mean", "blocks.0.bn1.running_var", "bn.weight"):
        assert torch.equal(s[key], torch.stack([ref[key][g[j]] for j in range(C)]))
    assert torch.allclose(s["fc.weight"], torch.stack([ref["fc.weight"][:, g[j]] / 2 for j in range(C)], 1))


def test_downscale_is_grow_inverse_on_kept_entries(narrow):
    small, big, s = _grown(narrow, "gaussian")
    _, plan = narrow
    back = downscale_state_dict(s, plan)
    for key, value in small.state_dict().items():
        assert torch.equal(back[key], value), key


def _stepped(model: nn.Module, seed: int = 3) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    model.train()
    F.cross_entropy(model(x), torch.arange(4)).backward()
    opt.step()
    return opt


@pytest.mark.parametrize("init", ["gaussian", "net2net"])
def test_momentum_carried_across_width(narrow, init):
    small, plan = narrow
    small = apply_plan(Tiny(), plan)
    opt = _stepped(small)
    big = Tiny()
    new_opt = carry_momentum(small, opt, big, torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9),
                             momentum_map(plan, widen_init=init, model=Tiny()))
    names = {id(p): n for n, p in big.named_parameters()}
    got = {names[id(p)]: st["momentum_buffer"] for p, st in new_opt.state.items()}
    old = {n: opt.state[p]["momentum_buffer"] for n, p in small.named_parameters()}
    assert set(got) == {n for n, _ in big.named_parameters()}   # none dropped
    m = got["blocks.0.conv1.weight"]
    if init == "gaussian":   # kept entries carried, new ones start at zero
        assert torch.equal(m[:K, :K], old["blocks.0.conv1.weight"])
        assert torch.equal(m[K:], torch.zeros_like(m[K:])) and torch.equal(m[:K, K:], torch.zeros_like(m[:K, K:]))
        assert torch.equal(got["bn.weight"][K:], torch.zeros(K))   # a norm's new scale: weight 1, momentum 0
    else:                    # copied like the weights, and split where the weights are
        g = [j % K for j in range(C)]
        want = torch.stack([torch.stack([old["blocks.0.conv1.weight"][g[i], g[j]] / 2 for j in range(C)])
                            for i in range(C)])
        assert torch.allclose(m, want, atol=0, rtol=1e-6)
        assert torch.allclose(got["fc.weight"], torch.stack([old["fc.weight"][:, g[j]] / 2 for j in range(C)], 1))


def test_depth_drops_repeated_blocks_and_grows_them_back_with_no_effect():
    torch.manual_seed(0)
    small, plan = shrink(Tiny().eval(), depth=0.5, kernel_map="keep", target_size=16)
    assert [b.name for b in plan.blocks] == ["blocks.1"] and plan.blocks[0].zero == ("bn2.weight", "bn2.bias")
    assert isinstance(small.blocks[1], nn.Identity) and "blocks.1.conv1.weight" not in small.state_dict()
    _trained_like(small)
    state, _ = grow(small.state_dict(), plan, model=Tiny())
    big = Tiny()
    big.load_state_dict(state, strict=True)
    assert torch.equal(state["blocks.1.bn2.weight"], torch.zeros(C))
    assert float(state["blocks.1.conv1.weight"].abs().sum()) > 0     # the rest: the model's own init
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(small(x), big.eval()(x), atol=1e-6)


def test_width_depth_and_kernels_together():
    torch.manual_seed(0)
    small, plan = shrink(Tiny().eval(), width=0.5, depth=0.5, target_size=16)
    assert plan.input_size < 16 and small.stem.weight.shape == (K, 3, 2, 2)
    state, _ = grow(small.state_dict(), plan, model=Tiny())
    Tiny().load_state_dict(state, strict=True)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan"), "abc", True])
def test_bad_factor_is_refused(value):
    with pytest.raises(FactorError, match=r"is not in \(0, 1\].*Hint: e\.g\. --width 0\.5"):
        shrink(Tiny(), width=value, target_size=16)


def test_bad_init_and_std_are_refused(narrow):
    small, plan = narrow
    with pytest.raises(ConversionError, match="unknown widen init 'copy'. Hint: use one of gaussian"):
        grow(small.state_dict(), plan, widen_init="copy")
    with pytest.raises(ConversionError, match="widen std must be a positive number"):
        grow(small.state_dict(), plan, widen_std=0.0)


def test_no_stage_is_refused_in_one_line():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"no stage of repeated blocks .* Hint: pass --depth 1") as err:
        shrink(net, depth=0.5, kernel_map="keep", target_size=16)
    assert "\n" not in str(err.value)


def test_blocks_without_residual_path_are_refused():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
                                          for _ in range(3)])
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    with pytest.raises(UnsupportedLayerError, match=r"no single layer turns a block into an identity .*blocks\.2"):
        shrink(Plain().eval(), depth=0.5, kernel_map="keep", target_size=16)


# ---- coarse-to-fine on any model: stages of width, depth and size ---------------------------------

def test_grow_in_stages_keeps_the_function_at_every_grow():
    from modelsurgery.methods.growth import GrowInStages

    for init in ("gaussian", "net2net"):
        g = GrowInStages(Tiny(), sizes=(8, 12, 16), stage_epochs=(0, 1, 2), widths=(0.25, 0.5, 1),
                         depths=(0.5, 1, 1), widen_init=init, in_chans=3)
        model = _trained_like(g.model)
        assert model.stem.weight.shape[0] == C // 4 and isinstance(model.blocks[1], nn.Identity)
        x = torch.randn(2, 3, 12, 12)
        for epoch in range(3):
            with torch.no_grad():
                before = model.eval()(x)
            model = g.grow(model, epoch).eval()
            with torch.no_grad():
                assert torch.allclose(model(x), before, atol=1e-5 * float(before.abs().max())), (init, epoch)
        assert g.stage == 2 and g.form == "target"
        Tiny().load_state_dict(model.state_dict(), strict=True)


def test_grow_in_stages_in_the_trainer_carries_momentum():
    from modelsurgery.methods.growth import GrowInStages
    from modelsurgery.momentum import momentum_buffers

    g = GrowInStages(Tiny(), sizes=(8, 16), stage_epochs=(0, 1), widths=(0.5, 1), depths=(1, 1),
                     widen_init="net2net", in_chans=3)
    small = g.model
    opt = _stepped(small)
    state = g.convert({n: b for n, b in momentum_buffers(small, opt).items()}, 0, linear=True)
    old = momentum_buffers(small, opt)["stem.weight"]
    assert torch.allclose(state["stem.weight"], torch.cat([old, old]))        # copied like the filters
    fc = momentum_buffers(small, opt)["fc.weight"]
    assert torch.allclose(state["fc.weight"], torch.cat([fc, fc], 1) / 2)      # split like the consumers


@pytest.mark.parametrize("kw, msg", [(dict(widths=(1, 0.5)), "must not fall"), (dict(depths=(0, 1)), r"in \(0, 1\]"),
                                     (dict(sizes=(16, 8)), "distinct ascending"),
                                     (dict(widen_init="copy"), "widen_init must be one of")])
def test_grow_in_stages_bad_settings(kw, msg):
    from modelsurgery.errors import MethodError
    from modelsurgery.methods.growth import GrowInStages

    args = dict(sizes=(8, 16), stage_epochs=(0, 1), widths=(0.5, 1), depths=(1, 1), in_chans=3) | kw
    with pytest.raises(MethodError, match=msg):
        GrowInStages(Tiny(), **args)


# ---- the CLI: the commands ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50", "torchvision:resnet18"])
def test_cli_shrink_width_depth_then_grow_loads_strict(tmp_path, model):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from modelsurgery.cli import cli
    from modelsurgery.zoo import build

    s, b = tmp_path / "s.safetensors", tmp_path / "b.safetensors"
    run = CliRunner().invoke(cli, ["shrink", model, "--width", "0.5", "--depth", "0.5", "--out", str(s)])
    assert run.exit_code == 0, run.output
    assert "width 0.5:" in run.output and "depth 0.5:" in run.output
    run = CliRunner().invoke(cli, ["info", str(s)])
    assert run.exit_code == 0 and "width 0.5 (" in run.output and "block(s) dropped)" in run.output, run.output
    run = CliRunner().invoke(cli, ["grow", str(s), "--out", str(b)])
    assert run.exit_code == 0, run.output
    assert "widened back (gaussian)" in run.output and "back with no effect" in run.output
    build(model)[0].load_state_dict(load_file(b), strict=True)


@pytest.mark.parametrize("args, msg", [
    (["shrink", "resnet18", "--width", "0", "--out", "x.safetensors"], "--width '0' is not in (0, 1]"),
    (["shrink", "resnet18", "--depth", "2", "--out", "x.safetensors"], "--depth '2' is not in (0, 1]"),
    (["shrink", "resnet18", "--width", "half", "--out", "x.safetensors"], "--width 'half' is not in (0, 1]"),
    (["shrink", "vgg11", "--depth", "0.5", "--out", "x.safetensors"], "VGG has no stage of repeated blocks"),
])
def test_cli_bad_factors_exit_1_nothing_written(tmp_path, monkeypatch, args, msg):
    from click.testing import CliRunner

    from modelsurgery.cli import cli

    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 1 and msg in run.output and run.output.count("\n") == 1, run.output
    assert not list(tmp_path.iterdir())
