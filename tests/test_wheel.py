"""What a plain `pip install` needs: the fidelity check's images ship inside the package, and
nothing in `msurg grow` depends on the repository's `fixtures/` unless `--calibrate fixture` asks for it.

The wheel itself is built, installed into a fresh virtual environment and run by
`.ci/wheel_check.sh` (called by `.ci/run`).
"""

import importlib.util
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import modelsurgery.images as data
from modelsurgery.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_package_data_is_the_fixtures_first_test_images(tmp_path):
    images, labels = data.load_fidelity_images()
    fixture = load_file(data.fixture_path())
    assert images.dtype == torch.uint8 and tuple(images.shape) == (32, 28, 28)
    assert torch.equal(images, fixture["test_images"][:32])
    assert torch.equal(labels, fixture["test_labels"][:32].long())
    shipped = ROOT / "modelsurgery" / "data" / data.FIDELITY_IMAGES_FILE
    assert shipped.stat().st_size < 64 * 1024  # package data stays small
    spec = importlib.util.spec_from_file_location("make_fidelity_data", ROOT / "fixtures" / "make_fidelity_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rebuilt = script.make_fidelity_data(data.fixture_path(), tmp_path / "fidelity.safetensors")
    assert rebuilt.read_bytes() == shipped.read_bytes()  # the script reproduces the file byte for byte


def test_grow_without_the_images_skips_the_check_with_a_note(resnet18_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FIDELITY_IMAGES_FILE", "absent.safetensors")
    monkeypatch.setenv("MODELSURGERY_FIXTURES", str(tmp_path / "nowhere"))  # as after `pip install .`
    assert data.load_fidelity_images() is None
    out = tmp_path / "big.safetensors"
    result = CliRunner().invoke(cli, ["grow", str(resnet18_ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"wrote {out}") and out.is_file()
    assert lines[1].startswith("fidelity check skipped: its test images (modelsurgery/data/fidelity.safetensors) "
                               "are not installed")
    assert result.stderr == ""


def test_calibrate_fixture_outside_a_checkout_fails_before_writing(resnet18_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSURGERY_FIXTURES", str(tmp_path / "nowhere"))
    out = tmp_path / "big.safetensors"
    result = CliRunner().invoke(cli, ["grow", str(resnet18_ckpt), "--out", str(out), "--calibrate", "fixture"])
    assert result.exit_code == 1 and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: 'fixture' names the Fashion-MNIST subset in the repository's fixtures/")
    assert "Hint: pass a folder of IDX files or an ImageFolder instead" in result.stderr


def test_git_revision_only_for_a_package_in_a_checkout(tmp_path, monkeypatch):
    import subprocess

    from modelsurgery.recipes_kit import results

    repo = tmp_path / "project"  # someone's repository, with a virtual environment inside it
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    site = repo / ".venv" / "lib" / "site-packages"
    (site / "modelsurgery" / "train").mkdir(parents=True)
    assert results.git_revision(site) not in ("", "unknown")  # what the old default reported
    monkeypatch.setattr(results, "__file__", str(site / "modelsurgery" / "recipes_kit" / "results.py"))
    assert results.git_revision() == "unknown"  # a pip-installed copy has no revision of its own
