"""Read-only summaries for the agent's operator commands, on an open connection: recent runs, queue sizes,
open quarantine by kind, and the active model's predictions beside a shadow model's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from integrations.store import schema as t
from integrations.store.records import Prediction, Run
from integrations.store.rows import prediction_set_from_row, run_from_row


def recent_runs(connection: sa.Connection, limit: int) -> list[Run]:
    """The last ``limit`` runs, newest first."""
    query = sa.select(t.runs).order_by(t.runs.c.id.desc()).limit(limit)
    return [run_from_row(row) for row in connection.execute(query).mappings()]


def count_where(connection: sa.Connection, column: sa.Column[str], value: str) -> int:
    """How many rows of ``column``'s table have ``column == value``."""
    query = sa.select(sa.func.count()).select_from(column.table).where(column == value)
    return int(connection.execute(query).scalar_one())


def quarantine_by_kind(connection: sa.Connection, state: str) -> dict[str, int]:
    """How many quarantine entries in ``state`` there are of each kind (kinds with none are left out)."""
    table = t.quarantine
    query = (
        sa.select(table.c.kind, sa.func.count())
        .where(table.c.state == state)
        .group_by(table.c.kind)
        .order_by(table.c.kind)
    )
    return {kind: int(count) for kind, count in connection.execute(query)}


def prediction_pairs(
    connection: sa.Connection, active_version: str, shadow_version: str
) -> list[tuple[Prediction, Prediction]]:
    """(active, shadow) predictions for the same (study, target_kind, code), by study then active output order.

    One self-join in the database on (study, the two versions); the outputs are paired here, since
    each row holds a study's outputs as arrays. A target only one of the versions predicted has no pair.
    """
    active, shadow = t.study_predictions.alias("active"), t.study_predictions.alias("shadow")
    query = (
        sa.select(*_prefixed(active), *_prefixed(shadow))
        .join_from(active, shadow, shadow.c.study_id == active.c.study_id)
        .where(active.c.model_version == active_version, shadow.c.model_version == shadow_version)
        .order_by(active.c.study_id)
    )
    pairs = []
    for row in connection.execute(query).mappings():
        theirs = {(p.target_kind, p.code): p for p in prediction_set_from_row(_unprefixed(row, "shadow")).predictions()}
        pairs += [
            (mine, theirs[(mine.target_kind, mine.code)])
            for mine in prediction_set_from_row(_unprefixed(row, "active")).predictions()
            if (mine.target_kind, mine.code) in theirs
        ]
    return pairs


def _prefixed(table: sa.Alias) -> list[sa.Label[Any]]:
    return [column.label(f"{table.name}_{column.name}") for column in table.c]


def _unprefixed(row: sa.RowMapping, prefix: str) -> dict[str, Any]:
    return {key.removeprefix(f"{prefix}_"): value for key, value in row.items() if key.startswith(f"{prefix}_")}
