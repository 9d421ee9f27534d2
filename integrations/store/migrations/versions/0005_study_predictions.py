"""One row of predictions per study and model version: the outputs as arrays, the explanations beside them.

The ``predictions`` table held one row per output (127 for the demo model) and ``explanations`` one
per lab explanation; every scored study cost that many INSERTs. ``study_predictions`` holds one row
per (study, model version) with the codes, probabilities and positive flags of the diagnoses and of
the lab targets as arrays, in output order, and the explanations. The rows already stored are
converted (the outputs in their row order, which is the order they were written in), a few hundred
studies at a time, on SQLite and PostgreSQL alike; the downgrade converts them back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from schema.py, so this revision never changes when the schema moves on.
UTC_DATETIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: Studies converted per round trip: bounded memory whatever the size of the table.
STUDIES_PER_CHUNK = 500
KINDS = ("diagnosis", "lab")

_predictions = sa.table(
    "predictions",
    sa.column("id", sa.Integer()),
    sa.column("study_id", sa.Integer()),
    sa.column("model_version", sa.String()),
    sa.column("target_kind", sa.String()),
    sa.column("code", sa.String()),
    sa.column("probability", sa.Float()),
    sa.column("is_positive", sa.Boolean()),
    sa.column("created_at", UTC_DATETIME),
)
_explanations = sa.table(
    "explanations",
    sa.column("id", sa.Integer()),
    sa.column("study_id", sa.Integer()),
    sa.column("model_version", sa.String()),
    sa.column("diagnosis_code", sa.String()),
    sa.column("lab_code", sa.String()),
    sa.column("weight", sa.Float()),
    sa.column("created_at", UTC_DATETIME),
)
_study_predictions = sa.table(
    "study_predictions",
    sa.column("id", sa.Integer()),
    sa.column("study_id", sa.Integer()),
    sa.column("model_version", sa.String()),
    *(sa.column(f"{kind}_{field}", JSON) for kind in KINDS for field in ("codes", "probabilities", "positive")),
    sa.column("explanations", JSON),
    sa.column("created_at", UTC_DATETIME),
)


def upgrade() -> None:
    op.create_table(
        "study_predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("diagnosis_codes", JSON, nullable=False),
        sa.Column("diagnosis_probabilities", JSON, nullable=False),
        sa.Column("diagnosis_positive", JSON, nullable=False),
        sa.Column("lab_codes", JSON, nullable=False),
        sa.Column("lab_probabilities", JSON, nullable=False),
        sa.Column("lab_positive", JSON, nullable=False),
        sa.Column("explanations", JSON, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["ecg_studies.id"],
            name=op.f("fk_study_predictions_study_id_ecg_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_predictions")),
        sa.UniqueConstraint("study_id", "model_version", name="uq_study_predictions_study_model"),
    )
    connection = op.get_bind()
    for studies in _chunks(_study_ids(connection, _predictions, _explanations)):
        rows = _rows_of(connection, studies)
        if rows:
            connection.execute(sa.insert(_study_predictions), rows)
    op.drop_table("explanations")
    op.drop_table("predictions")


def downgrade() -> None:
    op.create_table(
        "explanations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("diagnosis_code", sa.String(length=64), nullable=False),
        sa.Column("lab_code", sa.String(length=64), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["ecg_studies.id"], name=op.f("fk_explanations_study_id_ecg_studies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_explanations")),
        sa.UniqueConstraint("study_id", "model_version", "diagnosis_code", "lab_code", name="uq_explanations_target"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("is_positive", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.CheckConstraint("target_kind IN ('diagnosis', 'lab')", name=op.f("ck_predictions_target_kind_allowed")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["ecg_studies.id"], name=op.f("fk_predictions_study_id_ecg_studies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint("study_id", "model_version", "target_kind", "code", name="uq_predictions_target"),
    )
    connection = op.get_bind()
    for studies in _chunks(_study_ids(connection, _study_predictions)):
        query = (
            sa.select(_study_predictions)
            .where(_study_predictions.c.study_id.in_(studies))
            .order_by(_study_predictions.c.id)
        )
        predictions, explanations = [], []
        for row in connection.execute(query).mappings():
            predictions += _prediction_rows(row)
            explanations += _explanation_rows(row)
        if predictions:
            connection.execute(sa.insert(_predictions), predictions)
        if explanations:
            connection.execute(sa.insert(_explanations), explanations)
    op.drop_table("study_predictions")


def _study_ids(connection: sa.Connection, *tables: sa.TableClause) -> list[int]:
    ids: set[int] = set()
    for table in tables:
        ids |= set(connection.execute(sa.select(table.c.study_id).distinct()).scalars())
    return sorted(ids)


def _chunks(study_ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(study_ids), STUDIES_PER_CHUNK):
        yield study_ids[start : start + STUDIES_PER_CHUNK]


def _rows_of(connection: sa.Connection, studies: list[int]) -> list[dict[str, Any]]:
    """One ``study_predictions`` row per (study, model version) among ``studies``' old rows."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}

    def row_for(study_id: int, model_version: str, created_at: Any) -> dict[str, Any]:
        if (study_id, model_version) not in rows:
            rows[(study_id, model_version)] = {
                "study_id": study_id,
                "model_version": model_version,
                **{f"{kind}_{field}": [] for kind in KINDS for field in ("codes", "probabilities", "positive")},
                "explanations": [],
                "created_at": created_at,
            }
        return rows[(study_id, model_version)]

    old = _predictions
    query = sa.select(old).where(old.c.study_id.in_(studies)).order_by(old.c.study_id, old.c.model_version, old.c.id)
    for p in connection.execute(query).mappings():
        row = row_for(p["study_id"], p["model_version"], p["created_at"])
        row[f"{p['target_kind']}_codes"].append(p["code"])
        row[f"{p['target_kind']}_probabilities"].append(p["probability"])
        row[f"{p['target_kind']}_positive"].append(bool(p["is_positive"]))
    old = _explanations
    query = sa.select(old).where(old.c.study_id.in_(studies)).order_by(old.c.id)
    for e in connection.execute(query).mappings():
        row = row_for(e["study_id"], e["model_version"], e["created_at"])
        row["explanations"].append([e["diagnosis_code"], e["lab_code"], e["weight"]])
    return [rows[key] for key in sorted(rows)]


def _prediction_rows(row: sa.RowMapping) -> list[dict[str, Any]]:
    return [
        {"study_id": row["study_id"], "model_version": row["model_version"], "target_kind": kind, "code": code,
         "probability": probability, "is_positive": positive, "created_at": row["created_at"]}
        for kind in KINDS
        for code, probability, positive in zip(
            row[f"{kind}_codes"], row[f"{kind}_probabilities"], row[f"{kind}_positive"], strict=True
        )
    ]  # fmt: skip


def _explanation_rows(row: sa.RowMapping) -> list[dict[str, Any]]:
    return [
        {"study_id": row["study_id"], "model_version": row["model_version"], "diagnosis_code": diagnosis,
         "lab_code": lab, "weight": weight, "created_at": row["created_at"]}
        for diagnosis, lab, weight in row["explanations"]
    ]  # fmt: skip
