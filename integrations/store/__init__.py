"""The SQL store: HL7 inbox, ECG studies, predictions, runs and the run lock, quarantine, watermarks, outbox, models.

SQLite is the embedded default and PostgreSQL 15 the production database; the same
:class:`Store` API and the same tests run on both. The schema is versioned with the
Alembic migrations shipped in ``migrations/``; :meth:`Store.upgrade` applies them.
"""

from integrations.store.backfill import BackfillPartition, BackfillProgress, BackfillStatus
from integrations.store.errors import (
    StoreError,
    StoreIntegrityError,
    StoreMigrationError,
    StoreNotFoundError,
    StoreUnavailableError,
)
from integrations.store.records import (
    EcgStudy,
    Explanation,
    InboxMessage,
    InboxStatus,
    LabLink,
    ModelAuditEntry,
    ModelState,
    ModelVersion,
    OutboxMessage,
    OutboxStatus,
    Prediction,
    PredictionSet,
    QuarantineEntry,
    QuarantineSighting,
    QuarantineState,
    Run,
    RunLock,
    RunStatus,
    StoredInboxMessage,
    StoredOutboxMessage,
    StoredQuarantineEntry,
    StoredStudy,
    StudyStatus,
    TargetKind,
    TargetScores,
    Watermark,
)
from integrations.store.repository import Store
from integrations.store.run_lock import same_host_pid_alive

__all__ = [
    "BackfillPartition",
    "BackfillProgress",
    "BackfillStatus",
    "EcgStudy",
    "Explanation",
    "InboxMessage",
    "InboxStatus",
    "LabLink",
    "ModelAuditEntry",
    "ModelState",
    "ModelVersion",
    "OutboxMessage",
    "OutboxStatus",
    "Prediction",
    "PredictionSet",
    "QuarantineEntry",
    "QuarantineSighting",
    "QuarantineState",
    "Run",
    "RunLock",
    "RunStatus",
    "Store",
    "StoreError",
    "StoreIntegrityError",
    "StoreMigrationError",
    "StoreNotFoundError",
    "StoreUnavailableError",
    "StoredInboxMessage",
    "StoredOutboxMessage",
    "StoredQuarantineEntry",
    "StoredStudy",
    "StudyStatus",
    "TargetKind",
    "TargetScores",
    "Watermark",
    "same_host_pid_alive",
]
