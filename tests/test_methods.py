"""The methods as objects (modelsurgery.methods): their validation, their cores, and a plain loop.

The recipes' tests (test_recipes.py) run every method through the Trainer, including resume;
here each method is built on its own: a bad hyperparameter is refused with a one-line message
naming it, the coarse-to-fine grow is checked against its exact identities, and the plain-loop
example of the documentation runs as written.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import modelsurgery.methods
from modelsurgery.errors import LowModeError, MethodError, SurgeryError
from modelsurgery.methods.base import Compose, Method
from modelsurgery.methods.coarse_to_fine import CoarseToFine, grow_c2f
from modelsurgery.methods.kernel_rescaling import KernelRescaling
from modelsurgery.methods.low_mode import LowMode
from modelsurgery.methods.progressive_resizing import ProgressiveResizing
from modelsurgery.nets import C2FNet, FashionResNet

EXAMPLE_MARKER = "Example: kernel rescaling in a plain PyTorch loop"
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The fenced python block between the README's plain-loop markers."""
    block = README.read_text().split("<!-- plain-loop:start -->", 1)[1].split("<!-- plain-loop:end -->", 1)[0]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def docstring_example() -> str:
    """The indented code block after the example's heading line in `modelsurgery.methods`' docstring."""
    after = modelsurgery.methods.__doc__.split(EXAMPLE_MARKER, 1)[1].split("\n", 1)[1]
    return textwrap.dedent(after).strip() + "\n"


def test_plain_loop_example_in_the_readme_runs():
    """The README's loop runs as written and ends with a trained, grown target."""
    namespace: dict = {}
    exec(compile(readme_example(), "README plain-loop example", "exec"), namespace)
    kr, model = namespace["kr"], namespace["model"]
    assert kr.form == "target" and kr.input_size == 28 and model is not kr.model
    assert model.conv1.weight.shape[-2:] == (3, 3) and kr.model.conv1.weight.shape[-2:] == (2, 2)
    FashionResNet(width=4).load_state_dict(model.state_dict(), strict=True)   # the target's keys and shapes
    assert namespace["loss"].item() < math.log(10)                            # below chance: it learned


def test_docstring_example_is_the_readme_example():
    assert docstring_example().strip() == readme_example().strip()


# ---- validation: one clear error per bad hyperparameter ------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(switch_epoch=-1), r"switch_epoch must be an integer ≥ 0, got -1\. Hint"),
    (dict(switch_epoch=2.5), r"switch_epoch must be an integer ≥ 0, got 2\.5"),
    (dict(target_size=0), r"target_size must be an integer ≥ 1, got 0"),
    (dict(grow_method="nearest"), r"grow_method must be one of 'bilinear', 'pinv', 'replicate', got 'nearest'"),
    (dict(lstsq=-5), r"lstsq must be an integer ≥ 0, got -5\. Hint: pass a number of images"),
    (dict(recalibrate=True), r"recalibrate must be an integer ≥ 0, got True"),
    (dict(pretrain_size=0), r"pretrain_size must be an integer ≥ 1, got 0"),
])
def test_kernel_rescaling_validates(kwargs, match):
    with pytest.raises(MethodError, match=match):
        KernelRescaling(FashionResNet(width=4), **{"target_size": 28, "switch_epoch": 1, **kwargs})


def test_kernel_rescaling_needs_a_module():
    with pytest.raises(MethodError, match=r"target must be an nn.Module, got str\. Hint"):
        KernelRescaling("resnet18", target_size=28, switch_epoch=1)


