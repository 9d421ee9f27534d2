"""Results as FHIR R4 Observations, derived from the ECG they were computed on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from agent.errors import AgentError
from agent.sinks.charting import ChartedFinding, charted_findings
from agent.sinks.corrections import study_versions
from agent.sinks.manifests import ManifestIndex
from agent.sinks.patients import PatientIdentifierSystems, PatientLookupError, find_patient
from agent.sinks.payload import ResultPayload
from agent.sources import FHIR_SOURCE, HL7_SOURCE
from integrations.fhir.client import FhirClient
from integrations.fhir.supersede import retire_superseded
from integrations.fhir.writeback import EcgReference, ModelInfo, WriteBackConfig, write_back
from integrations.fhir.writeback import Finding as FhirFinding
from integrations.store import Store, StoredStudy

log = logging.getLogger(__name__)

#: ``Reference.identifier.system`` naming an ECG that came as an HL7 v2 message; the value is the study's
#: source id, ``MSH-3|MSH-4|MSH-10`` (the sending application, facility and message control id).
HL7_MESSAGE_IDENTIFIER_SYSTEM = "urn:ecg-clinical-knowledge:hl7v2-message"


def sources_carried(*, hl7_patient_lookup: bool) -> frozenset[str]:
    """The sources whose results this sink writes: FHIR ECGs (``derivedFrom`` their Observation, ``subject``
    theirs), and HL7 ECGs when their Patient is looked up by PID-3. A WFDB record names no patient a FHIR
    server would know, so its results never go here."""
    return frozenset({FHIR_SOURCE, HL7_SOURCE}) if hl7_patient_lookup else frozenset({FHIR_SOURCE})


class FhirResultSink:
    """Charted positive findings as R4 Observations, derived from the ECG version they were computed on.

    An ECG pulled from this FHIR server is referred to by its Observation, and its subject is the
    Observation's. An ECG that came as HL7 v2 is not on the server: ``derivedFrom`` names it by
    identifier (:data:`HL7_MESSAGE_IDENTIFIER_SYSTEM`), and the subject is the one Patient holding
    the message's PID-3 identifier (``patient_systems`` maps the assigning authority; None: HL7
    results are not written here). Only findings whose label the manifest charts are written
    (:mod:`agent.sinks.charting`); negatives and uncharted labels stay in SQL.

    Corrections supersede (:mod:`agent.sinks.corrections`): the results of an ECG version that a later
    scored version replaced are not written, and writing a corrected version's results retires the
    earlier versions' findings (status ``entered-in-error``, :func:`~integrations.fhir.retire_superseded`).
    """

    destination = "fhir"

    def __init__(
        self,
        client: FhirClient,
        manifests: ManifestIndex,
        store: Store,
        *,
        config: WriteBackConfig | None = None,
        max_in_flight: int = 1,
        patient_systems: PatientIdentifierSystems | None = None,
    ) -> None:
        self._client, self._manifests, self._store = client, manifests, store
        self._config = config or WriteBackConfig()
        self._patient_systems = patient_systems
        self.max_in_flight = max_in_flight
        self.carries = sources_carried(hl7_patient_lookup=patient_systems is not None)

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source in self.carries

    def send(self, payload: ResultPayload) -> None:
        versions = study_versions(self._store, payload)
        if versions.superseded:
            log.info("results of %s v%s not written: a later version of that ECG was scored",
                     payload.source_id, payload.source_version)  # fmt: skip
            return
        findings = [_fhir_finding(finding) for finding in charted_findings(payload, self._manifests)]
        if findings:  # else nothing to say about this patient: no Device, no Patient lookup
            model = payload.model
            write_back(
                self._client,
                self._ecg_reference(payload, self._subject(payload)),
                ModelInfo(name=model.name, version=model.version, sha256=model.sha256),
                findings,
                config=self._config,
            )
        if versions.corrects is not None:
            retired = retire_superseded(self._client, self._ecg_reference(payload, None), config=self._config)
            if retired:
                log.info("ECG %s corrected (v%s): %d earlier findings retired", payload.source_id,
                         payload.source_version, len(retired))  # fmt: skip

    def _subject(self, payload: ResultPayload) -> str | None:
        if payload.source == HL7_SOURCE and self._patient_systems is not None:
            return self._patient(payload, self._patient_systems)
        return payload.patient_ref

    def _ecg_reference(self, payload: ResultPayload, subject: str | None) -> EcgReference:
        effective_at = payload.acquired_at or datetime.now(UTC)
        if payload.source == FHIR_SOURCE:
            return EcgReference(observation_id=payload.source_id, version=payload.source_version,
                                subject_reference=subject, effective_at=effective_at)  # fmt: skip
        if payload.source == HL7_SOURCE and self._patient_systems is not None:
            return EcgReference(
                ecg_identifier=(HL7_MESSAGE_IDENTIFIER_SYSTEM, payload.source_id),
                version=payload.source_version,
                subject_reference=subject,
                effective_at=effective_at,
            )
        raise AgentError(f"results of {payload.source}-sourced ECGs cannot be written to FHIR with these settings")

    def _patient(self, payload: ResultPayload, systems: PatientIdentifierSystems) -> str:
        identifier = payload.patient_identifier
        if identifier is None:
            raise PatientLookupError(f"HL7 message {payload.source_id} has no patient identifier (PID-3)")
        return find_patient(self._client, systems.system_for(identifier), identifier.value)


def _fhir_finding(finding: ChartedFinding) -> FhirFinding:
    return FhirFinding(
        target=finding.target, kind="lab" if finding.kind == "lab" else "diagnosis", code=finding.code,
        system=finding.system, display=finding.display, probability=finding.probability, positive=True,
        lab_direction=finding.lab_direction, explained_by=finding.explained_by, notes=finding.notes,
    )  # fmt: skip
