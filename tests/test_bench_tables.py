"""The benchmark tables are generated from bench/results/, and nothing else.

bench/results/README.md must be exactly the generator's output of the committed results files
(every one of them, other machines' included), and the headline between README.md's markers
exactly its headline; a results file whose every number is altered changes every figure shown.
"""

import json
import re
from pathlib import Path

import pytest

from bench import make_readme_table as tables
from bench.common import Run, goal
from bench.tta.plan import ABLATIONS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def bump(value):
    """Every float changed (× 1.37, then 0.011 further from zero: no fixed point, a change of at least
    0.011 everywhere); everything else as it is."""
    if isinstance(value, list):
        return [bump(v) for v in value]
    if isinstance(value, dict):
        return {k: bump(v) for k, v in value.items()}
    if not isinstance(value, float):
        return value
    return value * 1.37 + (0.011 if value >= 0 else -0.011)


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
ABLATION_NAMES = [v for variants in ABLATIONS.values() for v in variants]
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
    for label in ABLATION_NAMES:   # an ablation's name is a label, not a figure ("p_low 0.3")
        before, after = before.replace(f"| {label} |", "| |"), after.replace(f"| {label} |", "| |")
    old, new = re.findall(figures, before), re.findall(figures, after)
    assert len(old) == len(new) > 5
    assert all(a != b for a, b in zip(old, new, strict=True)), [(a, b) for a, b in zip(old, new, strict=True)
                                                                 if a == b]


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
    assert all(a != b for a, b in zip(before, after, strict=False)), list(zip(before, after, strict=False))


def test_every_committed_results_file_is_an_envelope():
    """The layout `bench.common.Run` writes, and nothing else: the generator has no adapters for older ones."""
    for path in RESULTS.glob("*.json"):
        assert list(json.loads(path.read_text())) == ["script", "machine", "settings", "goals", "data"], path.name


def test_a_file_in_another_layout_is_skipped_with_a_note(tmp_path, capsys):
    (tmp_path / "shrink_speed.json").write_text(json.dumps({"cli_wall_median_s": 1.5, "goal_s": 10.0}))
    with pytest.raises(ValueError, match=r"shrink_speed.json is not a results envelope .* it has cli_wall_median_s"):
        tables.load(tmp_path / "shrink_speed.json")
    text, used = tables.build(tmp_path)
    assert used == [] and "## Shrink speed" not in text
    assert "skipped shrink_speed.json: unexpected layout (ValueError" in capsys.readouterr().err


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


def _frontier_envelope() -> dict:
    """A results file in the frontier layout, written by bench.time_to_accuracy's own summary code."""
    from bench.frontier import against_default, method_point, point_summary

    def point(epochs, accs, t):
        return point_summary(epochs, [{"seed": k, "acc": a, "train_s": t + 1.5 * k, "eval_s": 2.25, "cost": 0.9 * t}
                                      for k, a in enumerate(accs)])

    base = [point(1, [0.871, 0.874], 71.5), point(2, [0.893, 0.897], 142.5), point(4, [0.912, 0.915, 0.913], 283.5),
            point(6, [0.921, 0.923], 425.5)]
    methods = {"kernel_rescaling": [method_point(point(2, [0.882, 0.886], 104.5), base),
                                    method_point(point(4, [0.905, 0.909, 0.907], 207.5), base)],
               "low_mode": [method_point(point(2, [0.861, 0.866], 110.5), base),
                            method_point(point(4, [0.925, 0.927, 0.926], 203.5), base)]}
    ablations = {"kernel_rescaling": {"epochs": 2, "default": methods["kernel_rescaling"][0], "variants": {
        "switch at 1/3": {"params": {"switch": 0.67}, **method_point(point(2, [0.889, 0.884], 118.5), base)}}}}
    for ab in ablations.values():
        for v in ab["variants"].values():
            v["against_default"] = against_default(v, ab["default"])
    data = {"baseline": base, "methods": methods, "c2f_baseline": [], "headline_epochs": 4, "ablations": ablations,
            "step_table": {"seconds": {"target 28px": 0.2375, "pretrain 19px": 0.1075}, "full_step_s": 0.2375,
                           "relative": {"target 28px": 1.0, "pretrain 19px": 0.4526}},
            "network": {"model": "fashion-resnet18", "width": 16, "batch_size": 256, "description": "conv-bound"},
            "complete": True, "quick": False}
    goals = [goal("kernel_rescaling_saves_at_least_20pct_at_equal_acc", methods["kernel_rescaling"][1][
        "saving_at_equal_acc"], 0.2, False)]
    return {"script": "time_to_accuracy", "machine": {"processor": "AMD EPYC", "runtime_s": 5000.5,
                                                      "loadavg_start": [1.25, 1.0, 1.0], "loadavg_end": [1.5, 1, 1]},
            "settings": {"threads": 2}, "goals": goals, "data": data}


def test_an_incomplete_frontier_says_what_it_still_lacks(tmp_path):
    """Frontier runs missing: incomplete; only ablation runs (`method[variant]`) missing: the frontier is complete."""
    for missing, done, said in ((["resnet/baseline/12ep/seed1", "resnet/low_mode[p_low 0.3]/4ep/seed0"], False,
                                 "Incomplete: 2 runs still to train."),
                                (["resnet/low_mode[p_low 0.3]/4ep/seed0"], True,
                                 "The frontier is complete; ablation runs still to train: 1.")):
        e = _frontier_envelope()
        e["data"].update(complete=False, missing=missing, frontier_complete=done)
        (tmp_path / "time_to_accuracy.json").write_text(json.dumps(e))
        assert said in tables.build(tmp_path)[0]


def test_frontier_layout_renders_every_point_and_its_reading(tmp_path):
    """The frontier layout: every baseline and method point, the saving or why there is none, every figure read."""
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps(_frontier_envelope()))
    text, used = tables.build(tmp_path)
    assert used == ["time_to_accuracy.json"]
    assert "| `kernel_rescaling` | 4 | 3 | 90.70% ± 0.20% |" in text
    assert "above the frontier" in text                        # low mode at 4 epochs beats the best baseline point
    assert "| 6 | 2 | 92.20% ± 0.14% | 383 | 426 |" in text   # cost 0.9 × 425.5, then the wall time
    assert re.search(r"\| `kernel_rescaling` \| switch at 1/3 \| 2 \| 88.65% ± 0.35% \| 107 \| [+-]\d+\.\d% \|", text)
    # Seeds 88.9 / 88.4 % against the default's 88.2 / 88.6 %: the clouds overlap, at 14 s more.
    assert re.search(r"\| switch at 1/3 \|.*\| no clear difference \([+-]\d+\.\d% saving\) \|", text)
    row = tables.headline(tmp_path).splitlines()[2]
    assert "Time to accuracy at 4 epochs (width 16, 3 seeds)" in row and "kernel rescaling 90.70% ± 0.20%: +" in row
    assert "`bench/results/time_to_accuracy.json`" in row
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps(bump(_frontier_envelope())))
    altered, _ = tables.build(tmp_path)
    old, new = re.findall(DECIMALS, text.split("<sub>")[0]), re.findall(DECIMALS, altered.split("<sub>")[0])
    assert len(old) == len(new) > 20 and all(a != b for a, b in zip(old, new, strict=False)), [
        (a, b) for a, b in zip(old, new, strict=False) if a == b]
