"""`ecg-train calibrate` compares the simulated baselines with the published per-code table, code by code."""

import json

import numpy as np
import pandas as pd
import pytest

from model_training.cli import main
from model_training.config import CONFIG_DIR
from model_training.data.cohort import CohortConfig, build_cohort, load_cohort
from model_training.simulator.simulate import SIMULATOR_VERSION, simulate_hospital
from model_training.simulator_calibration import (
    CALIBRATION_FILE,
    COHORT_SUBDIR,
    FIGURE_FILE,
    MIN_TEST_POSITIVES,
    REFERENCE_CSV,
    TOLERANCE,
    CalibrationResult,
    CodeCalibration,
)

# Wide test folds and a low count floor, so a 200-patient hospital has codes to compare.
TINY_COHORT = CohortConfig(min_dx_count=5, min_lab_positives=3, train_folds=tuple(range(12)),
                           val_folds=(12, 13, 14, 15), test_folds=(16, 17, 18, 19))  # fmt: skip


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny hospital with its calibration cohort prebuilt, calibrated with the tiny training config."""
    root = tmp_path_factory.mktemp("hospital")
    out = tmp_path_factory.mktemp("calibration")
    simulate_hospital(root, n_patients=200, seed=5, workers=1, progress=False)
    build_cohort(root, root / COHORT_SUBDIR, config=TINY_COHORT, workers=1, progress=False)
    code = main(["calibrate", "--data", str(root), "--out", str(out), "--config", str(CONFIG_DIR / "tiny.yaml"),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    return root, out


def test_every_cohort_code_in_the_published_table_gets_a_row_with_the_published_numbers(calibrated):
    root, out = calibrated
    result = json.loads((out / CALIBRATION_FILE).read_text())
    reference = pd.read_csv(REFERENCE_CSV, dtype={"icd10": str}).set_index("icd10")
    cohort = load_cohort(root / COHORT_SUBDIR)
    expected_codes = [c for c in cohort.dx_codes if c in reference.index]
    assert expected_codes and [row["code"] for row in result["codes"]] == expected_codes
    y_test = cohort.dx_labels[cohort.split("test")]
    for row in result["codes"]:
        published = reference.loc[row["code"]]
        assert (row["published"], row["ci_low"], row["ci_high"]) == (
            published.auroc,
            published.ci_low,
            published.ci_high,
        )
        assert row["description"] == published.description
        assert row["test_positives"] == int(y_test[:, cohort.dx_codes.index(row["code"])].sum())


def test_each_row_says_how_far_off_it_is_and_whether_it_counts(calibrated):
    _, out = calibrated
    result = json.loads((out / CALIBRATION_FILE).read_text())
    for row in result["codes"]:
        if row["simulated"] is None or np.isnan(row["simulated"]):
            continue
        assert 0.0 <= row["simulated"] <= 1.0
        assert row["difference"] == pytest.approx(row["simulated"] - row["published"])
        assert row["within"] == (abs(row["difference"]) <= TOLERANCE)
        assert row["counted"] == (row["test_positives"] >= MIN_TEST_POSITIVES)
        assert 0.0 <= row["multimodal"] <= 1.0, "the multimodal baseline's AUROC on the same code"
    counted = [row for row in result["codes"] if row["counted"]]
    assert result["counted"] == len(counted)
    assert result["within"] == sum(row["within"] for row in counted)
    assert set(result["macro_auroc"]) == {"ecg_only", "multimodal"}
    assert result["recipe"]["simulator"]["simulator_version"] == SIMULATOR_VERSION


def test_prints_the_table_and_writes_the_figure(calibrated, capsys):
    _, out = calibrated
    assert (out / FIGURE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run reuses the checkpoints and prints the same table.
    assert main(["calibrate", "--data", str(calibrated[0]), "--out", str(out), "--config",
                 str(CONFIG_DIR / "tiny.yaml"), "--resume", "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| code | description | test positives | simulated | published [95 % CI] |" in printed
    assert printed.splitlines()[0].endswith("| multimodal |")
    assert "macro AUROC ECG-only" in printed and "MDS-ED 0.768" in printed


def _row(code: str, simulated: float, published: float, positives: int = 50) -> CodeCalibration:
    return CodeCalibration(
        code, code, positives, simulated, published, published - 0.02, published + 0.02, multimodal=simulated + 0.05
    )


def test_the_goal_is_four_in_five_counted_codes_within_the_band_and_none_far_off():
    near = [_row(f"C{i}", 0.80 + 0.01 * (i % 3), 0.80) for i in range(8)]
    few_positives = [_row("RARE", 0.99, 0.60, positives=MIN_TEST_POSITIVES - 1)]
    met = CalibrationResult([*near, _row("X1", 0.88, 0.80), _row("X2", 0.72, 0.80), *few_positives], 0.8, 0.85)
    assert met.share_within == 0.8 and met.goal_met
    one_far = CalibrationResult([*near, _row("X1", 0.84, 0.80), _row("X2", 0.65, 0.80)], 0.8, 0.85)
    assert not one_far.goal_met, "a code off by more than 0.10 fails the goal even at 80 % within"
    assert one_far.worst[0].code == "X2"
