"""The tables, as SQLAlchemy Core metadata.

The migrations in ``migrations/versions`` create exactly this schema (a test compares
them), so this module is what the repository queries against and what Alembic
autogenerate diffs against when the next migration is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

#: Stable constraint names, so migrations can refer to them on both dialects.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite keeps no zone, so naive values read back are UTC by construction."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; the store keeps timezone-aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _one_of(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


STUDY_STATUSES = ("new", "scored", "failed")
INBOX_STATUSES = ("received", "processed", "failed")
RUN_STATUSES = ("running", "succeeded", "degraded", "failed", "abandoned")
QUARANTINE_STATES = ("open", "retried", "resolved")
OUTBOX_STATUSES = ("pending", "sent", "failed")
MODEL_STATES = ("registered", "shadow", "active", "retired")
BACKFILL_STATUSES = ("pending", "done", "failed")

ecg_studies = sa.Table(
    "ecg_studies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("source_id", sa.String(512), nullable=False),
    sa.Column("source_version", sa.String(128), nullable=False),
    sa.Column("patient_ref", sa.String(256)),
    sa.Column("acquired_at", UtcDateTime),
    # The source's own text for the acquisition time (an HL7 DTM, a partial FHIR date), as received.
    sa.Column("acquired_at_text", sa.String(64)),
    sa.Column("fs_hz", sa.Float, nullable=False),
    sa.Column("leads", _json(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    # What was done to the signal before it was scored (leads imputed or dropped), in words.
    sa.Column("signal_notes", _json()),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("source", "source_id", "source_version", name="uq_ecg_studies_source_key"),
    # A feed lists its studies still ``new`` (left by an interrupted run) at the start of every scan.
    sa.Index("ix_ecg_studies_source_status_id", "source", "status", "id"),
    _one_of("status", STUDY_STATUSES),
)

inbox_messages = sa.Table(
    "inbox_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    # MSH-3, MSH-4, MSH-10; an empty component is '' rather than NULL so the unique key still holds.
    sa.Column("sender_application", sa.String(227), nullable=False),
    sa.Column("sender_facility", sa.String(227), nullable=False),
    sa.Column("control_id", sa.String(199), nullable=False),
    sa.Column("message_type", sa.String(32), nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("sender_application", "sender_facility", "control_id", name="uq_inbox_messages_msh_key"),
    _one_of("status", INBOX_STATUSES),
)

# One row per study and model version: every output in the model's order, as arrays, and the lab explanations.
# 127 outputs were 127 rows (and the explanations as many more); one row is one INSERT per study, and what
# a reader wants together (a study's results from one model) comes back together.
study_predictions = sa.Table(
    "study_predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("ecg_studies.id", ondelete="CASCADE"), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    # ICD-10-CM codes, their probabilities and whether each is at or above its threshold, in output order.
    sa.Column("diagnosis_codes", _json(), nullable=False),
    sa.Column("diagnosis_probabilities", _json(), nullable=False),
    sa.Column("diagnosis_positive", _json(), nullable=False),
    # The same for the lab targets (``potassium_high``).
    sa.Column("lab_codes", _json(), nullable=False),
    sa.Column("lab_probabilities", _json(), nullable=False),
    sa.Column("lab_positive", _json(), nullable=False),
    # [[diagnosis code, lab target, weight], ...]: the predicted lab abnormalities that explain a diagnosis.
    sa.Column("explanations", _json(), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("study_id", "model_version", name="uq_study_predictions_study_model"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("duration_s", sa.Float),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("model_versions", _json(), nullable=False),
    sa.Column("counts", _json(), nullable=False),
    sa.Column("error", sa.Text),
    # What an operator should know even when the run went on: a refused model, a stopped source, parked deliveries.
    sa.Column("problems", _json()),
    _one_of("status", RUN_STATUSES),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("origin", sa.String(1024), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # sha256 of the reason: one row per (item, reason), and a reason can be longer than an index key may be.
    sa.Column("reason_key", sa.String(64), nullable=False),
    sa.Column("raw_ref", sa.String(1024), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("retry_count", sa.Integer, nullable=False),
    # created_at is when it was first seen; the same item failing the same way again only counts.
    sa.Column("seen_count", sa.Integer, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("kind", "raw_ref", "reason_key", name="uq_quarantine_item_reason"),
    _one_of("state", QUARANTINE_STATES),
)

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("destination", sa.String(128), nullable=False),
    sa.Column("idempotency_key", sa.String(512), nullable=False, unique=True),
    sa.Column("payload", _json(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    # A claim is a lease: a sender that dies mid-delivery loses it when lease_until passes.
    sa.Column("lease_until", UtcDateTime),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime),
    sa.Index("ix_outbox_status_id", "status", "id"),
    _one_of("status", OUTBOX_STATUSES),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(128), nullable=False, unique=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("manifest", _json(), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # At most one active model, even under concurrent promotes.
    sa.Index(
        "uq_model_versions_one_active",
        "state",
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    ),
    _one_of("state", MODEL_STATES),
)

model_audit = sa.Table(
    "model_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(128), sa.ForeignKey("model_versions.version"), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("from_state", sa.String(16)),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

run_locks = sa.Table(
    "run_locks",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    # "host:pid" of the process holding the lock.
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("acquired_at", UtcDateTime, nullable=False),
    # SQLite: past this time the row no longer locks anything. PostgreSQL: informational (the advisory lock rules).
    sa.Column("lease_until", UtcDateTime, nullable=False),
)

backfill_partitions = sa.Table(
    "backfill_partitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # The backfill's name (``ecg-agent backfill --name``): a rerun with the same name resumes it.
    sa.Column("backfill", sa.String(128), nullable=False),
    # sha256 of what the partition holds (archive kind, root, files and byte ranges): the same listing, the same key.
    sa.Column("partition_key", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    # The partition's first file, for people reading the table.
    sa.Column("first_item", sa.String(1024), nullable=False),
    sa.Column("n_items", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # What its last attempt did (scored, quarantined, already_scored, ...), set when it is done.
    sa.Column("counts", _json(), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("backfill", "partition_key", name="uq_backfill_partitions_key"),
    sa.Index("ix_backfill_partitions_backfill_status", "backfill", "status"),
    _one_of("status", BACKFILL_STATUSES),
)
