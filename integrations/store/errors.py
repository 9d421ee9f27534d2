"""The exception tree of :mod:`integrations.store`, under :class:`integrations.errors.IntegrationError`.

SQLAlchemy, psycopg and Alembic errors are translated here, at the I/O edge, with
``raise ... from exc``; every message names the record and the reason::

    IntegrationError
    └── StoreError                  anything the store cannot do
        ├── StoreUnavailableError   the database cannot be reached, or is locked/busy (retry later)
        ├── StoreIntegrityError     a write broke a constraint (unknown study, bad state, ...)
        ├── StoreNotFoundError      the named record does not exist
        └── StoreMigrationError     the schema could not be brought to the code's revision
"""

from __future__ import annotations

from integrations.errors import IntegrationError


class StoreError(IntegrationError):
    """Base of every error raised by :mod:`integrations.store`."""

    def __init__(self, record: str, reason: str) -> None:
        super().__init__(f"{record}: {reason}")
        self.record = record
        self.reason = reason


class StoreUnavailableError(StoreError):
    """The database is unreachable, or busy beyond the busy timeout; the operation may succeed later."""


class StoreIntegrityError(StoreError):
    """A write violated a constraint of the schema."""


class StoreNotFoundError(StoreError, LookupError):
    """The record an operation names does not exist."""


class StoreMigrationError(StoreError):
    """Alembic could not upgrade the schema."""
