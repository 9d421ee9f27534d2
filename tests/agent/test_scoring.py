"""Serving scores through the shared preprocessing and the manifest's thresholds and explanations."""

import dataclasses

import numpy as np
import pytest
import torch

from agent.scoring import preprocess_config, score_records, validation_rules
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord, preprocess
from model_training.artifact import LabAssociation, load_artifact


@pytest.fixture(scope="module")
def artifact(artifact_factory):
    return load_artifact(artifact_factory("1.0.0"))


def _record(record_id: str, fs_hz: float = 500.0, duration_s: float = 10.0, seed: int = 0) -> EcgRecord:
    rng = np.random.default_rng(seed)
    n = round(fs_hz * duration_s)
    t = np.arange(n) / fs_hz
    signal = np.stack([np.sin(2 * np.pi * (1 + lead / 10) * t) + 0.1 * rng.standard_normal(n) for lead in range(12)])
    return EcgRecord(record_id, signal, fs_hz, MODEL_LEAD_ORDER)


def test_serving_equals_the_module_on_the_shared_preprocessing(artifact):
    record = _record("ecg-1")
    scored = score_records([record], artifact, batch_size=8, explanation_top_k=3)[0]
    model_input = torch.from_numpy(preprocess(record, preprocess_config(artifact.manifest)))[None]
    dx_prob, lab_prob, _ = artifact.module(model_input)
    expected = np.concatenate([dx_prob[0].detach().numpy(), lab_prob[0].detach().numpy()])
    assert np.allclose([f.probability for f in scored.findings], expected, atol=1e-6)


def test_findings_carry_manifest_codes_and_thresholds(artifact):
    scored = score_records([_record("ecg-1")], artifact, batch_size=8, explanation_top_k=3)[0]
    codes = [label.code for label in artifact.manifest.diagnoses] + [t.name for t in artifact.manifest.lab_targets]
    assert [f.code for f in scored.findings] == codes
    for finding in scored.findings:
        assert finding.positive == (finding.probability >= 0.5)
    assert scored.model_version == "1.0.0"


def test_batching_and_mixed_lengths_and_rates_keep_each_record_its_own_result(artifact):
    records = [_record("a", seed=1), _record("b", fs_hz=250.0, seed=2), _record("c", duration_s=5.0, seed=3)]
    together = score_records(records, artifact, batch_size=2, explanation_top_k=3)
    alone = [score_records([r], artifact, batch_size=1, explanation_top_k=3)[0] for r in records]
    assert [s.record_id for s in together] == ["a", "b", "c"]
    for batched, single in zip(together, alone, strict=True):
        assert np.allclose([f.probability for f in batched.findings], [f.probability for f in single.findings])


def test_a_positive_diagnosis_is_explained_by_the_positive_labs_that_go_with_it(artifact):
    manifest = dataclasses.replace(
        artifact.manifest,
        diagnoses=tuple(dataclasses.replace(d, threshold=0.0) for d in artifact.manifest.diagnoses),
        lab_targets=(
            dataclasses.replace(artifact.manifest.lab_targets[0], threshold=0.0),  # always positive
            dataclasses.replace(artifact.manifest.lab_targets[1], threshold=1.01),  # never positive
        ),
        explanations={"E875": (LabAssociation("hemoglobin_low", 3.0, 5), LabAssociation("potassium_high", 2.0, 9))},
    )
    scored = score_records([_record("x")], dataclasses.replace(artifact, manifest=manifest), batch_size=1,
                           explanation_top_k=3)[0]  # fmt: skip
    assert [(e.diagnosis_code, e.lab_target, e.lift) for e in scored.explanations] == [("E875", "potassium_high", 2.0)]


def test_validation_rules_follow_the_input_contract(artifact):
    rules = validation_rules(artifact.manifest)
    assert rules.required_leads == MODEL_LEAD_ORDER
    assert rules.min_duration_s == pytest.approx(2.5) and rules.min_fs_hz == pytest.approx(100.0)


def test_thresholds_apply_in_the_models_float32_precision_and_findings_hold_python_values(artifact):
    first = score_records([_record("x")], artifact, batch_size=1, explanation_top_k=3)[0].findings[0]
    p32 = np.float32(first.probability)
    # Just above the probability in float64, equal to it once rounded to the model's float32: positive, as the
    # comparison of a float32 output with a Python float threshold always was.
    above_in_float64 = float(np.nextafter(np.float64(p32), 2.0))
    assert np.float32(above_in_float64) == p32 and above_in_float64 > first.probability
    cases = {"at": first.probability, "rounds to it": above_in_float64, "one float32 step above": float(
        np.nextafter(p32, np.float32(2.0)))}  # fmt: skip
    for name, threshold in cases.items():
        label = dataclasses.replace(artifact.manifest.diagnoses[0], threshold=threshold)
        manifest = dataclasses.replace(artifact.manifest, diagnoses=(label, *artifact.manifest.diagnoses[1:]))
        scored = score_records([_record("x")], dataclasses.replace(artifact, manifest=manifest), batch_size=1,
                               explanation_top_k=3)[0].findings[0]  # fmt: skip
        assert scored.positive is (name != "one float32 step above"), name
        assert type(scored.probability) is float and scored.probability == first.probability
