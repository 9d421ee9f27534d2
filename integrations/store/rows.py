"""Rows to the typed records of :mod:`integrations.store.records`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from integrations.store.records import (
    EcgStudy,
    InboxMessage,
    InboxStatus,
    LabLink,
    ModelAuditEntry,
    ModelState,
    ModelVersion,
    OutboxMessage,
    OutboxStatus,
    PredictionSet,
    QuarantineEntry,
    QuarantineState,
    Run,
    RunStatus,
    StoredInboxMessage,
    StoredOutboxMessage,
    StoredQuarantineEntry,
    StoredStudy,
    StudyStatus,
    TargetScores,
)


def inbox_from_row(row: sa.RowMapping) -> StoredInboxMessage:
    message = InboxMessage(
        source=row["source"],
        sender_application=row["sender_application"],
        sender_facility=row["sender_facility"],
        control_id=row["control_id"],
        message_type=row["message_type"],
        raw=bytes(row["raw"]),
    )
    return StoredInboxMessage(row["id"], message, row["received_at"], InboxStatus(row["status"]), row["error"])


def quarantine_from_row(row: sa.RowMapping) -> StoredQuarantineEntry:
    entry = QuarantineEntry(kind=row["kind"], origin=row["origin"], reason=row["reason"], raw_ref=row["raw_ref"])
    return StoredQuarantineEntry(
        id=row["id"],
        entry=entry,
        created_at=row["created_at"],
        state=QuarantineState(row["state"]),
        retry_count=row["retry_count"],
        updated_at=row["updated_at"],
        seen_count=row["seen_count"],
        last_seen_at=row["last_seen_at"],
    )


def study_from_row(row: sa.RowMapping) -> StoredStudy:
    study = EcgStudy(
        source=row["source"],
        source_id=row["source_id"],
        source_version=row["source_version"],
        fs_hz=row["fs_hz"],
        leads=tuple(row["leads"]),
        patient_ref=row["patient_ref"],
        acquired_at=row["acquired_at"],
        acquired_at_text=row["acquired_at_text"],
    )
    status = StudyStatus(row["status"])
    notes = tuple(row["signal_notes"] or ())
    return StoredStudy(row["id"], study, status, row["error"], row["created_at"], row["updated_at"], notes)


def prediction_set_row(prediction_set: PredictionSet, created_at: datetime) -> dict[str, Any]:
    """The ``study_predictions`` row of one study's outputs from one model version."""
    diagnoses, labs = prediction_set.diagnoses, prediction_set.labs
    return {
        "study_id": prediction_set.study_id,
        "model_version": prediction_set.model_version,
        "diagnosis_codes": list(diagnoses.codes),
        "diagnosis_probabilities": list(diagnoses.probabilities),
        "diagnosis_positive": list(diagnoses.positive),
        "lab_codes": list(labs.codes),
        "lab_probabilities": list(labs.probabilities),
        "lab_positive": list(labs.positive),
        "explanations": [[e.diagnosis_code, e.lab_code, e.weight] for e in prediction_set.explanations],
        "created_at": created_at,
    }


def prediction_set_from_row(row: Mapping[str, Any]) -> PredictionSet:
    return PredictionSet(
        study_id=row["study_id"],
        model_version=row["model_version"],
        diagnoses=_target_scores(row, "diagnosis"),
        labs=_target_scores(row, "lab"),
        explanations=tuple(LabLink(diagnosis, lab, weight) for diagnosis, lab, weight in row["explanations"]),
    )


def _target_scores(row: Mapping[str, Any], kind: str) -> TargetScores:
    return TargetScores(
        codes=tuple(row[f"{kind}_codes"]),
        probabilities=tuple(float(p) for p in row[f"{kind}_probabilities"]),
        positive=tuple(bool(flag) for flag in row[f"{kind}_positive"]),
    )


def outbox_from_row(row: sa.RowMapping) -> StoredOutboxMessage:
    return StoredOutboxMessage(
        id=row["id"],
        message=OutboxMessage(row["destination"], row["idempotency_key"], dict(row["payload"])),
        status=OutboxStatus(row["status"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        lease_until=row["lease_until"],
    )


def model_from_row(row: sa.RowMapping) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        sha256=row["sha256"],
        path=row["path"],
        state=ModelState(row["state"]),
        manifest=dict(row["manifest"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def audit_from_row(row: sa.RowMapping) -> ModelAuditEntry:
    from_state = None if row["from_state"] is None else ModelState(row["from_state"])
    return ModelAuditEntry(
        row["id"], row["version"], row["actor"], row["at"], from_state, ModelState(row["to_state"]), row["reason"]
    )


def run_from_row(row: sa.RowMapping) -> Run:
    return Run(
        id=row["id"],
        started_at=row["started_at"],
        model_versions=tuple(row["model_versions"]),
        status=RunStatus(row["status"]),
        counts=dict(row["counts"]),
        finished_at=row["finished_at"],
        duration_s=row["duration_s"],
        error=row["error"],
        problems=tuple(row["problems"] or ()),
    )
