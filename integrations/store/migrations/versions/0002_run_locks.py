"""Run locks (one nightly run at a time), and an index for listing a source's studies by status.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from schema.py, so this revision never changes when the schema moves on.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "run_locks",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=256), nullable=False),
        sa.Column("acquired_at", UTC_DATETIME, nullable=False),
        sa.Column("lease_until", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_run_locks")),
    )
    op.create_index("ix_ecg_studies_source_status_id", "ecg_studies", ["source", "status", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ecg_studies_source_status_id", table_name="ecg_studies")
    op.drop_table("run_locks")
