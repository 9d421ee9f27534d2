"""The outbox payload: one study's results as a sink receives them, stored as JSON in the outbox row.

The run writes it in the same transaction as the predictions; a sink reads it back, possibly
nights later and after a restart, so it carries everything a sink needs except the
manifest's labels (looked up by model version, :mod:`agent.sinks.manifests`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from integrations.hl7.patient import PatientIdentifier


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class PayloadFinding:
    kind: str  # "diagnosis" | "lab"
    code: str  # ICD-10-CM code, or the lab target name (``potassium_high``)
    probability: float
    positive: bool


@dataclass(frozen=True, slots=True)
class PayloadExplanation:
    diagnosis: str
    lab_target: str
    probability: float


@dataclass(frozen=True, slots=True)
class ResultPayload:
    """One study's results, as queued for every sink that accepts the study."""

    study_id: int
    source: str
    source_id: str
    source_version: str
    patient_ref: str | None
    acquired_at: datetime | None
    model: ModelRef
    #: The positive findings (every sink writes positives only; the full output stays in SQL). Rows queued
    #: before this carry every output, negatives too: readers take :meth:`positives`.
    findings: tuple[PayloadFinding, ...]
    explanations: tuple[PayloadExplanation, ...]
    #: What was done to the signal before scoring (imputed or dropped leads), in words; noted on every finding.
    signal_notes: tuple[str, ...] = field(default=())
    #: The patient as an HL7 source names them (PID-3 with its assigning authority), for a sink that looks the
    #: patient up by identifier (FHIR ``Patient?identifier=``); None for other sources.
    patient_identifier: PatientIdentifier | None = None

    def outbox_key(self, destination: str) -> str:
        return outbox_key(destination, self.source, self.source_id, self.source_version, self.model.version)

    def positives(self) -> tuple[PayloadFinding, ...]:
        return tuple(finding for finding in self.findings if finding.positive)

    def to_json(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "source": self.source,
            "source_id": self.source_id,
            "source_version": self.source_version,
            "patient_ref": self.patient_ref,
            "acquired_at": self.acquired_at.isoformat() if self.acquired_at else None,
            "model": {"name": self.model.name, "version": self.model.version, "sha256": self.model.sha256},
            "findings": [
                {"kind": f.kind, "code": f.code, "probability": f.probability, "positive": f.positive}
                for f in self.findings
            ],
            "explanations": [
                {"diagnosis": e.diagnosis, "lab_target": e.lab_target, "probability": e.probability}
                for e in self.explanations
            ],
            "signal_notes": list(self.signal_notes),
            "patient_identifier": asdict(self.patient_identifier) if self.patient_identifier else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultPayload:
        """Read a stored payload back (rows queued by older versions lack ``signal_notes``, ``patient_identifier``)."""
        stamp = data.get("acquired_at")
        identifier = data.get("patient_identifier")
        return cls(
            study_id=int(data["study_id"]),
            source=data["source"],
            source_id=data["source_id"],
            source_version=data["source_version"],
            patient_ref=data.get("patient_ref"),
            acquired_at=datetime.fromisoformat(stamp) if stamp else None,
            model=ModelRef(**data["model"]),
            findings=tuple(PayloadFinding(**finding) for finding in data["findings"]),
            explanations=tuple(PayloadExplanation(**explanation) for explanation in data["explanations"]),
            signal_notes=tuple(data.get("signal_notes", ())),
            patient_identifier=PatientIdentifier(**identifier) if identifier else None,
        )


def outbox_key(destination: str, source: str, source_id: str, source_version: str, model_version: str) -> str:
    """The outbox row's idempotency key: one row per destination, study version and model version."""
    return f"{destination}|{source}|{source_id}|{source_version}|{model_version}"
