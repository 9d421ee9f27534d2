"""Every source has a way back: results of ECGs that came as HL7 v2 reach FHIR, on the Patient PID-3 names.

Against the real FHIR engine (Medplum): ORU^R01 messages are put in the inbox as the MLLP listener
would, the agent runs, and the findings are read back from the server by their subject.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.registry import ModelRegistry
from agent.service import EXIT_NEEDS_ATTENTION, EXIT_OK, AgentService, build_sinks
from agent.settings import load_settings
from agent.sinks.fhir import HL7_MESSAGE_IDENTIFIER_SYSTEM
from agent.sinks.payload import ResultPayload
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir import FhirClient, FhirConfig
from integrations.hl7 import encode_ecg_oru
from integrations.hl7.patient import PatientIdentifier
from integrations.store import InboxMessage, OutboxStatus, Store, StudyStatus
from integrations.store.repository import DEFAULT_OUTBOX_MAX_ATTEMPTS

pytestmark = pytest.mark.slow
N_TARGETS = 4  # the tiny artifact: 2 diagnoses + 2 lab targets, every one positive with all_positive_artifact
SENDER = ("MUSE", "CARDIOLOGY")
#: The hospital's MRN register, as the interface engine names it in PID-3.4 (namespace & ISO OID).
MRN_OID = "1.2.840.99999.7.1"


def _record(index: int, mrn: str) -> EcgRecord:
    rng = np.random.default_rng(index)
    t = np.arange(5000) / 500.0
    beats = np.exp(-(((t % 0.8) - 0.4) ** 2) / 2e-4)
    signal = np.stack([(0.4 + 0.1 * lead) * beats + 0.03 * rng.standard_normal(t.size) for lead in range(12)])
    return EcgRecord(f"ECG-{index}", signal, 500.0, MODEL_LEAD_ORDER, subject_id=mrn,
                     acquired_at=datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip


class Ward:
    """An ECG cart sending ORU^R01 to the agent, whose results go to a FHIR server that knows the patients."""

    def __init__(self, base_url: str, tmp_path: Path, artifact: Path) -> None:
        self.client = FhirClient(FhirConfig(base_url=base_url))
        config = tmp_path / "agent.toml"
        config.write_text(
            f'database_url = "sqlite:///{tmp_path / "agent.db"}"\n'
            f'registry_dir = "{tmp_path / "models"}"\n'
            "[scoring]\nbatch_size = 4\nmax_failure_rate = 0.5\n"
            "[sources.hl7]\nenabled = true\n"
            "[sinks.fhir]\nenabled = true\n"
            f'[sinks.fhir.server]\nbase_url = "{base_url}"\nmax_retries = 1\n'
        )
        self.settings = load_settings(config)
        self.service = AgentService(self.settings)
        registry = ModelRegistry(self.store, self.settings.registry_dir, actor="test")
        registry.register(artifact)
        registry.promote("1.0.0", reason="HL7 to FHIR test")

    @property
    def store(self) -> Store:
        return self.service.store

    def register_patient(self, mrn: str) -> str:
        """A Patient holding the MRN under the register's OID; its ``Patient/<id>``."""
        patient = {"resourceType": "Patient", "identifier": [{"system": f"urn:oid:{MRN_OID}", "value": mrn}]}
        return f"Patient/{self.client.create(patient).resource['id']}"

    def send_ecg(self, index: int, mrn: str) -> str:
        """One ORU^R01 whose PID-3 carries the MRN with its assigning authority, as MUSE-style senders write it."""
        control_id = f"MSG-{uuid.uuid4().hex[:12]}"
        raw = encode_ecg_oru(_record(index, mrn), control_id=control_id).replace(
            f"PID|||{mrn}|".encode(), f"PID|||{mrn}^^^HOSP&{MRN_OID}&ISO^MR~000-00-0000^^^SSA^SS|".encode(), 1
        )
        raw = raw.replace(b"|ECG_CART|CARDIOLOGY|", f"|{SENDER[0]}|{SENDER[1]}|".encode(), 1)
        self.store.add_inbox_message(InboxMessage("mllp", *SENDER, control_id, "ORU^R01", raw))
        return f"{SENDER[0]}|{SENDER[1]}|{control_id}"

    def findings_of(self, patient: str) -> list[dict]:
        bundles = self.client.search_pages("Observation", {"subject": patient, "_count": "200"})
        return [entry["resource"] for bundle in bundles for entry in bundle.get("entry", [])]

    def outbox_row(self, source_id: str):
        return self.store.get_outbox_message(f"fhir|hl7|{source_id}|1|1.0.0")


@pytest.fixture
def ward(fhir_base_url, tmp_path, all_positive_artifact) -> Ward:
    ward = Ward(fhir_base_url, tmp_path, all_positive_artifact)
    yield ward
    ward.client.close()


