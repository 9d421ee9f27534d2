"""The report: its files, and the lab ↔ diagnosis association table the manifest embeds."""

import json

import numpy as np
import pytest

from model_training.artifact import LabAssociation
from model_training.config import TrainConfig, config_from_dict
from model_training.evaluate import ModelScores, OperatingThresholds, RunPredictions
from model_training.report import (
    EXPLANATIONS_FILE,
    MACRO_FIGURE,
    REPORT_FILE,
    ROC_FIGURE,
    AssociationRule,
    lab_associations,
    read_explanations,
)
from model_training.report_release import RELIABILITY_FIGURE
from model_training.train.pipeline import evaluate_predictions

CONFIG: TrainConfig = config_from_dict({"evaluation": {"n_bootstrap": 100}})


def predictions_with_a_coupling(n: int = 400, seed: int = 0) -> RunPredictions:
    """I50 (heart failure) goes with ntprobnp_high predicted; other labs are noise."""
    rng = np.random.default_rng(seed)
    y_dx = (rng.random((n, 3)) < 0.2).astype(np.uint8)
    y_lab = (rng.random((n, 3)) < 0.2).astype(np.float32)
    y_lab[:, 0] = y_dx[:, 0]
    y_lab[rng.random((n, 3)) < 0.3] = np.nan

    def scores(strength: float, with_labs: bool) -> ModelScores:
        def noisy(y: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-(strength * np.nan_to_num(y) + rng.normal(size=y.shape))))

        dx, lab = noisy(y_dx), noisy(y_lab)
        return ModelScores(dx, noisy(y_dx), lab if with_labs else None, noisy(y_lab) if with_labs else None)

    models = {"ecg_only": scores(0.5, False), "ours": scores(2.0, True), "multimodal": scores(4.0, True)}
    return RunPredictions(("I50", "E11", "I48"), ("ntprobnp_high", "potassium_high", "hemoglobin_low"),
                          y_dx, y_dx.copy(), y_lab, y_lab.copy(), models)  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("report")
    metrics, predictions = evaluate_predictions(CONFIG, predictions_with_a_coupling(), out_dir)
    return predictions, metrics, out_dir / REPORT_FILE


def test_report_and_its_figures_exist(report):
    _, _, path = report
    assert path.name == REPORT_FILE and path.exists()
    for name in (MACRO_FIGURE, ROC_FIGURE, RELIABILITY_FIGURE):
        assert (path.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text()
    for heading in ("## Headline", "## Calibration", "## What reaches the chart", "## Diagnoses",
                    "## Lab abnormalities", "## Which predicted lab", "## Method"):  # fmt: skip
        assert heading in text
    assert MACRO_FIGURE in text and ROC_FIGURE in text and RELIABILITY_FIGURE in text
    assert "need clinical review" in text and "10 equal-width bins" in text


def test_the_release_table_names_every_label_with_its_decision(report):
    _, metrics, path = report
    text = path.read_text()
    assert "| I50 | Heart failure |" in text and "| ntprobnp_high | NT-proBNP high |" in text
    charted = [name for kind in ("diagnosis", "labs") for name, e in metrics["release"][kind].items() if e["charted"]]
    assert f"{len(charted)} of 6 labels charted." in text


def test_calibration_lowers_the_ece_of_the_shipped_model_on_held_out_data(report):
    _, metrics, _ = report
    for kind in ("diagnosis", "labs"):
        ece = metrics["calibration"][kind]["ece"]
        assert ece["test"]["after"] < ece["test"]["before"], kind


def test_the_coupled_lab_explains_its_diagnosis(report):
    predictions, _, path = report
    explanations = read_explanations(path.parent / EXPLANATIONS_FILE)
    assert set(explanations) == set(predictions.dx_codes)
    assert explanations["I50"][0].lab_target == "ntprobnp_high"
    assert explanations["I50"][0].lift > 2.0
    assert json.loads((path.parent / EXPLANATIONS_FILE).read_text())["rule"]["model"] == "ours"


def test_lift_is_conditional_over_marginal_rate_of_the_predicted_lab():
    y_dx = np.array([[1], [1], [1], [1], [0], [0], [0], [0], [0], [0]], dtype=np.uint8)
    lab_prob = np.array([[0.9], [0.9], [0.9], [0.1], [0.9], [0.1], [0.1], [0.1], [0.1], [0.1]])
    empty = np.zeros((10, 1), dtype=np.float32)
    scores = ModelScores(y_dx.astype(float), y_dx.astype(float), lab_prob, lab_prob)
    predictions = RunPredictions(("I50",), ("ntprobnp_high",), y_dx, y_dx, empty, empty,
                                 {"ecg_only": scores, "ours": scores, "multimodal": scores})  # fmt: skip
    thresholds = OperatingThresholds("test", {"I50": 0.5}, {"ntprobnp_high": 0.5})
    table = lab_associations(predictions, thresholds, AssociationRule(min_support=3))
    # P(lab | I50) = 3/4, P(lab) = 4/10: lift 1.875 over 3 studies with both.
    assert table == {"I50": (LabAssociation("ntprobnp_high", 1.875, 3),)}
    assert lab_associations(predictions, thresholds, AssociationRule(min_support=4)) == {"I50": ()}
