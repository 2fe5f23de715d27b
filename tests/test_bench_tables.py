"""The benchmark tables are generated from bench/results/, and nothing else.

bench/results/README.md must be exactly the generator's output of the committed results files
(every one of them, other machines' included), and the headline between README.md's markers
exactly its headline; a results file whose every number is altered changes every figure shown.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import make_readme_table as tables
from bench.common import Run, goal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def bump(value):
    """Every float changed (× 1.37 + 0.011); everything else as it is."""
    if isinstance(value, list):
        return [bump(v) for v in value]
    if isinstance(value, dict):
        return {k: bump(v) for k, v in value.items()}
    return value * 1.37 + 0.011 if isinstance(value, float) else value


def test_results_readme_is_the_generator_output_of_every_committed_results_file():
    text, used = tables.build(RESULTS)
    assert sorted(used) == sorted(p.name for p in RESULTS.glob("*.json")), "a results file was skipped"
    assert any(name.endswith("-amd.json") for name in used)
    committed = (RESULTS / "README.md").read_text()
    assert committed == text, "bench/results/README.md is stale: run `python -m bench.make_readme_table`"


def test_readme_headline_is_the_generator_headline():
    readme = (ROOT / "README.md").read_text()
    if tables.START not in readme:
        pytest.skip(f"README.md has no {tables.START} ... {tables.END} markers yet")
    section = readme.split(tables.START)[1].split(tables.END)[0]
    assert section.strip() == tables.headline(RESULTS).strip(), (
        "README's headline is stale: run `python -m bench.make_readme_table --readme`")


def test_headline_names_a_source_for_every_row():
    rows = [r for r in tables.headline(RESULTS).splitlines()[2:] if r.strip()]
    assert 5 <= len(rows) <= 8
    for row in rows:
        src = re.search(r"`bench/results/([\w.-]+\.json)`", row)
        assert src and (RESULTS / src.group(1)).exists(), row


DECIMALS = r"(?<![§\d.])\d+\.\d+"   # decimal figures; not a paper's section (§3.1)
PERCENTS = r"(?<![§\d.])\d+%"


@pytest.mark.parametrize("name, figures", [
    ("pretrain_speedup.json", DECIMALS), ("pretrain_speedup-amd.json", DECIMALS), ("convert_speed.json", DECIMALS),
    ("time_to_accuracy.json", DECIMALS), ("grow_fidelity.json", DECIMALS), ("lowmode_cost-amd.json", PERCENTS)])
def test_every_number_in_a_section_comes_from_its_results_file(tmp_path, name, figures):
    """Rebuilt from a results file whose every float is altered, every figure in its section changes."""
    (tmp_path / name).write_text(json.dumps(bump(json.loads((RESULTS / name).read_text()))))
    original, _ = tables.build(RESULTS)
    altered, used = tables.build(tmp_path)
    assert used == [name]
    source = f"<sub>Source: `bench/results/{name}`"
    before = original.split(source)[0].rsplit("\n## ", 1)[1]
    after = altered.split(source)[0].rsplit("\n## ", 1)[1]
    old, new = re.findall(figures, before), re.findall(figures, after)
    assert len(old) == len(new) > 5
    assert all(a != b for a, b in zip(old, new)), [(a, b) for a, b in zip(old, new) if a == b]


def test_pretrain_speedups_all_change_with_the_results_file(tmp_path):
    """The speed-up column, in particular: every × figure is read from the file."""
    src = RESULTS / "pretrain_speedup.json"
    (tmp_path / src.name).write_text(json.dumps(bump(json.loads(src.read_text()))))
    original, _ = tables.build(RESULTS)
    altered, _ = tables.build(tmp_path)
    section = original.split("## Pre-train speed-up")[1].split("\n## ")[0]
    new = altered.split("## Pre-train speed-up")[1]
    before, after = re.findall(r"\d+\.\d+×", section), re.findall(r"\d+\.\d+×", new)
    assert len(before) == len(after) > 20
    assert all(a != b for a, b in zip(before, after)), list(zip(before, after))


def test_the_envelope_and_the_committed_layout_render_alike(tmp_path):
    """A file in the shared layout gives the same section as the committed file it was converted from."""
    for name in ("shrink_speed.json", "grow_speed-amd.json", "convert_speed.json"):
        (tmp_path / name).write_text(json.dumps(tables.load(RESULTS / name)))
    new, used = tables.build(tmp_path)
    assert set(used) == {"shrink_speed.json", "grow_speed-amd.json", "convert_speed.json"}
    old, _ = tables.build(RESULTS)
    for name in used:
        section = lambda text: text.split(f"<sub>Source: `bench/results/{name}`")[0].rsplit("\n## ", 1)[1]  # noqa: E731
        assert section(new) == section(old)


def test_run_writes_the_envelope_atomically(tmp_path):
    run = Run("shrink_speed", {"model": "resnet18", "repeats": 1})
    data = {"command": "msurg shrink resnet18 --out small.safetensors", "cli_wall_s": [1.5], "cli_wall_median_s": 1.5,
            "api_imports_s": 1.0, "api_shrink_and_save_s": [0.2], "api_median_s": 0.2}
    out = tmp_path / "shrink_speed.json"
    result = run.finish(out, data, [goal("shrink_process_under_10s", 1.5, 10.0, True)])
    assert json.loads(out.read_text()) == result
    assert list(result) == ["script", "machine", "settings", "goals", "data"]
    expected = {"processor", "cpu_count", "torch", "threads", "python", "cuda_device", "loadavg_start", "loadavg_end"}
    assert expected <= set(result["machine"])
    assert result["goals"] == [{"name": "shrink_process_under_10s", "value": 1.5, "threshold": 10.0, "met": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["shrink_speed.json"]
    text, used = tables.build(tmp_path)
    assert used == ["shrink_speed.json"] and "1.50 s as a process" in text


def test_splice_replaces_only_between_the_markers():
    readme = f"intro\n{tables.START}\nold\n{tables.END}\noutro\n"
    assert tables.splice(readme, "new\n") == f"intro\n{tables.START}\nnew\n{tables.END}\noutro\n"
    with pytest.raises(ValueError, match="exactly one"):
        tables.splice("no markers", "new\n")


def test_readme_mode_writes_the_headline_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n{tables.START}\nold\n{tables.END}\noutro\n")
    tables.main(["--out", str(tmp_path / "tables.md"), "--readme", str(readme)])
    assert readme.read_text() == f"# intro\n{tables.START}\n{tables.headline(RESULTS)}{tables.END}\noutro\n"
    assert (tmp_path / "tables.md").read_text() == tables.build(RESULTS)[0]


@pytest.mark.slow
def test_time_to_accuracy_smoke_writes_the_envelope(tmp_path):
    """`python -m bench.time_to_accuracy` on the committed subset: every method, one results envelope."""
    proc = subprocess.run([sys.executable, "-m", "bench.time_to_accuracy", "--data", "fixture",
                           "--max-batches", "1", "--epochs", "2", "--milestones", "1", "--width", "4",
                           "--wait-load", "none", "--speed-steps", "1", "--out", str(tmp_path), "--methods",
                           "kernel_rescaling,low_mode,progressive_gradual,progressive_step,coarse_to_fine,"
                           "kernel_rescaling+low_mode",
                           "--runs", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert result["script"] == "time_to_accuracy"
    assert set(result["data"]["runs"]) == {"baseline", "kernel_rescaling", "low_mode", "progressive_resizing_gradual",
                                           "progressive_resizing_step", "kernel_rescaling+low_mode", "c2f_baseline",
                                           "coarse_to_fine"}
    assert {g["name"] for g in result["goals"]} == {"kernel_rescaling_saves_at_least_20pct_to_target",
                                                    "low_mode_saves_at_least_15pct_to_target"}
    assert result["machine"]["loadavg_start"]
    assert result["data"]["step_speed"]["target 28 px"]["ratio"] == 1.0
    assert (tmp_path / "time_to_accuracy.png").read_bytes()[:4] == b"\x89PNG"