def _mrn() -> str:
    return f"MRN-{uuid.uuid4().hex[:10]}"


def test_findings_of_an_hl7_ecg_are_written_to_the_patient_its_pid3_names_and_derived_from_its_message(ward):
    mrn = _mrn()
    patient = ward.register_patient(mrn)
    message = ward.send_ecg(0, mrn)

    outcome = ward.service.run_once(progress=False)

    assert outcome.exit_code == EXIT_OK, outcome.message
    assert outcome.report.counts["scored"] == 1 and outcome.report.counts["written_back"] == 1
    findings = ward.findings_of(patient)
    assert len(findings) == N_TARGETS
    for finding in findings:
        assert finding["subject"] == {"reference": patient}
        assert finding["derivedFrom"][0] == {
            "type": "Observation",
            "identifier": {"system": HL7_MESSAGE_IDENTIFIER_SYSTEM, "value": message},
        }
        assert finding["meta"]["security"][0]["code"] == "AIAST"


def test_a_second_delivery_of_the_same_results_creates_nothing(ward):
    mrn = _mrn()
    patient = ward.register_patient(mrn)
    message = ward.send_ecg(1, mrn)
    assert ward.service.run_once(progress=False).exit_code == EXIT_OK
    written = sorted(finding["id"] for finding in ward.findings_of(patient))
    row = ward.outbox_row(message)
    assert row.status == OutboxStatus.SENT

    # As after a crash between the send and its commit: the same stored payload goes out again.
    with ExitStack() as stack:
        [sink] = build_sinks(ward.settings, ward.store, stack)
        sink.send(ResultPayload.from_json(row.message.payload))

    assert sorted(finding["id"] for finding in ward.findings_of(patient)) == written


def test_a_patient_the_server_does_not_know_fails_the_delivery_with_the_identifier_and_a_later_run_delivers(ward):
    mrn = _mrn()
    message = ward.send_ecg(2, mrn)

    first = ward.service.run_once(progress=False)

    assert first.exit_code == EXIT_NEEDS_ATTENTION
    assert first.report.counts["scored"] == 1 and first.report.counts["writeback_failed"] == 1
    row = ward.outbox_row(message)
    assert row.status == OutboxStatus.PENDING and row.attempts == 1
    assert f"patient identifier urn:oid:{MRN_OID}|{mrn} matches no Patient" in row.last_error
    assert any(f"urn:oid:{MRN_OID}|{mrn} matches no Patient" in problem for problem in first.report.problems)

    patient = ward.register_patient(mrn)  # registered after the ECG, as happens in the emergency department
    later = ward.service.run_once(progress=False)

    assert later.exit_code == EXIT_OK, later.message
    assert later.report.counts["written_back"] == 1
    assert ward.outbox_row(message).status == OutboxStatus.SENT
    assert len(ward.findings_of(patient)) == N_TARGETS


def test_a_patient_never_registered_is_parked_after_the_maximum_attempts(ward):
    message = ward.send_ecg(3, _mrn())

    outcomes = [ward.service.run_once(progress=False) for _ in range(DEFAULT_OUTBOX_MAX_ATTEMPTS)]

    assert [o.report.counts["writeback_parked"] for o in outcomes] == [0] * (DEFAULT_OUTBOX_MAX_ATTEMPTS - 1) + [1]
    row = ward.outbox_row(message)
    assert row.status == OutboxStatus.FAILED and "matches no Patient" in row.last_error
    assert ward.store.count_outbox(OutboxStatus.FAILED) == 1
    [study] = ward.store.list_studies(source="hl7")
    assert study.status == StudyStatus.SCORED  # the results are kept in SQL whatever happens to the write-back


def test_two_patients_with_the_same_identifier_are_not_guessed_between(ward):
    mrn = _mrn()
    first, second = ward.register_patient(mrn), ward.register_patient(mrn)
    message = ward.send_ecg(4, mrn)

    outcome = ward.service.run_once(progress=False)

    assert outcome.report.counts["writeback_failed"] == 1
    error = ward.outbox_row(message).last_error
    assert "matches more than one Patient" in error and first in error and second in error
    assert ward.findings_of(first) == [] and ward.findings_of(second) == []


def test_the_payload_carries_pid3_with_its_authority_and_reads_back_what_older_versions_queued(ward):
    message = ward.send_ecg(5, "MRN-77")
    ward.service.run_once(progress=False)
    stored = ward.outbox_row(message).message.payload

    payload = ResultPayload.from_json(stored)

    assert payload.patient_identifier == PatientIdentifier("MRN-77", "HOSP", MRN_OID, "ISO")
    older = {key: value for key, value in stored.items() if key != "patient_identifier"}
    assert ResultPayload.from_json(older).patient_identifier is None
