"""The run lock: at most one process runs a named job (the nightly batch) at a time.

PostgreSQL: a session-level advisory lock, taken with ``pg_try_advisory_lock`` on a
dedicated connection held open for the block. It ends with the holder's session, so
a run that is killed frees it at once. A ``run_locks`` row written after acquiring
only says who holds it.

SQLite has no such lock: the ``run_locks`` row *is* the lock, taken in one short
``BEGIN IMMEDIATE`` transaction (never held open for the block, since the MLLP
listener writes meanwhile). A row is free to take over when its lease has run out,
or when ``holder_alive(row.holder)`` says its holder is gone, so a killed run does not
block the rerun for a whole lease (pass :func:`same_host_pid_alive`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa

from integrations.store import schema as t
from integrations.store.records import RunLock
from integrations.store.sql import dialect_insert, translate, translated

logger = logging.getLogger(__name__)

#: Whether the process named by a holder string ("host:pid") is still running.
HolderAlive = Callable[[str], bool]


def same_host_pid_alive(holder: str) -> bool:
    """False only when ``holder`` is ``"<this hostname>:<pid>"`` and no process ``pid`` exists.

    Any other holder (another host, or a string not of that form) cannot be judged from
    here and counts as alive; so does a pid reused by an unrelated process since.
    """
    host, _, pid_text = holder.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) <= 0:
        return True
    try:
        os.kill(int(pid_text), 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks are keyed by a bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def hold_run_lock(
    engine: sa.Engine, now: datetime, name: str, holder: str, lease_s: float, holder_alive: HolderAlive | None
) -> Iterator[RunLock]:
    """The run lock ``name`` for ``holder`` while the block runs; see the module docstring for each database."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, now, name, holder, lease_s) as lock:
            yield lock
    else:
        with _leased_row_lock(engine, now, name, holder, lease_s, holder_alive) as lock:
            yield lock


@contextmanager
def _advisory_lock(engine: sa.Engine, now: datetime, name: str, holder: str, lease_s: float) -> Iterator[RunLock]:
    record = f"run lock {name}"
    key = advisory_lock_key(name)
    connection = _dedicated_connection(engine, record)
    try:
        with translated(record, engine, connection):
            lock = _try_advisory_lock(connection, key, now, name, holder, lease_s)
        if not lock.acquired:
            yield lock
            return
        try:
            yield lock
        finally:
            with translated(record, engine, connection):
                _delete_row(connection, name, holder)
                connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
    finally:
        connection.close()


def _try_advisory_lock(
    connection: sa.Connection, key: int, now: datetime, name: str, holder: str, lease_s: float
) -> RunLock:
    if not connection.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one():
        row = connection.execute(sa.select(t.run_locks).where(t.run_locks.c.name == name)).mappings().first()
        # The holder writes its row just after acquiring: we may look in between.
        held_by = "an unknown holder (no lock row yet)" if row is None else _describe(row)
        return RunLock(name, holder, acquired=False, held_by=held_by)
    _write_row(connection, name, holder, now, lease_s)
    return RunLock(name, holder, acquired=True)


def _dedicated_connection(engine: sa.Engine, record: str) -> sa.Connection:
    """A connection outside the pool, in autocommit: no transaction stays open for hours, and closing it ends
    the session, which frees the advisory lock even if the explicit unlock failed."""
    try:
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.detach()
        return connection
    except sa.exc.SQLAlchemyError as exc:
        raise translate(record, exc) from exc


@contextmanager
def _leased_row_lock(
    engine: sa.Engine, now: datetime, name: str, holder: str, lease_s: float, holder_alive: HolderAlive | None
) -> Iterator[RunLock]:
    record = f"run lock {name}"
    with translated(record, engine, None) as connection:  # BEGIN IMMEDIATE: one taker at a time
        lock = _take_row(connection, now, name, holder, lease_s, holder_alive)
    if not lock.acquired:
        yield lock
        return
    try:
        yield lock
    finally:
        with translated(record, engine, None) as connection:
            _delete_row(connection, name, holder)


def _take_row(
    connection: sa.Connection,
    now: datetime,
    name: str,
    holder: str,
    lease_s: float,
    holder_alive: HolderAlive | None,
) -> RunLock:
    row = connection.execute(sa.select(t.run_locks).where(t.run_locks.c.name == name)).mappings().first()
    if row is not None:
        if row["lease_until"] > now and (holder_alive is None or holder_alive(row["holder"])):
            return RunLock(name, holder, acquired=False, held_by=_describe(row))
        logger.warning("run lock %s: taking over from %s, whose lease ran out or who is gone", name, row["holder"])
    _write_row(connection, name, holder, now, lease_s)
    return RunLock(name, holder, acquired=True)


def _write_row(connection: sa.Connection, name: str, holder: str, now: datetime, lease_s: float) -> None:
    """Insert the lock row, or replace the one a dead holder left behind."""
    row = {"name": name, "holder": holder, "acquired_at": now, "lease_until": now + timedelta(seconds=lease_s)}
    insert = dialect_insert(connection, t.run_locks).values(row)
    excluded = insert.excluded
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": excluded.holder, "acquired_at": excluded.acquired_at, "lease_until": excluded.lease_until},
        )
    )


def _delete_row(connection: sa.Connection, name: str, holder: str) -> None:
    """Release: only our own row, never one a later holder took over after our lease ran out."""
    table = t.run_locks
    connection.execute(sa.delete(table).where(table.c.name == name, table.c.holder == holder))


def _describe(row: sa.RowMapping) -> str:
    return f"{row['holder']} since {row['acquired_at'].isoformat()}"
