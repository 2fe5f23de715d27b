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
