"""Results as FHIR R4 Observations, derived from the ECG they were computed on."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.errors import AgentError
from agent.sinks.manifests import ManifestIndex
from agent.sinks.patients import PatientIdentifierSystems, PatientLookupError, find_patient
from agent.sinks.payload import PayloadFinding, ResultPayload
from agent.sources import FHIR_SOURCE, HL7_SOURCE
from integrations.fhir.client import FhirClient
from integrations.fhir.writeback import EcgReference, ModelInfo, WriteBackConfig, write_back
from integrations.fhir.writeback import Finding as FhirFinding
from integrations.store import StoredStudy

#: ``Reference.identifier.system`` naming an ECG that came as an HL7 v2 message; the value is the study's
#: source id, ``MSH-3|MSH-4|MSH-10`` (the sending application, facility and message control id).
HL7_MESSAGE_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:hl7v2-message"


def sources_carried(*, hl7_patient_lookup: bool) -> frozenset[str]:
    """The sources whose results this sink writes: FHIR ECGs (``derivedFrom`` their Observation, ``subject``
    theirs), and HL7 ECGs when their Patient is looked up by PID-3. A WFDB record names no patient a FHIR
    server would know, so its results never go here."""
    return frozenset({FHIR_SOURCE, HL7_SOURCE}) if hl7_patient_lookup else frozenset({FHIR_SOURCE})


class FhirResultSink:
    """Positive findings as R4 Observations, derived from the ECG they were computed on.

    An ECG pulled from this FHIR server is referred to by its Observation, and its subject is the
    Observation's. An ECG that came as HL7 v2 is not on the server: ``derivedFrom`` names it by
    identifier (:data:`HL7_MESSAGE_IDENTIFIER_SYSTEM`), and the subject is the one Patient holding
    the message's PID-3 identifier (``patient_systems`` maps the assigning authority; None: HL7
    results are not written here). Negatives stay in SQL, so the chart is not flooded with
    "not present" results.
    """

    destination = "fhir"

    def __init__(
        self,
        client: FhirClient,
        manifests: ManifestIndex,
        *,
        config: WriteBackConfig | None = None,
        max_in_flight: int = 1,
        patient_systems: PatientIdentifierSystems | None = None,
    ) -> None:
        self._client, self._manifests = client, manifests
        self._config = config or WriteBackConfig()
        self._patient_systems = patient_systems
        self.max_in_flight = max_in_flight
        self.carries = sources_carried(hl7_patient_lookup=patient_systems is not None)

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source in self.carries

    def send(self, payload: ResultPayload) -> None:
        findings = [self._finding(finding, payload) for finding in payload.positives()]
        if not findings:
            return  # nothing to say about this patient (negatives stay in SQL): no Device, no Patient lookup
        model = payload.model
        write_back(
            self._client,
            self._ecg_reference(payload),
            ModelInfo(name=model.name, version=model.version, sha256=model.sha256),
            findings,
            config=self._config,
        )

    def _ecg_reference(self, payload: ResultPayload) -> EcgReference:
        effective_at = payload.acquired_at or datetime.now(UTC)
        if payload.source == FHIR_SOURCE:
            return EcgReference(
                observation_id=payload.source_id, subject_reference=payload.patient_ref, effective_at=effective_at
            )
        if payload.source == HL7_SOURCE and self._patient_systems is not None:
            return EcgReference(
                ecg_identifier=(HL7_MESSAGE_IDENTIFIER_SYSTEM, payload.source_id),
                subject_reference=self._patient(payload, self._patient_systems),
                effective_at=effective_at,
            )
        raise AgentError(f"results of {payload.source}-sourced ECGs cannot be written to FHIR with these settings")

    def _patient(self, payload: ResultPayload, systems: PatientIdentifierSystems) -> str:
        identifier = payload.patient_identifier
        if identifier is None:
            raise PatientLookupError(f"HL7 message {payload.source_id} has no patient identifier (PID-3)")
        return find_patient(self._client, systems.system_for(identifier), identifier.value)

    def _finding(self, finding: PayloadFinding, payload: ResultPayload) -> FhirFinding:
        version = payload.model.version
        if finding.kind == "diagnosis":
            label = self._manifests.diagnosis(version, finding.code)
            sent_labs = {f.code for f in payload.positives() if f.kind == "lab"}
            explained_by = tuple(
                e.lab_target for e in payload.explanations if e.diagnosis == finding.code and e.lab_target in sent_labs
            )
            return FhirFinding(
                target=finding.code, kind="diagnosis", code=label["code"], system=label["system"],
                display=label["display"], probability=finding.probability, positive=True, explained_by=explained_by,
            )  # fmt: skip
        target = self._manifests.lab(version, finding.code)
        return FhirFinding(
            target=finding.code, kind="lab", code=target["loinc"], system=target["loinc_system"],
            display=target["display"], probability=finding.probability, positive=True,
            lab_direction=target["direction"],
        )  # fmt: skip
