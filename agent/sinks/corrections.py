"""Which stored versions of a study came before and after a payload's: what a correction supersedes.

A source sends a corrected ECG as a new version of the same source id (FHIR: the same Observation id,
a new ``meta.versionId``); the store keeps one study per version, in the order they arrived. A
payload whose study has a *later* scored version is stale (its results would resurrect what the
correction replaced): sinks skip it. A payload with an *earlier* scored version is a correction: the
sinks retire what they sent for the earlier versions. A later version that could not be scored
(quarantined) supersedes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.sinks.payload import ResultPayload, outbox_key
from integrations.store import Store, StoredStudy, StudyStatus


@dataclass(frozen=True, slots=True)
class StudyVersions:
    """The scored versions of a payload's study that reached the store before and after it."""

    earlier: tuple[StoredStudy, ...]
    later: tuple[StoredStudy, ...]

    @property
    def superseded(self) -> bool:
        """A later version was scored: this payload's results are no longer the chart's."""
        return bool(self.later)

    @property
    def corrects(self) -> StoredStudy | None:
        """The version this payload corrects (the latest scored one before it), or None."""
        return self.earlier[-1] if self.earlier else None


def study_versions(store: Store, payload: ResultPayload) -> StudyVersions:
    others = [
        study
        for study in store.list_study_versions(payload.source, payload.source_id)
        if study.id != payload.study_id and study.status == StudyStatus.SCORED
    ]
    return StudyVersions(
        earlier=tuple(study for study in others if study.id < payload.study_id),
        later=tuple(study for study in others if study.id > payload.study_id),
    )


def sent_payload(store: Store, destination: str, study: StoredStudy, *, prefer: str) -> ResultPayload | None:
    """What was queued for ``destination`` for ``study``: by model version ``prefer``, else by any model that
    scored it (a shadow's results are never queued, so at most one matches)."""
    scored_by = {prediction.model_version for prediction in store.get_predictions(study.id)}
    for version in [prefer, *sorted(scored_by - {prefer})]:
        key = outbox_key(destination, study.study.source, study.study.source_id, study.study.source_version, version)
        stored = store.get_outbox_message(key)
        if stored is not None:
            return ResultPayload.from_json(stored.message.payload)
    return None
