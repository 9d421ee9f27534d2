"""SQL plumbing shared by the repository: error translation at the edge, and the idempotent insert on both dialects."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from integrations.store.errors import StoreError, StoreIntegrityError, StoreNotFoundError, StoreUnavailableError


@contextmanager
def translated(record: str, engine: sa.Engine, connection: sa.Connection | None) -> Iterator[sa.Connection]:
    """``connection`` if given (the caller commits), else a fresh transaction; SQLAlchemy errors become store errors."""
    try:
        if connection is not None:
            yield connection
            return
        with engine.begin() as fresh:
            yield fresh
    except sa.exc.SQLAlchemyError as exc:
        raise translate(record, exc) from exc


def translate(record: str, exc: sa.exc.SQLAlchemyError) -> StoreError:
    """The store error for ``exc``, naming ``record`` and the driver's first line of explanation."""
    reason = str(exc.orig) if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else str(exc)
    reason = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
    if isinstance(exc, sa.exc.IntegrityError):
        return StoreIntegrityError(record, reason)
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.DisconnectionError):
        return StoreUnavailableError(record, reason)
    return StoreError(record, reason)


def dialect_insert(connection: sa.Connection, table: sa.Table) -> Any:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"table {table.name}", f"unsupported database dialect {dialect!r}")


def insert_new(connection: sa.Connection, table: sa.Table, row: Mapping[str, Any], key: tuple[str, ...]) -> bool:
    """INSERT ... ON CONFLICT (key) DO NOTHING; True when the row was inserted."""
    return insert_new_rows(connection, table, [row], key) == 1


def insert_new_rows(
    connection: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], key: tuple[str, ...]
) -> int:
    """INSERT ... ON CONFLICT (key) DO NOTHING for many rows; returns how many were inserted.

    One statement with the rows as parameters, not the rows inlined as VALUES: the statement is
    compiled once and cached, and SQLAlchemy's "insertmanyvalues" batches it (inlining 127
    predictions per study cost ~20 ms of SQL compilation each).
    """
    if not rows:
        return 0
    statement = dialect_insert(connection, table).on_conflict_do_nothing(index_elements=list(key))
    # RETURNING rather than rowcount: psycopg reports -1 for this INSERT through SQLAlchemy 2.1.
    returned = connection.execute(statement.returning(*table.primary_key.columns), [dict(row) for row in rows])
    return len(returned.all())


def update_one(connection: sa.Connection, table: sa.Table, row_id: int, values: Mapping[str, Any], name: str) -> None:
    result = connection.execute(sa.update(table).where(table.c.id == row_id).values(dict(values)))
    if result.rowcount != 1:
        raise StoreNotFoundError(name, f"no such row in {table.name}")