def test_method_errors_are_value_errors():
    assert issubclass(MethodError, SurgeryError) and issubclass(MethodError, ValueError)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(ratio=1), MethodError, r"ratio must be an integer ≥ 2, got 1"),
    (dict(downsample="nearest"), MethodError, r"downsample must be one of 'gaussian', 'bilinear', got 'nearest'"),
    (dict(bn="keep"), MethodError, r"bn must be one of 'freeze', 'update', got 'keep'"),
    (dict(form="grown"), MethodError, r"form must be one of 'pretrain', 'target', got 'grown'"),
    (dict(convs=3), MethodError, r"convs must be an fnmatch pattern \(str\) or None, got 3"),
    (dict(p_low=1.5), LowModeError, r"p_low must be a probability in \[0, 1\], got 1\.5"),
    (dict(p_low=None, every=0), LowModeError, r"every must be an integer ≥ 1, got 0"),
])
def test_low_mode_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        LowMode(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(regime="cosine"), r"regime must be one of 'fixed', 'gradual', 'step', got 'cosine'"),
    (dict(size=0), r"size must be an integer ≥ 1, got 0"),
    (dict(start_size=-16), r"start_size must be an integer ≥ 1, got -16"),
    (dict(ramp_end=None), r"regime 'gradual' needs ramp_end\. Hint"),
    (dict(regime="step", ramp_end=None), r"regime 'step' needs ramp_end or step_epoch"),
    (dict(ramp_start=5, ramp_end=3), r"ramp_end 3 is before ramp_start 5"),
    (dict(multiple=0), r"multiple must be an integer ≥ 1, got 0"),
])
def test_progressive_resizing_validates(kwargs, match):
    with pytest.raises(MethodError, match=match):
        ProgressiveResizing(**{"size": 28, "start_size": 16, "ramp_end": 6, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes=(8, 18, 32)), r"sizes \(8, 18, 32\) must be positive multiples of 4 px"),
    (dict(sizes=(16, 8, 32)), r"sizes \(16, 8, 32\) must ascend"),
    (dict(stage_epochs=(0, 2)), r"stage_epochs \(0, 2\) needs one ascending start per size in \(8, 16, 32\), from 0"),
    (dict(stage_epochs=(1, 2, 3)), r"stage_epochs \(1, 2, 3\) needs one ascending start"),
    (dict(widths=(16, 32)), r"widths \(16, 32\) must be three channel counts"),
    (dict(widths=(16, 0, 128)), r"widths must be an integer ≥ 1, got 0"),
    (dict(widen=0), r"widen must be an integer ≥ 1, got 0"),
    (dict(init_std=-0.1), r"init_std must be a number ≥ 0, got -0\.1"),
    (dict(recalibrate=-1), r"recalibrate must be an integer ≥ 0, got -1"),
])
def test_coarse_to_fine_validates(kwargs, match):
    with pytest.raises(MethodError, match=match):
        CoarseToFine(**kwargs)


def test_compose_refuses_what_is_not_a_method():
    with pytest.raises(MethodError, match=r"is not a method: it needs on_epoch_start, step_context and restore"):
        Compose(LowMode(0.5), object())


# ---- what each method decides ------------------------------------------------------------------

def test_progressive_resizing_sizes():
    pr = ProgressiveResizing(28, 16, regime="gradual", ramp_start=2, ramp_end=6)
    assert [pr.size_at(e) for e in range(8)] == [16, 16, 16, 20, 24, 24, 28, 28] and pr.eval_size == 28
    step = ProgressiveResizing(28, 16, regime="step", ramp_start=2, ramp_end=6)
    assert step.step_epoch == 4 and [step.size_at(e) for e in (3, 4)] == [16, 28]
    assert ProgressiveResizing(28, 16, regime="fixed").size_at(9) == 16


def test_low_mode_draws_are_a_pure_function_of_seed_epoch_and_iteration():
    lm = LowMode(0.5, seed=3, full_epochs=1, lr_milestones=(2,))
    draws = [lm.is_low(e, i) for e in range(3) for i in range(50)]
    assert draws == [LowMode(0.5, seed=3, full_epochs=1, lr_milestones=(2,)).is_low(e, i)
                     for e in range(3) for i in range(50)]
    assert 10 < sum(draws[:50]) < 40 and not any(draws[100:])   # epoch 2 follows an LR change
    model = FashionResNet(width=4)
    assert lm.context(model, 2, 0) is None
    low = next(i for i in range(50) if lm.is_low(0, i))
    with lm.context(model, 0, low) as pooled:
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and "layer1.0.conv1" in pooled


