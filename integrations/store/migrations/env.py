"""Alembic environment for the store, driven from :meth:`integrations.store.Store.upgrade`.

The caller hands over an open connection in ``config.attributes["connection"]``, so
the migration runs in the caller's transaction and no ``alembic.ini`` is needed.
"""

from __future__ import annotations

from alembic import context

from integrations.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
