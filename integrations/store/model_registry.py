"""Model versions and their lifecycle rules, on an open connection.

A version is keyed by its artifact's sha256. At most one version is active: promoting
one retires the active one in the same transaction (a partial unique index guards
the rule against concurrent promotes too). Every change of state writes an audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from integrations.store import schema as t
from integrations.store.errors import StoreIntegrityError, StoreNotFoundError
from integrations.store.records import ModelAuditEntry, ModelState, ModelVersion
from integrations.store.rows import audit_from_row, model_from_row
from integrations.store.sql import insert_new

logger = logging.getLogger(__name__)


def register(
    connection: sa.Connection,
    now: datetime,
    version: str,
    sha256: str,
    path: str,
    manifest: Mapping[str, Any],
    actor: str,
) -> ModelVersion:
    """Insert ``version`` as registered, or return it if this sha256 already is; refuses a second name for it."""
    row = {
        "version": version,
        "sha256": sha256,
        "path": path,
        "state": ModelState.REGISTERED.value,
        "manifest": dict(manifest),
        "created_at": now,
        "updated_at": now,
    }
    if insert_new(connection, t.model_versions, row, ("sha256",)):
        _audit(connection, version, actor, now, None, ModelState.REGISTERED, "registered")
    query = sa.select(t.model_versions).where(t.model_versions.c.sha256 == sha256)
    stored = model_from_row(connection.execute(query).mappings().one())
    if stored.version != version:
        raise StoreIntegrityError(
            f"model version {version} (sha256 {sha256[:12]})",
            f"this artifact is already registered as version {stored.version}",
        )
    return stored


def set_state(
    connection: sa.Connection, now: datetime, version: str, state: ModelState, actor: str, reason: str
) -> ModelVersion:
    """Move ``version`` to ``state`` (no-op if it is there already); promoting retires the active version."""
    current = select(connection, version)
    if current is None:
        raise StoreNotFoundError(f"model version {version}", "not registered")
    if current.state == state:
        return current
    if state == ModelState.ACTIVE:
        for active in select_all(connection, ModelState.ACTIVE):
            _change_state(connection, active, ModelState.RETIRED, actor, now, f"replaced by {version}: {reason}")
    _change_state(connection, current, state, actor, now, reason)
    return select(connection, version) or current


def select(connection: sa.Connection, version: str) -> ModelVersion | None:
    query = sa.select(t.model_versions).where(t.model_versions.c.version == version)
    row = connection.execute(query).mappings().first()
    return None if row is None else model_from_row(row)


def select_all(connection: sa.Connection, state: ModelState | None = None) -> list[ModelVersion]:
    """Versions in registration order, optionally only those in ``state``."""
    table = t.model_versions
    query = sa.select(table).order_by(table.c.id)
    if state is not None:
        query = query.where(table.c.state == state.value)
    return [model_from_row(row) for row in connection.execute(query).mappings()]


def audit_trail(connection: sa.Connection, version: str | None) -> list[ModelAuditEntry]:
    table = t.model_audit
    query = sa.select(table).order_by(table.c.id)
    if version is not None:
        query = query.where(table.c.version == version)
    return [audit_from_row(row) for row in connection.execute(query).mappings()]


def _change_state(
    connection: sa.Connection, model: ModelVersion, state: ModelState, actor: str, now: datetime, reason: str
) -> None:
    table = t.model_versions
    connection.execute(
        sa.update(table).where(table.c.version == model.version).values(state=state.value, updated_at=now)
    )
    _audit(connection, model.version, actor, now, model.state, state, reason)
    logger.info("model version %s: %s -> %s by %s", model.version, model.state.value, state.value, actor)


def _audit(
    connection: sa.Connection,
    version: str,
    actor: str,
    now: datetime,
    from_state: ModelState | None,
    to_state: ModelState,
    reason: str,
) -> None:
    row = {
        "version": version,
        "actor": actor,
        "at": now,
        "from_state": None if from_state is None else from_state.value,
        "to_state": to_state.value,
        "reason": reason,
    }
    connection.execute(sa.insert(t.model_audit).values(row))