def test_compose_nests_step_contexts_and_calls_every_hook():
    calls = []

    class Recorder(Method):
        def __init__(self, name):
            self.name = name

        def on_epoch_start(self, trainer, epoch):
            calls.append((self.name, epoch))

        def step_context(self, trainer, epoch, it):
            return contextlib.nullcontext() if it == 1 else None

    both = Compose(Recorder("a"), Recorder("b"))
    both.on_epoch_start(None, 3)
    assert calls == [("a", 3), ("b", 3)]
    assert both.step_context(None, 0, 0) is None
    with both.step_context(None, 0, 1):
        pass
    assert Compose(Recorder("a"), Method()).step_context(None, 0, 1) is not None


def test_kernel_rescaling_grows_once_at_the_switch():
    kr = KernelRescaling(FashionResNet(width=4), target_size=28, switch_epoch=2, recalibrate=0)
    assert [kr.should_grow(e) for e in range(4)] == [False, False, True, True] and kr.input_size == 19
    batches = [torch.randn(8, 1, 28, 28) for _ in range(2)]
    target = kr.grow(kr.model, calibration=batches)
    assert kr.form == "target" and kr.target_plan.form == "target" and kr.input_size == 28
    assert not kr.should_grow(3) and target.training
    # the BatchNorm statistics are the ones of the calibration batches at the full size
    with torch.no_grad():
        first = target.bn1.running_mean.clone()
        torch.testing.assert_close(first, F.conv2d(torch.cat(batches), target.conv1.weight, padding=1)
                                   .mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


# ---- coarse to fine: the grow's exact identities --------------------------------------------------

def _trained_like(net: C2FNet) -> C2FNet:
    """Non-trivial BN statistics and weights, in float64, eval mode."""
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.double().eval()


def test_c2f_grow_replicates_conv1_exactly_and_keeps_fc1_on_the_grid():
    small = _trained_like(C2FNet(8, (4, 8, 16)))
    big = grow_c2f(small, 16, (8, 16, 32), generator=torch.Generator().manual_seed(0)).double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    x_up = x.repeat_interleave(2, -1).repeat_interleave(2, -2)          # 2x nearest upsampling
    def same(x, w):
        return F.conv2d(F.pad(x, ((w.shape[-1] - 1) // 2, w.shape[-1] // 2) * 2), w)   # "same", extra after
    y_small, y_big = same(x, small.conv1.weight), same(x_up, big.conv1.weight)
    assert big.conv1.weight.shape == (8, 1, 6, 6)
    torch.testing.assert_close(y_big[:, :4, ::2, ::2], y_small, rtol=0, atol=1e-12)   # old filters: exact
    # fc1: old weights at the [::2] grid positions of the larger map (for the old channels and units)
    old = small.fc1.weight.reshape(16, 8, 2, 2)
    new = big.fc1.weight.reshape(32, 16, 4, 4)
    assert torch.equal(new[:16, :8, ::2, ::2], old)
    off_grid = new[:16, :8].clone()
    off_grid[..., ::2, ::2] = 0
    assert 0 < off_grid.abs().max() < 0.1                               # N(0, 0.01²) elsewhere
    assert torch.equal(new[:16, 8:], torch.zeros_like(new[:16, 8:]))     # new conv2 filters: zero consumers
    assert torch.equal(big.fc2.weight[:, 16:], torch.zeros(10, 16, dtype=torch.float64))


def test_c2f_widening_alone_preserves_the_function():
    """At the same size the grow only adds units; consumers of new units are zero, so logits are unchanged."""
    small = _trained_like(C2FNet(16, (4, 8, 16)))
    big = grow_c2f(small, 16, (8, 16, 32), generator=torch.Generator().manual_seed(0)).double().eval()
    x = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=1e-12, atol=1e-12)


# ---- momentum carried across the grow ----------------------------------------------------------

def _stepped_pretrain(seed: int = 0):
    """A kernel-rescaling pre-train net after three SGD steps (so its optimizer holds momentum)."""
    torch.manual_seed(seed)
    kr = KernelRescaling(FashionResNet(width=4), target_size=28, switch_epoch=1, recalibrate=0)
    small = kr.model
    opt = torch.optim.SGD(small.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        x, y = torch.randn(8, 1, 19, 19), torch.randint(0, 10, (8,))
        opt.zero_grad()
        F.cross_entropy(small(x), y).backward()
        opt.step()
    return kr, small, opt


def _zero_grad_step(model, opt) -> dict[str, torch.Tensor]:
    """The update of one SGD step with zero gradients: its momentum part alone, by parameter name."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return {n: (p.detach() - before[n]).double() for n, p in model.named_parameters()}


def _is_grown_image(kr, big_step, small_step) -> bool:
    """Whether the big step equals A·(small step), A the grow's linear map (kernel sums kept, pinv)."""
    image = kr.convert_state({n: v.float() for n, v in small_step.items()})
    # float32 weights
    return all(torch.allclose(big_step[n], image[n].double(), rtol=1e-5, atol=2e-7) for n in big_step)


@pytest.mark.parametrize("variant, expected", [("carried", True), ("dropped", False), ("times_s2", False)])
def test_carried_momentum_makes_the_first_step_the_grown_image_of_the_small_one(variant, expected):
    """m_big = A·m_small: the momentum part of the first update after the grow is A applied to the small one.

    The check fails when the buffers are dropped (fresh optimizer) or converted with ×s² instead of
    the amplitude rule's ÷s² (s = 3/2 for 2×2 → 3×3).
    """
    kr, small, opt = _stepped_pretrain()
    big = kr.grow(small)
    new_opt = torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9)
    s4 = (3 / 2) ** 4
    def wrong(t):
        return {n: v * s4 if v.ndim == 4 and v.shape[-1] == 3 else v for n, v in kr.convert_state(t).items()}

    convert = {"carried": kr.convert_state, "times_s2": wrong}.get(variant)
    if convert is not None:
        modelsurgery.methods.carry_momentum(small, opt, big, new_opt, convert)
    big_step, small_step = _zero_grad_step(big, new_opt), _zero_grad_step(small, opt)
    assert _is_grown_image(kr, big_step, small_step) is expected
    if variant == "carried":   # an independent property of the pinv upscale: every kernel's sum is kept
        name = "layer1.0.conv1.weight"
        assert big_step[name].shape[-2:] == (3, 3) and small_step[name].shape[-2:] == (2, 2)
        torch.testing.assert_close(big_step[name].sum((-2, -1)), small_step[name].sum((-2, -1)),
                                   rtol=1e-5, atol=1e-6)
        assert small_step[name].abs().max() > 1e-4   # there was momentum to carry


def test_carry_momentum_copies_unconverted_buffers_and_skips_missing_ones():
    """Without a converter, same-shape buffers are copied; a parameter without a buffer stays without."""
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    a(torch.randn(4, 3)).sum().backward()
    a.bias.grad = None                                  # the bias gets no buffer
    opt_a.step()
    opt_b = modelsurgery.methods.carry_momentum(a, opt_a, b, torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9))
    assert torch.equal(opt_b.state[b.weight]["momentum_buffer"], opt_a.state[a.weight]["momentum_buffer"])
    assert opt_b.state[b.weight]["momentum_buffer"] is not opt_a.state[a.weight]["momentum_buffer"]
    assert "momentum_buffer" not in opt_b.state.get(b.bias, {})


def test_trainer_replace_model_carries_momentum_through_the_converter():
    from modelsurgery.train.loop import Trainer
    from modelsurgery.train.schedules import MultiStep

    kr, small, _ = _stepped_pretrain()
    loader = [(torch.randn(8, 1, 19, 19), torch.randint(0, 10, (8,))) for _ in range(2)]
    trainer = Trainer(small, loader, None, schedule=MultiStep(0.1, ()), progress=False, weight_decay=0.0)
    trainer.fit(1)
    old = modelsurgery.methods.momentum_buffers(trainer.model, trainer.optimizer)
    trainer.replace_model(kr.grow(trainer.model), form="target", convert_momentum=kr.convert_state)
    new = modelsurgery.methods.momentum_buffers(trainer.model, trainer.optimizer)
    expected = kr.convert_state({n: old.get(n, torch.zeros_like(p)) for n, p in small.named_parameters()})
    assert set(new) == set(old) and new["conv1.weight"].shape[-2:] == (3, 3)
    assert all(torch.allclose(new[n], expected[n]) for n in new)


# ---- the Trainer takes methods (as Composer's trainer takes algorithms) --------------------------

class _Recording(Method):
    """Records every hook call; wraps iteration 1 of each epoch."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def on_epoch_start(self, trainer, epoch):
        self.calls.append((self.name, "epoch", epoch))

    def step_context(self, trainer, epoch, it):
        return contextlib.nullcontext() if it == 1 else None

    def restore(self, trainer, info):
        self.calls.append((self.name, "restore", info.train["epoch"], trainer.epoch))


def _tiny_trainer(tmp_path, **kwargs):
    from modelsurgery.train.loader import TensorLoader
    from modelsurgery.train.loop import Trainer
    from modelsurgery.train.schedules import MultiStep

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8, generator=gen)
    loader = TensorLoader(images, torch.randint(0, 10, (16,), generator=gen), batch_size=8)
    return Trainer(FashionResNet(width=4), loader, None, schedule=MultiStep(0.1, ()), progress=False,
                   checkpoint_path=tmp_path / "last.safetensors", **kwargs)


def test_trainer_calls_each_methods_hooks_after_the_keyword_callbacks(tmp_path):
    calls = []
    trainer = _tiny_trainer(tmp_path, methods=[_Recording("a", calls), _Recording("b", calls)],
                            on_epoch_start=[lambda t, e: calls.append(("kw", "epoch", e))])
    history = trainer.fit(2)
    assert calls == [("kw", "epoch", 0), ("a", "epoch", 0), ("b", "epoch", 0),
                     ("kw", "epoch", 1), ("a", "epoch", 1), ("b", "epoch", 1)]
    assert [r["low_fraction"] for r in history] == [0.5, 0.5] and [r["mode"] for r in history] == ["mixed"] * 2
    calls.clear()
    resumed = _tiny_trainer(tmp_path, methods=[_Recording("a", calls)])
    resumed.load_checkpoint(tmp_path / "last.safetensors")
    assert calls == [("a", "restore", 2, 0)] and resumed.epoch == 2   # restore runs before the state loads


def test_trainer_with_kernel_rescaling_grows_at_the_switch(tmp_path):
    kr = KernelRescaling(FashionResNet(width=4), target_size=28, switch_epoch=1, recalibrate=0)
    trainer = _tiny_trainer(tmp_path, methods=[kr], form=kr.form, plan=kr.plan)
    trainer.replace_model(kr.model, form=kr.form)
    trainer.set_input_size(kr.input_size)
    history = trainer.fit(2)
    assert [r["form"] for r in history] == ["pretrain", "target"] and trainer.model.conv1.weight.shape[-2:] == (3, 3)


def test_trainer_refuses_what_is_not_a_method(tmp_path):
    with pytest.raises(MethodError, match="is not a method: it needs on_epoch_start, step_context and restore"):
        _tiny_trainer(tmp_path, methods=[object()])


def test_grow_keeps_its_old_method_keyword_with_a_warning():
    from modelsurgery.grow import grow
    from modelsurgery.shrink import shrink

    small, plan = shrink(FashionResNet(width=4), target_size=28)
    expected, _ = grow(small.state_dict(), plan, upscale="bilinear")
    with pytest.warns(DeprecationWarning, match="grow's method= is deprecated: pass upscale="):
        state, _ = grow(small.state_dict(), plan, method="bilinear")
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not torch.equal(expected["conv1.weight"], grow(small.state_dict(), plan)[0]["conv1.weight"])  # pinv differs
