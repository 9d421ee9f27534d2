"""Migrations: the packaged Alembic scripts build exactly the schema the code queries, on both databases."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from integrations.store import Store, StoreMigrationError, StoreUnavailableError
from integrations.store.schema import metadata


def _empty_database_url(request, tmp_path, dialect: str) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return sa.make_url(request.getfixturevalue("postgres_url")).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated(request, tmp_path):
    """A database migrated from empty, then to head a second time; dropped again afterwards on PostgreSQL."""
    store = Store.from_url(_empty_database_url(request, tmp_path, request.param))
    store.upgrade()
    store.upgrade()
    yield store
    metadata.drop_all(store.engine)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")
    store.dispose()


def test_upgrade_head_creates_every_table_of_the_schema_and_is_idempotent(migrated):
    tables = set(sa.inspect(migrated.engine).get_table_names())
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_the_migrated_schema_matches_the_code_schema_so_autogenerate_has_nothing_to_add(migrated):
    with migrated.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_an_unknown_revision_is_a_migration_error_naming_the_database(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StoreMigrationError, match=r"x\.db.*cannot upgrade to 9999"):
        store.upgrade("9999")


def test_an_unreachable_database_is_reported_as_unavailable(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    with pytest.raises(StoreUnavailableError, match="unable to open database file"):
        store.upgrade()
