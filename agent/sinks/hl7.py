"""Results as an HL7 v2 ORU^R01 over MLLP, for EHRs without FHIR."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from agent.sinks.manifests import ManifestIndex
from agent.sinks.payload import PayloadFinding, ResultPayload
from agent.sources import SOURCE_NAMES
from integrations.hl7.client import MllpClient
from integrations.hl7.results import EcgResults, ModelInstance, build_results_oru
from integrations.hl7.results import Finding as Hl7Finding
from integrations.store import StoredStudy

ICD10_HL7_SYSTEM = "I10"
LOINC_HL7_SYSTEM = "LN"
#: An ORU^R01 names the patient by whatever id the study has, so it carries every source's results.
SOURCES_CARRIED = frozenset(SOURCE_NAMES)


class Hl7ResultSink:
    """Positive findings as an ORU^R01 over MLLP, with a control id derived from the study and model version.

    The deterministic MSH-10 makes a resend after a crash a duplicate the receiver recognises.
    """

    destination = "hl7"
    max_in_flight = 1  # one connection, results in the order they were scored
    carries = SOURCES_CARRIED

    def __init__(self, client_factory: Callable[[], MllpClient], manifests: ManifestIndex) -> None:
        self._client_factory, self._manifests = client_factory, manifests

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source in self.carries

    def send(self, payload: ResultPayload) -> None:
        version = payload.model.version
        results = EcgResults(
            ecg_record_id=payload.source_id,
            subject_id=payload.patient_ref,
            acquired_at=payload.acquired_at or datetime.now(UTC),
            findings=tuple(self._finding(version, finding) for finding in payload.positives()),
            model=ModelInstance(name=payload.model.name, version=version),
        )
        with self._client_factory() as client:
            client.send(build_results_oru(results, control_id=control_id(payload)))

    def _finding(self, version: str, finding: PayloadFinding) -> Hl7Finding:
        if finding.kind == "diagnosis":
            label = self._manifests.diagnosis(version, finding.code)
            return Hl7Finding("diagnosis", label["code"], ICD10_HL7_SYSTEM, label["display"], finding.probability, True)
        target = self._manifests.lab(version, finding.code)
        return Hl7Finding("lab", target["loinc"], LOINC_HL7_SYSTEM, target["display"], finding.probability, True)


def control_id(payload: ResultPayload) -> str:
    """MSH-10 of a study's results: the same study, version and model always get the same id."""
    key = f"{payload.source}|{payload.source_id}|{payload.source_version}|{payload.model.version}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]
