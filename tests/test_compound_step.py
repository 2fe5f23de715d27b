"""bench.compound_step: the compound pre-train networks' step cost, as a smoke run on tiny settings."""

from __future__ import annotations

import pytest

from bench import compound_step
from bench import make_readme_table as tables


def test_smoke_run_writes_every_kind_relative_to_the_full_step(tmp_path, capsys):
    out = tmp_path / "compound_step.json"
    result = compound_step.main(["--widths", "4", "--batch", "4", "--repeats", "1", "--out", str(out)])
    row = result["data"]["widths"]["4"]
    assert set(row["relative"]) == set(compound_step.KINDS) and row["relative"]["full (28 px)"] == 1.0
    assert all(v > 0 for v in row["relative"].values()) and row["full_step_s"] > 0
    assert result["script"] == "compound_step" and result["machine"]["cpu_count"]
    text, used = tables.build(tmp_path)
    assert used == ["compound_step.json"] and "| 4 |" in text and "half width and depth" in text


@pytest.mark.parametrize("argv", [["--widths", "15"], ["--widths", ""], ["--batch", "0"]])
def test_bad_settings_are_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compound_step.main(argv)
    assert exit_info.value.code == 2 and "Hint: --widths 16,32" in capsys.readouterr().err


@pytest.mark.slow
def test_grow_compound_smoke_run_keeps_width_and_depth_exact(tmp_path):
    """bench.grow_compound on the committed subset: width and depth alone grow back with the same accuracy."""
    import dataclasses

    from bench import grow_compound
    from bench.grow_fidelity import Config

    cfg = dataclasses.replace(Config(data="fixture"), pretrain_steps=3, test_images=300, calib_images=100, batch=32)
    out = tmp_path / "grow_compound.json"
    result = grow_compound.main(cfg, 1, out)
    rows = {r["kind"]: r for r in result["data"]["rows"]}
    assert set(rows) == set(grow_compound.KINDS)
    assert rows["width and depth"]["grown_acc"] == rows["width and depth"]["pretrain_acc"]   # no effect, exactly
    assert rows["compound"]["params"] < rows["width and depth"]["params"] < rows["kernels"]["params"] < 1
    text, used = tables.build(tmp_path)
    assert used == ["grow_compound.json"] and "| width and depth |" in text
