"""The :class:`Store`: a small typed API over the schema, the same on SQLite and PostgreSQL.

Every method is its own transaction, committed before it returns, unless called on
the unit of work that :meth:`Store.transaction` yields: then all of it commits or
none does (the agent writes predictions and their outbox rows that way).
Idempotent writes use ``INSERT ... ON CONFLICT DO NOTHING`` on both dialects, so a
retry after a crash, or a resent HL7 message, never adds a second row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError

from integrations.store import backfill, model_registry, reports
from integrations.store import schema as t
from integrations.store.backfill import BackfillPartition, BackfillProgress, BackfillStatus
from integrations.store.engine import create_store_engine
from integrations.store.errors import (
    StoreError,
    StoreMigrationError,
    StoreNotFoundError,
)
from integrations.store.records import (
    EcgStudy,
    Explanation,
    InboxMessage,
    InboxStatus,
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
    Watermark,
)
from integrations.store.rows import (
    inbox_from_row,
    outbox_from_row,
    prediction_set_from_row,
    prediction_set_row,
    quarantine_from_row,
    run_from_row,
    study_from_row,
)
from integrations.store.run_lock import HolderAlive, hold_run_lock
from integrations.store.sql import dialect_insert, insert_new, insert_new_rows, translate, translated, update_one

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: PostgreSQL advisory lock held while migrating, so processes starting together migrate one after the other.
MIGRATION_LOCK_KEY = 0x45434753  # "ECGS"
DEFAULT_OUTBOX_LEASE_S = 300.0
DEFAULT_OUTBOX_MAX_ATTEMPTS = 5
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Store:
    """The project's database. Build it with :meth:`from_url`; call :meth:`upgrade` once at start-up."""

    def __init__(self, engine: sa.Engine, *, clock: Clock = utc_now, _connection: sa.Connection | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._connection = _connection

    @classmethod
    def from_url(cls, url: str | sa.URL, *, clock: Clock = utc_now) -> Store:
        return cls(create_store_engine(url), clock=clock)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def dispose(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision`` (the packaged ``migrations/`` folder, no alembic.ini)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self._engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        except CommandError as exc:
            raise StoreMigrationError(
                f"schema at {self._engine.url!r}", f"cannot upgrade to {revision}: {exc}"
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise translate(f"schema at {self._engine.url!r}", exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """A unit of work: a :class:`Store` whose calls all commit together at the end of the block, or not at all."""
        if self._connection is not None:
            yield self  # nested: join the outer unit of work
            return
        with self._begin("transaction") as connection:
            yield Store(self._engine, clock=self._clock, _connection=connection)

    @contextmanager
    def run_lock(
        self, name: str, *, holder: str, lease_s: float, holder_alive: HolderAlive | None = None
    ) -> Iterator[RunLock]:
        """Try to take the lock ``name`` for ``holder`` ("host:pid") for the block; never waits.

        ``lock.acquired`` says whether this process may run; if not, ``lock.held_by`` says
        who does. PostgreSQL holds an advisory lock for the block; SQLite a lock row that
        another process may take over once ``lease_s`` has passed, or at once when
        ``holder_alive`` (e.g. :func:`~integrations.store.same_host_pid_alive`) says the
        holder is gone. Released at the end of the block, whatever ends it.
        """
        if self._connection is not None:
            raise StoreError(f"run lock {name}", "cannot be taken inside a unit of work: it commits on its own")
        with hold_run_lock(self._engine, self._clock(), name, holder, lease_s, holder_alive) as lock:
            yield lock

    # --- HL7 inbox ---------------------------------------------------------------------------------------------

    def add_inbox_message(self, message: InboxMessage) -> bool:
        """Store a received message; False (and no second row) when (MSH-3, MSH-4, MSH-10) was seen before."""
        now = self._clock()
        row = {
            "source": message.source,
            "sender_application": message.sender_application,
            "sender_facility": message.sender_facility,
            "control_id": message.control_id,
            "message_type": message.message_type,
            "received_at": now,
            "raw": message.raw,
            "status": InboxStatus.RECEIVED.value,
            "updated_at": now,
        }
        with self._begin(_inbox_name(message)) as connection:
            return insert_new(
                connection, t.inbox_messages, row, ("sender_application", "sender_facility", "control_id")
            )

    def get_inbox_message(
        self, sender_application: str, sender_facility: str, control_id: str
    ) -> StoredInboxMessage | None:
        table = t.inbox_messages
        query = sa.select(table).where(
            table.c.sender_application == sender_application,
            table.c.sender_facility == sender_facility,
            table.c.control_id == control_id,
        )
        with self._begin(f"inbox message {sender_application}|{sender_facility}|{control_id}") as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else inbox_from_row(row)

    def list_inbox(self, status: InboxStatus, *, after_id: int = 0, limit: int = 100) -> list[StoredInboxMessage]:
        """Messages in ``status`` with an id above ``after_id``, in arrival order: page with the last id seen."""
        table = t.inbox_messages
        query = (
            sa.select(table)
            .where(table.c.status == InboxStatus(status).value, table.c.id > after_id)
            .order_by(table.c.id)
            .limit(limit)
        )
        with self._begin(f"{InboxStatus(status).value} inbox messages") as connection:
            return [inbox_from_row(row) for row in connection.execute(query).mappings()]

    def count_inbox(self, status: InboxStatus) -> int:
        with self._begin(f"{InboxStatus(status).value} inbox messages") as connection:
            return reports.count_where(connection, t.inbox_messages.c.status, InboxStatus(status).value)

    def set_inbox_status(self, inbox_id: int, status: InboxStatus, *, error: str | None = None) -> None:
        table = t.inbox_messages
        values = {"status": InboxStatus(status).value, "error": error, "updated_at": self._clock()}
        with self._begin(f"inbox message {inbox_id}") as connection:
            update_one(connection, table, inbox_id, values, f"inbox message {inbox_id}")

    # --- quarantine --------------------------------------------------------------------------------------------

    def add_quarantine(self, entry: QuarantineEntry) -> int:
        """Record something unusable and why (see :meth:`quarantine`); returns its quarantine id."""
        return self.quarantine(entry).id

    def quarantine(self, entry: QuarantineEntry) -> QuarantineSighting:
        """Record that ``entry``'s item failed for ``entry.reason``: one row per (kind, item, reason).

        The first sighting inserts the row; each later one counts it and moves ``last_seen_at``
        (and reopens it if it had been retried or resolved), so a source that re-reads the same
        bad item, or a sender that resends a refused message, never fills the table.
        """
        now = self._clock()
        reason_key = hashlib.sha256(entry.reason.encode()).hexdigest()
        row = {
            "kind": entry.kind,
            "origin": entry.origin,
            "reason": entry.reason,
            "reason_key": reason_key,
            "raw_ref": entry.raw_ref,
            "state": QuarantineState.OPEN.value,
            "retry_count": 0,
            "seen_count": 1,
            "last_seen_at": now,
            "created_at": now,
            "updated_at": now,
        }
        table = t.quarantine
        with self._begin(f"quarantine entry for {entry.raw_ref}") as connection:
            insert = dialect_insert(connection, table).values(row)
            upsert = insert.on_conflict_do_update(
                index_elements=["kind", "raw_ref", "reason_key"],
                set_={
                    "seen_count": table.c.seen_count + 1,
                    "last_seen_at": insert.excluded.last_seen_at,
                    "updated_at": insert.excluded.updated_at,
                    "origin": insert.excluded.origin,
                    "state": QuarantineState.OPEN.value,
                },
            ).returning(table.c.id, table.c.seen_count)
            quarantine_id, seen_count = connection.execute(upsert).one()
        return QuarantineSighting(int(quarantine_id), first_time=seen_count == 1, seen_count=int(seen_count))

    def list_quarantine(
        self,
        *,
        state: QuarantineState | None = QuarantineState.OPEN,
        kind: str | None = None,
        raw_ref: str | None = None,
        limit: int = 100,
    ) -> list[StoredQuarantineEntry]:
        """Quarantine entries, oldest first; ``state=None`` lists every state."""
        table = t.quarantine
        query = sa.select(table).order_by(table.c.id).limit(limit)
        if state is not None:
            query = query.where(table.c.state == QuarantineState(state).value)
        if kind is not None:
            query = query.where(table.c.kind == kind)
        if raw_ref is not None:
            query = query.where(table.c.raw_ref == raw_ref)
        with self._begin("quarantine list") as connection:
            return [quarantine_from_row(row) for row in connection.execute(query).mappings()]

    def get_quarantine(self, quarantine_id: int) -> StoredQuarantineEntry:
        """One quarantine entry by id, whatever its state; :class:`StoreNotFoundError` if there is none."""
        query = sa.select(t.quarantine).where(t.quarantine.c.id == quarantine_id)
        with self._begin(f"quarantine entry {quarantine_id}") as connection:
            row = connection.execute(query).mappings().first()
        if row is None:
            raise StoreNotFoundError(f"quarantine entry {quarantine_id}", "no such entry")
        return quarantine_from_row(row)

    def count_quarantine(self, *, state: QuarantineState = QuarantineState.OPEN) -> dict[str, int]:
        """How many entries in ``state`` there are of each kind; kinds with none are left out."""
        with self._begin(f"{QuarantineState(state).value} quarantine entries") as connection:
            return reports.quarantine_by_kind(connection, QuarantineState(state).value)

    def mark_quarantine_retried(self, quarantine_id: int) -> None:
        """The entry was fed back in; counts the retry."""
        table = t.quarantine
        values = {
            "state": QuarantineState.RETRIED.value,
            "retry_count": table.c.retry_count + 1,
            "updated_at": self._clock(),
        }
        with self._begin(f"quarantine entry {quarantine_id}") as connection:
            update_one(connection, table, quarantine_id, values, f"quarantine entry {quarantine_id}")

    def mark_quarantine_resolved(self, quarantine_id: int) -> None:
        values = {"state": QuarantineState.RESOLVED.value, "updated_at": self._clock()}
        with self._begin(f"quarantine entry {quarantine_id}") as connection:
            update_one(connection, t.quarantine, quarantine_id, values, f"quarantine entry {quarantine_id}")

    # --- ECG studies -------------------------------------------------------------------------------------------

    def upsert_study(self, study: EcgStudy) -> StoredStudy:
        """The stored study for (source, source_id, source_version), inserting it as ``new`` the first time."""
        return self.upsert_studies([study])[0]

    def upsert_studies(self, studies: Sequence[EcgStudy]) -> list[StoredStudy]:
        """:meth:`upsert_study` for many studies in one INSERT and one SELECT; results in the order given."""
        if not studies:
            return []
        now = self._clock()
        rows = [
            {
                "source": study.source,
                "source_id": study.source_id,
                "source_version": study.source_version,
                "patient_ref": study.patient_ref,
                "acquired_at": study.acquired_at,
                "acquired_at_text": study.acquired_at_text,
                "fs_hz": study.fs_hz,
                "leads": list(study.leads),
                "status": StudyStatus.NEW.value,
                "created_at": now,
                "updated_at": now,
            }
            for study in studies
        ]
        keys = [(study.source, study.source_id, study.source_version) for study in studies]
        table = t.ecg_studies
        query = sa.select(table).where(sa.tuple_(table.c.source, table.c.source_id, table.c.source_version).in_(keys))
        name = _study_name(*keys[0]) if len(keys) == 1 else f"{len(keys)} ECG studies from {keys[0][0]}"
        with self._begin(name) as connection:
            insert_new_rows(connection, table, rows, ("source", "source_id", "source_version"))
            stored = {
                (found.study.source, found.study.source_id, found.study.source_version): found
                for found in map(study_from_row, connection.execute(query).mappings())
            }
        return [stored[key] for key in keys]  # each inserted, or already there, in this same transaction

    def get_study(self, source: str, source_id: str, source_version: str) -> StoredStudy | None:
        with self._begin(_study_name(source, source_id, source_version)) as connection:
            return _select_study(connection, source, source_id, source_version)

    def get_study_by_id(self, study_id: int) -> StoredStudy:
        with self._begin(f"ECG study {study_id}") as connection:
            row = connection.execute(sa.select(t.ecg_studies).where(t.ecg_studies.c.id == study_id)).mappings().first()
        if row is None:
            raise StoreNotFoundError(f"ECG study {study_id}", "no such study")
        return study_from_row(row)

    def list_studies(
        self,
        *,
        source: str | None = None,
        status: StudyStatus | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[StoredStudy]:
        """Studies in id order, optionally of one source and status; page with ``after_id`` = the last id seen."""
        table = t.ecg_studies
        query = sa.select(table).where(table.c.id > after_id).order_by(table.c.id).limit(limit)
        if source is not None:
            query = query.where(table.c.source == source)
        if status is not None:
            query = query.where(table.c.status == StudyStatus(status).value)
        with self._begin(f"ECG studies of source {source or 'any'}, status {status or 'any'}") as connection:
            return [study_from_row(row) for row in connection.execute(query).mappings()]

    def has_study(self, source: str, source_id: str) -> bool:
        """Whether any version of ``source_id`` is stored."""
        table = t.ecg_studies
        query = sa.select(table.c.id).where(table.c.source == source, table.c.source_id == source_id).limit(1)
        with self._begin(f"ECG study {source}:{source_id}") as connection:
            return connection.execute(query).first() is not None

    def list_study_versions(self, source: str, source_id: str) -> list[StoredStudy]:
        """Every stored version of ``source_id``, in the order they reached the store (id order)."""
        table = t.ecg_studies
        query = sa.select(table).where(table.c.source == source, table.c.source_id == source_id).order_by(table.c.id)
        with self._begin(f"ECG study {source}:{source_id}") as connection:
            return [study_from_row(row) for row in connection.execute(query).mappings()]

    def set_study_status(self, study_id: int, status: StudyStatus, *, error: str | None = None) -> None:
        values = {"status": StudyStatus(status).value, "error": error, "updated_at": self._clock()}
        with self._begin(f"ECG study {study_id}") as connection:
            update_one(connection, t.ecg_studies, study_id, values, f"ECG study {study_id}")

    def set_studies_status(self, study_ids: Sequence[int], status: StudyStatus) -> None:
        """:meth:`set_study_status` (no error) for many studies in one UPDATE; every id must exist."""
        if not study_ids:
            return
        table = t.ecg_studies
        values = {"status": StudyStatus(status).value, "error": None, "updated_at": self._clock()}
        name = f"ECG studies {sorted(study_ids)}"
        with self._begin(name) as connection:
            updated = connection.execute(sa.update(table).where(table.c.id.in_(list(study_ids))).values(values))
            if updated.rowcount != len(set(study_ids)):
                raise StoreNotFoundError(name, f"{len(set(study_ids)) - updated.rowcount} of them do not exist")

    def set_signal_notes(self, study_id: int, notes: Sequence[str]) -> None:
        """What was done to the study's signal before scoring (imputed or dropped leads), in words."""
        values = {"signal_notes": list(notes), "updated_at": self._clock()}
        with self._begin(f"ECG study {study_id}") as connection:
            update_one(connection, t.ecg_studies, study_id, values, f"ECG study {study_id}")

    # --- predictions and explanations --------------------------------------------------------------------------

    def put_prediction_sets(self, sets: Sequence[PredictionSet]) -> int:
        """Store each study's outputs from each model version as one row, in one INSERT; returns how many were new.

        A (study, model version) already stored is left as it is: a rerun or a duplicate delivery adds nothing.
        """
        now = self._clock()
        rows = [prediction_set_row(prediction_set, now) for prediction_set in sets]
        with self._begin(_predictions_name(sets)) as connection:
            return insert_new_rows(connection, t.study_predictions, rows, ("study_id", "model_version"))

    def get_prediction_sets(self, study_id: int, model_version: str | None = None) -> list[PredictionSet]:
        """The study's prediction sets, in the order they were stored (one per model version that scored it)."""
        table = t.study_predictions
        query = sa.select(table).where(table.c.study_id == study_id).order_by(table.c.id)
        if model_version is not None:
            query = query.where(table.c.model_version == model_version)
        with self._begin(f"predictions for ECG study {study_id}") as connection:
            return [prediction_set_from_row(row) for row in connection.execute(query).mappings()]

    def get_predictions(self, study_id: int, model_version: str | None = None) -> list[Prediction]:
        """Every output for the study, one :class:`Prediction` each: per model version, diagnoses then labs."""
        return [p for found in self.get_prediction_sets(study_id, model_version) for p in found.predictions()]

    def get_explanations(self, study_id: int, model_version: str) -> list[Explanation]:
        return [e for found in self.get_prediction_sets(study_id, model_version) for e in found.explanation_rows()]

    def prediction_pairs(self, active_version: str, shadow_version: str) -> list[tuple[Prediction, Prediction]]:
        """(active, shadow) predictions of the same (study, target_kind, code), by study: the shadow report's input."""
        with self._begin(f"predictions of models {active_version} and {shadow_version}") as connection:
            return reports.prediction_pairs(connection, active_version, shadow_version)

    # --- runs --------------------------------------------------------------------------------------------------

    def start_run(self, model_versions: Sequence[str]) -> Run:
        row = {
            "started_at": self._clock(),
            "status": RunStatus.RUNNING.value,
            "model_versions": list(model_versions),
            "counts": {},
        }
        with self._begin("run") as connection:
            run_id = int(connection.execute(sa.insert(t.runs).values(row).returning(t.runs.c.id)).scalar_one())
            return _select_run(connection, run_id)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        counts: Mapping[str, int],
        *,
        error: str | None = None,
        problems: Sequence[str] = (),
    ) -> Run:
        """Close a run with its outcome counts (e.g. ``{"scored": 10, "quarantined": 1}``); the duration is computed."""
        finished_at = self._clock()
        with self._begin(f"run {run_id}") as connection:
            started = _select_run(connection, run_id).started_at
            values = {
                "finished_at": finished_at,
                "duration_s": (finished_at - started).total_seconds(),
                "status": RunStatus(status).value,
                "counts": dict(counts),
                "error": error,
                "problems": list(problems),
            }
            update_one(connection, t.runs, run_id, values, f"run {run_id}")
            return _select_run(connection, run_id)

    def abandon_running_runs(self, reason: str) -> list[int]:
        """Mark every run still ``running`` as ``abandoned``; returns their ids.

        Only correct while holding the run lock: then no other run is alive, and a row still
        ``running`` belongs to a process that died (SIGKILL, power loss) before it could finish.
        """
        table = t.runs
        now = self._clock()
        abandon = (
            sa.update(table)
            .where(table.c.status == RunStatus.RUNNING.value)
            .values(status=RunStatus.ABANDONED.value, finished_at=now, error=reason)
            .returning(table.c.id)
        )
        with self._begin("runs left running") as connection:
            return sorted(int(run_id) for run_id in connection.execute(abandon).scalars())

    def get_run(self, run_id: int) -> Run:
        with self._begin(f"run {run_id}") as connection:
            return _select_run(connection, run_id)

    def list_runs(self, *, limit: int = 10) -> list[Run]:
        """The last ``limit`` runs, newest first."""
        with self._begin("recent runs") as connection:
            return reports.recent_runs(connection, limit)

    # --- watermarks --------------------------------------------------------------------------------------------

    def get_watermark(self, source: str) -> Watermark | None:
        query = sa.select(t.watermarks).where(t.watermarks.c.source == source)
        with self._begin(f"watermark {source}") as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else Watermark(row["source"], row["value"], row["updated_at"])

    def advance_watermark(self, source: str, value: str) -> None:
        """Set ``source``'s watermark; call it in the same unit of work that commits what was read up to ``value``."""
        row = {"source": source, "value": value, "updated_at": self._clock()}
        with self._begin(f"watermark {source}") as connection:
            insert = dialect_insert(connection, t.watermarks).values(row)
            upsert = insert.on_conflict_do_update(
                index_elements=["source"],
                set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
            )
            connection.execute(upsert)

    # --- outbox ------------------------------------------------------------------------------------------------

    def enqueue_outbox(self, message: OutboxMessage) -> bool:
        """Queue a write-back; False when its idempotency key is already queued (or sent)."""
        return self.enqueue_outbox_many([message]) == 1

    def enqueue_outbox_many(self, messages: Sequence[OutboxMessage]) -> int:
        """:meth:`enqueue_outbox` for many messages in one INSERT; returns how many were new."""
        now = self._clock()
        rows = [
            {
                "destination": message.destination,
                "idempotency_key": message.idempotency_key,
                "payload": message.payload,
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for message in messages
        ]
        name = f"outbox message {messages[0].idempotency_key}" if len(messages) == 1 else "outbox messages"
        with self._begin(name) as connection:
            return insert_new_rows(connection, t.outbox, rows, ("idempotency_key",))

    def claim_outbox(
        self, *, limit: int = 50, lease_s: float = DEFAULT_OUTBOX_LEASE_S, destination: str | None = None
    ) -> list[StoredOutboxMessage]:
        """Lease up to ``limit`` pending messages, oldest first, to this sender for ``lease_s``.

        A message is leased to one sender at a time; if that sender dies, the lease runs
        out and the message is claimed again, so the receiver must be idempotent on the
        key (the FHIR/HL7 write-backs are), which makes the effect exactly-once.
        """
        now = self._clock()
        table = t.outbox
        claimable = (
            sa.select(table.c.id)
            .where(table.c.status == OutboxStatus.PENDING.value)
            .where(sa.or_(table.c.lease_until.is_(None), table.c.lease_until <= now))
            .order_by(table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises writers anyway
        )
        if destination is not None:
            claimable = claimable.where(table.c.destination == destination)
        claim = (
            sa.update(table)
            .where(table.c.id.in_(claimable.scalar_subquery()))
            .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
            .returning(*table.c)
        )
        with self._begin("outbox claim") as connection:
            rows = connection.execute(claim).mappings().all()
        return sorted((outbox_from_row(row) for row in rows), key=lambda message: message.id)

    def mark_outbox_sent(self, outbox_id: int) -> None:
        self.mark_outbox_sent_many([outbox_id])

    def mark_outbox_sent_many(self, outbox_ids: Sequence[int]) -> None:
        """Mark messages delivered, in one UPDATE; every id must exist."""
        now = self._clock()
        table = t.outbox
        values = {"status": OutboxStatus.SENT.value, "sent_at": now, "updated_at": now, "lease_until": None}
        name = f"outbox message {outbox_ids[0]}" if len(outbox_ids) == 1 else f"outbox messages {sorted(outbox_ids)}"
        with self._begin(name) as connection:
            updated = connection.execute(sa.update(table).where(table.c.id.in_(list(outbox_ids))).values(values))
            if updated.rowcount != len(set(outbox_ids)):
                raise StoreNotFoundError(name, "no such row in outbox")

    def mark_outbox_failed(
        self, outbox_id: int, error: str, *, max_attempts: int = DEFAULT_OUTBOX_MAX_ATTEMPTS
    ) -> StoredOutboxMessage:
        """Count a failed delivery; the message stays pending until ``max_attempts`` failures, then is ``failed``."""
        table = t.outbox
        name = f"outbox message {outbox_id}"
        with self._begin(name) as connection:
            attempts = connection.execute(sa.select(table.c.attempts).where(table.c.id == outbox_id)).scalar()
            if attempts is None:
                raise StoreNotFoundError(name, "no such outbox message")
            status = OutboxStatus.FAILED if attempts + 1 >= max_attempts else OutboxStatus.PENDING
            values = {
                "attempts": attempts + 1,
                "last_error": error,
                "status": status.value,
                "lease_until": None,
                "updated_at": self._clock(),
            }
            update_one(connection, table, outbox_id, values, name)
            return outbox_from_row(connection.execute(sa.select(table).where(table.c.id == outbox_id)).mappings().one())

    def release_outbox_leases(self, *, destination: str | None = None) -> int:
        """Free every pending message's lease at once; returns how many were leased.

        Only safe when no sender is alive: the agent calls it under the run lock, when any
        lease left belongs to a run that died, so its messages need not wait out the lease.
        """
        table = t.outbox
        release = (
            sa.update(table)
            .where(table.c.status == OutboxStatus.PENDING.value, table.c.lease_until.is_not(None))
            .values(lease_until=None, updated_at=self._clock())
        )
        if destination is not None:
            release = release.where(table.c.destination == destination)
        with self._begin(f"outbox leases of destination {destination or 'any'}") as connection:
            return connection.execute(release).rowcount

    def list_outbox(self, status: OutboxStatus, *, limit: int = 100) -> list[StoredOutboxMessage]:
        """Outbox messages in ``status``, oldest first (``failed``: the parked ones an operator should look at)."""
        table = t.outbox
        query = sa.select(table).where(table.c.status == OutboxStatus(status).value).order_by(table.c.id).limit(limit)
        with self._begin(f"{OutboxStatus(status).value} outbox messages") as connection:
            return [outbox_from_row(row) for row in connection.execute(query).mappings()]

    def requeue_outbox(self, outbox_ids: Sequence[int] | None = None) -> int:
        """Put parked (``failed``) messages back to ``pending`` with their attempts reset; None means every one.

        Returns how many were requeued; ids that are not parked are left alone.
        """
        table = t.outbox
        requeue = (
            sa.update(table)
            .where(table.c.status == OutboxStatus.FAILED.value)
            .values(status=OutboxStatus.PENDING.value, attempts=0, lease_until=None, updated_at=self._clock())
        )
        if outbox_ids is not None:
            requeue = requeue.where(table.c.id.in_(list(outbox_ids)))
        with self._begin("parked outbox messages") as connection:
            return connection.execute(requeue).rowcount

    def count_outbox(self, status: OutboxStatus) -> int:
        with self._begin(f"{OutboxStatus(status).value} outbox messages") as connection:
            return reports.count_where(connection, t.outbox.c.status, OutboxStatus(status).value)

    def get_outbox_message(self, idempotency_key: str) -> StoredOutboxMessage | None:
        query = sa.select(t.outbox).where(t.outbox.c.idempotency_key == idempotency_key)
        with self._begin(f"outbox message {idempotency_key}") as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else outbox_from_row(row)

    # --- model versions ----------------------------------------------------------------------------------------

    def register_model_version(
        self, version: str, sha256: str, path: str, manifest: Mapping[str, Any], *, actor: str
    ) -> ModelVersion:
        """Register an artifact as ``registered``; registering the same sha256 again returns the stored version."""
        with self._begin(f"model version {version} (sha256 {sha256[:12]})") as connection:
            return model_registry.register(connection, self._clock(), version, sha256, path, manifest, actor)

    def set_model_state(self, version: str, state: ModelState, *, actor: str, reason: str) -> ModelVersion:
        """Move ``version`` to ``state`` with an audit row; promoting to active retires the previous active one."""
        with self._begin(f"model version {version}") as connection:
            return model_registry.set_state(connection, self._clock(), version, ModelState(state), actor, reason)

    def get_model_version(self, version: str) -> ModelVersion | None:
        with self._begin(f"model version {version}") as connection:
            return model_registry.select(connection, version)

    def list_model_versions(self) -> list[ModelVersion]:
        """Every registered version, in registration order."""
        with self._begin("model versions") as connection:
            return model_registry.select_all(connection)

    def active_model_version(self) -> ModelVersion | None:
        with self._begin("active model version") as connection:
            active = model_registry.select_all(connection, ModelState.ACTIVE)
        return active[0] if active else None

    def shadow_model_versions(self) -> list[ModelVersion]:
        with self._begin("shadow model versions") as connection:
            return model_registry.select_all(connection, ModelState.SHADOW)

    def model_audit(self, version: str | None = None) -> list[ModelAuditEntry]:
        """The audit trail, oldest first, of one version or of all."""
        with self._begin("model audit trail") as connection:
            return model_registry.audit_trail(connection, version)

    # --- backfill progress -------------------------------------------------------------------------------------

    def register_backfill_partitions(self, backfill_name: str, partitions: Sequence[BackfillPartition]) -> int:
        """Record the partitions of backfill ``backfill_name`` not known yet, as pending; returns how many were new."""
        with self._begin(f"partitions of backfill {backfill_name}") as connection:
            return backfill.register(connection, self._clock(), backfill_name, partitions)

    def done_backfill_partitions(self, backfill_name: str) -> set[str]:
        """The keys of the partitions of ``backfill_name`` whose results are committed."""
        with self._begin(f"partitions of backfill {backfill_name}") as connection:
            return backfill.done_keys(connection, backfill_name)

    def finish_backfill_partition(
        self,
        backfill_name: str,
        key: str,
        status: BackfillStatus,
        *,
        counts: Mapping[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        """Record the end of one attempt at a partition: ``done`` only after its results are committed."""
        with self._begin(f"partition {key[:12]} of backfill {backfill_name}") as connection:
            backfill.finish(connection, self._clock(), backfill_name, key, status, counts=counts, error=error)

    def backfill_progress(self) -> list[BackfillProgress]:
        """Every backfill's partitions by status and the counts of the done ones, most recently active first."""
        with self._begin("backfill progress") as connection:
            return backfill.progress(connection)

    # --- plumbing ----------------------------------------------------------------------------------------------

    def _begin(self, record: str) -> AbstractContextManager[sa.Connection]:
        """The unit of work's connection, or a fresh transaction committed on exit; database errors translated."""
        return translated(record, self._engine, self._connection)


def _inbox_name(message: InboxMessage) -> str:
    return f"inbox message {message.sender_application}|{message.sender_facility}|{message.control_id}"


def _study_name(source: str, source_id: str, source_version: str) -> str:
    return f"ECG study {source}:{source_id}@{source_version}"


def _predictions_name(sets: Sequence[PredictionSet]) -> str:
    studies = sorted({p.study_id for p in sets})
    versions = sorted({p.model_version for p in sets})
    return f"predictions of model {', '.join(versions)} for ECG studies {studies}"


def _select_study(connection: sa.Connection, source: str, source_id: str, source_version: str) -> StoredStudy | None:
    table = t.ecg_studies
    query = sa.select(table).where(
        table.c.source == source, table.c.source_id == source_id, table.c.source_version == source_version
    )
    row = connection.execute(query).mappings().first()
    return None if row is None else study_from_row(row)


def _select_run(connection: sa.Connection, run_id: int) -> Run:
    row = connection.execute(sa.select(t.runs).where(t.runs.c.id == run_id)).mappings().first()
    if row is None:
        raise StoreNotFoundError(f"run {run_id}", "no such run")
    return run_from_row(row)
