"""The typed values that go in and out of :class:`integrations.store.Store`.

Inputs are the fields a caller knows; the ``Stored*`` outputs add what the store
assigns (ids, timestamps, states). Every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class StudyStatus(StrEnum):
    NEW = "new"
    SCORED = "scored"
    FAILED = "failed"


class InboxStatus(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    FAILED = "failed"


class TargetKind(StrEnum):
    DIAGNOSIS = "diagnosis"
    LAB = "lab"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: Finished, but something needs an operator: a refused model, the deadline, parked write-backs.
    DEGRADED = "degraded"
    FAILED = "failed"
    #: The process died while running; marked so by the run that took the lock over.
    ABANDONED = "abandoned"


class QuarantineState(StrEnum):
    OPEN = "open"
    RETRIED = "retried"
    RESOLVED = "resolved"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class ModelState(StrEnum):
    REGISTERED = "registered"
    SHADOW = "shadow"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """An HL7 v2 message as received; (sender_application, sender_facility, control_id) is MSH-3, MSH-4, MSH-10."""

    source: str
    sender_application: str
    sender_facility: str
    control_id: str
    message_type: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class StoredInboxMessage:
    id: int
    message: InboxMessage
    received_at: datetime
    status: InboxStatus
    error: str | None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """Something that could not be used: ``kind`` (``hl7_message``, ``wfdb_record``...), where it came from, why."""

    kind: str
    origin: str
    reason: str
    raw_ref: str


@dataclass(frozen=True, slots=True)
class StoredQuarantineEntry:
    """One (item, reason): ``created_at`` is when it was first seen, ``seen_count`` how often since."""

    id: int
    entry: QuarantineEntry
    created_at: datetime
    state: QuarantineState
    retry_count: int
    updated_at: datetime
    seen_count: int = 1
    last_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class QuarantineSighting:
    """What :meth:`Store.quarantine` did: a new row (``first_time``) or one more sighting of a known one."""

    id: int
    first_time: bool
    seen_count: int


@dataclass(frozen=True, slots=True)
class EcgStudy:
    """One ECG as a source knows it; (source, source_id, source_version) identifies it."""

    source: str
    source_id: str
    source_version: str
    fs_hz: float
    leads: tuple[str, ...]
    patient_ref: str | None = None
    acquired_at: datetime | None = None
    #: The source's own text for the acquisition time, as received (an HL7 DTM without offset, a partial date).
    acquired_at_text: str | None = None


@dataclass(frozen=True, slots=True)
class StoredStudy:
    id: int
    study: EcgStudy
    status: StudyStatus
    error: str | None
    created_at: datetime
    updated_at: datetime
    #: What was done to the signal before scoring (leads imputed or dropped), in words; empty when nothing.
    signal_notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model output for one study, as read back from its :class:`PredictionSet`."""

    study_id: int
    model_version: str
    target_kind: TargetKind
    code: str
    probability: float
    is_positive: bool


@dataclass(frozen=True, slots=True)
class Explanation:
    """How much lab target ``lab_code`` supports diagnosis ``diagnosis_code`` for one study and model version."""

    study_id: int
    model_version: str
    diagnosis_code: str
    lab_code: str
    weight: float


@dataclass(frozen=True, slots=True)
class TargetScores:
    """One kind of output (diagnoses, or lab targets) of a model for one study, in the model's output order."""

    codes: tuple[str, ...]
    probabilities: tuple[float, ...]
    positive: tuple[bool, ...]

    def __post_init__(self) -> None:
        if not len(self.codes) == len(self.probabilities) == len(self.positive):
            raise ValueError(
                f"{len(self.codes)} codes, {len(self.probabilities)} probabilities and {len(self.positive)} "
                "positive flags: one of each per output"
            )


@dataclass(frozen=True, slots=True)
class LabLink:
    """Lab target ``lab_code`` offered as an explanation of diagnosis ``diagnosis_code``, with its ``weight``."""

    diagnosis_code: str
    lab_code: str
    weight: float


@dataclass(frozen=True, slots=True)
class PredictionSet:
    """Everything one model version said about one study: one row, unique on (study_id, model_version).

    Stored once: a second put of the same study and version (a rerun, a duplicate delivery) adds nothing.
    """

    study_id: int
    model_version: str
    diagnoses: TargetScores
    labs: TargetScores
    explanations: tuple[LabLink, ...] = ()

    def predictions(self) -> list[Prediction]:
        """One :class:`Prediction` per output: the diagnoses, then the lab targets, each in output order."""
        return [
            Prediction(self.study_id, self.model_version, kind, code, probability, positive)
            for kind, scores in ((TargetKind.DIAGNOSIS, self.diagnoses), (TargetKind.LAB, self.labs))
            for code, probability, positive in zip(scores.codes, scores.probabilities, scores.positive, strict=True)
        ]

    def explanation_rows(self) -> list[Explanation]:
        return [
            Explanation(self.study_id, self.model_version, link.diagnosis_code, link.lab_code, link.weight)
            for link in self.explanations
        ]


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    started_at: datetime
    model_versions: tuple[str, ...]
    status: RunStatus
    counts: dict[str, int] = field(default_factory=dict)
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: str | None = None
    #: What an operator should know even when the run went on (a refused model, parked write-backs...).
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunLock:
    """What :meth:`Store.run_lock` got: the lock, or, when another process has it, who (``held_by``)."""

    name: str
    holder: str
    acquired: bool
    #: "<holder> since <ISO time>" when not acquired; None when acquired.
    held_by: str | None = None


@dataclass(frozen=True, slots=True)
class Watermark:
    source: str
    value: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A write-back to deliver; ``idempotency_key`` is unique, so enqueueing it twice keeps one row."""

    destination: str
    idempotency_key: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredOutboxMessage:
    id: int
    message: OutboxMessage
    status: OutboxStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class ModelVersion:
    version: str
    sha256: str
    path: str
    state: ModelState
    manifest: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ModelAuditEntry:
    id: int
    version: str
    actor: str
    at: datetime
    from_state: ModelState | None
    to_state: ModelState
    reason: str
