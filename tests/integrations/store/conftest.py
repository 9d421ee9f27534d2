"""One ``store`` fixture, parametrized over SQLite and PostgreSQL: every store test is a contract test on both.

Each test gets an empty, migrated database: a copy of a migrated SQLite file, or the
one migrated PostgreSQL database with every table truncated, both much faster than
migrating per test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from integrations.store import Store
from integrations.store.schema import metadata

POSTGRES_DATABASE = "store"


class FakeClock:
    """An injectable clock that only moves when a test moves it."""

    def __init__(self, start: datetime = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    store = Store.from_url(f"sqlite:///{path}")
    store.upgrade()
    store.dispose()
    return path


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    url = sa.make_url(postgres_url).set(database=POSTGRES_DATABASE)
    _postgres_admin(postgres_url, f"CREATE DATABASE {POSTGRES_DATABASE}")
    store = Store.from_url(url)
    store.upgrade()
    store.dispose()
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("migrated_postgres_url")
    _postgres_admin(url, f"TRUNCATE {', '.join(metadata.tables)} RESTART IDENTITY CASCADE")
    return url


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    store = Store.from_url(store_url, clock=clock)
    yield store
    store.dispose()


def _postgres_admin(postgres_url: str, statement: str) -> None:
    url = sa.make_url(postgres_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True) as conn:
        conn.execute(statement)
