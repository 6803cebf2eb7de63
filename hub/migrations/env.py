"""Alembic environment: runs on the connection the hub hands it (see hub.store.db.migrate)."""

from __future__ import annotations

from alembic import context

from hub.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the hub always passes its own connection
    raise RuntimeError("run migrations through `ketenhub migrate`, which supplies the connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
