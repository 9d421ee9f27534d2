"""The write-back transaction Bundle, built offline: what each Observation says and why a retry cannot duplicate."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from integrations.fhir import EcgReference, Finding, ModelInfo, build_writeback_bundle
from integrations.fhir.ai_finding import FINDING_CODE_SYSTEM
from integrations.fhir.errors import FhirResourceInvalidError
from integrations.fhir.writeback import ECG_IDENTIFIER_SYSTEM, WriteBackConfig

ECG = EcgReference(
    observation_id="ecg-42",
    version="3",
    subject_reference="Patient/p7",
    effective_at=datetime(2024, 5, 1, 8, 30, tzinfo=UTC),
)
MODEL = ModelInfo(name="ecg-ck", version="2.0.1", sha256="f" * 64)
LAB = Finding(target="potassium_high", kind="lab", code="2823-3", system="http://loinc.org",
              display="Potassium high", probability=0.9, positive=True, lab_direction="high",
              notes=("Validated on 200 ECGs: sensitivity 70 %.", "Signal: lead II imputed from I and III"))  # fmt: skip
LAB_LOW_NEGATIVE = Finding(target="calcium_low", kind="lab", code="17861-6", system="http://loinc.org",
                           display="Calcium low", probability=0.1, positive=False, lab_direction="low")  # fmt: skip
DIAGNOSIS = Finding(target="I48", kind="diagnosis", code="I48", system="http://hl7.org/fhir/sid/icd-10-cm",
                    display="Atrial fibrillation and flutter", probability=0.3, positive=False,
                    explained_by=("potassium_high",))  # fmt: skip


def entries_by_target(bundle: dict) -> dict[str, dict]:
    by_target = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        key = (
            resource["identifier"][0]["value"].rsplit("/", 1)[-1]
            if resource["resourceType"] == "Observation"
            else "device"
        )
        by_target[key] = entry
    return by_target


@pytest.fixture
def bundle() -> dict:
    return build_writeback_bundle(ECG, MODEL, [DIAGNOSIS, LAB, LAB_LOW_NEGATIVE])


def test_it_is_a_transaction_of_conditional_creates_with_urn_uuid_full_urls(bundle):
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        assert entry["request"]["method"] == "POST"
        assert entry["request"]["ifNoneExist"].startswith("identifier=")


def test_the_device_comes_first_and_is_found_again_by_the_artifact_sha256(bundle):
    device = bundle["entry"][0]
    assert device["resource"]["resourceType"] == "Device"
    assert device["resource"]["version"] == [{"value": "2.0.1"}]
    assert device["resource"]["deviceName"] == [{"name": "ecg-ck", "type": "model-name"}]
    assert device["request"]["ifNoneExist"] == "identifier=urn%3Aecg-clinical-knowledge%3Amodel-sha256%7C" + "f" * 64


def test_each_identifier_is_ecg_id_ecg_version_model_version_and_target(bundle):
    identifiers = [e["resource"]["identifier"][0]["value"] for e in bundle["entry"][1:]]

    assert sorted(identifiers) == ["ecg-42/3/2.0.1/I48", "ecg-42/3/2.0.1/calcium_low", "ecg-42/3/2.0.1/potassium_high"]


def test_every_finding_also_names_the_ecg_so_one_search_finds_the_findings_of_all_its_versions(bundle):
    for entry in bundle["entry"][1:]:
        assert entry["resource"]["identifier"][1] == {"system": ECG_IDENTIFIER_SYSTEM, "value": "ecg-42"}


def test_every_finding_is_ai_asserted_preliminary_and_derived_from_the_ecg_by_the_model(bundle):
    device_urn = bundle["entry"][0]["fullUrl"]
    for entry in bundle["entry"][1:]:
        observation = entry["resource"]
        assert observation["meta"]["security"][0]["code"] == "AIAST"
        assert observation["status"] == "preliminary"
        assert observation["derivedFrom"][0] == {"reference": "Observation/ecg-42/_history/3"}
        assert observation["device"] == {"reference": device_urn}
        assert observation["subject"] == {"reference": "Patient/p7"}
        assert observation["effectiveDateTime"] == "2024-05-01T08:30:00+00:00"
        assert observation["valueQuantity"]["code"] == "1" and observation["valueQuantity"]["unit"] == "probability"
        assert observation["category"][0]["coding"][0]["code"] == "ecg-ai-assessment"
        assert observation["method"]["text"] == "Predicted from ECG by model ecg-ck 2.0.1"


def test_the_code_is_ours_and_says_predicted_the_standard_code_is_only_the_answer_of_a_component(bundle):
    by_target = entries_by_target(bundle)
    lab, diagnosis = by_target["potassium_high"]["resource"], by_target["I48"]["resource"]

    assert lab["code"]["coding"] == [{"system": FINDING_CODE_SYSTEM, "code": "lab-potassium-high",
                                      "display": "Potassium predicted high from ECG"}]  # fmt: skip
    assert diagnosis["code"]["coding"][0]["code"] == "dx-I48"
    assert diagnosis["code"]["text"] == "Atrial fibrillation and flutter — predicted from ECG"
    [lab_component] = lab["component"]
    assert lab_component["code"]["coding"][0] == {"system": FINDING_CODE_SYSTEM, "code": "predicted-lab-test",
                                                  "display": "Lab test predicted abnormal"}  # fmt: skip
    assert lab_component["valueCodeableConcept"]["coding"] == [
        {"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}
    ]
    assert diagnosis["component"][0]["valueCodeableConcept"]["coding"][0]["code"] == "I48"


def test_the_notes_of_a_finding_are_written_in_order(bundle):
    lab = entries_by_target(bundle)["potassium_high"]["resource"]

    assert [note["text"] for note in lab["note"]] == list(LAB.notes)
    assert "note" not in entries_by_target(bundle)["I48"]["resource"]


def test_a_diagnosis_links_the_labs_that_explain_it_through_derived_from(bundle):
    by_target = entries_by_target(bundle)

    assert by_target["I48"]["resource"]["derivedFrom"][1] == {"reference": by_target["potassium_high"]["fullUrl"]}


def test_interpretations_are_the_models_call_pos_or_neg_never_high_or_low(bundle):
    codes = {
        t: e["resource"]["interpretation"][0]["coding"][0]["code"]
        for t, e in entries_by_target(bundle).items()
        if t != "device"
    }

    assert codes == {"I48": "NEG", "potassium_high": "POS", "calcium_low": "NEG"}


def test_building_twice_gives_the_same_bundle(bundle):
    assert build_writeback_bundle(ECG, MODEL, [DIAGNOSIS, LAB, LAB_LOW_NEGATIVE]) == bundle


def test_an_explanation_must_point_at_a_lab_finding_in_the_same_batch():
    with pytest.raises(ValueError, match="explained by \\['potassium_high'\\]"):
        build_writeback_bundle(ECG, MODEL, [DIAGNOSIS])


def test_a_target_cannot_appear_twice():
    with pytest.raises(ValueError, match="repeat a target"):
        build_writeback_bundle(ECG, MODEL, [LAB, LAB])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probability": 1.5}, "outside"),
        ({"lab_direction": None}, "needs lab_direction"),
        ({"target": "a|b"}, "break an identifier search"),
        ({"explained_by": ("x",)}, "only a diagnosis"),
        ({"notes": (" ",)}, "note is blank"),
    ],
)
def test_findings_refuse_what_would_make_a_wrong_observation(changes, message):
    fields = {"target": "k_high", "kind": "lab", "code": "2823-3", "system": "http://loinc.org", "display": "K",
              "probability": 0.5, "positive": True, "lab_direction": "high"} | changes  # fmt: skip
    with pytest.raises(ValueError, match=message):
        Finding(**fields)


def test_a_model_version_with_a_search_separator_is_refused():
    with pytest.raises(ValueError, match="model version"):
        ModelInfo(name="m", version="1,2", sha256="0" * 64)


def test_a_finding_that_is_not_valid_r4_is_refused_every_time_naming_its_observation():
    # Validation is cached per shape; a shape that failed is not cached, so each write is refused again.
    bad_display = Finding(target="k_high", kind="lab", code="2823-3", system="http://loinc.org", display="",
                          probability=0.5, positive=True, lab_direction="high")  # fmt: skip
    for _ in range(2):
        with pytest.raises(FhirResourceInvalidError, match=re.escape("ecg-42/3/2.0.1/k_high")):
            build_writeback_bundle(ECG, MODEL, [bad_display])


def test_a_shape_validated_once_still_checks_the_values_of_each_ecg():
    build_writeback_bundle(ECG, MODEL, [LAB])
    with pytest.raises(ValueError, match="not a FHIR id"):
        EcgReference(observation_id="ecg 43", subject_reference=None, effective_at=ECG.effective_at)
    with pytest.raises(ValueError, match="whitespace"):
        EcgReference(observation_id="ecg-43", subject_reference=" Patient/p7", effective_at=ECG.effective_at)


def test_findings_are_preliminary_unless_the_site_configures_final():
    final = build_writeback_bundle(ECG, MODEL, [LAB], config=WriteBackConfig(observation_status="final"))
    observations = [e["resource"] for e in final["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert [o["status"] for o in observations] == ["final"]
