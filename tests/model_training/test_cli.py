"""ecg-train explains itself, runs its commands, and exits 1 with the file named on bad data."""

import subprocess
import sys

import pytest

from model_training.cli import main


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "model_training.cli", "--help"], capture_output=True, text=True,
                            check=True)  # fmt: skip
    for command in ("simulate", "cohort-report", "plot-examples", "run", "evaluate", "export", "calibrate"):
        assert command in result.stdout


def test_simulate_then_cohort_report(tmp_path, capsys):
    assert main(["simulate", "--patients", "40", "--seed", "1", "--out", str(tmp_path), "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["cohort-report", str(tmp_path), "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "## Prevalence" in out and "## Visibility" in out
    assert (tmp_path / "cohort" / "report.md").exists() and (tmp_path / "cohort" / "report.json").exists()


def test_plot_examples_writes_the_textbook_pngs(tmp_path):
    assert main(["plot-examples", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["anterior_stemi.png", "atrial_fibrillation.png", "hyperkalemia.png", "normal.png"]


def test_a_folder_without_data_exits_1_naming_the_file(tmp_path, capsys):
    assert main(["cohort-report", str(tmp_path), "--no-progress"]) == 1
    assert "record_list.csv: file not found" in capsys.readouterr().err


def test_bad_usage_exits_2():
    with pytest.raises(SystemExit) as caught:
        main(["simulate"])
    assert caught.value.code == 2
