"""Alembic environment: trustyard always hands it an open connection (see ``sql.migrate``)."""

from alembic import context

from trustyard.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
