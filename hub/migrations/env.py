"""Alembic environment: runs on the connection the hub hands it (see hub.store.db.migrate)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from hub.store.tables import metadata
from hub.store.types import UtcDateTime


def _render(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """A migration written by autogenerate names a moment column as the plain type it is stored as:
    `UtcDateTime` is the hub's reading of it, and a migration must not import the hub's code."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the hub always passes its own connection
    raise RuntimeError("run migrations through `ketenhub migrate`, which supplies the connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, render_item=_render)
with context.begin_transaction():
    context.run_migrations()
