"""Backfill progress, on an open connection: one row per partition of an archive, by backfill name.

A partition is registered ``pending`` when the backfill lists it, marked ``done`` (with what it
did) only after its results are committed, and ``failed`` (with the error) when its task fails;
the next backfill of the same name takes up every partition not ``done``. Registering is
idempotent, so a rerun that lists the same archive adds nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from integrations.store import schema as t
from integrations.store.sql import insert_new_rows


class BackfillStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class BackfillPartition:
    """A partition as the backfill lists it: its key (a content sha256), kind, first file and size."""

    key: str
    kind: str
    first_item: str
    n_items: int


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """Where one backfill stands: partitions by status, and the outcome counts of the done ones summed."""

    backfill: str
    partitions: Mapping[BackfillStatus, int]
    counts: Mapping[str, int]
    last_error: str | None = None
    updated_at: datetime | None = None
    failed_keys: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(self.partitions.values())

    def count(self, status: BackfillStatus) -> int:
        return self.partitions.get(status, 0)


def register(connection: sa.Connection, now: datetime, backfill: str, partitions: Sequence[BackfillPartition]) -> int:
    """Insert the partitions not known yet as ``pending``; returns how many were new."""
    rows = [
        {
            "backfill": backfill,
            "partition_key": p.key,
            "kind": p.kind,
            "first_item": p.first_item[:1024],
            "n_items": p.n_items,
            "status": BackfillStatus.PENDING.value,
            "attempts": 0,
            "counts": {},
            "created_at": now,
            "updated_at": now,
        }
        for p in partitions
    ]
    return insert_new_rows(connection, t.backfill_partitions, rows, ("backfill", "partition_key"))


def done_keys(connection: sa.Connection, backfill: str) -> set[str]:
    table = t.backfill_partitions
    query = sa.select(table.c.partition_key).where(
        table.c.backfill == backfill, table.c.status == BackfillStatus.DONE.value
    )
    return set(connection.execute(query).scalars())


def finish(
    connection: sa.Connection,
    now: datetime,
    backfill: str,
    key: str,
    status: BackfillStatus,
    *,
    counts: Mapping[str, int] | None = None,
    error: str | None = None,
) -> None:
    """Record one attempt's end; a partition already ``done`` stays done (a late failure report changes nothing)."""
    table = t.backfill_partitions
    values: dict[str, object] = {
        "status": BackfillStatus(status).value,
        "attempts": table.c.attempts + 1,
        "error": error,
        "updated_at": now,
    }
    if counts is not None:
        values["counts"] = dict(counts)
    connection.execute(
        sa.update(table)
        .where(
            table.c.backfill == backfill,
            table.c.partition_key == key,
            table.c.status != BackfillStatus.DONE.value,
        )
        .values(values)
    )


def progress(connection: sa.Connection) -> list[BackfillProgress]:
    """Every backfill's progress, most recently active first."""
    table = t.backfill_partitions
    query = sa.select(
        table.c.backfill, table.c.status, table.c.counts, table.c.error, table.c.updated_at, table.c.partition_key
    ).order_by(table.c.id)
    by_name: dict[str, _Sums] = {}
    for row in connection.execute(query).mappings():
        by_name.setdefault(row["backfill"], _Sums()).add(row)
    views = [sums.view(name) for name, sums in by_name.items()]
    return sorted(views, key=lambda view: view.updated_at or datetime.min.replace(tzinfo=UTC), reverse=True)


@dataclass(slots=True)
class _Sums:
    partitions: dict[BackfillStatus, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    updated_at: datetime | None = None
    failed: list[str] = field(default_factory=list)

    def add(self, row: Mapping[str, object]) -> None:
        status = BackfillStatus(str(row["status"]))
        self.partitions[status] = self.partitions.get(status, 0) + 1
        if status == BackfillStatus.DONE:
            for name, count in dict(row["counts"] or {}).items():  # type: ignore[call-overload]
                self.counts[name] = self.counts.get(name, 0) + int(count)
        if status == BackfillStatus.FAILED:
            self.last_error = str(row["error"])
            self.failed.append(str(row["partition_key"]))
        updated = row["updated_at"]
        if isinstance(updated, datetime) and (self.updated_at is None or updated > self.updated_at):
            self.updated_at = updated

    def view(self, name: str) -> BackfillProgress:
        return BackfillProgress(name, dict(self.partitions), dict(self.counts), self.last_error, self.updated_at,
                                tuple(self.failed))  # fmt: skip
