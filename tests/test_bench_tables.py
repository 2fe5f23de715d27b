"""The README's Performance section is generated from bench/results/, and nothing else (issue 7)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("make_readme_table", ROOT / "bench" / "make_readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_performance_section_is_the_generator_output_of_the_committed_results(tables):
    text, used = tables.build(ROOT / "bench" / "results")
    readme = (ROOT / "README.md").read_text()
    assert "pretrain_speedup.json" in used
    section = readme.split(tables.START)[1].split(tables.END)[0]
    assert section.strip() == text.strip(), "README is stale: run `python bench/make_readme_table.py`"
    assert (ROOT / "bench" / "results" / "performance.md").read_text().strip() == text.strip()


def test_every_number_in_the_section_comes_from_a_results_file(tables, tmp_path):
    """Rebuilt from a results file whose every number is altered, every speed-up in the table changes."""
    results = tmp_path / "results"
    results.mkdir()

    def bump(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [bump(v) for v in value] if isinstance(value, list) else (
                {k: bump(v) for k, v in value.items()} if isinstance(value, dict) else value)
        return value * 1.37 + 0.011 if isinstance(value, float) else value

    src = ROOT / "bench" / "results" / "pretrain_speedup.json"
    (results / src.name).write_text(json.dumps(bump(json.loads(src.read_text()))))
    original, _ = tables.build(ROOT / "bench" / "results")
    altered, used = tables.build(results)
    assert used == ["pretrain_speedup.json"]
    section = original.split("### Pre-train speed-up")[1].split("\n### ")[0]
    new = altered.split("### Pre-train speed-up")[1]
    before, after = re.findall(r"\d+\.\d+×", section), re.findall(r"\d+\.\d+×", new)
    assert len(before) == len(after) > 20
    assert all(a != b for a, b in zip(before, after)), list(zip(before, after))


def test_splice_replaces_only_between_the_markers(tables):
    readme = f"intro\n{tables.START}\nold\n{tables.END}\noutro\n"
    assert tables.splice(readme, "new\n") == f"intro\n{tables.START}\nnew\n{tables.END}\noutro\n"
    with pytest.raises(ValueError, match="exactly one"):
        tables.splice("no markers", "new\n")
