"""`msurg` answers help, usage errors and file errors without importing torch, torchvision or timm.

Each case runs in a fresh interpreter (the test process has long imported torch): a wrapper calls
`modelsurgery.cli.main` with the arguments, catches its SystemExit, and prints the exit code and
which of the heavy modules are in `sys.modules` afterwards. `import modelsurgery` alone is as
cheap, and its verbs import what they need on first use.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelsurgery.cli import cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm")
WRAPPER = f"""
import json, sys
from modelsurgery.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exit:
    code = exit.code
print("RESULT " + json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def msurg(*args: str, cwd: Path) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stderr) of `msurg ARGS` in a fresh interpreter."""
    proc = python(WRAPPER, *args, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT "):])
    return result["code"], result["heavy"], proc.stderr


@pytest.fixture
def work(tmp_path):
    """A folder with an existing output file, a folder and nothing else."""
    (tmp_path / "exists.safetensors").write_bytes(b"old")
    (tmp_path / "folder").mkdir()
    return tmp_path


HELP = [["--help"], ["--version"], *([name, "--help"] for name in sorted(cli.commands))]
USAGE = [["--bogus"], ["nosuchverb"], ["shrink", "resnet18", "--bogus"], ["shrink"], ["grow"],
         ["export", "small.safetensors"], ["grow", "small.safetensors", "--to", "0"]]
FILES = [
    (["grow", "missing.safetensors"], "checkpoint 'missing.safetensors' does not exist"),
    (["grow", "folder"], "checkpoint 'folder' is a directory, not a file"),
    (["grow", "missing.safetensors", "--out", "exists.safetensors"], "output 'exists.safetensors' exists"),
    (["export", "missing.pt", "--out", "x.onnx"], "checkpoint 'missing.pt' does not exist"),
    (["export", "folder", "--out", "x.onnx"], "checkpoint 'folder' is a directory"),
    (["export", "missing.pt", "--out", "folder"], "output 'folder' is a directory"),
    (["shrink", "resnet18", "--out", "exists.safetensors"], "output 'exists.safetensors' exists. Hint: pass --force"),
    (["shrink", "resnet18", "--out", "s.safetensors", "--weights", "missing.pth"], "checkpoint 'missing.pth' does not"),
    (["shrink", "resnet18", "--out", "nofolder/s.safetensors"], "output folder 'nofolder' does not exist"),
]


@pytest.mark.parametrize("args", HELP, ids=" ".join)
def test_help_imports_no_torch(work, args):
    assert msurg(*args, cwd=work)[:2] == (0, [])


@pytest.mark.parametrize("args", USAGE, ids=" ".join)
def test_usage_errors_exit_2_without_torch(work, args):
    code, heavy, stderr = msurg(*args, cwd=work)
    assert (code, heavy) == (2, []), stderr
    assert "Error:" in stderr


@pytest.mark.parametrize("args, message", FILES, ids=[" ".join(a) for a, _ in FILES])
def test_file_errors_exit_1_without_torch(work, args, message):
    before = sorted(p.name for p in work.iterdir())
    code, heavy, stderr = msurg(*args, cwd=work)
    assert (code, heavy) == (1, []), stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith(f"error: {message}"), stderr
    assert sorted(p.name for p in work.iterdir()) == before and (work / "exists.safetensors").read_bytes() == b"old"


def test_import_is_cheap_and_the_verbs_import_on_first_use(tmp_path):
    code = f"""
import sys, types
import modelsurgery
assert [m for m in {HEAVY!r} if m in sys.modules] == [], sorted(sys.modules)
assert {{"shrink", "grow", "save", "load", "Plan", "resize", "SurgeryError"}} <= set(dir(modelsurgery))
small, plan = modelsurgery.shrink("test_resnet", num_classes=10)   # imports torch and timm now
assert isinstance(modelsurgery.shrink, types.FunctionType), modelsurgery.shrink
assert all(m in sys.modules for m in ("torch", "timm"))
print(plan.to_json())
"""
    from modelsurgery.shrink import shrink

    proc = python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, plan = shrink("test_resnet", num_classes=10)  # the same call in this process, imported eagerly
    assert proc.stdout.strip() == plan.to_json() and plan.input_size < plan.target_size


def test_verbs_stay_functions_when_their_modules_are_imported_first(tmp_path):
    """`import modelsurgery.shrink` binds the module as the package's attribute; the package keeps the function."""
    code = """
import sys, types
import modelsurgery.shrink
import modelsurgery.grow
from modelsurgery import shrink
import modelsurgery
assert shrink is modelsurgery.shrink is sys.modules["modelsurgery.shrink"].shrink
assert isinstance(modelsurgery.grow, types.FunctionType) and modelsurgery.grow.__module__ == "modelsurgery.grow"
assert isinstance(sys.modules["modelsurgery.grow"], types.ModuleType)
assert modelsurgery.resize.downscale and modelsurgery.lowmode.low_mode is modelsurgery.low_mode
print("ok")
"""
    proc = python(code, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.split() == ["ok"], proc.stderr[-2000:]


def test_light_modules_import_no_torch(tmp_path):
    """errors, constants and paths are what the CLI loads before a verb runs."""
    code = f"""
import sys
import modelsurgery.errors, modelsurgery.constants, modelsurgery.paths, modelsurgery.cli
print([m for m in {HEAVY!r} if m in sys.modules])
"""
    proc = python(code, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.split() == ["[]"], proc.stderr[-2000:]


def test_startup_table_is_read_from_its_results_file(tmp_path):
    """bench/results/startup.json rendered with its every float altered: every figure of its section changes."""
    from bench import make_readme_table as tables
    from tests.test_bench_tables import DECIMALS, bump

    src = ROOT / "bench" / "results" / "startup.json"
    (tmp_path / src.name).write_text(json.dumps(bump(json.loads(src.read_text()))))
    (before, _), (after, used) = tables.build(src.parent), tables.build(tmp_path)
    assert used == [src.name]
    def section(text):
        return text.split("## Start-up time")[1].split("<sub>Source:")[0]
    old, new = re.findall(DECIMALS, section(before)), re.findall(DECIMALS, section(after))
    assert len(old) == len(new) > 40
    assert all(a != b for a, b in zip(old, new, strict=True)), [(a, b) for a, b in zip(old, new, strict=True)
                                                                 if a == b]


def test_benchmark_attributes_import_time_to_the_innermost_heavy_package():
    """bench.startup's breakdown: a module counts for the heavy package whose import it is part of."""
    from bench.startup import import_times

    stderr = """import time: self [us] | cumulative | imported package
import time:         5 |          5 | encodings
import time:       100 |        100 |     numpy.core
import time:       200 |        300 |   numpy
import time:      1000 |       1300 | torch
import time:        50 |         50 |     PIL
import time:       300 |        350 |   torchvision.models
import time:        10 |         10 |   json
import time:       400 |       760 | timm
import time:         7 |          7 | click
STARTED 1.5
"""
    assert import_times(stderr, frozenset({"encodings"})) == pytest.approx(
        {"torch": 1300e-6, "torchvision": 350e-6, "timm": 410e-6, "other": 7e-6}, abs=1e-12)
