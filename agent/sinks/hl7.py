"""Results as an HL7 v2 ORU^R01 over MLLP, for EHRs without FHIR."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from agent.sinks.charting import ChartedFinding, charted_findings
from agent.sinks.corrections import sent_payload, study_versions
from agent.sinks.manifests import ManifestIndex
from agent.sinks.payload import ResultPayload
from agent.sources import SOURCE_NAMES
from integrations.hl7.client import MllpClient
from integrations.hl7.results import EcgResults, ModelInstance, build_results_oru
from integrations.hl7.results import Finding as Hl7Finding
from integrations.store import Store, StoredStudy

log = logging.getLogger(__name__)

ICD10_HL7_SYSTEM = "I10"
LOINC_HL7_SYSTEM = "LN"
#: An ORU^R01 names the patient by whatever id the study has, so it carries every source's results.
SOURCES_CARRIED = frozenset(SOURCE_NAMES)


class Hl7ResultSink:
    """Charted positive findings as an ORU^R01 over MLLP, with a control id derived from the study and model version.

    The deterministic MSH-10 makes a resend after a crash a duplicate the receiver recognises. Only
    findings whose label the manifest charts are sent (:mod:`agent.sinks.charting`), each followed by
    NTEs saying how good its label is and what was done to the signal.

    A correction is a new version of a study already sent (FHIR: the same Observation id, a new
    versionId): its ORU carries the same OBR-3 (the ECG's id) with OBR-25/OBX-11 ``C``, and the
    findings the earlier version's ORU had and this one lacks as OBX-11 ``D``
    (:mod:`integrations.hl7.results`). The results of a version a later scored one replaced are not
    sent. An ECG that itself came as HL7 v2 is one study per message (MSH-10), so its correction
    arrives as a new study and is not linked to the earlier one.
    """

    destination = "hl7"
    max_in_flight = 1  # one connection, results in the order they were scored
    carries = SOURCES_CARRIED

    def __init__(self, client_factory: Callable[[], MllpClient], manifests: ManifestIndex, store: Store) -> None:
        self._client_factory, self._manifests, self._store = client_factory, manifests, store

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source in self.carries

    def send(self, payload: ResultPayload) -> None:
        message = self.message(payload)
        if message is None:
            log.info("results of %s v%s not sent: a later version of that ECG was scored",
                     payload.source_id, payload.source_version)  # fmt: skip
            return
        with self._client_factory() as client:
            client.send(message)

    def message(self, payload: ResultPayload) -> bytes | None:
        """The ORU^R01 for ``payload``; None when a later version of its ECG superseded it."""
        versions = study_versions(self._store, payload)
        if versions.superseded:
            return None
        charted = charted_findings(payload, self._manifests)
        retracted: tuple[Hl7Finding, ...] = ()
        if versions.corrects is not None:
            earlier = sent_payload(self._store, self.destination, versions.corrects, prefer=payload.model.version)
            before = charted_findings(earlier, self._manifests) if earlier is not None else []
            still = {finding.target for finding in charted}
            retracted = tuple(_hl7_finding(finding) for finding in before if finding.target not in still)
        results = EcgResults(
            ecg_record_id=payload.source_id,
            subject_id=payload.patient_ref,
            acquired_at=payload.acquired_at or datetime.now(UTC),
            findings=tuple(_hl7_finding(finding) for finding in charted),
            model=ModelInstance(name=payload.model.name, version=payload.model.version),
            correction=versions.corrects is not None,
            retracted=retracted,
        )
        return build_results_oru(results, control_id=control_id(payload))


def _hl7_finding(finding: ChartedFinding) -> Hl7Finding:
    system = ICD10_HL7_SYSTEM if finding.kind == "diagnosis" else LOINC_HL7_SYSTEM
    return Hl7Finding(finding.kind, finding.code, system, finding.display, finding.probability, True, finding.notes)


def control_id(payload: ResultPayload) -> str:
    """MSH-10 of a study's results: the same study, version and model always get the same id."""
    key = f"{payload.source}|{payload.source_id}|{payload.source_version}|{payload.model.version}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]
