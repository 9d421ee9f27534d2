"""Engines for the two supported databases: SQLite (embedded default) and PostgreSQL 15 (production)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

#: How long SQLite waits for another writer before giving up with "database is locked".
DEFAULT_BUSY_TIMEOUT_S = 30.0


def create_store_engine(url: str | sa.URL, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sa.Engine:
    """An engine for ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg://...``), set up for the store."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": busy_timeout_s}, json_serializer=json_text)
        sa.event.listen(engine, "connect", _sqlite_on_connect(busy_timeout_s))
        sa.event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    # pre-ping: a nightly job's pooled connection may have been dropped by the server since last night.
    return sa.create_engine(parsed, pool_pre_ping=True, json_serializer=json_text)


def json_text(value: Any) -> str:
    """``value`` as the text of a JSON column, as the standard library writes it, only faster.

    A night stores a prediction set (127 outputs) and a payload per ECG, and the standard library's encoder
    was a tenth of the agent's own CPU. orjson writes compact UTF-8 (the same JSON) but would write a NaN as
    ``null``: any ``null`` in its output, which may be a NaN, goes to the standard library, whose ``NaN``
    reads back as NaN (and which PostgreSQL refuses, as it did before); so does what orjson cannot write
    (an integer beyond 64 bits), to be written or refused as before.
    """
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return json.dumps(value)
    if b"null" in text:
        return json.dumps(value)
    return text.decode()


def _sqlite_on_connect(busy_timeout_s: float) -> Callable[[sqlite3.Connection, Any], None]:
    def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # The sqlite3 module's own transaction handling skips DDL and begins lazily; we begin ourselves instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL: the MLLP listener writes while the nightly batch reads, without blocking each other.
            cursor.execute("PRAGMA journal_mode=WAL")
            # SQLite leaves foreign keys off unless every connection asks for them.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
        finally:
            cursor.close()

    return on_connect


def _sqlite_begin_immediate(connection: sa.Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout). A deferred transaction that
    # reads and then writes fails at once with SQLITE_BUSY when another writer committed in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
