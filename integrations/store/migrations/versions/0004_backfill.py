"""Backfill progress: one row per partition of an archive backfill, pending → done (after its commit) or failed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from schema.py, so this revision never changes when the schema moves on.
UTC_DATETIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "backfill_partitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backfill", sa.String(length=128), nullable=False),
        sa.Column("partition_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("first_item", sa.String(length=1024), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed')", name=op.f("ck_backfill_partitions_status_allowed")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill_partitions")),
        sa.UniqueConstraint("backfill", "partition_key", name="uq_backfill_partitions_key"),
    )
    op.create_index(
        "ix_backfill_partitions_backfill_status", "backfill_partitions", ["backfill", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_backfill_partitions_backfill_status", table_name="backfill_partitions")
    op.drop_table("backfill_partitions")
