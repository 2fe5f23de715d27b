"""The training loop, its data loaders, schedules and checkpoints (modelsurgery.train)."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from modelsurgery.errors import CheckpointError, DatasetError, OutputExistsError
from modelsurgery.images import fixture_path, load_fashion_mnist, load_idx, load_image_folder, read_idx, resize_images
from modelsurgery.methods.progressive_resizing import ramp_size
from modelsurgery.plan import ModelSource, Plan
from modelsurgery.train import loader as data_module
from modelsurgery.train.dist import seed_everything
from modelsurgery.train.loader import TensorLoader
from modelsurgery.train.loop import Trainer, param_groups
from modelsurgery.train.schedules import Cosine, Hold, MultiStep
from modelsurgery.train.state import load_training_checkpoint, read_checkpoint_info

FASHION = Path("/usr/share/datasets/fashion-mnist")


class TinyNet(nn.Module):
    """Conv-BN-ReLU ×2 with dropout: BN buffers and RNG use make resume non-trivial."""

    def __init__(self, width: int = 8, in_chans: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1))
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def fixture_data():
    return load_fashion_mnist("train", source="fixture"), load_fashion_mnist("test", source="fixture")


def make_loaders(fixture_data, size=16, batches=6, **kw):
    (x, y), (vx, vy) = fixture_data
    train = TensorLoader(x, y, batch_size=32, size=size, max_batches=batches, **kw)
    val = TensorLoader(vx[:200], vy[:200], batch_size=100, train=False, mean=train.mean, std=train.std)
    return train, val


def make_trainer(fixture_data, tmp_path, width=8, seed=0, **kw):
    seed_everything(seed)
    train, val = make_loaders(fixture_data, **kw.pop("loader", {}))
    kw.setdefault("schedule", MultiStep(0.05, (2,)))
    return Trainer(TinyNet(width), train, val, seed=seed, progress=False, **kw)


def write_idx(path: Path, array: np.ndarray, code: int, compress: bool) -> None:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


# ---- IDX files -------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_matches_hand_built_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    ints = rng.integers(-2**31, 2**31 - 1, (7,), dtype=np.int32)
    floats = rng.standard_normal((2, 3)).astype(np.float32)
    for name, array, code in (("u8", images, 0x08), ("i32", ints, 0x0C), ("f32", floats, 0x0D)):
        write_idx(tmp_path / name, array, code, compress)
        got = read_idx(tmp_path / name)
        assert got.shape == array.shape
        np.testing.assert_array_equal(got.numpy(), array)   # exact, incl. big-endian decoding
    assert read_idx(tmp_path / "u8").dtype == torch.uint8


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"not an idx file")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8), 0x08, compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short")


def test_load_idx_finds_debian_and_mnist_names(tmp_path):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08, compress=True)
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", np.array([3, 7], np.uint8), 0x08, compress=False)
    x, y = load_idx(tmp_path, "test")
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(images))
    assert y.dtype == torch.int64 and y.tolist() == [3, 7]
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte"):
        load_idx(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_idx(tmp_path, "val")


# ---- the committed fixture -------------------------------------------------------------------
def test_fixture_is_small_balanced_uint8(fixture_data):
    assert fixture_path().stat().st_size <= 5 * 2**20
    (x, y), (vx, vy) = fixture_data
    assert x.shape == (3000, 28, 28) and vx.shape == (1000, 28, 28) and x.dtype == torch.uint8
    assert y.bincount().tolist() == [300] * 10 and vy.bincount().tolist() == [100] * 10


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fixture_is_a_subset_of_the_source():
    from safetensors.torch import load_file

    stored = load_file(fixture_path())
    for split in ("train", "test"):
        images, labels = load_idx(FASHION, split)
        idx = stored[f"{split}_indices"].long()
        assert torch.equal(stored[f"{split}_images"], images[idx])
        assert torch.equal(stored[f"{split}_labels"].long(), labels[idx])


def test_missing_fixture_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSURGERY_FIXTURES", str(tmp_path))
    with pytest.raises(DatasetError, match="make_fixtures.py"):
        load_fashion_mnist("train", source="fixture")


# ---- TensorLoader ----------------------------------------------------------------------------
def test_loader_batches_are_normalised_float(fixture_data):
    (x, y), _ = fixture_data
    loader = TensorLoader(x, y, batch_size=500, train=False)
    batches = list(loader)
    assert len(batches) == len(loader) == 6
    xb, yb = batches[0]
    assert xb.shape == (500, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    everything = torch.cat([b[0] for b in batches]).double()
    assert everything.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert everything.std().item() == pytest.approx(1.0, abs=1e-3)
    expected = (x[:500, None].double() / 255 - loader.mean[0]) / loader.std[0]
    torch.testing.assert_close(xb.double(), expected, rtol=0, atol=1e-5)   # eval keeps the order


def test_loader_repeats_to_three_channels(fixture_data):
    (x, y), _ = fixture_data
    xb, _ = next(iter(TensorLoader(x, y, batch_size=8, size=12, channels=3)))
    assert xb.shape == (8, 3, 12, 12)
    assert torch.equal(xb[:, 0], xb[:, 1]) and torch.equal(xb[:, 0], xb[:, 2])


def test_loader_resizes_once_per_size(fixture_data, monkeypatch):
    (x, y), _ = fixture_data
    calls = []
    real = data_module.resize_images
    monkeypatch.setattr(data_module, "resize_images", lambda im, s: calls.append(s) or real(im, s))
    loader = TensorLoader(x, y, batch_size=64, size=16, max_batches=3)
    for epoch, size in enumerate([16, 16, 20, 16, 28, 20]):
        loader.set_size(size)
        loader.set_epoch(epoch)
        shapes = {tuple(b.shape[-2:]) for b, _ in loader}
        assert shapes == {(size, size)}
    assert calls == [16, 20]   # 28 is the native size: never resized


def test_resize_matches_pil_bilinear(fixture_data):
    (x, _), _ = fixture_data
    for size in (8, 19, 40):
        ours = resize_images(x[:50, None], size)[:, 0].numpy().astype(int)
        ref = np.stack([np.asarray(Image.fromarray(a.numpy()).resize((size, size), Image.BILINEAR))
                        for a in x[:50]]).astype(int)
        assert np.abs(ours - ref).max() <= 1   # antialiased bilinear, uint8 rounding apart


def test_loader_rejects_bad_input(fixture_data):
    (x, y), _ = fixture_data
    with pytest.raises(DatasetError, match="uint8"):
        TensorLoader(x.float(), y, batch_size=8)
    with pytest.raises(DatasetError, match="square"):
        TensorLoader(x[:, :, :20], y, batch_size=8)
    with pytest.raises(DatasetError, match="3000 images but 10 labels"):
        TensorLoader(x, y[:10], batch_size=8)
    with pytest.raises(DatasetError, match="3-channel images into 1"):
        TensorLoader(x[:, None].expand(-1, 3, -1, -1), y, batch_size=8, channels=1)


def test_loader_shards_like_distributed_sampler(fixture_data):
    (x, y), _ = fixture_data
    for train in (True, False):
        shards = [TensorLoader(x, y, batch_size=50, train=train, rank=r, world_size=2) for r in (0, 1)]
        a, b = (s.indices() for s in shards)
        assert len(a) == len(b) == 1500 and len(shards[0]) == 30
        assert set(a.tolist()).isdisjoint(b.tolist()) and len(set(a.tolist()) | set(b.tolist())) == 3000
    loader = TensorLoader(x, y, batch_size=50, seed=3)
    first = loader.indices()
    assert torch.equal(first, loader.indices())            # order depends on (seed, epoch) only
    loader.set_epoch(1)
    assert not torch.equal(first, loader.indices())


def test_augmentation_is_seeded_and_stays_in_range(fixture_data):
    (x, y), _ = fixture_data
    runs = []
    for _ in range(2):
        loader = TensorLoader(x, y, batch_size=64, max_batches=2, flip=True, crop_pad=2, seed=1)
        loader.set_epoch(4)
        runs.append(torch.cat([b for b, _ in loader]))
    plain = TensorLoader(x, y, batch_size=64, max_batches=2, seed=1)
    plain.set_epoch(4)
    clean = torch.cat([b for b, _ in plain])
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == clean.shape
    assert not torch.equal(runs[0], clean)
    assert runs[0].min() >= clean.min() - 1e-6 and runs[0].max() <= clean.max() + 1e-6


def test_image_folder_loads_into_memory(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    images, labels, classes = load_image_folder(tmp_path, size=16)
    assert images.shape == (5, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1, 1, 1] and classes == ["cat", "dog"]
    gray, _, _ = load_image_folder(tmp_path, size=8, channels=1)
    assert gray.shape == (5, 1, 8, 8)
    xb, yb = next(iter(TensorLoader(images, labels, batch_size=5, train=False, size=8)))
    assert xb.shape == (5, 3, 8, 8) and yb.tolist() == labels.tolist()
    with pytest.raises(DatasetError, match="root/CLASS_NAME"):
        load_image_folder(tmp_path / "missing", size=8)


# ---- schedules -------------------------------------------------------------------------------
def test_schedules():
    step = MultiStep(0.1, (3, 5), warmup=1, warmup_start=0.0)
    assert step(0.0) == 0.0 and step(0.5) == pytest.approx(0.05) and step(2.99) == 0.1
    assert step(3.0) == pytest.approx(0.01) and step(5.0) == pytest.approx(0.001)
    cos = Cosine(0.2, epochs=10, min_lr=0.02)
    assert cos(0) == pytest.approx(0.2) and cos(10) == pytest.approx(0.02)
    assert cos(2.5) == pytest.approx(0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi / 4)))
    held = Hold(MultiStep(0.1, (4,)), at=2, epochs=3)
    assert [held(e) for e in (1, 3, 6)] == [0.1, 0.1, 0.1] and held(7) == pytest.approx(0.01)
    assert held.changes == (7,)
    assert [ramp_size(e, 8, 28, 1, 5, multiple=4) for e in range(7)] == [8, 8, 12, 20, 24, 28, 28]
    # 16 -> 19 over 4 epochs: 18.25 rounds to 20, above the end; held at 19. Downward ramps stay inside too.
    assert [ramp_size(e, 16, 19, 0, 4, multiple=4) for e in range(5)] == [16, 16, 16, 19, 19]
    for start, end, multiple in ((16, 19, 4), (12, 19, 4), (28, 17, 8), (5, 7, 4), (30, 3, 32)):
        sizes = [ramp_size(e, start, end, 0, 6, multiple) for e in range(8)]
        assert all(min(start, end) <= s <= max(start, end) for s in sizes), (start, end, sizes)
    with pytest.raises(ValueError, match="ascending"):
        MultiStep(0.1, (5, 3))


def test_param_groups_skip_decay_on_norms_and_biases():
    model = TinyNet()
    groups = param_groups(model, 5e-4)
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    decayed = {id(model.features[0].weight), id(model.features[4].weight), id(model.head.weight)}
    assert {id(p) for p in groups[0]["params"]} == decayed
    assert id(model.features[1].weight) in {id(p) for p in groups[1]["params"]}


# ---- the loop --------------------------------------------------------------------------------
def test_training_lowers_the_loss(fixture_data, tmp_path):
    trainer = make_trainer(fixture_data, tmp_path, schedule=Cosine(0.1, 3), loader={"batches": 25})
    xb, yb = next(iter(TensorLoader(*fixture_data[1], batch_size=500, train=False, size=16,
                                    mean=trainer.train_loader.mean, std=trainer.train_loader.std)))

    def loss() -> float:
        trainer.model.eval()
        with torch.no_grad():
            return nn.functional.cross_entropy(trainer.model(xb), yb).item()

    before = loss()
    history = trainer.fit(3)
    assert loss() < before - 0.3 and math.log(10) - 0.2 < before
    assert history[-1]["val_acc"] > 0.35   # chance is 0.10
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_jsonl_log_has_one_record_per_epoch(fixture_data, tmp_path):
    log = tmp_path / "log.jsonl"
    trainer = make_trainer(fixture_data, tmp_path, log_path=log, schedule=MultiStep(0.05, (1,)))
    history = trainer.fit(2)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records == json.loads(json.dumps(history))
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [6, 12]
    for r in records:
        assert {"epoch", "wall", "train_loss", "val_acc", "lr", "size", "mode", "form"} <= set(r)
        assert r["size"] == 16 and r["mode"] == "full" and r["form"] == "target" and 0 <= r["val_acc"] <= 1
    assert 0 < records[0]["wall"] < records[1]["wall"]
    assert records[0]["lr"] == 0.05 and records[1]["lr"] == pytest.approx(0.005)


def test_step_context_wraps_forward_and_backward(fixture_data, tmp_path):
    active, seen = [False], []

    @contextlib.contextmanager
    def flag():
        active[0] = True
        yield
        active[0] = False

    trainer = make_trainer(fixture_data, tmp_path, step_context=lambda t, e, it: flag() if it % 2 else None)
    trainer.model.register_forward_pre_hook(lambda m, a: seen.append(("fwd", active[0])))
    trainer.model.head.weight.register_hook(lambda g: seen.append(("bwd", active[0])))
    record = trainer.fit(1)[-1]
    assert record["mode"] == "mixed" and record["low_fraction"] == 0.5
    train_steps = seen[:12]    # 6 iterations × (fwd, bwd), then the evaluation forwards
    assert train_steps == [(kind, it % 2 == 1) for it in range(6) for kind in ("fwd", "bwd")]
    assert len(seen) > 12 and all(not flag_ for _, flag_ in seen[12:])   # never during evaluation
    trainer.step_context = lambda t, e, it: flag()
    assert trainer.fit(2)[-1]["mode"] == "low"


def test_replace_model_keeps_schedule_and_rebuilds_optimizer(fixture_data, tmp_path):
    swaps = []

    def grow(trainer, epoch):
        if epoch >= 1 and trainer.form == "pretrain":
            swaps.append(trainer.model)
            trainer.replace_model(TinyNet(width=12), form="target")
            trainer.set_input_size(28)

    trainer = make_trainer(fixture_data, tmp_path, form="pretrain", on_epoch_start=[grow],
                           schedule=MultiStep(0.05, (1,)))
    trainer.fit(3)
    old = swaps[0]
    frozen = {k: v.clone() for k, v in old.state_dict().items()}
    new_start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(4)
    assert len(swaps) == 1 and trainer.model.head.in_features == 24
    history = trainer.history
    assert [(r["form"], r["size"]) for r in history] == [("pretrain", 16), ("target", 28), ("target", 28),
                                                         ("target", 28)]
    assert [r["lr"] for r in history] == pytest.approx([0.05, 0.005, 0.005, 0.005])
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in trainer.model.parameters()}
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in frozen.items())    # old net left alone
    assert not torch.equal(new_start["head.weight"], trainer.model.head.weight)   # new net trains
    assert trainer.evaluate(size=20) == pytest.approx(trainer.evaluate(size=20))
    assert trainer.val_loader.size == 20


# ---- checkpoints -----------------------------------------------------------------------------
def test_checkpoint_round_trip_with_plan(fixture_data, tmp_path):
    plan = Plan(source=ModelSource("timm", "resnet18"), input_size=16, target_size=28, in_chans=1)
    trainer = make_trainer(fixture_data, tmp_path, plan=plan, form="pretrain")
    trainer.fit(1)
    path = tmp_path / "ck" / "last.safetensors"
    trainer.save_checkpoint(path)
    assert sorted(os.listdir(path.parent)) == ["last.safetensors"]   # no temp file left behind
    with pytest.raises(OutputExistsError, match="exists"):
        trainer.save_checkpoint(path)

    info = read_checkpoint_info(path)
    assert info.form == "pretrain" and Plan.from_json(info.plan) == plan and info.version == "0.1.0"
    assert info.train["epoch"] == 1 and info.train["step"] == 6 and info.train["size"] == 16
    assert info.train["history"] == json.loads(json.dumps(trainer.history))

    model, fresh = TinyNet(), None
    fresh = torch.optim.SGD(param_groups(model, 5e-4), lr=1.0, momentum=0.9)
    load_training_checkpoint(path, model, fresh)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    mine, theirs = trainer.optimizer.state_dict(), fresh.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    for idx, state in mine["state"].items():
        assert torch.equal(state["momentum_buffer"], theirs["state"][idx]["momentum_buffer"])


def test_checkpoint_errors_name_the_problem(fixture_data, tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        read_checkpoint_info(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint_info(tmp_path / "nope.safetensors")
    trainer = make_trainer(fixture_data, tmp_path)
    trainer.save_checkpoint(tmp_path / "ck.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatch: \['features.0.bias'.*grown"):
        load_training_checkpoint(tmp_path / "ck.safetensors", TinyNet(width=12))
    with pytest.raises(CheckpointError, match=r"missing: \['extra.bias', 'extra.weight'\]"):
        load_training_checkpoint(tmp_path / "ck.safetensors", nn.ModuleDict(
            {"features": TinyNet().features, "head": TinyNet().head, "extra": nn.Linear(1, 1)}))


def test_resume_matches_uninterrupted_run(fixture_data, tmp_path):
    def run(epochs, resume=None, seed_offset=0):
        # The Bernoulli step context and dropout draw from the global RNG; flips/crops from the loader's.
        def coin(t, e, it):
            return contextlib.nullcontext() if torch.rand(()) < 0.5 else None
        trainer = make_trainer(fixture_data, tmp_path, seed=7, schedule=Cosine(0.05, 3, warmup=1.5),
                               loader={"flip": True, "crop_pad": 1}, step_context=coin)
        if seed_offset:   # a different initialisation, which loading must overwrite
            trainer.replace_model(TinyNet())
        if resume:
            trainer.load_checkpoint(resume)
        trainer.fit(epochs)
        return trainer

    straight = run(3)
    halfway = run(1)
    halfway.save_checkpoint(tmp_path / "half.safetensors")
    resumed = run(3, resume=tmp_path / "half.safetensors", seed_offset=1)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    def drop(h):
        return [{k: v for k, v in r.items() if k not in ("wall", "epoch_start_s")} for r in h]
    assert drop(resumed.history) == drop(straight.history)
    assert resumed.history[-1]["low_fraction"] not in (0.0, 1.0)
