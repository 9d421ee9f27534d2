"""An ECG that is not on the FHIR server (it came as HL7 v2) is named by identifier in ``derivedFrom``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.observation import Observation

from integrations.fhir import EcgReference, Finding, ModelInfo, build_writeback_bundle

MESSAGE = ("urn:test:hl7v2-message", "MUSE|CARDIOLOGY|MSG-1")
AT = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
ECG = EcgReference(ecg_identifier=MESSAGE, subject_reference="Patient/p7", effective_at=AT)
MODEL = ModelInfo(name="ecg-ck", version="2.0.1", sha256="f" * 64)
LAB = Finding(target="potassium_high", kind="lab", code="2823-3", system="http://loinc.org", display="Potassium",
              probability=0.9, positive=True, lab_direction="high")  # fmt: skip
DIAGNOSIS = Finding(target="I48", kind="diagnosis", code="I48", system="http://hl7.org/fhir/sid/icd-10-cm",
                    display="Atrial fibrillation", probability=0.8, positive=True,
                    explained_by=("potassium_high",))  # fmt: skip


def observations(ecg: EcgReference) -> list[dict]:
    bundle = build_writeback_bundle(ecg, MODEL, [DIAGNOSIS, LAB])
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]


def test_derived_from_names_the_message_by_identifier_then_the_explaining_labs():
    lab, diagnosis = observations(ECG)
    logical = {"type": "Observation", "identifier": {"system": MESSAGE[0], "value": MESSAGE[1]}}
    assert lab["derivedFrom"] == [logical]
    assert diagnosis["derivedFrom"][0] == logical and diagnosis["derivedFrom"][1]["reference"].startswith("urn:uuid:")
    assert diagnosis["subject"] == {"reference": "Patient/p7"}


def test_fhir_resources_r4b_reads_the_logical_reference_back():
    diagnosis = Observation.model_validate(observations(ECG)[1])
    identifier = diagnosis.derivedFrom[0].identifier
    assert (identifier.system, identifier.value, diagnosis.derivedFrom[0].reference) == (*MESSAGE, None)


def test_finding_identifiers_are_deterministic_token_safe_and_distinct_per_message():
    again = EcgReference(ecg_identifier=MESSAGE, subject_reference="Patient/p7", effective_at=datetime.now(UTC))
    other = EcgReference(ecg_identifier=(MESSAGE[0], "MUSE|CARDIOLOGY|MSG-2"), subject_reference=None,
                         effective_at=AT)  # fmt: skip
    values = [[o["identifier"][0]["value"] for o in observations(ecg)] for ecg in (ECG, again, other)]
    assert values[0] == values[1] != values[2]
    assert all("|" not in value and "," not in value for value in values[0])


def test_an_ecg_on_the_server_keeps_its_literal_reference_and_its_identifiers():
    on_server = EcgReference(observation_id="ecg-42", subject_reference="Patient/p7", effective_at=AT)
    lab, _ = observations(on_server)
    assert lab["derivedFrom"] == [{"reference": "Observation/ecg-42"}]
    assert lab["identifier"][0]["value"] == "ecg-42/2.0.1/potassium_high"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"observation_id": "ecg-42", "ecg_identifier": MESSAGE},
        {"ecg_identifier": (MESSAGE[0], "")},
        {"ecg_identifier": (" urn:x", "v")},
    ],
    ids=["neither", "both", "empty value", "padded system"],
)
def test_an_ecg_reference_needs_exactly_one_well_formed_way_to_name_the_ecg(kwargs):
    with pytest.raises(ValueError, match="ECG"):
        EcgReference(**kwargs, subject_reference=None, effective_at=AT)
