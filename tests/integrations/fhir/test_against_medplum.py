"""Integration: the pull and the write-back against a real FHIR engine (Medplum's router, via the shim)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from integrations.fhir import (
    EcgPullConfig,
    EcgReference,
    EcgRejectReason,
    FhirClient,
    FhirHttpError,
    Finding,
    ModelInfo,
    PulledEcg,
    RejectedObservation,
    pull_ecgs,
    write_back,
)

pytestmark = pytest.mark.slow


def pull_config(ecg_code: str, page_size: int = 3) -> EcgPullConfig:
    return EcgPullConfig(ecg_code=ecg_code, page_size=page_size, overlap=timedelta(seconds=30))


def test_a_full_pull_follows_next_links_and_decodes_every_ecg(fhir_client, seed_ecgs, ecg_code, make_record):
    stored = seed_ecgs(7)

    pull = pull_ecgs(fhir_client, since=None, config=pull_config(ecg_code))
    items = list(pull)

    assert [item.version.observation_id for item in items] == [o["id"] for o in stored]
    assert all(isinstance(item, PulledEcg) for item in items)
    first = items[0].record
    assert first.fs_hz == pytest.approx(500.0)
    assert first.subject_id == "p1"
    np.testing.assert_allclose(first.signal_mv, make_record("ecg-0", duration_s=2.0, seed=0).signal_mv, atol=5e-4)
    assert pull.newest_last_updated == max(datetime.fromisoformat(o["meta"]["lastUpdated"]) for o in stored)


def test_the_next_pull_rereads_the_overlap_and_drops_what_was_already_committed(fhir_client, seed_ecgs, ecg_code):
    first_batch = seed_ecgs(4)
    first = pull_ecgs(fhir_client, since=None, config=pull_config(ecg_code))
    committed = {item.version.key for item in first}
    watermark = first.newest_last_updated
    second_batch = seed_ecgs(3, start=4)

    second = pull_ecgs(fhir_client, since=watermark, config=pull_config(ecg_code), seen_versions=committed)
    items = list(second)

    assert [item.version.observation_id for item in items] == [o["id"] for o in second_batch]
    assert second.duplicates_skipped == len(first_batch)  # all within the 30 s overlap, all dropped
    assert second.newest_last_updated == datetime.fromisoformat(second_batch[-1]["meta"]["lastUpdated"])


def test_the_watermark_filter_excludes_what_is_older_than_the_overlap(fhir_client, seed_ecgs, ecg_code):
    seed_ecgs(2)
    future = datetime.now(UTC) + timedelta(hours=1)

    pull = pull_ecgs(fhir_client, since=future, config=pull_config(ecg_code))

    assert list(pull) == []
    assert pull.newest_last_updated is None


def test_bad_observations_become_rejections_and_the_pull_goes_on(
    fhir_client, seed_ecgs, ecg_code, make_record, observation_with_code
):
    seed_ecgs(1)
    no_components = observation_with_code(make_record("bad-1", duration_s=1.0), ecg_code)
    del no_components["component"]
    bad_factor = observation_with_code(make_record("bad-2", duration_s=1.0), ecg_code)
    bad_factor["component"][3]["valueSampledData"]["factor"] = 0
    bad_ids = [fhir_client.create(resource).resource["id"] for resource in (no_components, bad_factor)]
    seed_ecgs(1, start=1)

    items = list(pull_ecgs(fhir_client, since=None, config=pull_config(ecg_code, page_size=2)))

    assert [type(item) for item in items] == [PulledEcg, RejectedObservation, RejectedObservation, PulledEcg]
    rejections = {item.version.observation_id: item.reason for item in items if isinstance(item, RejectedObservation)}
    assert rejections == {bad_ids[0]: EcgRejectReason.NO_COMPONENTS, bad_ids[1]: EcgRejectReason.BAD_FACTOR}


def scored_ecg(fhir_client: FhirClient, seed_ecgs) -> EcgReference:
    ecg = seed_ecgs(1)[0]
    return EcgReference(
        observation_id=ecg["id"],
        subject_reference=ecg["subject"]["reference"],
        effective_at=datetime.fromisoformat(ecg["effectiveDateTime"]),
    )


MODEL = ModelInfo(name="ecg-clinical-knowledge", version="1.4.0", sha256="ab" * 32)
FINDINGS = (
    Finding(target="potassium_high", kind="lab", code="2823-3", system="http://loinc.org", display="Potassium",
            probability=0.81, positive=True, lab_direction="high"),
    Finding(target="calcium_low", kind="lab", code="17861-6", system="http://loinc.org", display="Calcium",
            probability=0.12, positive=False, lab_direction="low"),
    Finding(target="N18", kind="diagnosis", code="N18", system="http://hl7.org/fhir/sid/icd-10-cm",
            display="Chronic kidney disease", probability=0.67, positive=True, explained_by=("potassium_high",)),
)  # fmt: skip


def test_write_back_creates_a_device_and_one_observation_per_finding(fhir_client, seed_ecgs):
    ecg = scored_ecg(fhir_client, seed_ecgs)

    result = write_back(fhir_client, ecg, MODEL, FINDINGS)

    assert (result.created, result.already_present) == (4, 0)
    device = fhir_client.read("Device", result.device_id)
    assert device["version"][0]["value"] == "1.4.0"
    assert device["identifier"][0]["value"] == MODEL.sha256
    diagnosis = fhir_client.read("Observation", result.observation_ids["N18"])
    assert diagnosis["status"] == "preliminary"
    assert diagnosis["meta"]["security"][0]["code"] == "AIAST"
    assert diagnosis["device"]["reference"] == f"Device/{result.device_id}"
    assert [ref["reference"] for ref in diagnosis["derivedFrom"]] == [
        f"Observation/{ecg.observation_id}",
        f"Observation/{result.observation_ids['potassium_high']}",
    ]
    lab = fhir_client.read("Observation", result.observation_ids["potassium_high"])
    assert lab["code"]["coding"][0]["code"] == "lab-potassium-high"
    assert lab["interpretation"][0]["coding"][0]["code"] == "POS"
    assert lab["method"]["text"] == "Predicted from ECG by model ecg-clinical-knowledge 1.4.0"
    assert lab["valueQuantity"] == {
        "value": 0.81,
        "unit": "probability",
        "system": "http://unitsofmeasure.org",
        "code": "1",
    }


def test_writing_back_the_same_results_again_creates_nothing_new(fhir_client, seed_ecgs):
    ecg = scored_ecg(fhir_client, seed_ecgs)
    first = write_back(fhir_client, ecg, MODEL, FINDINGS)

    second = write_back(fhir_client, ecg, MODEL, FINDINGS)

    assert (second.created, second.already_present) == (0, 4)
    assert second.observation_ids == first.observation_ids
    assert second.device_id == first.device_id
    identifier = f"urn:ecg-clinical-knowledge:finding|{ecg.observation_id}/1.4.0/N18"
    pages = list(fhir_client.search_pages("Observation", {"identifier": identifier}))
    assert len(pages[0]["entry"]) == 1


def test_a_second_model_version_reuses_nothing_but_the_ecg(fhir_client, seed_ecgs):
    ecg = scored_ecg(fhir_client, seed_ecgs)
    first = write_back(fhir_client, ecg, MODEL, FINDINGS)

    newer = ModelInfo(name=MODEL.name, version="1.5.0", sha256="cd" * 32)
    second = write_back(fhir_client, ecg, newer, FINDINGS)

    assert second.created == 4
    assert second.device_id != first.device_id


def test_a_conditional_create_returns_the_existing_resource(fhir_client, make_record, observation_with_code, ecg_code):
    observation = observation_with_code(make_record("cond-1", duration_s=0.5), ecg_code)
    query = "identifier=urn:ecg-clinical-knowledge:ecg-record-id|cond-1"

    first = fhir_client.create(observation, if_none_exist=query)
    second = fhir_client.create(observation, if_none_exist=query)

    assert (first.created, second.created) == (True, False)
    assert second.resource["id"] == first.resource["id"]


def test_the_server_refuses_an_invalid_resource_with_its_reason(fhir_client):
    with pytest.raises(FhirHttpError) as caught:
        fhir_client.create({"resourceType": "Observation", "status": "final"})

    assert caught.value.status == 400
    assert "Observation.code" in caught.value.outcome_text


def many_findings(n_labs: int) -> list[Finding]:
    labs = [
        Finding(target=f"lab{i}_high", kind="lab", code=f"{1000 + i}-0", system="http://loinc.org", display=f"Lab {i}",
                probability=0.6, positive=True, lab_direction="high")
        for i in range(n_labs)
    ]  # fmt: skip
    diagnosis = Finding(target="I50", kind="diagnosis", code="I50", system="http://hl7.org/fhir/sid/icd-10-cm",
                        display="Heart failure", probability=0.7, positive=True,
                        explained_by=("lab0_high", f"lab{n_labs - 1}_high"))  # fmt: skip
    return [*labs, diagnosis]


def test_a_write_back_larger_than_one_transaction_links_across_transactions_and_stays_idempotent(
    fhir_client, seed_ecgs
):
    ecg = scored_ecg(fhir_client, seed_ecgs)
    findings = many_findings(12)  # Device + 13 Observations: two of Medplum's 8-entry transactions
    model = ModelInfo(name="ecg-clinical-knowledge", version="3.0.0", sha256="ef" * 32)  # a Device no test made yet

    first = write_back(fhir_client, ecg, model, findings)
    again = write_back(fhir_client, ecg, model, findings)

    assert (first.created, again.created, again.already_present) == (14, 0, 14)
    diagnosis = fhir_client.read("Observation", first.observation_ids["I50"])
    assert [ref["reference"] for ref in diagnosis["derivedFrom"]] == [
        f"Observation/{ecg.observation_id}",
        f"Observation/{first.observation_ids['lab0_high']}",
        f"Observation/{first.observation_ids['lab11_high']}",
    ]
    assert diagnosis["device"]["reference"] == f"Device/{first.device_id}"
