"""Retiring the findings of a corrected ECG's earlier versions, against a real FHIR engine."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from integrations.fhir import EcgReference, Finding, ModelInfo, retire_superseded, write_back
from integrations.fhir.supersede import RETIRED_STATUS
from integrations.fhir.writeback import DEFAULT_FINDING_IDENTIFIER_SYSTEM

pytestmark = pytest.mark.slow
MODEL = ModelInfo(name="ecg-ck", version="1.2.0", sha256="5e" * 32)  # a Device of its own
LAB = Finding(target="potassium_high", kind="lab", code="2823-3", system="http://loinc.org",
              display="Potassium high", probability=0.81, positive=True, lab_direction="high")  # fmt: skip
DIAGNOSIS = Finding(target="I48", kind="diagnosis", code="I48", system="http://hl7.org/fhir/sid/icd-10-cm",
                    display="Atrial fibrillation and flutter", probability=0.7, positive=True)  # fmt: skip


def _ecg(seed_ecgs, version: str) -> EcgReference:
    ecg = seed_ecgs(1)[0]
    return EcgReference(observation_id=ecg["id"], version=version, subject_reference=ecg["subject"]["reference"],
                        effective_at=datetime.fromisoformat(ecg["effectiveDateTime"]))  # fmt: skip


def _status(fhir_client, ids: dict[str, str]) -> dict[str, str]:
    return {target: fhir_client.read("Observation", id_)["status"] for target, id_ in ids.items()}


def test_the_corrected_versions_findings_stay_and_every_earlier_one_is_entered_in_error_once(fhir_client, seed_ecgs):
    first = _ecg(seed_ecgs, "v1")
    old = write_back(fhir_client, first, MODEL, [LAB, DIAGNOSIS]).observation_ids
    corrected = dataclasses.replace(first, version="v2")
    new = write_back(fhir_client, corrected, MODEL, [dataclasses.replace(DIAGNOSIS, probability=0.55)]).observation_ids

    retired = retire_superseded(fhir_client, corrected)

    assert sorted(retired) == sorted(old.values())
    assert _status(fhir_client, old) == {"potassium_high": RETIRED_STATUS, "I48": RETIRED_STATUS}
    assert _status(fhir_client, new) == {"I48": "preliminary"}
    assert retire_superseded(fhir_client, corrected) == []  # a retry changes nothing


def test_only_our_findings_are_retired_never_another_observation_derived_from_the_ecg(fhir_client, seed_ecgs):
    ecg = _ecg(seed_ecgs, "v1")
    reading = fhir_client.create({
        "resourceType": "Observation", "status": "final", "code": {"text": "Cardiologist's ECG reading"},
        "derivedFrom": [{"reference": f"Observation/{ecg.observation_id}"}],
    }).resource  # fmt: skip
    legacy = fhir_client.create({  # as written before findings named the ECG and its version
        "resourceType": "Observation", "status": "preliminary", "code": {"text": "potassium high"},
        "identifier": [{"system": DEFAULT_FINDING_IDENTIFIER_SYSTEM,
                        "value": f"{ecg.observation_id}/1.2.0/potassium_high"}],
        "derivedFrom": [{"reference": f"Observation/{ecg.observation_id}"}],
    }).resource  # fmt: skip

    retired = retire_superseded(fhir_client, dataclasses.replace(ecg, version="v2"))

    assert retired == [legacy["id"]]
    assert fhir_client.read("Observation", reading["id"])["status"] == "final"
