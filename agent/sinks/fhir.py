"""Results as FHIR R4 Observations, derived from the ECG Observation they were computed on."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.sinks.manifests import ManifestIndex
from agent.sinks.payload import PayloadFinding, ResultPayload
from agent.sources import FHIR_SOURCE
from integrations.fhir.client import FhirClient
from integrations.fhir.writeback import EcgReference, ModelInfo, WriteBackConfig, write_back
from integrations.fhir.writeback import Finding as FhirFinding
from integrations.store import StoredStudy


class FhirResultSink:
    """Positive findings as R4 Observations, derived from the ECG Observation they were computed on.

    Only ECGs that came from this FHIR server are written back (``derivedFrom`` must resolve
    there); negatives stay in SQL, so the chart is not flooded with "not present" results.
    """

    destination = "fhir"

    def __init__(
        self,
        client: FhirClient,
        manifests: ManifestIndex,
        *,
        config: WriteBackConfig | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self._client, self._manifests = client, manifests
        self._config = config or WriteBackConfig()
        self.max_in_flight = max_in_flight

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source == FHIR_SOURCE

    def send(self, payload: ResultPayload) -> None:
        ecg = EcgReference(
            observation_id=payload.source_id,
            subject_reference=payload.patient_ref,
            effective_at=payload.acquired_at or datetime.now(UTC),
        )
        findings = [self._finding(finding, payload) for finding in payload.positives()]
        model = payload.model
        write_back(
            self._client,
            ecg,
            ModelInfo(name=model.name, version=model.version, sha256=model.sha256),
            findings,
            config=self._config,
        )

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
