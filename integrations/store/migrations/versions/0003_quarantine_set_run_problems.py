"""Quarantine as a set (one row per item and reason, with a count), run problems and two run states, and per
study the source's time text and the signal notes.

- ``quarantine``: ``reason_key`` (sha256 of the reason), ``seen_count``, ``last_seen_at``, unique on
  (kind, raw_ref, reason_key). Rows that repeat an (item, reason) are collapsed into the oldest, with the count.
- ``runs``: ``problems`` (JSON list), status ``degraded`` and ``abandoned``.
- ``ecg_studies``: ``acquired_at_text``, ``signal_notes`` (JSON list).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 20:00:00.000000
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from schema.py, so this revision never changes when the schema moves on.
UTC_DATETIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OLD_RUN_STATUSES = "status IN ('running', 'succeeded', 'failed')"
NEW_RUN_STATUSES = "status IN ('running', 'succeeded', 'degraded', 'failed', 'abandoned')"


def upgrade() -> None:
    _quarantine_as_a_set()
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("problems", JSON, nullable=True))
        runs.drop_constraint(op.f("ck_runs_status_allowed"), type_="check")
        runs.create_check_constraint(op.f("ck_runs_status_allowed"), sa.text(NEW_RUN_STATUSES))
    with op.batch_alter_table("ecg_studies") as studies:
        studies.add_column(sa.Column("acquired_at_text", sa.String(length=64), nullable=True))
        studies.add_column(sa.Column("signal_notes", JSON, nullable=True))


def _quarantine_as_a_set() -> None:
    with op.batch_alter_table("quarantine") as quarantine:
        quarantine.add_column(sa.Column("reason_key", sa.String(length=64), nullable=True))
        quarantine.add_column(sa.Column("seen_count", sa.Integer(), nullable=True))
        quarantine.add_column(sa.Column("last_seen_at", UTC_DATETIME, nullable=True))
    connection = op.get_bind()
    table = sa.table(
        "quarantine",
        sa.column("id", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("raw_ref", sa.String),
        sa.column("reason", sa.Text),
        sa.column("reason_key", sa.String),
        sa.column("seen_count", sa.Integer),
        sa.column("last_seen_at", UTC_DATETIME),
        sa.column("updated_at", UTC_DATETIME),
    )
    kept: dict[tuple[str, str, str], tuple[int, int]] = {}
    rows = connection.execute(sa.select(table).order_by(table.c.id)).mappings().all()
    for row in rows:
        key = (row["kind"], row["raw_ref"], hashlib.sha256(row["reason"].encode()).hexdigest())
        if key in kept:
            first_id, count = kept[key]
            kept[key] = (first_id, count + 1)
            connection.execute(sa.delete(table).where(table.c.id == row["id"]))
            connection.execute(sa.update(table).where(table.c.id == first_id).values(last_seen_at=row["updated_at"]))
            continue
        kept[key] = (row["id"], 1)
        connection.execute(
            sa.update(table).where(table.c.id == row["id"]).values(reason_key=key[2], last_seen_at=row["updated_at"])
        )
    for first_id, count in kept.values():
        connection.execute(sa.update(table).where(table.c.id == first_id).values(seen_count=count))
    with op.batch_alter_table("quarantine") as quarantine:
        quarantine.alter_column("reason_key", existing_type=sa.String(length=64), nullable=False)
        quarantine.alter_column("seen_count", existing_type=sa.Integer(), nullable=False)
        quarantine.alter_column("last_seen_at", existing_type=UTC_DATETIME, nullable=False)
        quarantine.create_unique_constraint(op.f("uq_quarantine_item_reason"), ["kind", "raw_ref", "reason_key"])


def downgrade() -> None:
    with op.batch_alter_table("ecg_studies") as studies:
        studies.drop_column("signal_notes")
        studies.drop_column("acquired_at_text")
    op.execute("UPDATE runs SET status = 'failed' WHERE status IN ('degraded', 'abandoned')")
    with op.batch_alter_table("runs") as runs:
        runs.drop_constraint(op.f("ck_runs_status_allowed"), type_="check")
        runs.create_check_constraint(op.f("ck_runs_status_allowed"), sa.text(OLD_RUN_STATUSES))
        runs.drop_column("problems")
    with op.batch_alter_table("quarantine") as quarantine:
        quarantine.drop_constraint(op.f("uq_quarantine_item_reason"), type_="unique")
        quarantine.drop_column("last_seen_at")
        quarantine.drop_column("seen_count")
        quarantine.drop_column("reason_key")
